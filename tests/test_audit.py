"""audit-labels and train --exclude (issue 29 item 2), on real data nobody here wrote: scikit-learn's handwritten
digits as an .npz dataset, with 8% of the training labels flipped on purpose (seeded). The flips are what the audit
must find; cleanlab itself, called on the saved out-of-sample probabilities, is the oracle for the ranking."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import fashionlab
from fashionlab.cli import main
from fashionlab.data.exclude import read_exclude
from fashionlab.data.load import load_dataset, split
from fashionlab.errors import ConfigError, RunError

# Small and fast: 16x16 images, batch 64, fp32 on the CPU; the same options everywhere, so the API call below finds
# the CLI's folds already trained.
TRAIN = ["--image-size", "16", "--model", "cnn1", "--epochs", "3", "--batch-size", "64", "--device", "cpu",
         "--precision", "fp32"]
TRAIN_KW = dict(image_size="16", model="cnn1", epochs=3, batch_size=64, device="cpu", precision="fp32")
FLIP_FRACTION = 0.08


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> SimpleNamespace:
    """digits.npz: 1,437 training digits (8% of them relabelled to another digit) and 360 clean test digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.int64) * 255 // 16).astype(np.uint8)
    y = d.target.astype(np.int64)
    test = np.arange(len(y)) % 5 == 0
    clean = y[~test]
    rng = np.random.default_rng(0)
    flipped = np.sort(rng.choice(len(clean), size=round(FLIP_FRACTION * len(clean)), replace=False))
    given = clean.copy()
    given[flipped] = (clean[flipped] + rng.integers(1, 10, len(flipped))) % 10
    path = tmp_path_factory.mktemp("noisy") / "digits.npz"
    np.savez(path, x_train=x[~test], y_train=given, x_test=x[test], y_test=y[test])
    return SimpleNamespace(path=path, given=given, clean=clean, flipped=flipped)


@pytest.fixture(scope="module")
def audited(noisy, tmp_path_factory) -> SimpleNamespace:
    """One audit through the command line, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("audit") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        code = main(["audit-labels", "--data", str(noisy.path), *TRAIN, "--folds", "3", "--out", str(out)])
    assert code == 0
    return SimpleNamespace(out=out, noisy=noisy)


def cli_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("error: ") and "\n" not in err, (code, err)
    return err


# ---------------------------------------------------------------------------------------------- --exclude


def test_exclude_leaves_exactly_those_items_out_of_training_and_not_out_of_validation(tmp_path):
    """split() with --exclude: the training portion loses exactly the listed items (those it held); validation is
    the base run's, item for item. Images are their own indices here, so the split's rows name the items."""
    n = 500
    ds = SimpleNamespace(classes=[str(c) for c in range(10)], train_x=torch.arange(n).view(n, 1, 1),
                         train_y=torch.arange(n) % 10, val_x=None)
    listed = tmp_path / "issues.csv"
    listed.write_text("index,given,suggested,score\n" + "".join(f"{i},a,b,0.1\n" for i in (3, 7, 7, 120, 499)))
    base = split(ds, 0.2, seed=1)
    less = split(ds, 0.2, seed=1, exclude=read_exclude(listed))
    kept = set(base.train_x.flatten().tolist())
    assert set(less.train_x.flatten().tolist()) == kept - {3, 7, 120, 499}
    assert torch.equal(less.val_x, base.val_x) and torch.equal(less.val_y, base.val_y)
    removed = len(kept & {3, 7, 120, 499})
    assert less.excluded["indices"] == 4 and less.excluded["removed_from_training"] == removed
    assert len(less.train_y) == len(base.train_y) - removed
    # with --train-subset, the subset is drawn from what is left
    sub = split(ds, 0.2, seed=1, train_subset=100, exclude=read_exclude(listed))
    assert len(sub.train_y) == 100 and not set(sub.train_x.flatten().tolist()) & {3, 7, 120, 499}


def test_train_exclude_records_what_it_left_out(noisy, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    listed = tmp_path / "drop.csv"
    listed.write_text("index\n" + "".join(f"{i}\n" for i in noisy.flipped))
    fast = dict(data=noisy.path, **TRAIN_KW | {"epochs": 1}, verbose=False)
    base = fashionlab.train(out=str(tmp_path / "base"), **fast)
    clean = fashionlab.train(out=str(tmp_path / "clean"), exclude=str(listed), **fast)
    record = clean.config["data"]["exclude"]
    assert clean.config["exclude"] == str(listed) and "exclude" not in base.config["data"]
    assert record["file"] == str(listed) and record["indices"] == len(noisy.flipped)
    assert len(record["sha256"]) == 64
    assert clean.config["data"]["n_val"] == base.config["data"]["n_val"]
    assert clean.config["data"]["n_train"] == base.config["data"]["n_train"] - record["removed_from_training"]
    assert 0 < record["removed_from_training"] <= len(noisy.flipped)

    # A resumed run trains on what it started on: a changed file is refused, in one line
    listed.write_text("index\n1\n")
    with pytest.raises(RunError, match="has changed since the run started") as info:
        fashionlab.train(resume=clean, epochs=2, verbose=False)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content, needle", [
    (None, "not found"),
    ("", "is empty (no header row)"),
    ("given,suggested\n1,2\n", "has no 'index' column"),
    ("index\n3\nabc\n", "data row 2: index must be a non-negative integer, got 'abc'"),
    ("index\n-1\n", "index must be a non-negative integer, got '-1'"),
    ("index\n2.5\n", "index must be a non-negative integer"),
    ("index\n5\n1437\n", "index 1437 is out of range; the dataset has 1,437 training items"),
    ("index\n\x00\n", "binary"),
    ("fifo", "named pipe (FIFO)"),
])
def test_bad_exclude_files_are_one_line_errors_and_create_nothing(noisy, tmp_path, capsys, content, needle):
    path = tmp_path / "exclude.csv"
    if content == "fifo":
        os.mkfifo(path)
    elif content is not None:
        path.write_text(content)
    out = tmp_path / "run"
    err = cli_error(capsys, ["train", "--data", str(noisy.path), *TRAIN, "--epochs", "1", "--exclude", str(path),
                             "--out", str(out)])
    assert needle in err and "--exclude file" in err, err
    assert not out.exists()


def test_run_variant_exclude_trains_without_the_items_and_compares(noisy, tmp_path, monkeypatch, capsys):
    """`run --variant clean=exclude=FILE`: the base and the variant on the same validation and test images,
    compared like every variant (Holm-adjusted); a bad file in a variant fails before anything trains."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    listed = tmp_path / "label_issues.csv"
    listed.write_text("index,given,suggested,score\n" + "".join(f"{i},x,y,0\n" for i in noisy.flipped))
    job = tmp_path / "job"
    common = ["run", "--models", "cnn1", "--epochs", "1", "--data", str(noisy.path), "--image-size", "16",
              "--device", "cpu"]
    assert main([*common, "--variant", f"clean=exclude={listed}", "--out", str(job)]) == 0
    base, clean = (json.loads((job / name / "config.json").read_text()) for name in ("cnn1-seed0", "cnn1-clean-seed0"))
    assert clean["exclude"] == str(listed) and base["exclude"] is None
    assert clean["data"]["exclude"]["indices"] == len(noisy.flipped)
    assert clean["data"]["n_val"] == base["data"]["n_val"]
    summary = json.loads((job / "report" / "summary.json").read_text())
    assert [m["label"] for m in summary["models"]] == ["cnn1", "clean"]
    assert len(summary["comparisons"]) == 1 and summary["comparisons"][0]["p_adjusted"] is not None

    bad = tmp_path / "bad.csv"
    bad.write_text("idx\n1\n")
    capsys.readouterr()
    err = cli_error(capsys, [*common, "--variant", f"clean=exclude={bad}", "--out", str(tmp_path / "job2")])
    assert "has no 'index' column" in err and not (tmp_path / "job2").exists()


# ---------------------------------------------------------------------------------------------- audit-labels


def test_the_audit_finds_the_flipped_labels(audited):
    header, rows = read_csv(audited.out / "label_issues.csv")
    assert header == ["index", "given", "suggested", "score"]
    flagged = np.array([int(r["index"]) for r in rows])
    found = np.intersect1d(flagged, audited.noisy.flipped)
    recall, precision = len(found) / len(audited.noisy.flipped), len(found) / len(flagged)
    assert recall >= 0.6 and precision >= 0.5, (recall, precision, len(flagged))


def test_the_index_is_the_training_items_file_order(audited):
    """`given` is the label the file gives the item at `index`, and for most flipped items `suggested` is the
    label it had before the flip."""
    _, rows = read_csv(audited.out / "label_issues.csv")
    noisy = audited.noisy
    assert all(r["given"] == str(noisy.given[int(r["index"])]) for r in rows)
    flips = [r for r in rows if int(r["index"]) in set(noisy.flipped.tolist())]
    restored = sum(r["suggested"] == str(noisy.clean[int(r["index"])]) for r in flips)
    assert restored >= 0.7 * len(flips), (restored, len(flips))


def test_the_ranking_is_cleanlabs_on_the_saved_probabilities(audited):
    """The oracle: cleanlab called directly on pred_probs.npy and labels.npy gives label_issues.csv, in order."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = np.load(audited.out / "pred_probs.npy").astype(np.float64)
    labels = np.load(audited.out / "labels.npy")
    assert probs.shape == (1437, 10) and np.array_equal(labels, audited.noisy.given)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    probs /= probs.sum(1, keepdims=True)
    ranked = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    scores = get_label_quality_scores(labels, probs)
    _, rows = read_csv(audited.out / "label_issues.csv")
    assert [int(r["index"]) for r in rows] == ranked.tolist()
    assert np.allclose([float(r["score"]) for r in rows], scores[ranked], rtol=1e-5, atol=1e-12)
    assert all(r["suggested"] == str(probs[int(r["index"])].argmax()) for r in rows)


def test_summary_and_gallery(audited):
    summary = json.loads((audited.out / "summary.json").read_text())
    _, rows = read_csv(audited.out / "label_issues.csv")
    assert summary["n_items"] == 1437 and summary["n_flagged"] == len(rows) and summary["folds"] == 3
    assert summary["model"] == "cnn1" and summary["fold_runs"] == [str(audited.out / f"fold-{k}") for k in (1, 2, 3)]
    assert sum(p["count"] for p in summary["pairs"]) == len(rows)
    first = summary["pairs"][0]
    assert first["count"] == sum(r["given"] == first["given"] and r["suggested"] == first["suggested"] for r in rows)
    html = (audited.out / "label_issues.html").read_text()
    shown = min(100, len(rows))
    assert html.count('<img src="data:image/png;base64,') == shown
    assert f"#{rows[0]['index']}<br>given: {rows[0]['given']}" in html and "http" not in html
    for k in (1, 2, 3):  # each fold is an ordinary run, without its own held-out fold
        config = json.loads((audited.out / f"fold-{k}" / "config.json").read_text())
        held = read_csv(audited.out / f"heldout-fold-{k}.csv")[1]
        data = config["data"]
        assert config["exclude"] == str(audited.out / f"heldout-fold-{k}.csv")
        assert data["exclude"]["indices"] == len(held)
        # the held-out items left training (all but those in the run's 10% validation split)
        assert data["n_train"] == 1437 - data["n_val"] - data["exclude"]["removed_from_training"]
        assert data["exclude"]["removed_from_training"] >= 0.8 * len(held)


def test_folds_are_stratified_and_cover_every_item_once(audited):
    held = [{int(r["index"]) for r in read_csv(audited.out / f"heldout-fold-{k}.csv")[1]} for k in (1, 2, 3)]
    assert sum(map(len, held)) == 1437 and set().union(*held) == set(range(1437))
    given = audited.noisy.given
    for c in range(10):
        counts = [sum(given[i] == c for i in h) for h in held]
        assert max(counts) - min(counts) <= 1, counts


def test_the_same_command_again_skips_finished_folds(audited, capsys):
    before = {k: (audited.out / f"fold-{k}" / "checkpoints" / "last.pt").stat().st_mtime_ns for k in (1, 2, 3)}
    issues = (audited.out / "label_issues.csv").read_text()
    assert main(["audit-labels", "--data", str(audited.noisy.path), *TRAIN, "--folds", "3",
                 "--out", str(audited.out)]) == 0
    out = capsys.readouterr().out
    assert out.count("already trained") == 3 and "trained 3 epochs" not in out
    assert before == {k: (audited.out / f"fold-{k}" / "checkpoints" / "last.pt").stat().st_mtime_ns
                      for k in (1, 2, 3)}
    assert (audited.out / "label_issues.csv").read_text() == issues


def test_a_fold_with_other_options_or_other_folds_is_refused(audited, capsys):
    base = ["audit-labels", "--data", str(audited.noisy.path), *TRAIN, "--out", str(audited.out)]
    err = cli_error(capsys, [*base, "--folds", "3", "--lr", "0.01"])
    assert "fold-1 was trained with other options (lr)" in err
    err = cli_error(capsys, [*base, "--folds", "4"])
    assert "holds an audit with other folds or data" in err
    assert not (audited.out / "heldout-fold-4.csv").exists()


def test_the_api_returns_the_issues(audited):
    """fashionlab.audit_labels with the CLI's options continues the CLI's audit: every fold is finished already."""
    result = fashionlab.audit_labels(data=audited.noisy.path, folds=3, out=audited.out, verbose=False, **TRAIN_KW)
    _, rows = read_csv(audited.out / "label_issues.csv")
    assert result["out"] == str(audited.out) and result["n_flagged"] == len(rows)
    assert [i["index"] for i in result["issues"]] == [int(r["index"]) for r in rows]
    assert set(result["issues"][0]) == {"index", "given", "suggested", "score"}


@pytest.mark.parametrize("argv, needle", [
    (["--folds", "1"], "--folds must be >= 2"),
    (["--folds", "0"], "--folds must be >= 2"),
    (["--exclude", "x.csv"], "--exclude is not for it"),
])
def test_audit_errors_are_one_line_and_create_nothing(noisy, tmp_path, capsys, argv, needle):
    out = tmp_path / "audit"
    err = cli_error(capsys, ["audit-labels", "--data", str(noisy.path), *TRAIN, *argv, "--out", str(out)])
    assert needle in err, err
    assert not out.exists()


def test_a_first_fold_that_cannot_start_leaves_nothing(noisy, tmp_path, capsys):
    out = tmp_path / "audit"
    err = cli_error(capsys, ["audit-labels", "--data", str(noisy.path), *TRAIN, "--val-fraction", "0.995",
                             "--out", str(out)])
    assert "images to train on" in err and not out.exists()


def test_audit_out_inside_the_dataset_folder_is_refused(tmp_path, capsys):
    from test_own_data import write_digits

    data = write_digits(tmp_path / "digits", splits=True, indices=range(200))
    err = cli_error(capsys, ["audit-labels", "--data", str(data), *TRAIN, "--out", str(data / "audit")])
    assert "inside the dataset folder" in err and not (data / "audit").exists()


def test_without_cleanlab_the_error_says_how_to_install_it(noisy, tmp_path, capsys, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "cleanlab" or m.startswith("cleanlab.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # import cleanlab -> ModuleNotFoundError
    out = tmp_path / "audit"
    err = cli_error(capsys, ["audit-labels", "--data", str(noisy.path), *TRAIN, "--out", str(out)])
    assert "pip install 'fashionlab[audit]'" in err and not out.exists()
    with pytest.raises(ConfigError, match=r"fashionlab\[audit\]"):
        fashionlab.audit_labels(data=noisy.path, out=out, **TRAIN_KW)


def test_the_dataset_reads_its_training_items_in_file_order(noisy):
    """The fixture itself: the order the indices count is the file's (load_dataset gives y_train as written)."""
    ds = load_dataset(str(noisy.path), image_size="16", progress=False)
    assert np.array_equal(ds.train_y.numpy(), noisy.given) and ds.val_x is None


def test_an_interrupted_fold_resumes_where_it_stopped(noisy, tmp_path, capsys, monkeypatch):
    """SIGINT in fold 1's second epoch: the audit stops with its one line and exit code 130; the same command
    again resumes fold 1 from its last checkpoint (epoch 1 kept as it was), then trains fold 2."""
    import signal

    import fashionlab.train as training

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    real = training.train_epoch
    calls = []

    def first_epoch_then_sigint(*args, **kwargs):
        row = real(*args, **kwargs)
        calls.append(row)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # StopFlag's handler: the next step saves last.pt and stops
        return row

    monkeypatch.setattr(training, "train_epoch", first_epoch_then_sigint)
    out = tmp_path / "audit"
    argv = ["audit-labels", "--data", str(noisy.path), *TRAIN, "--epochs", "2", "--folds", "2", "--out", str(out)]
    assert main(argv) == 128 + signal.SIGINT
    err = capsys.readouterr().err.strip()
    assert "SIGINT" in err and "run the same audit-labels command again" in err and "\n" not in err
    first = (out / "fold-1" / "metrics.csv").read_text()
    assert len(first.splitlines()) == 2 and not (out / "fold-2").exists()

    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "fold 1/2: resumed and finished 2 epochs" in printed and "fold 2/2: trained 2 epochs" in printed
    assert (out / "fold-1" / "metrics.csv").read_text().startswith(first)
    assert (out / "summary.json").is_file()
