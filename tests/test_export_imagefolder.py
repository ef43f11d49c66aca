"""`fashionlab data --export-imagefolder DIR` (data.own.export_imagefolder): Fashion-MNIST as PNGs in ImageFolder
layout, named so that reading the folder gives the IDX order back.

The end-to-end check of the whole folder path: training on the exported folder, with the same seed and options, must
give exactly the test accuracy and the test predictions that training on the IDX files gives.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_synthetic_dataset
from fashionlab.about import CLASSES
from fashionlab.cli import main
from fashionlab.data import load_fashion_mnist
from fashionlab.data.own import class_folder_names, export_imagefolder, read_dataset
from fashionlab.errors import RunError
from fashionlab.files import MARKER
from folder_snapshot import snapshot


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("idx") / "synthetic", n_train=300, n_test=100)


@pytest.fixture(scope="module")
def idx_data(idx_dir):
    return load_fashion_mnist(idx_dir, verify=False, progress=False)


@pytest.fixture(scope="module")
def exported(idx_data, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("export") / "fmnist-png"
    return folder, export_imagefolder(idx_data, folder, progress=False)


def test_class_folder_names_are_safe_and_sort_in_label_order():
    names = class_folder_names(CLASSES)
    assert names[0] == "0-T-shirt_top" and names[1] == "1-Trouser" and names[9] == "9-Ankle_boot"
    assert sorted(names) == names and not any("/" in n or n.startswith(".") for n in names)
    many = class_folder_names([f"c/{i}" for i in range(12)] + ["", ".hidden", "日本"])
    assert many[:2] == ["00-c_0", "01-c_1"] and many[10] == "10-c_10" and sorted(many) == many
    assert many[12:] == ["12", "13-.hidden", "14-__"] and len(set(many)) == len(many)


def test_the_folder_reads_back_as_the_idx_tensors_in_idx_order(idx_data, exported):
    folder, done = exported
    assert done == {"folder": str(folder), "train": 300, "test": 100, "classes": 10}
    ds = read_dataset(str(folder))
    assert ds.classes == tuple(class_folder_names(CLASSES))  # label order: class index = IDX label
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(ds, name), getattr(idx_data, name)), name
    assert ds.val_x is None and ds.identity["holdout"] is False and ds.channels == 1
    assert ds.ignored == () and ds.skipped == ()  # the marker is fashionlab's own, not an ignored user file
    # named by IDX position, zero-padded to one width (the largest index is 299)
    assert ds.train_files[:2] == (f"train/{class_folder_names(CLASSES)[int(idx_data.train_y[0])]}/000.png",
                                  f"train/{class_folder_names(CLASSES)[int(idx_data.train_y[1])]}/001.png")


def test_nothing_but_the_pngs_and_the_marker_is_written(exported):
    folder, _ = exported
    files = snapshot(folder)
    assert MARKER in files
    pngs = [f for f in files if f != MARKER]
    assert len(pngs) == 400 and all(f.endswith(".png") and f.split("/")[0] in ("train", "test") for f in pngs)
    assert not [p for p in folder.rglob(".*") if p.name != MARKER]  # no temp file left behind
    with Image.open(folder / pngs[0]) as img:  # 8-bit grayscale PNG
        assert (img.format, img.mode, img.size) == ("PNG", "L", (28, 28))


def test_rgb_and_a_validation_split_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(30, 5, 6, 3), dtype=np.uint8)
    y = np.arange(30) % 3
    np.savez(tmp_path / "d.npz", x_train=x[:18], y_train=y[:18], x_val=x[18:24], y_val=y[18:24], x_test=x[24:],
             y_test=y[24:], classes=np.array(["a b", "c/d", "e"]))
    ds = read_dataset(str(tmp_path / "d.npz"))
    done = export_imagefolder(ds, tmp_path / "out", progress=False)
    assert done == {"folder": str(tmp_path / "out"), "train": 18, "val": 6, "test": 6, "classes": 3}
    back = read_dataset(str(tmp_path / "out"))
    assert back.classes == ("0-a_b", "1-c_d", "2-e") and back.channels == 3
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(back, name), getattr(ds, name)), name


def test_a_class_without_training_images_is_refused_before_writing(tmp_path, idx_data):
    import dataclasses

    lacking = dataclasses.replace(idx_data, train_x=idx_data.train_x[idx_data.train_y != 4],
                                  train_y=idx_data.train_y[idx_data.train_y != 4])
    with pytest.raises(Exception, match="class 'Coat' has no training images"):
        export_imagefolder(lacking, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_failed_export_removes_what_it_wrote(tmp_path, idx_data, monkeypatch):
    import fashionlab.data.own as own

    calls = []

    def failing(path, data):
        calls.append(path)
        if len(calls) == 150:
            raise OSError(28, "No space left on device")
        return real(path, data)

    real = own.write_new_file
    monkeypatch.setattr(own, "write_new_file", failing)
    with pytest.raises(RunError) as info:
        export_imagefolder(idx_data, tmp_path / "a" / "out", progress=False)
    assert "no space left on device" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "a").exists()  # the folder and the parent it made are gone
    (tmp_path / "empty").mkdir()  # an existing empty folder stays, empty
    calls.clear()
    with pytest.raises(RunError):
        export_imagefolder(idx_data, tmp_path / "empty", progress=False)
    assert list((tmp_path / "empty").iterdir()) == []


# ---------------------------------------------------------------------------------------------- the command

def test_cli_exports_and_says_how_to_read_it_back(synthetic_env, tmp_path, capsys):
    out = tmp_path / "png"
    assert main(["data", "--export-imagefolder", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line == (f"wrote 600 train and 200 test PNGs in ImageFolder layout -> {out} (read back in the same "
                    f"order: fashionlab train --data {out} ...)")
    assert main(["data", "--export-imagefolder", str(tmp_path / "j"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"folder": str(tmp_path / "j"), "train": 600, "test": 200,
                                                   "classes": 10}
    # any --data: the exported folder, exported again, reads back the same (its classes now named "0-0-T-shirt_top")
    assert main(["data", "--data", str(out), "--export-imagefolder", str(tmp_path / "again"), "--json"]) == 0
    first, again = read_dataset(str(out)), read_dataset(str(tmp_path / "again"))
    assert again.classes == tuple(f"{i}-{c}" for i, c in enumerate(first.classes))
    assert all(torch.equal(getattr(again, n), getattr(first, n)) for n in ("train_x", "train_y", "test_x", "test_y"))


def tree(folder: Path) -> dict[str, str]:
    """Every path under `folder` with its content's sha256 (files) or "dir"."""
    return snapshot(folder) | {str(p.relative_to(folder)): "dir" for p in folder.rglob("*") if p.is_dir()}


def bad_dirs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    ours = tmp_path / "ours"  # made by fashionlab but not empty (a run folder, an earlier export)
    ours.mkdir()
    (ours / MARKER).write_text("made by fashionlab\n")
    (ours / "train").mkdir()
    return {"file": (a_file, "is a file, not a folder"),
            "foreign": (foreign, "is not empty and was not made by fashionlab"),
            "ours": (ours, "is not empty; an export needs a new or empty folder"),
            "under a file": (a_file / "sub", "is not a folder")}


@pytest.mark.parametrize("which", ["file", "foreign", "ours", "under a file"])
def test_cli_refuses_a_bad_dir_in_one_line_and_creates_nothing(which, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FASHIONLAB_DATA", str(tmp_path / "no-data-here"))  # checked before loading: never read
    monkeypatch.setenv("FASHIONLAB_SYSTEM_DIR", str(tmp_path / "no-system-dir"))
    target, phrase = bad_dirs(tmp_path)[which]
    before = tree(tmp_path)
    assert main(["data", "--export-imagefolder", str(target), "--no-download"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and phrase in err
    assert tree(tmp_path) == before  # nothing created or changed


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_cli_refuses_an_unwritable_dir(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert main(["data", "--export-imagefolder", str(locked / "out")]) != 0
        assert "permission denied" in capsys.readouterr().err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


# ---------------------------------------------------------------------------------------------- end to end

def test_training_on_the_exported_folder_matches_training_on_the_idx_files(idx_dir, exported, tmp_path,
                                                                            monkeypatch):
    """The same seed and options on the IDX files and on their PNG export: the same test accuracy and the same
    test predictions, bit for bit. Any difference in reading order, pixels, labels or class order breaks it."""
    import fashionlab

    folder, _ = exported
    monkeypatch.setenv("FASHIONLAB_SKIP_VERIFY", "1")  # synthetic IDX files cannot match the real hashes
    options = dict(model="cnn1", epochs=2, batch_size=64, seed=3, augment="flip,crop", tta=False, device="cpu",
                   precision="fp32", channels_last=False, model_args={"width": 8}, verbose=False)
    on_idx = fashionlab.train(data_dir=str(idx_dir), out=str(tmp_path / "idx-run"), **options)
    on_png = fashionlab.train(data=str(folder), out=str(tmp_path / "png-run"), **options)
    acc_idx, acc_png = on_idx.test_metrics["accuracy"], on_png.test_metrics["accuracy"]
    assert acc_idx == acc_png and 0.2 < acc_idx  # it learned something, identically
    pred_idx = np.load(on_idx.path / "test_predictions.npy")
    pred_png = np.load(on_png.path / "test_predictions.npy")
    assert pred_idx.shape == pred_png.shape and np.array_equal(pred_idx, pred_png)
    assert on_png.config["data"]["kind"] == "folder" and on_idx.config["data"]["kind"] == "fashion-mnist"
