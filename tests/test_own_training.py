"""Training, evaluating, comparing, predicting and exporting on the user's own images (--data), end to end, on real
data nobody here wrote: scikit-learn's 1,797 handwritten 8x8 digit scans, written out as a folder, a CSV and an npz.
The reader itself (every kind, format and bad input) is tested in test_own_data.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fashionlab
from fashionlab.cli import main
from fashionlab.config import resolve
from fashionlab.data.augment import translate
from fashionlab.errors import ConfigError, DataError, RunError
from folder_snapshot import snapshot
from test_own_data import coloured_squares, digits, write_digits

QUICK = dict(epochs=3, batch_size=64, device="cpu", precision="fp32", seed=0)


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("own") / "digits", splits=True)


@pytest.fixture(scope="module")
def two_models(digits_dir, tmp_path_factory):
    """cnn1 and cnn2 trained on the digit folder at --image-size 28, as a user would: names, their recipes."""
    before = snapshot(digits_dir)
    out = tmp_path_factory.mktemp("runs")
    runs = {m: fashionlab.train(model=m, data=digits_dir, image_size="28", out=str(out / m), verbose=False, **QUICK)
            for m in ("cnn1", "cnn2")}
    assert snapshot(digits_dir) == before  # nothing written into the user's dataset folder
    return runs


def test_cnn1_and_cnn2_learn_the_digits_and_compare_cleanly(two_models, tmp_path):
    for run in two_models.values():
        metrics = run.test_metrics
        assert metrics["accuracy"] >= 0.90, metrics["accuracy"]
        assert metrics["n_test"] == 360 and list(metrics["per_class"]) == [str(d) for d in range(10)]
    summary = fashionlab.compare(list(two_models.values()), out=tmp_path / "report")
    assert [m["label"] for m in summary["models"]] == ["cnn1", "cnn2"] and len(summary["comparisons"]) == 1
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Misclassified test images" in html  # the gallery: the test images were read back from the folder


def test_the_run_records_the_dataset(two_models, digits_dir):
    config = two_models["cnn2"].config
    data = config["data"]
    assert config["dataset"] == str(digits_dir) and config["image_size"] == "28"
    assert data["kind"] == "folder" and data["path"] == str(digits_dir.resolve())
    assert data["classes"] == [str(d) for d in range(10)] and data["channels"] == 1 and data["size"] == [28, 28]
    assert sum(data["counts"]["test"].values()) == 360 and len(data["fingerprint"]) == 64
    # Own data: no flip (a mirrored digit is another one) and no flip TTA, unless asked for
    assert config["augment"] == "crop" and config["tta"] is False
    listed = (two_models["cnn2"].path / "test_files.txt").read_text().splitlines()
    assert len(listed) == 360 and listed[0] == "test/0/0000.png"


def test_evaluate_reads_the_run_data_again_and_refuses_changed_data(two_models, tmp_path):
    import shutil

    copy = tmp_path / "digits"
    shutil.copytree(two_models["cnn1"].config["data"]["path"], copy)
    run = tmp_path / "run"
    shutil.copytree(two_models["cnn1"].path, run)
    config = json.loads((run / "config.json").read_text())
    config["data"]["path"] = config["data"]["source"] = str(copy)
    (run / "config.json").write_text(json.dumps(config))
    assert fashionlab.load_run(run).evaluate()["accuracy"] == two_models["cnn1"].test_metrics["accuracy"]
    first = sorted((copy / "test" / "4").iterdir())[0]
    pixels = np.array(Image.open(first))
    pixels[0, 0] ^= 0xFF
    Image.fromarray(pixels).save(first)
    with pytest.raises(RunError) as e:
        fashionlab.load_run(run).evaluate()
    assert "has changed since this run was trained" in str(e.value) and "\n" not in str(e.value)


def test_predict_and_export_use_the_run_preprocessing_and_class_names(two_models, digits_dir, tmp_path):
    run = two_models["cnn2"]
    x, y = digits()
    i = next(i for i in range(0, len(y), 5) if y[i] == 3)  # a test image of a 3
    three = digits_dir / "test" / "3" / f"{i:04d}.png"
    [result] = fashionlab.predict(run, three)
    assert result["top"][0]["label"] == "3"
    [same] = fashionlab.predict(run, x[i])  # an in-memory array is prepared like the file
    assert same["top"] == result["top"]
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path = tmp_path / "digits.onnx"
    assert main(["export", str(run.path), "--out", str(path)]) == 0
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["fashionlab.classes"]) == [str(d) for d in range(10)]
    assert json.loads(meta["fashionlab.input_shape"]) == [1, 28, 28] and meta["fashionlab.dataset"] == str(digits_dir)
    [from_onnx] = fashionlab.predict(path, three)
    assert from_onnx["top"][0]["label"] == "3"
    assert from_onnx["top"][0]["prob"] == pytest.approx(result["top"][0]["prob"], abs=1e-4)


def test_csv_and_npz_specs_train_and_compare_refuses_different_test_sets(digits_dir, two_models, tmp_path):
    x, y = digits()
    rows = [{"path": str(p.relative_to(digits_dir.parent)), "label": p.parent.name, "split": p.parts[-3]}
            for p in sorted(digits_dir.rglob("*.png"), key=lambda p: (p.name, p.parent.name))]
    table = digits_dir.parent / "digits.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    from_csv = fashionlab.train(model="cnn1", data=table, image_size="28", out=str(tmp_path / "csv"), verbose=False,
                                **QUICK)
    assert from_csv.config["data"]["kind"] == "csv"
    # The same images and labels in the same order: the same test set, so the runs may be compared
    assert from_csv.test_metrics["test_sha256"] == two_models["cnn1"].test_metrics["test_sha256"]
    test = np.arange(len(y)) % 5 == 0
    npz = tmp_path / "digits.npz"
    by_class = np.argsort(y[test], kind="stable")  # the test images class by class: not the folder's order
    np.savez(npz, x_train=x[~test], y_train=y[~test], x_test=x[test][by_class], y_test=y[test][by_class])
    from_npz = fashionlab.train(model="cnn1", data=npz, image_size="28", out=str(tmp_path / "npz"), verbose=False,
                                epochs=1, batch_size=64, device="cpu", precision="fp32")
    assert from_npz.config["data"]["kind"] == "npz" and from_npz.test_metrics["n_test"] == int(test.sum())
    with pytest.raises(RunError) as e:  # same images, another order: McNemar would pair the wrong images
        fashionlab.compare([from_csv, from_npz], out=tmp_path / "r")
    message = str(e.value)
    assert "were evaluated on different test data" in message and str(from_npz.path) in message
    assert str(from_csv.path) in message and "\n" not in message and not (tmp_path / "r").exists()


def test_rgb_data_trains_with_three_channels_and_predicts(tmp_path):
    coloured_squares(tmp_path / "sq", n=12)
    run = fashionlab.train(model="cnn1", data=tmp_path / "sq", out=str(tmp_path / "run"), verbose=False,
                           epochs=1, batch_size=8, device="cpu", precision="fp32")
    data = run.config["data"]
    assert data["channels"] == 3 and data["size"] == [12, 12] and len(data["normalize"]["mean"]) == 3
    model = run.load_model()
    assert tuple(model.normalize.mean.shape) == (3, 1, 1)
    assert model(torch.zeros(2, 3, 12, 12)).shape == (2, 3)
    [result] = fashionlab.predict(run, tmp_path / "sq" / "test" / "red" / "00.png", top_k=3)
    assert sorted(t["label"] for t in result["top"]) == ["blue", "green", "red"]
    gray = fashionlab.train(model="cnn1", data=tmp_path / "sq", channels=1, out=str(tmp_path / "gray"),
                            verbose=False, epochs=1, batch_size=8, device="cpu", precision="fp32")
    assert gray.config["data"]["channels"] == 1 and gray.load_model()(torch.zeros(1, 1, 12, 12)).shape == (1, 3)


def test_translation_moves_every_channel_alike():
    """The own-data default augmentation on 3 channels: each channel is shifted exactly as one channel alone is."""
    x = torch.rand(6, 3, 10, 12)
    shifted = translate(x, 3, torch.Generator().manual_seed(5))
    for c in range(3):
        alone = translate(x[:, c:c + 1], 3, torch.Generator().manual_seed(5))
        assert torch.equal(shifted[:, c:c + 1], alone)
    assert not torch.equal(shifted, x)


@pytest.mark.parametrize("given, augment, tta", [
    ({}, "crop", False),  # the default flip,crop: flip dropped
    ({"recipe": "cnn2"}, "crop", False),  # a Fashion-MNIST recipe's flip and flip TTA too
    ({"augment": "flip,crop", "tta": True}, "flip,crop", True),  # asked for: kept
])
def test_own_data_drops_label_changing_augmentation_unless_asked(tmp_path, given, augment, tta):
    cfg = resolve({"dataset": str(tmp_path), **given})
    assert cfg.augment == augment and cfg.tta is tta
    assert resolve(given).augment != "crop"  # Fashion-MNIST keeps its recipes as they are


@pytest.mark.parametrize("args, needle", [
    (["--data", "no/such/folder"], "no such file or folder"),
    (["--image-size", "28"], "--image-size and --channels are for your own data"),
    (["--data", "{tmp}/digits", "--data-dir", "{tmp}"], "--data-dir names Fashion-MNIST's IDX folder"),
    (["--data", "{tmp}/digits", "--channels", "2"], "--channels must be 1 or 3"),
    (["--data", "{tmp}/digits", "--image-size", "2x2"], "--image-size must be N or HxW"),
    (["--data", "{tmp}/mixed"], "pass --image-size N or HxW"),
    (["--data", "{tmp}/digits", "--budget", "1m"], "--budget picks among recipes measured on Fashion-MNIST"),
])
def test_bad_data_options_are_one_line_errors_that_leave_nothing(tmp_path, capsys, args, needle):
    write_digits(tmp_path / "digits", splits=True, indices=range(40))
    write_digits(tmp_path / "mixed", splits=True, indices=range(40))
    Image.new("L", (9, 9)).save(tmp_path / "mixed" / "train" / "1" / "odd.png")
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(["train", "--model", "cnn1", "--epochs", "1", *args, "--out", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err.strip()
    assert needle in err and err.count("\n") == 0 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_data_card_json_names_the_problems(tmp_path, capsys):
    root = write_digits(tmp_path / "digits", splits=True, indices=range(60))
    leaked = sorted((root / "test" / "0").iterdir())[0]
    (root / "train" / "0" / "leaked.png").write_bytes(leaked.read_bytes())  # a test image also in train
    (root / "train" / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "notes.txt").write_text("ignored")
    before = snapshot(root)
    assert main(["data", "--data", str(root), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["classes"] == [str(d) for d in range(10)]
    assert set(card["counts"]) == {"train", "val", "test"} and sum(card["counts"]["test"].values()) == 12
    assert len(card["bad_files"]) == 1 and card["bad_files"][0].startswith("train/1/broken.png")
    assert card["train_test_duplicates"]["count"] == 1 and card["ignored_files"] == ["notes.txt"]
    assert snapshot(root) == before
    # train refuses the bad file, naming it, unless --skip-bad (which lists it in the run folder)
    assert main(["train", "--data", str(root), "--model", "cnn1", "--epochs", "1", "--out", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err
    assert "train/1/broken.png" in err and "--skip-bad" in err and not (tmp_path / "a").exists()
    assert main(["train", "--data", str(root), "--model", "cnn1", "--epochs", "1", "--skip-bad", "--quiet",
                 "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "skipped_files.txt").read_text().startswith("train/1/broken.png")


def test_data_errors_are_data_errors(tmp_path):
    from fashionlab.data.load import load_dataset

    with pytest.raises(DataError):
        load_dataset(str(tmp_path / "missing"))
    with pytest.raises(ConfigError):
        load_dataset("fashion-mnist", image_size="28")


@pytest.mark.parametrize("argv", [
    ["train", "--data", "{d}", "--epochs", "1", "--out", "{d}/runs/cnn1"],
    ["train", "--data", ".", "--epochs", "1"],  # the default runs/<model>-<time>, from inside the dataset
    ["run", "--data", "{d}", "--models", "cnn1", "--epochs", "1", "--out", "{d}/study"],
    ["lr-find", "--data", "{d}", "--out", "{d}/lr"],
    ["data", "--data", "{d}", "--export-imagefolder", "{d}/0/export"],
    ["data", "--data", "{d}", "--grid", "{d}/grid.png"],
])
def test_nothing_is_ever_written_into_the_dataset_folder(tmp_path, capsys, monkeypatch, argv):
    """A run folder inside a folder of class folders would even be read back as one more class."""
    root = write_digits(tmp_path / "digits", splits=False, indices=range(60))
    monkeypatch.chdir(root)
    before = snapshot(root)
    code = main([a.format(d=root) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "inside the dataset folder" in err, err
    assert snapshot(root) == before


def test_run_on_a_folder_makes_the_full_report_with_the_dataset_card(tmp_path, capsys, monkeypatch):
    """The issue's 'done when': `fashionlab run --data DIR --models cnn1,cnn2` on a folder of class folders (no
    test split: a holdout) gives the Fashion-MNIST report's kind, about this dataset. The folder is read once: the
    runs and the report use the dataset `run` read."""
    root = write_digits(tmp_path / "digits", splits=False, indices=range(400))
    out = tmp_path / "study"

    def read_again(*args, **kwargs):
        raise AssertionError("the dataset was read a second time")

    monkeypatch.setattr("fashionlab.data.load.load_for_run", read_again)
    assert main(["run", "--data", str(root), "--image-size", "16", "--models", "cnn1,cnn2", "--epochs", "1",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert [m["label"] for m in summary["models"]] == ["cnn1", "cnn2"] and len(summary["comparisons"]) == 1
    card = summary["dataset"]
    assert card["kind"] == "folder" and card["classes"] == [str(d) for d in range(10)] and card["holdout"]
    assert card["size"] == [16, 16] and sum(card["counts"]["test"].values()) == 80
    html = (out / "report" / "report.html").read_text()
    assert "a stratified holdout" in html and card["fingerprint"][:16] in html
    for run in ("cnn1-seed0", "cnn2-seed0"):
        assert json.loads((out / run / "config.json").read_text())["data"]["fingerprint"] == card["fingerprint"]
