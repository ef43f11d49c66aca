"""fashionlab.tensorboard: events written for a fake run are read back with TensorBoard's own reader.

tensorboard is an optional extra (`make test` installs it, as CI does). Where it is not installed, only the tests
that write or read events are skipped, each with the reason; the error for a missing or unusable package and
hparams_of are tested everywhere. An installed package that fails to import is a failure, not a skip."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest

from fashionlab.errors import ConfigError
from fashionlab.tensorboard import TensorBoardLog, hparams_of, require

HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
needs_tensorboard = pytest.mark.skipif(
    not HAVE_TENSORBOARD, reason="tensorboard is not installed here: pip install 'fashionlab[tensorboard]'")

if HAVE_TENSORBOARD:
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import metadata as hp_metadata
    from tensorboard.util import tensor_util

CONFIG = {"model": "cnn2", "recipe": None, "label": "base", "epochs": 3, "batch_size": 128, "lr": 1e-3,
          "optimizer": "adam", "dropout": None, "tta": True, "channels_last": True, "seed": 7,
          "out": "/tmp/somewhere", "data_dir": None, "extra": {"width": 64},
          # provenance keys as config.json has them: not hyperparameters
          "data": {"n_train": 54000}, "versions": {"torch": "2.13.0"}, "command": "fashionlab train"}

ROWS = [
    {"epoch": 1, "train_loss": 0.9, "train_acc": 0.70, "val_loss": 0.6, "val_acc": 0.80, "lr": 1e-3, "seconds": 10.0},
    {"epoch": 2, "train_loss": 0.5, "train_acc": 0.82, "val_loss": 0.45, "val_acc": 0.86, "lr": 1e-3, "seconds": 9.5},
    {"epoch": 3, "train_loss": 0.4, "train_acc": 0.86, "val_loss": 0.42, "val_acc": 0.85, "lr": 5e-4, "seconds": 9.0},
]


def fake_test_metrics() -> dict:
    cm = [[0] * 10 for _ in range(10)]
    for i in range(10):
        cm[i][i] = 900 + i
        cm[i][(i + 1) % 10] = 100 - i
    return {"model": "cnn2", "accuracy": 0.9045, "macro_f1": 0.9031, "test_loss": 0.271, "confusion_matrix": cm,
            "checkpoint": "best", "best_epoch": 2, "epochs_run": 3}


def read(run_dir) -> ea.EventAccumulator:
    acc = ea.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0,
                                                                           ea.TENSORS: 0})
    acc.Reload()
    return acc


def scalars(acc: ea.EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def server_scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    """What `tensorboard --load_fast=false` serves: its loader keeps scalars as tensors and purges on restarts
    differently from the legacy EventAccumulator (only a second session start counts as a restart)."""
    acc = pea.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def session_start(acc: ea.EventAccumulator):
    content = acc.PluginTagToContent(hp_metadata.PLUGIN_NAME)
    return hp_metadata.parse_session_start_info_plugin_data(content[hp_metadata.SESSION_START_INFO_TAG])


@needs_tensorboard
def test_epochs_hparams_and_confusion_image_read_back(tmp_path):
    with TensorBoardLog(tmp_path, CONFIG) as tb:
        for row in ROWS:
            tb.epoch(row)
        tb.finish(fake_test_metrics())
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert [p for p in (tmp_path / "tensorboard").iterdir() if p.is_dir()] == []  # no timestamped subfolder

    acc = read(tmp_path)
    for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("accuracy/train", "train_acc"),
                     ("accuracy/val", "val_acc"), ("lr", "lr"), ("time/epoch_seconds", "seconds")):
        got = scalars(acc, tag)
        assert [s for s, _ in got] == [1, 2, 3], tag
        assert [v for _, v in got] == pytest.approx([r[key] for r in ROWS], rel=1e-6), tag

    # hparams: the session start holds the options (bools as bools, extra flattened; paths, provenance and
    # unset options left out), the final metrics are scalars at the last epoch, and the session ended.
    hp = session_start(acc).hparams
    assert hp["model"].string_value == "cnn2"
    assert hp["optimizer"].string_value == "adam"
    assert hp["lr"].number_value == pytest.approx(1e-3)
    assert hp["batch_size"].number_value == 128
    assert hp["tta"].WhichOneof("kind") == "bool_value" and hp["tta"].bool_value is True
    assert hp["extra.width"].number_value == 64
    assert not {"out", "data_dir", "recipe", "dropout", "data", "versions", "command"} & set(hp)
    content = acc.PluginTagToContent(hp_metadata.PLUGIN_NAME)
    end = hp_metadata.parse_session_end_info_plugin_data(content[hp_metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    assert hp_metadata.EXPERIMENT_TAG not in content  # TensorBoard builds the table from all runs' sessions
    assert scalars(acc, "hparam/test_accuracy") == [(3, pytest.approx(0.9045))]
    assert scalars(acc, "hparam/test_macro_f1") == [(3, pytest.approx(0.9031))]
    assert scalars(acc, "hparam/test_loss") == [(3, pytest.approx(0.271))]
    assert scalars(acc, "hparam/best_val_accuracy") == [(3, pytest.approx(0.86))]

    images = acc.Images("test/confusion_matrix")
    assert [im.step for im in images] == [3]
    assert images[0].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    assert images[0].width >= 400 and images[0].height >= 400


@needs_tensorboard
def test_no_validation_split_skips_nan_and_no_test_evaluation(tmp_path):
    nan = float("nan")
    with TensorBoardLog(tmp_path, CONFIG) as tb:
        for row in ROWS:
            tb.epoch(row | {"val_loss": nan, "val_acc": nan})
        tb.finish(None)  # evaluate_test=False: no test metrics, no image
    acc = read(tmp_path)
    tags = acc.Tags()
    assert "loss/val" not in tags["scalars"] and "accuracy/val" not in tags["scalars"]
    assert "hparam/best_val_accuracy" not in tags["scalars"] and "hparam/test_accuracy" not in tags["scalars"]
    assert [s for s, _ in scalars(acc, "loss/train")] == [1, 2, 3]
    assert tags["images"] == []


@needs_tensorboard
def test_resume_rewrites_history_and_shows_each_epoch_once(tmp_path):
    # First attempt: logged epochs 1-3 but was killed before epoch 3's checkpoint, so the resumed run
    # restarts from epoch 2's state and epoch 3 comes out differently.
    with TensorBoardLog(tmp_path, CONFIG) as tb:
        for row in ROWS:
            tb.epoch(row)
    redone = ROWS[2] | {"train_loss": 0.38, "val_acc": 0.87}
    epoch4 = {"epoch": 4, "train_loss": 0.35, "train_acc": 0.88, "val_loss": 0.4, "val_acc": 0.88, "lr": 2.5e-4,
              "seconds": 9.0}
    with TensorBoardLog(tmp_path, CONFIG | {"epochs": 4}, history=ROWS[:2]) as tb:
        tb.epoch(redone)
        tb.epoch(epoch4)
        tb.finish(fake_test_metrics() | {"epochs_run": 4})
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2  # same folder, new file

    acc = read(tmp_path)
    assert scalars(acc, "loss/train") == [(1, pytest.approx(0.9)), (2, pytest.approx(0.5)), (3, pytest.approx(0.38)),
                                          (4, pytest.approx(0.35))]
    assert server_scalars(tmp_path, "loss/train") == scalars(acc, "loss/train")
    assert [s for s, _ in scalars(acc, "accuracy/val")] == [1, 2, 3, 4]
    assert scalars(acc, "hparam/best_val_accuracy") == [(4, pytest.approx(0.88))]
    assert [im.step for im in acc.Images("test/confusion_matrix")] == [4]


@needs_tensorboard
def test_resume_of_a_run_logged_without_tensorboard_backfills(tmp_path):
    # --resume RUN --tensorboard on a run that had no TensorBoard log: the history comes from Progress.rows.
    with TensorBoardLog(tmp_path, CONFIG, history=ROWS[:2]) as tb:
        tb.epoch(ROWS[2])
    acc = read(tmp_path)
    assert [s for s, _ in scalars(acc, "lr")] == [1, 2, 3]
    assert [s for s, _ in server_scalars(tmp_path, "lr")] == [1, 2, 3]
    assert [v for _, v in scalars(acc, "lr")] == pytest.approx([1e-3, 1e-3, 5e-4])


@needs_tensorboard
def test_epochs_are_flushed_before_close(tmp_path):
    tb = TensorBoardLog(tmp_path, CONFIG)
    tb.epoch(ROWS[0])
    try:
        assert [s for s, _ in scalars(read(tmp_path), "loss/train")] == [1]  # a killed run keeps it
    finally:
        tb.close()
    tb.close()  # idempotent


@needs_tensorboard
def test_nothing_on_disk_before_the_first_epoch(tmp_path):
    # train() opens the log before the loop; a fresh start that fails before its first checkpoint must
    # leave the run folder as it found it (claim_run_dir removes only the files it knows).
    with TensorBoardLog(tmp_path / "run", CONFIG, history=[]):
        pass
    assert not (tmp_path / "run").exists()
    tb = TensorBoardLog(tmp_path / "run", CONFIG)
    tb.close()
    with pytest.raises(ValueError, match="closed"):
        tb.epoch(ROWS[0])
    assert not (tmp_path / "run").exists()


def test_hparams_of_mixed_values():
    hp = hparams_of({"scheduler": "cosine", "ema": 0.0, "patience": None, "channels_last": False, "label": "x",
                     "extra": {"k": [1, 2]}, "runtime": {"device": "cpu"},
                     # options that do not change results are not hyperparameters (the label is kept)
                     "device": "cpu", "compile": True, "checkpoint_every_steps": 100, "out": "r"})
    assert hp == {"scheduler": "cosine", "ema": 0.0, "channels_last": False, "label": "x", "extra.k": "[1, 2]"}


@pytest.mark.parametrize("blocked", ["tensorboard", "torch.utils.tensorboard"])
def test_missing_package_is_a_one_line_config_error(monkeypatch, tmp_path, blocked):
    monkeypatch.setitem(sys.modules, blocked, None)  # makes `import blocked` raise ModuleNotFoundError
    with pytest.raises(ConfigError) as err:
        require()
    msg = str(err.value)
    assert "\n" not in msg
    assert "pip install 'fashionlab[tensorboard]'" in msg
    with pytest.raises(ConfigError):
        TensorBoardLog(tmp_path / "run", CONFIG)
    assert not (tmp_path / "run").exists()  # nothing created


def module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


def unusable(name: str) -> types.ModuleType:
    """A module whose SummaryWriter fails to import with a multi-line error, as a protobuf clash does."""
    def __getattr__(attr):
        raise TypeError("Descriptors cannot be created directly.\nIf this call came from a _pb2.py file, ...")
    return module(name, __getattr__=__getattr__)


@pytest.mark.parametrize("packages, expected", [
    pytest.param("installed", None, marks=needs_tensorboard, id="installed"),
    pytest.param("importable", None, id="importable"),
    pytest.param("unusable", "--tensorboard: the tensorboard package cannot be used (Descriptors cannot be created "
                             "directly.); reinstall it: pip install 'fashionlab[tensorboard]'", id="unusable"),
])
def test_require_passes_exactly_when_both_imports_work(monkeypatch, tmp_path, packages, expected):
    """require() imports tensorboard and torch's SummaryWriter: it passes when both import (the installed package,
    or stand-ins), and any other import failure than a missing module is one line naming its first line."""
    if packages != "installed":
        monkeypatch.setitem(sys.modules, "tensorboard", module("tensorboard"))
        writer = (module("torch.utils.tensorboard", SummaryWriter=object) if packages == "importable"
                  else unusable("torch.utils.tensorboard"))
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", writer)
    if expected is None:
        assert require() is None
        assert TensorBoardLog(tmp_path / "run", CONFIG).writer is None  # opens nothing before the first epoch
    else:
        with pytest.raises(ConfigError) as err:
            require()
        assert str(err.value) == expected
        with pytest.raises(ConfigError, match="cannot be used"):
            TensorBoardLog(tmp_path / "run", CONFIG)
    assert not (tmp_path / "run").exists()


@needs_tensorboard
def test_train_with_tensorboard_then_resume_logs_each_epoch_once(tmp_path, synthetic_env, capsys):
    from fashionlab.cli import main

    run = tmp_path / "run"
    args = ["train", "--model", "cnn1", "--epochs", "2", "--batch-size", "64", "--device", "cpu", "--out", str(run),
            "--tensorboard", "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 0, capsys.readouterr().err
    acc = read(run)
    assert [step for step, _ in server_scalars(run, "accuracy/val")] == [1, 2, 3]
    assert "test/confusion_matrix" in acc.Tags()["images"]


def test_train_tensorboard_without_the_package_makes_no_folder(tmp_path, synthetic_env, capsys, monkeypatch):
    from fashionlab.cli import main

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    run = tmp_path / "run"
    assert main(["train", "--model", "cnn1", "--epochs", "1", "--out", str(run), "--tensorboard"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'fashionlab[tensorboard]'" in err and len(err.strip().splitlines()) == 1
    assert not run.exists()
