"""`fashionlab run --quick` is time-boxed: epochs and a stratified subset chosen from steps timed here."""

from __future__ import annotations

import json

import pytest

from fashionlab.config import build_config
from fashionlab.study import MIN_SUBSET, OVERHEAD, quick_choice


def configs(*models: str, batch: int = 100):
    return [build_config({"model": m, "batch_size": batch, "out": f"/tmp/x-{m}"}) for m in models]


def test_all_epochs_on_all_images_when_they_fit():
    c = configs("cnn1", "cnn2")
    choice = quick_choice(c, {"cnn1": 0.001, "cnn2": 0.002}, minutes=2, n_train=54_000)
    assert choice["epochs"] == 3 and choice["train_subset"] is None
    assert choice["estimate_seconds"] == pytest.approx(OVERHEAD * 3 * 540 * 0.003)


def test_fewer_epochs_then_a_subset_when_the_machine_is_slow():
    c = configs("cnn1", "cnn2")
    # 540 steps an epoch at 0.1 + 0.1 s: 108 s of steps per epoch, with the overhead 124 s; 2 minutes fit no epoch
    choice = quick_choice(c, {"cnn1": 0.1, "cnn2": 0.1}, minutes=2, n_train=54_000)
    assert choice["epochs"] == 2 and MIN_SUBSET <= choice["train_subset"] < 54_000
    assert choice["estimate_seconds"] <= 120 * 1.01
    # one epoch fits: 1 epoch on everything
    assert quick_choice(c, {"cnn1": 0.1, "cnn2": 0.1}, minutes=2.1, n_train=54_000)["epochs"] == 1
    # hopelessly slow: 1 epoch on the smallest subset, and the estimate says so honestly
    slow = quick_choice(c, {"cnn1": 10.0, "cnn2": 10.0}, minutes=2, n_train=54_000)
    assert slow["epochs"] == 1 and slow["train_subset"] == MIN_SUBSET and slow["estimate_seconds"] > 120


def test_the_cli_says_what_it_chose_and_the_runs_follow(tmp_path, synthetic_env, capsys, monkeypatch):
    import fashionlab.budget as budget
    from fashionlab.cli import main

    monkeypatch.setattr(budget, "measure_step_seconds", lambda cfg, **k: {"cnn1": 0.05, "cnn2": 0.2}[cfg.model])
    out = tmp_path / "job"
    assert main(["run", "--quick", "--quick-minutes", "0.05", "--out", str(out), "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "quick: one training step here takes cnn1 50 ms, cnn2 200 ms" in said
    assert "2 runs of 2 epochs on all 540 training images" in said
    for model in ("cnn1", "cnn2"):
        cfg = json.loads((out / f"{model}-seed0" / "config.json").read_text())
        # 540 training images, batch 128: 5 steps an epoch x (50 + 200 ms) x 1.15 = 1.44 s an epoch, so in 3 s
        # two epochs fit on every image and three do not
        assert cfg["epochs"] == 2 and cfg["train_subset"] is None
    assert main(["run", "--quick-minutes", "1"]) == 2  # without --quick


def test_steps_are_timed_on_the_datasets_images(monkeypatch):
    """--quick on your own data times the model built for its channels, size and classes, not Fashion-MNIST's."""
    import fashionlab.trainsetup as trainsetup
    from fashionlab.budget import measure_step_seconds

    seen = []
    real = trainsetup.train_step
    monkeypatch.setattr(trainsetup, "train_step", lambda model, opt, scaler, x, y, *a: seen.append(
        (tuple(x.shape), int(y.max()) if len(y) else -1, model(x).shape[1])) or real(model, opt, scaler, x, y, *a))
    cfg = build_config({"model": "cnn2", "batch_size": 64, "device": "cpu", "precision": "fp32"})
    assert measure_step_seconds(cfg, warmup=1, steps=1, shape=(3, 20, 12), n_classes=4) > 0
    assert {(s, c) for s, _, c in seen} == {((64, 3, 20, 12), 4)} and max(m for _, m, _ in seen) < 4
    seen.clear()
    measure_step_seconds(cfg, warmup=1, steps=1)
    assert {(s, c) for s, _, c in seen} == {((64, 1, 28, 28), 10)}
