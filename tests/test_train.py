"""Training on synthetic data: the run folder, determinism, resume, NaN guard, locking, test isolation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from fashionlab.config import build_config
from fashionlab.data import load_fashion_mnist
from fashionlab.errors import ConfigError, RunError
from fashionlab.runformat import load_checkpoint
from fashionlab.runstart import Interrupted, TrainingDiverged, resume_config
from fashionlab.train import train

RUN_FILES = ["config.json", "metrics.csv", "checkpoints/best.pt", "checkpoints/last.pt", "test_metrics.json",
             "classification_report.txt", "confusion_matrix.png", "curves.png", "test_predictions.npy",
             "test_probs.npy"]


@pytest.fixture
def data(synthetic_data_dir):
    return load_fashion_mnist(synthetic_data_dir, verify=False, progress=False)


def cfg(tmp_path, name="run", **kw):
    base = dict(model="cnn1", epochs=2, batch_size=32, lr=2e-3, val_fraction=0.2, augment="flip,rotate,crop,erase",
                out=str(tmp_path / name), device="cpu")
    return build_config(base | kw)


def metrics_without_seconds(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_run_folder_is_complete(tmp_path, data):
    run = train(cfg(tmp_path), data=data, verbose=False)
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    rows = metrics_without_seconds(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    with open(run / "metrics.csv") as f:
        assert f.readline().strip() == "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds"
    m = json.loads((run / "test_metrics.json").read_text())
    for key in ("model", "recipe", "seed", "accuracy", "macro_f1", "per_class", "confusion_matrix", "n_test"):
        assert key in m
    best = max(rows, key=lambda r: float(r["val_acc"]))  # best.pt: the first epoch with the highest val_acc
    assert (m["best_epoch"], m["val_acc"]) == (int(best["epoch"]), pytest.approx(float(best["val_acc"]), abs=1e-6))
    preds = np.load(run / "test_predictions.npy")
    assert preds.shape == (m["n_test"],) == (200,)
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 200 and np.trace(cm) / 200 == pytest.approx(m["accuracy"])
    assert (preds == data.test_y.numpy()).mean() == pytest.approx(m["accuracy"])
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["test_sha256"] == data.test_sha256 == m["test_sha256"]
    assert config["versions"]["torch"] == torch.__version__
    assert config["runtime"] == {"device": "cpu", "precision": config["runtime"]["precision"], "world_size": 1,
                                 "threads": torch.get_num_threads(), "data_loading": "memory"}
    assert config["runtime"]["precision"] in ("fp32", "bf16")
    git = config["versions"]["git"]  # the tests run from a checkout
    assert len(git["commit"]) == 40 and isinstance(git["dirty"], bool)


def test_learns_the_synthetic_task(tmp_path, data):
    run = train(cfg(tmp_path, epochs=4, augment="none"), data=data, verbose=False)
    # 10 classes: chance is 10%; the class is a bright bar's row, which a CNN finds quickly.
    assert json.loads((run / "test_metrics.json").read_text())["accuracy"] > 0.5


def test_same_seed_same_metrics_different_seed_differs(tmp_path, data):
    a = train(cfg(tmp_path, "a"), data=data, verbose=False)
    b = train(cfg(tmp_path, "b"), data=data, verbose=False)
    c = train(cfg(tmp_path, "c", seed=1), data=data, verbose=False)
    assert metrics_without_seconds(a) == metrics_without_seconds(b)
    assert metrics_without_seconds(a) != metrics_without_seconds(c)
    ma, mb = (json.loads((r / "test_metrics.json").read_text()) for r in (a, b))
    assert ma["accuracy"] == mb["accuracy"] and ma["confusion_matrix"] == mb["confusion_matrix"]


def test_test_set_never_used_during_training(tmp_path, data, monkeypatch):
    """Model selection and LR schedules see validation data only: the test tensors are read only by the
    final evaluation, after the last epoch."""
    import fashionlab.evaluate as evaluate
    import fashionlab.train as train_mod

    events = []
    real_epoch, real_eval = train_mod.train_epoch, train_mod.evaluate_run
    monkeypatch.setattr(train_mod, "train_epoch", lambda *a, **k: (events.append("epoch"), real_epoch(*a, **k))[1])
    monkeypatch.setattr(train_mod, "evaluate_run", lambda *a, **k: (events.append("test"), real_eval(*a, **k)))
    seen = []
    real_predict = evaluate.predict_logits

    def spy(model, x, *a, **k):
        seen.append(x)
        return real_predict(model, x, *a, **k)

    import fashionlab.trainsetup as trainsetup

    monkeypatch.setattr(trainsetup, "predict_logits", spy)  # what validation reads
    train(cfg(tmp_path, scheduler="plateau"), data=data, verbose=False)
    assert events == ["epoch", "epoch", "test"]
    test_ptr = data.test_x.data_ptr()
    assert seen and all(x.data_ptr() != test_ptr and x.shape[0] == 120 for x in seen)  # 20% of 600 = val


def test_refuses_existing_run_and_concurrent_writer(tmp_path, data):
    from fashionlab.files import RunLock, make_folder

    run = train(cfg(tmp_path, epochs=1), data=data, verbose=False)
    with pytest.raises(RunError, match="already holds a run"):
        train(cfg(tmp_path, epochs=1), data=data, verbose=False)
    busy = tmp_path / "busy"
    make_folder(busy)  # another training made it and holds its lock, before writing its config.json
    with RunLock(busy), pytest.raises(RunError, match="in use by another training"):
        train(cfg(tmp_path, "busy", epochs=1), data=data, verbose=False)
    assert (run / "metrics.csv").exists()


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, data, monkeypatch):
    import fashionlab.train as train_mod

    run = train(cfg(tmp_path, "nan", epochs=1), data=data, verbose=False)
    good = load_checkpoint(run / "checkpoints" / "last.pt")
    real_input = train_mod.to_input
    calls = {"n": 0}

    def poisoned(*a, **k):  # an inf pixel in the 5th batch of epoch 2
        calls["n"] += 1
        x = real_input(*a, **k)
        return x * float("inf") if calls["n"] == 5 else x

    monkeypatch.setattr(train_mod, "to_input", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at epoch 2, step 5 \(lr") as info:
        train(resume_config(run, {"epochs": 3}), data=data, verbose=False, resume=True)
    assert info.value.exit_code != 0 and "last.pt" in str(info.value)
    after = load_checkpoint(run / "checkpoints" / "last.pt")
    assert after["epoch"] == good["epoch"] == 1
    assert all(torch.equal(after["model"][k], good["model"][k]) for k in good["model"])


def test_huge_lr_diverges_cleanly(tmp_path, data):
    with pytest.raises(TrainingDiverged, match="loss became"):
        train(cfg(tmp_path, "lr", lr=1e30, optimizer="sgd", scheduler="none", epochs=2), data=data, verbose=False)


def test_on_nan_skip_counts_and_continues(tmp_path, data, monkeypatch):
    import fashionlab.train as train_mod

    real_step = train_mod.train_step
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        return (float("nan"), 0) if calls["n"] == 3 else real_step(*a, **k)

    monkeypatch.setattr(train_mod, "train_step", flaky)
    run = train(cfg(tmp_path, on_nan="skip", epochs=1), data=data, verbose=False)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["progress"]["nan_skipped"] == 1


@pytest.mark.parametrize("options", [{}, {"whiten": True}, {"lookahead": 3}])
def test_resume_after_interrupt_is_identical(tmp_path, data, monkeypatch, options):
    """Stop mid-epoch (as SIGINT would), resume, and match an uninterrupted run exactly (a data-dependent init
    is not recomputed on resume: the checkpoint's weights replace it; Lookahead's slow weights, mid-cycle at the
    interrupt after step 20, come back from last.pt)."""
    import fashionlab.train as train_mod
    import fashionlab.trainsetup as trainsetup

    whitened = []
    real_whiten = trainsetup.whiten_first_conv
    monkeypatch.setattr(trainsetup, "whiten_first_conv", lambda *a, **k: whitened.append(1) or real_whiten(*a, **k))
    full = train(cfg(tmp_path, "full", epochs=3, ema=0.9, scheduler="onecycle", **options), data=data, verbose=False)
    real_step = train_mod.train_step
    calls = {"n": 0}

    def interrupt_at_20(*a, **k):
        calls["n"] += 1
        out = real_step(*a, **k)
        if calls["n"] == 20:  # epoch 2 of 3 (15 steps per epoch)
            import signal

            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(train_mod, "train_step", interrupt_at_20)
    c = cfg(tmp_path, "cut", epochs=3, ema=0.9, scheduler="onecycle", **options)
    with pytest.raises(Interrupted, match="resume with: fashionlab train --resume") as info:
        train(c, data=data, verbose=False)
    assert info.value.exit_code == 130
    assert not (tmp_path / "cut" / "test_metrics.json").exists()
    monkeypatch.setattr(train_mod, "train_step", real_step)
    cut = train(resume_config(tmp_path / "cut", {}), data=data, verbose=False, resume=True)
    assert len(whitened) == (2 if options.get("whiten") else 0)  # the full run and the cut run's start, not its resume
    assert metrics_without_seconds(full) == metrics_without_seconds(cut)
    a, b = (json.loads((r / "test_metrics.json").read_text()) for r in (full, cut))
    assert a["accuracy"] == b["accuracy"] and a["confusion_matrix"] == b["confusion_matrix"]


def test_resume_refuses_changed_options(tmp_path, data):
    from fashionlab.runstart import resume_config

    run = train(cfg(tmp_path, epochs=1), data=data, verbose=False)
    with pytest.raises(ConfigError, match="cannot change lr"):
        resume_config(run, {"lr": 0.1})
    assert resume_config(run, {"epochs": 5}).epochs == 5
    cycled = train(cfg(tmp_path, "cycled", epochs=1, scheduler="onecycle"), data=data, verbose=False)
    with pytest.raises(ConfigError, match="cannot change --epochs of a run with a onecycle schedule"):
        resume_config(cycled, {"epochs": 5})


@pytest.mark.parametrize("scheduler", ["none", "plateau", "cosine", "onecycle"])
def test_schedulers_and_optimizers_run(tmp_path, data, scheduler):
    opt = {"none": "sgd", "plateau": "adam", "cosine": "adamw", "onecycle": "adamw"}[scheduler]
    run = train(cfg(tmp_path, epochs=2, scheduler=scheduler, optimizer=opt, warmup_epochs=1, label_smoothing=0.1,
                    train_subset=200, grad_clip=1.0, tta=True), data=data, verbose=False)
    lrs = [float(r["lr"]) for r in metrics_without_seconds(run)]
    assert len(lrs) == 2 and all(lr > 0 for lr in lrs), lrs
    if scheduler in ("cosine", "onecycle"):
        assert lrs[1] < lrs[0]


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5])
def test_one_cycle_survives_a_run_of_a_few_steps(steps):
    from fashionlab.trainsetup import make_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched, per_step = make_scheduler(build_config({"scheduler": "onecycle", "epochs": 1, "lr": 0.1}), opt, steps)
    for _ in range(steps):
        opt.step()
        sched.step()
    assert per_step and all(0 < g["lr"] <= 0.1 for g in opt.param_groups)


def test_the_model_carries_its_normalization_and_old_checkpoints_still_load(tmp_path, data):
    from fashionlab.evaluate import load_run_model, predict_logits

    run = train(cfg(tmp_path, epochs=1), data=data, verbose=False)
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    norm = ckpt["normalize"]
    assert ckpt["model"]["normalize.mean"].item() == pytest.approx(norm["mean"])
    assert ckpt["model"]["normalize.std"].item() == pytest.approx(norm["std"])
    new, _ = load_run_model(run, "best")
    expected = predict_logits(new, data.test_x, device="cpu")
    # A checkpoint from before the model held its normalization: bare architecture keys + ckpt["normalize"].
    ckpt["model"] = {k.removeprefix("net."): v for k, v in ckpt["model"].items() if k.startswith("net.")}
    torch.save(ckpt, run / "checkpoints" / "best.pt")
    old, _ = load_run_model(run, "best")
    assert torch.equal(predict_logits(old, data.test_x, device="cpu"), expected)
