"""The command line: bad input is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fashionlab.cli import main


def fashionlab(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "fashionlab", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error:"), err
    for n in needles:
        assert n in err, err


@pytest.mark.parametrize("args, needle", [
    (["train", "--model", "nope"], "unknown model 'nope'"),
    (["train", "--model", "cnn1", "--epochs", "-3"], "--epochs must be >= 1"),
    (["train", "--model", "cnn1", "--val-fraction", "1.5"], "--val-fraction must be in [0, 1)"),
    (["train", "--model", "cnn1", "--epochs", "ten"], "invalid int value"),
    (["train", "--model", "cnn1", "--augment", "flip,spin"], "unknown augmentation 'spin'"),
    (["train", "--model", "cnn1", "--optimizer", "lion"], "--optimizer must be one of"),
    (["train", "--recipe", "nope"], "unknown recipe 'nope'"),
    (["train", "--model", "cnn1", "--config", "/nonexistent.yaml"], "config file /nonexistent.yaml not found"),
    (["train", "--resume", "/nonexistent-run"], "nothing to resume"),
    (["evaluate", "/nonexistent-run"], "not a run folder"),
    (["compare", "/nonexistent-a", "/nonexistent-b"], "nonexistent-a"),
    (["run", "--models", "cnn1,nope"], "unknown model or recipe 'nope'"),
    (["bogus"], "invalid choice"),
])
def test_bad_input_is_one_line(args, needle, capsys):
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own errors exit from inside the parser
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert "Traceback" not in err and len(err.splitlines()) == 1 and needle in err, err


def test_missing_data_dir_is_one_line(tmp_path):
    proc = fashionlab("train", "--model", "cnn1", "--epochs", "1", "--data-dir", str(tmp_path / "missing"),
                      "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, "missing")
    assert not (tmp_path / "run" / "config.json").exists()


def test_corrupt_idx_is_one_line(tmp_path, synthetic_data_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in synthetic_data_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    victim = bad / "train-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:500])
    proc = fashionlab("train", "--model", "cnn1", "--epochs", "1", "--data-dir", str(bad), "--out",
                      str(tmp_path / "run"), env={"FASHIONLAB_SKIP_VERIFY": "1"})
    assert_one_line_error(proc, "train-images-idx3-ubyte.gz")
    assert victim.stat().st_size == 500  # the user's file is left as it was


def test_config_file_and_flag_precedence(tmp_path, synthetic_env):
    conf = tmp_path / "c.yaml"
    conf.write_text("model: cnn1\nepochs: 3\nbatch-size: 64\nlr: 0.01\naugment: none\n")
    proc = fashionlab("train", "--config", str(conf), "--epochs", "1", "--device", "cpu", "--quiet",
                      "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["epochs"], saved["batch_size"], saved["lr"], saved["augment"]) == (1, 64, 0.01, "none")
    assert saved["recipe"] == "cnn1"  # the model's own recipe supplies the other defaults
    assert saved["command"].startswith("fashionlab train --config")


def test_train_then_evaluate_last(tmp_path, synthetic_env):
    run = tmp_path / "run"
    proc = fashionlab("train", "--model", "cnn2", "--epochs", "1", "--batch-size", "64", "--device", "cpu",
                      "--quiet", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    proc = fashionlab("evaluate", str(run), "--checkpoint", "last")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "test_metrics.json").read_text())["checkpoint"] == "last"
    if not torch.cuda.is_available():  # a device this machine lacks: one line, and the evaluation above is kept
        before = (run / "test_metrics.json").read_bytes()
        proc = fashionlab("evaluate", str(run), "--device", "cuda")
        assert proc.returncode == 2 and proc.stderr.startswith("error: --device cuda: no CUDA GPU"), proc.stderr
        assert (run / "test_metrics.json").read_bytes() == before


def by_hand(layers: list[tuple]) -> tuple[int, float]:
    """(parameters, forward MFLOPs per image) of a plain CNN from its layer list, counted by hand:
    ("conv", c_in, c_out, k, out_side, bias), ("linear", n_in, n_out, bias), ("bn", channels). A conv makes
    c_out*c_in*k*k multiply-adds per output pixel, a linear layer n_in*n_out; 2 FLOPs per multiply-add
    (bias adds and batch norm not counted, as torch's FlopCounterMode does not); batch norm has 2 parameters
    a channel (its running statistics are buffers)."""
    params = macs = 0
    for kind, *shape in layers:
        if kind == "conv":
            c_in, c_out, k, side, bias = shape
            params += c_out * c_in * k * k + (c_out if bias else 0)
            macs += c_out * c_in * k * k * side * side
        elif kind == "linear":
            n_in, n_out, bias = shape
            params += n_in * n_out + (n_out if bias else 0)
            macs += n_in * n_out
        else:
            params += 2 * shape[0]
    return params, 2 * macs / 1e6


CNN1 = [("conv", 1, 32, 3, 28, True), ("conv", 32, 64, 3, 14, True), ("linear", 64 * 7 * 7, 10, True)]
CNN2 = [("conv", 1, 32, 3, 28, False), ("bn", 32), ("conv", 32, 32, 3, 28, False), ("bn", 32),
        ("conv", 32, 64, 3, 14, False), ("bn", 64), ("conv", 64, 64, 3, 14, False), ("bn", 64),
        ("conv", 64, 128, 3, 7, False), ("bn", 128), ("conv", 128, 128, 3, 7, False), ("bn", 128),
        ("linear", 128 * 3 * 3, 256, False), ("bn", 256), ("linear", 256, 10, True)]


def test_models_lists_params_and_mflops():
    """`fashionlab models` prints each model's parameter count and forward MFLOPs per 28x28 image: for CNN_1 and
    CNN_2, the figures worked out by hand from their architectures (50,186 and 584,874 parameters; 7.7 and 58.8
    MFLOPs)."""
    from fashionlab.models import MODELS

    proc = fashionlab("models", env={"COLUMNS": "250"})
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 5:
            rows[cells[0]] = cells
    assert set(rows) == set(MODELS)
    assert "global max pool" in rows["fastnet"][4] and rows["cnn1"][4] != rows["fastnet"][4]  # what --data changes
    for name, layers in (("cnn1", CNN1), ("cnn2", CNN2)):
        params, mflops = by_hand(layers)
        assert rows[name][1] == f"{params:,}", (name, rows[name])
        assert float(rows[name][2]) == pytest.approx(mflops, abs=0.05), (name, rows[name], mflops)
    assert (rows["cnn1"][1], rows["cnn1"][2]) == ("50,186", "7.7")  # the by-hand sums, written out
    assert (rows["cnn2"][1], rows["cnn2"][2]) == ("584,874", "58.8")


def test_data_command_summary_and_grid(tmp_path, synthetic_env):
    grid = tmp_path / "grid.png"
    proc = fashionlab("data", "--grid", str(grid))
    assert proc.returncode == 0, proc.stderr
    assert "$FASHIONLAB_DATA" in proc.stdout and "Ankle boot" in proc.stdout
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["run", "--help"], ["compare", "--help"],
                                  ["data", "--help"], ["--version"]])
def test_help_starts_without_torch(args):
    code = ("import sys\nfrom fashionlab.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "no torch", proc.stderr
    assert "usage: fashionlab" in proc.stdout or "fashionlab 0." in proc.stdout


def test_plugin_help_still_lists_its_flags():
    proc = fashionlab("predict", "--help")
    assert proc.returncode == 0 and "--top-k" in proc.stdout


@pytest.mark.parametrize("args, needle", [
    (["--model", "cnn2", "--batch-size", "1"], "--batch-size 1: cnn2 has batch norm"),
    (["--model", "cnn1", "--val-fraction", "0.995"], "leaves 0 of 600 images to train on; at least 10"),
])
def test_options_that_would_fail_in_training_are_one_line_and_leave_nothing(args, needle, tmp_path, synthetic_env,
                                                                           capsys):
    out = tmp_path / "run"
    assert main(["train", *args, "--epochs", "1", "--device", "cpu", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
