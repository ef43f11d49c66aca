"""--ensemble: members are ordinary runs on one split; the ensemble's best.pt predicts their mean softmax, resumes
member by member, and a failed start leaves nothing behind."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

import fashionlab.train
from fashionlab.cli import main
from fashionlab.config import build_config
from fashionlab.data import load_fashion_mnist
from fashionlab.errors import ConfigError, RunError
from fashionlab.evaluate import load_run_model, predict_logits
from fashionlab.export import export_run
from fashionlab.models import Ensemble
from fashionlab.runfolder import RunFolder
from fashionlab.runstart import Interrupted
from fashionlab.train import train


@pytest.fixture
def data(synthetic_data_dir):
    return load_fashion_mnist(synthetic_data_dir, verify=False, progress=False)


def config(out: Path, **options):
    return build_config(dict(model="cnn1", epochs=1, batch_size=100, device="cpu", seed=3, ensemble=2,
                             out=str(out)) | options)


@pytest.fixture
def ensemble_run(tmp_path, data) -> Path:
    return train(config(tmp_path / "ens"), data=data, verbose=False)


def test_ensemble_forward_is_the_log_of_the_members_mean_softmax():
    torch.manual_seed(0)
    members = [torch.nn.Linear(4, 10) for _ in range(3)]
    x = torch.randn(5, 4)
    mean = torch.stack([m(x).softmax(1) for m in members]).mean(0)
    torch.testing.assert_close(Ensemble(members)(x).softmax(1), mean)
    torch.testing.assert_close(Ensemble(members)(x).exp().sum(1), torch.ones(5))


def test_members_are_runs_on_one_split_and_best_pt_is_their_mean(ensemble_run, data):
    configs = [json.loads((ensemble_run / "members" / f"member{k}" / "config.json").read_text()) for k in (0, 1)]
    assert [(c["seed"], c["split_seed"], c["ensemble"]) for c in configs] == [(3, 3, 1), (4, 3, 1)]
    assert configs[0]["data"]["normalize"] == configs[1]["data"]["normalize"]  # one split, one set of statistics
    model, ckpt = load_run_model(ensemble_run)
    assert isinstance(model.net, Ensemble) and len(model.net.members) == 2 and ckpt["config"]["ensemble"] == 2
    probs = [predict_logits(load_run_model(ensemble_run / "members" / f"member{k}")[0], data.test_x,
                            device="cpu").softmax(1) for k in (0, 1)]
    torch.testing.assert_close(predict_logits(model, data.test_x, device="cpu").softmax(1), (probs[0] + probs[1]) / 2,
                               atol=1e-5, rtol=0)
    metrics = json.loads((ensemble_run / "test_metrics.json").read_text())
    assert metrics["val_acc"] == ckpt["val_acc"] > 0  # the ensemble's own, not a member's: kept beside its test figure
    assert metrics["accuracy"] == pytest.approx(float(((probs[0] + probs[1]).argmax(1) == data.test_y).float().mean()))
    rows = [RunFolder(ensemble_run / "members" / f"member{k}").history()[0] for k in (0, 1)]
    (mean,) = RunFolder(ensemble_run).history()
    assert mean["val_acc"] == pytest.approx((rows[0]["val_acc"] + rows[1]["val_acc"]) / 2, abs=1e-5)
    # metrics.csv keeps 6 significant digits, so the sum is exact to 6 digits, not to a fixed number of decimals:
    # members of 99.9876 s and 100.123 s sum to 200.111 (a slow machine once made them cross 100 s and abs=1e-4 fail).
    assert mean["seconds"] == pytest.approx(rows[0]["seconds"] + rows[1]["seconds"], rel=1e-5)
    assert not (ensemble_run / "members" / "member0" / "test_metrics.json").exists()  # the test set: once, whole


def test_an_ensemble_exports_and_the_export_matches(ensemble_run, tmp_path):
    r = export_run(ensemble_run, "onnx", tmp_path / "ens.onnx")
    assert r.argmax_equal == r.n_checked and r.max_abs_diff <= 1e-3


def test_interrupted_member_resumes_through_the_ensemble(tmp_path, data, monkeypatch, capsys):
    import fashionlab.train as train_mod

    real, calls = train_mod.train, []  # what train() hands the ensemble to train each member with

    def second_member_interrupted(member, **kw):
        calls.append(member.seed)
        if member.seed == 4 and calls.count(4) == 1:
            raise Interrupted("at epoch 1, step 0", signal.SIGINT, Path(member.out))
        return real(member, **kw)

    monkeypatch.setattr(train_mod, "train", second_member_interrupted)
    out = tmp_path / "ens"
    with pytest.raises(Interrupted) as e:
        train(config(out), data=data, verbose=False)
    assert f"of ensemble member 2: state saved; resume with: fashionlab train --resume {out}" in str(e.value)
    assert e.value.exit_code == 128 + signal.SIGINT
    first = (out / "members" / "member0" / "checkpoints" / "best.pt").stat().st_mtime_ns
    train(config(out), resume=True, data=data, verbose=False)
    assert calls == [3, 4, 4]  # member 0 was not trained again
    assert (out / "members" / "member0" / "checkpoints" / "best.pt").stat().st_mtime_ns == first
    assert (out / "test_metrics.json").is_file()


def test_a_finished_ensemble_resumes_without_training_and_the_cli_agrees(ensemble_run, monkeypatch):
    real = fashionlab.train.train

    def members_refused(cfg, *a, **k):  # the ensemble itself (from the CLI) runs; no member may
        if cfg.ensemble == 1:
            pytest.fail("a finished member was trained again")
        return real(cfg, *a, **k)

    monkeypatch.setattr(fashionlab.train, "train", members_refused)
    assert main(["train", "--resume", str(ensemble_run), "--quiet"]) == 0
    assert (ensemble_run / "test_metrics.json").is_file()


def test_a_failed_start_leaves_nothing(tmp_path, data, monkeypatch):
    def fail(member, **kw):
        raise RunError("boom")

    monkeypatch.setattr(fashionlab.train, "train", fail)
    with pytest.raises(RunError):
        train(config(tmp_path / "ens"), data=data, verbose=False)
    assert not (tmp_path / "ens").exists()


def test_bad_ensemble_options_and_damaged_checkpoints_are_refused(ensemble_run, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="--ensemble must be >= 1"):
        config(tmp_path / "x", ensemble=0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="without torchrun"):
        train(config(tmp_path / "y"), verbose=False)
    assert not (tmp_path / "y").exists()
    monkeypatch.delenv("WORLD_SIZE")
    folder = RunFolder(ensemble_run)
    ckpt = folder.load_checkpoint("best")
    ckpt["config"]["ensemble"] = 10**6
    folder.save_checkpoint("best", ckpt)
    with pytest.raises(RunError, match="damaged: its config's ensemble is 1000000"):
        load_run_model(ensemble_run)
