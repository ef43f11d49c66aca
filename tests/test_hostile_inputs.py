"""Hostile and careless inputs (issue 31): every file a user or a run folder hands us is read through reading.py
(regular files only, a size cap per kind, YAML aliases bounded), secrets in storage URLs never shown, user text
escaped and length-limited, "never overwrite" kept under a race, and every message one line that names what
the command really has."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fashionlab import reading
from fashionlab.cli import main
from fashionlab.config import MAX_LABEL
from fashionlab.errors import DataError, FashionlabError, RunError
from fashionlab.runfolder import RunFolder
from report_fixtures import make_dataset, make_runs

FIFO = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
DEV_ZERO = pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")




@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> list:
    """train() replaced by a recorder: a config that passes validation is recorded, never trained."""
    import fashionlab.train

    calls: list = []
    monkeypatch.setattr(fashionlab.train, "train", lambda cfg, **kw: calls.append(cfg) or Path("unused"))
    return calls


def one_line(capsys, argv: list[str], *needles: str, code: int = 2) -> str:
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == code, captured.err
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert "Traceback" not in err and "error: unexpected" not in err, err
    for needle in needles:
        assert needle in err, err
    return captured.out + captured.err


def train_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "--model", "cnn1", "--out", str(tmp_path / "run"), *extra]


# ---------------------------------------------------------------- 1, 2: --config files, bounded


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)) + "lr: *i\n"


def test_an_alias_bomb_config_is_refused_in_a_moment(tmp_path, capsys, no_training):
    """Issue 31 defect 1: a few hundred bytes of nested aliases (10**9 values) ran past 90 s toward gigabytes."""
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 1000
    t0 = time.perf_counter()
    one_line(capsys, train_args(tmp_path, "--config", str(path)), "aliases would expand it past")
    assert time.perf_counter() - t0 < 5 and not no_training and not (tmp_path / "run").exists()


@FIFO
def test_a_config_that_is_a_fifo_is_refused_unopened(tmp_path, capsys, no_training, alarm):
    """Issue 31 defect 2: `--config FIFO` hung forever."""
    os.mkfifo(tmp_path / "c.yaml")
    one_line(capsys, train_args(tmp_path, "--config", str(tmp_path / "c.yaml")), "named pipe (FIFO)")
    assert not no_training


@DEV_ZERO
def test_a_config_of_dev_zero_is_refused_unread(tmp_path, capsys, no_training, alarm):
    """Issue 31 defect 2: `--config /dev/zero` ended in "unexpected MemoryError" at 2.5 GB."""
    one_line(capsys, train_args(tmp_path, "--config", "/dev/zero"), "/dev/zero is a character device")
    assert not no_training


def test_a_config_over_its_size_cap_is_one_line(tmp_path, capsys, no_training):
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * (reading.CAPS["config"] // 10 + 1))
    one_line(capsys, train_args(tmp_path, "--config", str(path)), "the limit for a config file is 1 MiB")


def test_a_309_digit_number_is_not_echoed_whole(tmp_path, capsys, no_training):
    """Issue 31 defect 10: a 309-digit value was printed whole."""
    path = tmp_path / "c.yaml"
    path.write_text(f"epochs: {'9' * 309}\n")
    out = one_line(capsys, train_args(tmp_path, "--config", str(path)), "--epochs must be")
    assert "9" * 40 not in out and len(out) < 300


# ---------------------------------------------------------------- 2: run-folder files, bounded


@FIFO
def test_evaluate_refuses_a_metrics_csv_that_is_a_fifo(run, capsys, alarm):
    """Issue 31 defect 2: `evaluate` hung when metrics.csv was a FIFO."""
    (run / "metrics.csv").unlink()
    os.mkfifo(run / "metrics.csv")
    one_line(capsys, ["evaluate", str(run)], "metrics.csv is a named pipe (FIFO), not a regular file")


@DEV_ZERO
def test_evaluate_refuses_a_metrics_csv_linked_to_dev_zero(run, capsys, alarm):
    """Issue 31 defect 2: a metrics.csv linked to /dev/zero ran out of memory."""
    (run / "metrics.csv").unlink()
    (run / "metrics.csv").symlink_to("/dev/zero")
    one_line(capsys, ["evaluate", str(run)], "metrics.csv is a character device")


@FIFO
@pytest.mark.parametrize("name", ["config.json", "checkpoints/best.pt"])
def test_other_run_files_that_are_fifos_are_refused(run, capsys, alarm, name):
    (run / name).unlink()
    os.mkfifo(run / name)
    one_line(capsys, ["evaluate", str(run)], f"{name} is a named pipe (FIFO)")


@FIFO
def test_compare_calls_a_fifo_a_fifo(tmp_path, capsys, alarm):
    """Issue 31 defect 10: compare said a FIFO metrics.csv was "not found"."""
    data = make_dataset(tmp_path / "data")
    runs = make_runs(tmp_path / "runs", data)
    (runs[1] / "metrics.csv").unlink()
    os.mkfifo(runs[1] / "metrics.csv")
    out = one_line(capsys, ["compare", *map(str, runs), "--out", str(tmp_path / "report")], "named pipe (FIFO)")
    assert "not found" not in out
    (runs[1] / "metrics.csv").unlink()
    shutil.copy(runs[0] / "metrics.csv", runs[1] / "metrics.csv")
    for name in ("test_metrics.json", "test_probs.npy"):  # these were "has no ...: run evaluate first"
        saved = (runs[1] / name).read_bytes()
        (runs[1] / name).unlink()
        os.mkfifo(runs[1] / name)
        one_line(capsys, ["compare", *map(str, runs), "--out", str(tmp_path / "report")],
                 f"{name} is a named pipe (FIFO)")
        (runs[1] / name).unlink()
        (runs[1] / name).write_bytes(saved)
    assert not (tmp_path / "report").exists()


def test_a_gzip_bomb_in_the_dataset_stops_at_the_cap(tmp_path, monkeypatch):
    import gzip

    from fashionlab.data.idx import read_idx

    monkeypatch.setitem(reading.CAPS, "idx", 1 << 20)  # the real cap is 2 GiB: same code, smaller numbers
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(8 << 20)))  # 8 KiB -> 8 MiB
    with pytest.raises(DataError, match="decompresses to over the 1 MiB limit") as e:
        read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert "\n" not in str(e.value)


@FIFO
def test_a_dataset_file_that_is_a_fifo_is_refused(tmp_path, alarm):
    from fashionlab.data.idx import read_idx

    os.mkfifo(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(DataError, match=r"named pipe \(FIFO\)"):
        read_idx(tmp_path / "t10k-labels-idx1-ubyte")


def test_an_image_over_its_cap_is_an_error_row(tmp_path, monkeypatch):
    from PIL import Image

    from fashionlab import imageprep

    Image.new("L", (64, 64), 128).save(tmp_path / "x.png")
    monkeypatch.setitem(reading.CAPS, "image", 100)
    with pytest.raises(imageprep.ImageError, match="the limit for an image is 100 bytes"):
        imageprep.load(tmp_path / "x.png")


# ---------------------------------------------------------------- 3, 9: metrics.csv validated on read


HEADER = "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n"
GOOD = "1,0.9,0.6,0.8,0.7,0.001,3.5\n"


@pytest.mark.parametrize("rows, needle", [
    ("nan,0.9,0.6,0.8,0.7,0.001,3\n", "row 1: epoch must be a positive integer, got 'nan'"),
    ("-1,0.9,0.6,0.8,0.7,0.001,3\n", "row 1: epoch must be a positive integer, got '-1'"),
    ("0,0.9,0.6,0.8,0.7,0.001,3\n", "row 1: epoch must be a positive integer"),
    ("1.5,0.9,0.6,0.8,0.7,0.001,3\n", "row 1: epoch must be a positive integer"),
    (GOOD + "1,0.9,0.6,0.8,0.7,0.001,3\n", "row 2: epoch 1 after epoch 1 (epochs must increase)"),
    (GOOD + "2,inf,0.6,0.8,0.7,0.001,3\n", "row 2: train_loss must be a finite number >= 0, got 'inf'"),
    ("1,nan,0.6,0.8,0.7,0.001,3\n", "row 1: train_loss must be a finite number"),
    ("1,0.9,0.6,0.8,1e308,0.001,3\n", "row 1: val_acc must be a finite number in [0, 1], got '1e308'"),
    ("1,0.9,-0.1,0.8,0.7,0.001,3\n", "row 1: train_acc must be a finite number in [0, 1]"),
    ("1,0.9,0.6,0.8,0.7,-inf,3\n", "row 1: lr must be a finite number >= 0"),
    ("1,0.9,0.6,0.8,0.7,0.001,x\n", "row 1: seconds must be a number, got 'x'"),
    ("1,0.9,0.6,0.8,0.7,0.001," + "9" * 5000 + "\n", "a field of 5,000 characters (the limit is 1,024)"),
    ("1,0.9,0.6,0.8,0.7\n", "5 fields, but the header has 7"),
])
def test_a_tampered_metrics_csv_is_one_line_naming_the_file_and_row(tmp_path, rows, needle):
    """Issue 31 defect 9: NaN, inf and negative epochs were accepted, val_acc 1e308 "reached at epoch 1", a huge
    field gave "unexpected Error: field larger than field limit"."""
    (tmp_path / "metrics.csv").write_text(HEADER + rows)
    with pytest.raises(RunError) as e:
        RunFolder(tmp_path).history()
    message = str(e.value)
    assert needle in message and str(tmp_path / "metrics.csv") in message and "\n" not in message, message
    assert len(message) < 400


def test_an_empty_metrics_csv_is_one_line(tmp_path, run, capsys):
    """Issue 31 defect 9: an empty metrics.csv gave "I/O operation on closed file"."""
    (tmp_path / "metrics.csv").write_text("")
    with pytest.raises(RunError, match="is empty"):
        RunFolder(tmp_path).history()
    (run / "metrics.csv").write_text("")
    one_line(capsys, ["evaluate", str(run)], "metrics.csv is empty")


def test_what_runs_write_still_reads(tmp_path):
    """A run without a validation split writes NaN validation columns; an ensemble means; both stay readable."""
    text = HEADER + "1,0.9,0.6,nan,nan,0.001,3\n2,0,1,nan,nan,0,0\n3,1e-05,0.99,0.1,1,1e-06,12.5\n"
    (tmp_path / "metrics.csv").write_text(text)
    rows = RunFolder(tmp_path).history()
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(type(r["epoch"]) is int for r in rows)
    folder = RunFolder(tmp_path / "again")
    folder.path.mkdir()
    folder.write_history(rows)
    assert [r["epoch"] for r in folder.history()] == [1, 2, 3]


# ---------------------------------------------------------------- 2: storage URLs never shown


@pytest.mark.parametrize("url, secret", [
    ("postgresql://me:p@ss@127.0.0.1:1/db", "ss"),  # an unencoded '@': SQLAlchemy takes "ss@127.0.0.1" as the host
    ("postgresql://me:s3cret@word@127.0.0.1:1/db", "word"),
    ("postgresql://me:s3cretpw@[bad/db", "s3cretpw"),  # a malformed host
    ("postgresql://127.0.0.1:1/db?password=s3cretpw", "s3cretpw"),  # the password as a query parameter
    ("postgresql://me:s3cretpw@host:notaport/db", "s3cretpw"),
    ("me:s3cretpw@localhost/db", "s3cretpw"),  # no scheme at all
    ("sqlite:////nonexistent-folder/x.db?token=s3cretpw", "s3cretpw"),
])
def test_tune_never_shows_a_storage_password(tmp_path, capsys, url, secret):
    """Issue 31 defect 3: unusual URLs printed the database password."""
    out = one_line(capsys, ["tune", "--model", "cnn1", "--trials", "1", "--out", str(tmp_path / "t"), "--storage",
                            url, "--quiet"], "--storage")
    import re

    assert not re.search(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", out), out
    assert not (tmp_path / "t").exists()  # nothing left behind


def test_tune_log_lines_and_escaping_errors_hide_the_storage_secrets():
    import sqlalchemy.exc

    from fashionlab.tune import LEAK_HIDDEN, LogFilter, secrets_hidden

    url = "postgresql://me:s3cretpw@db.example:5432/studies"
    try:
        raise RuntimeError(f"connection to {url} lost")
    except RuntimeError:
        record = logging.LogRecord("optuna", logging.WARNING, __file__, 1, "Trial 3 failed: %s", (url,),
                                   sys.exc_info())
    assert LogFilter([url]).filter(record)
    shown = logging.Formatter().format(record)
    assert "s3cretpw" not in shown and "postgresql://me:***@db.example:5432/studies" in shown
    assert "Traceback" in shown  # a foreign error keeps its traceback in the log, redacted

    with pytest.raises(RunError) as e, secrets_hidden([url]):
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(f"could not connect: {url}"))
    assert "s3cretpw" not in str(e.value) and "--storage postgresql://me:***@db.example" in str(e.value)
    with pytest.raises(RuntimeError) as e, secrets_hidden([url]):
        raise KeyError(f"oops {url}")
    assert "s3cretpw" not in str(e.value) and "KeyError" in str(e.value)
    odd = "postgresql://me:p@ss@127.0.0.1/db"
    with pytest.raises(RunError) as e, secrets_hidden([odd]):
        raise sqlalchemy.exc.OperationalError("", {}, Exception('could not translate host name "ss@127.0.0.1"'))
    assert LEAK_HIDDEN in str(e.value) and '"ss@' not in str(e.value)


# ---------------------------------------------------------------- 4: strict JSON, escaped Markdown, limited labels


@pytest.fixture
def report_data(tmp_path):
    return make_dataset(tmp_path / "data")


def compare(runs, out, capsys=None, **kwargs):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASHIONLAB_SKIP_VERIFY", "1")
        from fashionlab.report import compare_runs

        return compare_runs(runs, out, n_boot=200, **kwargs)


@pytest.fixture
def fast_figures(monkeypatch):
    import numpy as np

    from fashionlab.report import figures

    tiny = figures.thumbnail_png(np.zeros((2, 2), np.uint8))
    for name in ("curves_png", "confusion_png", "per_class_png"):
        monkeypatch.setattr(figures, name, lambda *args, **kwargs: tiny)


def set_label(run: Path, label: str) -> None:
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"label": label}))


def test_summary_json_is_strict_json_without_a_validation_split(tmp_path, report_data, fast_figures):
    """Issue 31 defect 4: runs without a validation split wrote a bare NaN into summary.json."""
    runs = make_runs(tmp_path / "runs", report_data)
    for run in runs:
        lines = (run / "metrics.csv").read_text().splitlines()
        rows = [line.split(",") for line in lines[1:]]
        (run / "metrics.csv").write_text("\n".join([lines[0], *(",".join(r[:3] + ["nan", "nan"] + r[5:])
                                                                for r in rows)]) + "\n")
    compare(runs, tmp_path / "out")

    def refuse(name):
        raise AssertionError(f"{name} in summary.json")

    json.loads((tmp_path / "out" / "summary.json").read_text(), parse_constant=refuse)


def test_summary_md_escapes_html_in_labels(tmp_path, report_data, fast_figures):
    """Issue 31 defect 8: a label `<img src=x onerror=...>` became live HTML in Markdown viewers."""
    runs = make_runs(tmp_path / "runs", report_data)
    set_label(runs[1], "<img src=x onerror=alert(1)>")
    compare(runs, tmp_path / "out")
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in md and "<img" not in md
    assert "<img src=x" not in (tmp_path / "out" / "report.html").read_text()


def test_an_old_config_with_a_huge_label_is_shortened_by_compare(tmp_path, report_data, fast_figures):
    """Issue 31 defect 7: a 5 MB label through config.json took over 100 s and wrote a 20 MB summary.md."""
    runs = make_runs(tmp_path / "runs", report_data)
    set_label(runs[1], "x" * 5_000_000)
    t0 = time.perf_counter()
    summary = compare(runs, tmp_path / "out")
    assert time.perf_counter() - t0 < 30
    labels = [m["label"] for m in summary["models"]]
    assert labels[0] == "cnn1" and len(labels[1]) == MAX_LABEL and labels[1].endswith("…")
    assert (tmp_path / "out" / "summary.md").stat().st_size < 100_000


@pytest.mark.parametrize("argv, needle", [
    (["--label", "x" * (MAX_LABEL + 1)], f"--label is 101 characters long; the limit is {MAX_LABEL}"),
    (["--label", "y" * 5_000_000], "--label is 5,000,000 characters long"),
])
def test_a_label_over_its_limit_is_one_line(tmp_path, capsys, no_training, argv, needle):
    """Issue 31 defect 7: --label had no length limit."""
    out = one_line(capsys, train_args(tmp_path, *argv), needle)
    assert len(out) < 300 and not no_training


def test_a_label_at_its_limit_is_accepted(tmp_path, capsys, no_training):
    assert main(train_args(tmp_path, "--label", "x" * MAX_LABEL)) == 0
    assert no_training[0].label == "x" * MAX_LABEL


def test_a_label_over_its_limit_in_a_config_file_is_one_line(tmp_path, capsys, no_training):
    (tmp_path / "c.yaml").write_text(f"label: {'z' * 1000}\n")
    one_line(capsys, train_args(tmp_path, "--config", str(tmp_path / "c.yaml")), "--label is 1,000 characters long")


@pytest.mark.parametrize("study, needle", [
    ("s" * (MAX_LABEL + 1), "--study is 101 characters long"),
    ("", "--study must not be empty"),
    ("a\nb", "--study must be printable"),
])
def test_a_bad_study_name_is_one_line_before_any_work(tmp_path, capsys, study, needle):
    one_line(capsys, ["tune", "--model", "cnn1", "--trials", "1", "--study", study, "--out", str(tmp_path / "t")],
             needle)
    assert not (tmp_path / "t").exists()


# ---------------------------------------------------------------- 5: messages that name what the command has


def test_the_trust_refusal_names_the_option_every_reader_has(tmp_path):
    """Issue 31 defect 10: evaluate was told to give --model again, which evaluate does not have."""
    with pytest.raises(RunError) as e:
        RunFolder(tmp_path).model_spec(False, {"model": f"{tmp_path}/net.py:Net"})
    message = str(e.value)
    assert "give --trust-model-code (trust_model_code=True in Python)" in message and "\n" not in message
    assert "--model" not in message.replace("--trust-model-code", "")  # evaluate, predict, export have no --model


def test_resume_names_its_own_way_to_trust(tmp_path, synthetic_env, capsys):
    """train --resume, and only it, also takes the same --model again: its refusal says so."""
    (tmp_path / "net.py").write_text(NET)
    spec = f"{tmp_path}/net.py:Net"
    run = tmp_path / "run"
    assert main(["train", "--model", spec, "--epochs", "1", "--train-subset", "200", "--batch-size", "64",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2"]) != 0
    err = capsys.readouterr().err.strip()
    assert "give --trust-model-code or the same --model again" in err and "\n" not in err


@pytest.mark.parametrize("spec, needle", [
    ("../../x:Y", "../../x is not a module name (package.module); a file needs FILE.py:NAME, e.g. ../../x.py:Y"),
    ("models/net:Net", "a file needs FILE.py:NAME"),
    ("./net:Net", "./net is not a module name"),
])
def test_a_path_where_a_module_is_expected_says_so(tmp_path, capsys, spec, needle):
    """Issue 31 defect 10: `--model ../../x:Y` gave "TypeError: the 'package' argument is required"."""
    one_line(capsys, train_args(tmp_path, "--model", spec), needle)
    assert not (tmp_path / "run").exists()


@FIFO
def test_a_model_file_that_is_a_fifo_is_refused_unopened(tmp_path, capsys, alarm):
    os.mkfifo(tmp_path / "net.py")
    one_line(capsys, train_args(tmp_path, "--model", f"{tmp_path / 'net.py'}:Net"), "is not a file")


def test_a_model_file_over_its_cap_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "net.py").write_text("# padding\n" * 100)
    monkeypatch.setitem(reading.CAPS, "model_source", 500)
    one_line(capsys, train_args(tmp_path, "--model", f"{tmp_path / 'net.py'}:Net"),
             "the limit for a model file is 500 bytes")


# ---------------------------------------------------------------- 6: tune with an own model


NET = textwrap.dedent("""\
    from torch import nn


    class Net(nn.Module):
        def __init__(self, width: int = 4):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                                      nn.Flatten(), nn.Linear(16 * width, 10))

        def forward(self, x):
            return self.body(x)


    def wrong_shape():
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 5))
    """)


def test_tune_trains_an_own_model_from_a_file(tmp_path, synthetic_env, capsys, monkeypatch):
    """Issue 31 defect 5: `tune --model FILE.py:Net` failed with an Optuna traceback and "unexpected KeyError"."""
    (tmp_path / "net.py").write_text(NET)
    monkeypatch.chdir(tmp_path)
    rc = main(["tune", "--model", f"{tmp_path / 'net.py'}:Net", "--trials", "1", "--epochs", "1",
               "--train-subset", "100", "--device", "cpu", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    out = tmp_path / "runs" / "tune-net-Net"  # the default --out: one folder named after the file and class
    best = json.loads((out / "summary.json").read_text())
    assert best["trials"]["complete"] == 1 and "dropout" not in best["best_params"]
    assert "Traceback" not in captured.err


def test_tune_refuses_a_bad_own_model_before_any_storage(tmp_path, synthetic_env, capsys):
    (tmp_path / "net.py").write_text(NET)
    one_line(capsys, ["tune", "--model", f"{tmp_path / 'net.py'}:wrong_shape", "--trials", "1", "--device", "cpu",
                      "--out", str(tmp_path / "t")], "fashionlab needs (N, 10) logits")
    assert not (tmp_path / "t").exists()


# ---------------------------------------------------------------- 7: "never overwrite" under a race


def test_export_never_replaces_a_file_that_appears_while_it_runs(run, tmp_path, capsys, monkeypatch):
    """Issue 31 defect 6: a file created at --out during the export was silently replaced."""
    from fashionlab import export

    target = tmp_path / "m.pt"
    real = export.check_images

    def users_file_appears(*args, **kwargs):  # mid-export: after the check at the start, before the write
        target.write_text("the user's own file\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "check_images", users_file_appears)
    one_line(capsys, ["export", str(run), "--format", "torchscript", "--out", str(target)],
             "appeared while the export ran", "does not overwrite")
    assert target.read_text() == "the user's own file\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".m.pt")) == []  # no temp file left


def test_export_writes_a_new_file_exclusively(run, tmp_path, capsys):
    assert main(["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 0
    assert (tmp_path / "m.pt").stat().st_size > 0
    with pytest.raises(FashionlabError, match="already exists"):
        export_again(run, tmp_path / "m.pt")


def export_again(run: Path, out: Path) -> None:
    from fashionlab.export import export_run

    export_run(run, "torchscript", out)


# ---------------------------------------------------------------- checkpoints through reading.py


@DEV_ZERO
def test_a_checkpoint_linked_to_dev_zero_is_refused(run, capsys, alarm):
    best = run / "checkpoints" / "best.pt"
    best.unlink()
    best.symlink_to("/dev/zero")
    one_line(capsys, ["evaluate", str(run)], "checkpoint", "character device")


def test_a_checkpoint_over_its_cap_is_one_line(run, capsys, monkeypatch):
    monkeypatch.setitem(reading.CAPS, "checkpoint", 1000)
    one_line(capsys, ["evaluate", str(run)], "the limit for a checkpoint is 1000 bytes")


def test_the_source_copy_of_a_run_is_hashed_through_reading(tmp_path):
    from fashionlab.models.external import sha256_of

    (tmp_path / "copy.py").write_text("x = 1\n")
    assert len(sha256_of(tmp_path / "copy.py")) == 64
    with pytest.raises(RunError, match="model file .*missing.py not found"):
        sha256_of(tmp_path / "missing.py", error=RunError)
