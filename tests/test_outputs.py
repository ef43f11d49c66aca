"""Nothing the user gave is lost: output paths are checked before any work, a failed start leaves nothing
behind, and fashionlab only cleans or overwrites files it made (docs/reliability.md, "Ownership")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fashionlab.cli import main
from fashionlab.config import build_config
from fashionlab.data import load_fashion_mnist
from fashionlab.errors import RunError
from fashionlab.files import MARKER
from fashionlab.runformat import load_checkpoint
from fashionlab.runstart import TrainingDiverged, resume_config
from fashionlab.train import train
from folder_snapshot import snapshot


@pytest.fixture
def data(synthetic_data_dir):
    return load_fashion_mnist(synthetic_data_dir, verify=False, progress=False)


def cfg(out: Path, **kw):
    base = dict(model="cnn1", epochs=1, batch_size=64, val_fraction=0.2, augment="none", out=str(out), device="cpu")
    return build_config(base | kw)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "unexpected" not in err, err
    return err


def test_train_into_a_users_folder_touches_nothing(tmp_path, data):
    mine = tmp_path / "my-folder"
    (mine / "sub").mkdir(parents=True)
    for name in (".notes.tmp-1", "sub/.draft.tmp-2", "thesis.txt"):  # temp-like names fashionlab once deleted
        (mine / name).write_text(f"the user's {name}\n")
    before = snapshot(mine)
    with pytest.raises(RunError, match="not empty and was not made by fashionlab"):
        train(cfg(mine), data=data, verbose=False)
    assert snapshot(mine) == before  # nothing deleted, no .lock or marker left behind


def test_train_into_a_file_is_refused_before_work(tmp_path, data):
    target = tmp_path / "results.txt"
    target.write_text("keep me\n")
    with pytest.raises(RunError, match="is a file, not a folder"):
        train(cfg(target), data=data, verbose=False)
    assert target.read_text() == "keep me\n"


def test_a_failed_start_leaves_nothing_behind(tmp_path, data, monkeypatch):
    import fashionlab.train as train_mod

    real = train_mod.to_input
    monkeypatch.setattr(train_mod, "to_input", lambda *a, **k: real(*a, **k) * float("nan"))  # diverges at step 1
    out = tmp_path / "new" / "run"
    with pytest.raises(TrainingDiverged):
        train(cfg(out), data=data, verbose=False)
    assert not (tmp_path / "new").exists()
    monkeypatch.setattr(train_mod, "to_input", real)
    train(cfg(out), data=data, verbose=False)  # the same --out then works: not "already holds a run"
    assert (out / "test_metrics.json").is_file() and (out / MARKER).is_file()


def test_a_failed_start_in_an_empty_folder_of_the_users_keeps_the_folder(tmp_path, data, monkeypatch):
    import fashionlab.train as train_mod

    empty = tmp_path / "empty"
    empty.mkdir()
    real = train_mod.to_input
    monkeypatch.setattr(train_mod, "to_input", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(TrainingDiverged):
        train(cfg(empty), data=data, verbose=False)
    assert empty.is_dir() and not list(empty.iterdir())


def test_resume_without_last_checkpoint_refuses_and_keeps_results(tmp_path, data):
    run = train(cfg(tmp_path / "run"), data=data, verbose=False)
    (run / "checkpoints" / "last.pt").unlink()
    before = snapshot(run)
    with pytest.raises(RunError, match="last.pt is missing.*its files are kept"):
        train(resume_config(run, {}), data=data, verbose=False, resume=True)
    assert snapshot(run) == before


def test_cli_resume_without_last_checkpoint_is_one_line_exit_2(tmp_path, data, synthetic_env, capsys):
    run = train(cfg(tmp_path / "run"), data=data, verbose=False)
    (run / "checkpoints" / "last.pt").unlink()
    before = snapshot(run)
    assert main(["train", "--resume", str(run)]) == 2
    assert "last.pt is missing" in one_line_error(capsys)
    assert snapshot(run) == before


def test_nan_validation_accuracy_never_replaces_best(tmp_path, data, monkeypatch):
    import fashionlab.train as train_mod

    real = train_mod.validation_metrics
    calls = {"n": 0}

    def nan_in_epoch_2(*a, **k):
        calls["n"] += 1
        loss, acc = real(*a, **k)
        return (float("nan"), float("nan")) if calls["n"] == 2 else (loss, acc)

    monkeypatch.setattr(train_mod, "validation_metrics", nan_in_epoch_2)
    run = train(cfg(tmp_path / "run", epochs=2), data=data, verbose=False)
    assert load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] == 1


def test_run_without_validation_prints_no_nan_and_says_it_kept_the_last(tmp_path, data, capsys):
    run = train(cfg(tmp_path / "run", epochs=2, val_fraction=0.0, scheduler="none"), data=data, verbose=True)
    err = capsys.readouterr().err
    assert "nan" not in err.lower(), err
    assert "no validation split: best.pt is the last epoch's model (epoch 2)" in err
    assert load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] == 2
    assert json.loads((run / "test_metrics.json").read_text())["val_acc"] is None  # valid JSON: null, not NaN


@pytest.mark.parametrize("name", ["grid.png", "train-images-idx3-ubyte"])
def test_data_grid_never_overwrites(tmp_path, synthetic_env, capsys, name):
    existing = tmp_path / name
    existing.write_bytes(b"precious bytes")
    assert main(["data", "--grid", str(existing)]) == 2
    err = one_line_error(capsys)
    assert "already exists" in err or "must end in .png" in err
    assert existing.read_bytes() == b"precious bytes"


@pytest.mark.parametrize("grid, needle", [
    ("grid.jpg", "must end in .png"),
    ("missing/grid.png", "does not exist"),
    (".", "must end in .png"),
])
def test_data_grid_bad_paths_are_one_line_errors(tmp_path, synthetic_env, capsys, monkeypatch, grid, needle):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["data", "--grid", grid]) == 2
    assert needle in one_line_error(capsys)
    assert list(work.iterdir()) == []


def test_data_grid_into_a_folder_named_png_is_refused(tmp_path, synthetic_env, capsys):
    folder = tmp_path / "dir.png"
    folder.mkdir()
    assert main(["data", "--grid", str(folder)]) == 2
    assert "already exists" in one_line_error(capsys)


def test_data_grid_writes_a_new_png(tmp_path, synthetic_env, capsys):
    grid = tmp_path / "grid.png"
    assert main(["data", "--grid", str(grid)]) == 0
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_never_writes_into_a_users_folder(tmp_path, capsys):
    from fashionlab.report import compare_runs

    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "summary.md").write_text("my own summary\n")
    with pytest.raises(RunError, match="not empty and was not made by fashionlab"):
        compare_runs([tmp_path / "whatever"], mine)
    assert (mine / "summary.md").read_text() == "my own summary\n"
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(RunError, match="is a file, not a folder"):
        compare_runs([tmp_path / "whatever"], target)


def test_export_never_overwrites_a_users_file(tmp_path, data, synthetic_env, capsys):
    run = train(cfg(tmp_path / "run"), data=data, verbose=False)
    mine = tmp_path / "model.onnx"
    mine.write_bytes(b"the user's own model")
    assert main(["export", str(run), "--format", "onnx", "--out", str(mine)]) == 2
    assert "already exists" in one_line_error(capsys)
    assert mine.read_bytes() == b"the user's own model"
