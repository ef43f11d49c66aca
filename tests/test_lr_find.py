"""`fashionlab lr-find`: the LR range test's curve, suggestion, outputs, and that it leaves nothing behind."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from conftest import blind
from fashionlab.cli import main
from fashionlab.config import build_config
from fashionlab.data import load_fashion_mnist
from fashionlab.lr_find import range_test, smooth, suggest
from fashionlab.train import train


def test_suggest_picks_the_steepest_descent_before_the_minimum():
    lrs = np.logspace(-6, 1, 141)
    x = np.log10(lrs)
    # Falls fastest at lr 1e-3, bottoms out near 0.3, then blows up.
    loss = 2.3 - 2 / (1 + np.exp(-3 * (x + 3))) + 20 * np.clip(x + 0.5, 0, None) ** 2
    noisy = loss + np.random.default_rng(0).normal(0, 0.03, len(loss))
    suggested, lowest = suggest(lrs.tolist(), smooth(noisy.tolist()))
    assert suggested == pytest.approx(1e-3, rel=0.3)
    assert 0.1 < lowest < 1
    assert suggest(lrs.tolist(), np.linspace(1, 5, len(lrs)).tolist()) == (None, lrs[0])  # never descends


def test_cli_writes_curve_csv_json_and_prints_the_suggestion(tmp_path, synthetic_env, capsys):
    out = tmp_path / "lr"
    args = ["lr-find", "--model", "cnn1", "--batch-size", "32", "--steps", "60", "--start-lr", "1e-5",
            "--end-lr", "10", "--device", "cpu", "--out", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "lr_find.json").read_text())
    assert summary["diverged"] and summary["steps_run"] < 60  # Adam at lr 10 blows up
    assert 1e-5 <= summary["suggested_lr"] < summary["min_loss_lr"] <= summary["stopped_at_lr"]
    assert f"suggested lr {summary['suggested_lr']:.2e}" in printed
    with open(out / "lr_find.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["steps_run"] and list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"]
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] == pytest.approx(1e-5) and all(b > a for a, b in zip(lrs, lrs[1:]))
    assert (out / "lr_find.png").stat().st_size > 10_000
    assert main(args) == 2  # never overwrites an earlier curve
    assert "already holds an LR range test" in capsys.readouterr().err


def test_an_out_that_is_a_file_or_a_folder_of_the_users_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    import fashionlab.lr_find

    monkeypatch.setattr(fashionlab.lr_find, "range_test", lambda *a, **k: pytest.fail("worked before the check"))
    afile, mine = tmp_path / "afile", tmp_path / "mine"
    afile.write_text("mine")
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for out in (afile, afile / "under", mine):
        assert main(["lr-find", "--model", "cnn1", "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "--out" in err and len(err.strip().splitlines()) == 1, err
    assert afile.read_text() == "mine" and [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_bad_range_is_a_one_line_error(capsys):
    assert main(["lr-find", "--model", "cnn1", "--start-lr", "1", "--end-lr", "0.1"]) == 2
    assert capsys.readouterr().err.startswith("error: need 0 < --start-lr < --end-lr")


def test_leaves_no_state_behind_and_never_reads_the_test_set(tmp_path, synthetic_data_dir):
    """A later training in the same process is exactly what it would have been without the range test."""
    data = load_fashion_mnist(synthetic_data_dir, verify=False, progress=False)
    base = dict(model="cnn1", epochs=1, batch_size=32, train_subset=200, augment="flip,crop", device="cpu")
    before = train(build_config(base | {"out": str(tmp_path / "before")}), data=data, verbose=False,
                   evaluate_test=False)
    rng = torch.get_rng_state()
    result = range_test(build_config(base), blind(data), steps=30, start_lr=1e-4, end_lr=1.0)
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) > 0
    assert torch.equal(torch.get_rng_state(), rng)
    after = train(build_config(base | {"out": str(tmp_path / "after")}), data=data, verbose=False,
                  evaluate_test=False)
    rows = [[{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(run / "metrics.csv"))]
            for run in (before, after)]
    assert rows[0] == rows[1]
