"""The Python API (fashionlab.train / load_run / Run / compare / predict) and the examples of docs/api.md, which are
executed here as written (on the synthetic data set)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fashionlab
from fashionlab.cli import main
from fashionlab.errors import ConfigError, FashionlabError, RunError

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"
FAST = dict(epochs=1, batch_size=64, augment="none", scheduler="none", device="cpu", verbose=False)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, FashionlabError) and message and "\n" not in message, repr(message)
    return message


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One cnn1 run on the synthetic data, shared by the tests that only read it (the data folder stays)."""
    from conftest import write_synthetic_dataset

    base = tmp_path_factory.mktemp("api")
    data = write_synthetic_dataset(base / "synthetic")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASHIONLAB_DATA", str(data))
        mp.setenv("FASHIONLAB_SKIP_VERIFY", "1")
        mp.setenv("FASHIONLAB_SYSTEM_DIR", str(base / "no-system-dir"))
        mp.setenv("XDG_CACHE_HOME", str(base / "cache"))
        run = fashionlab.train(model="cnn1", out=str(base / "cnn1"), **FAST)
    return run


# ---------------------------------------------------------------------------------------------- docs/api.md


def test_api_doc_examples_run_as_written(tmp_path, synthetic_env, monkeypatch, capsys):
    """Every ```python block of docs/api.md, in order, in one namespace; a block starting with `# NAME.py` is that
    file. Then the shell one-liner `fashionlab run --models ...` (with --epochs 1)."""
    monkeypatch.chdir(tmp_path)
    text = API_DOC.read_text()
    blocks = code_blocks(text, "python")
    assert len(blocks) >= 8, "docs/api.md lost its examples"
    namespace: dict = {"__name__": "api_doc"}
    for i, block in enumerate(blocks):
        if m := re.fullmatch(r"# (\w+\.py)", block.splitlines()[0]):
            (tmp_path / m[1]).write_text(block)
            continue
        exec(compile(block, f"{API_DOC}:python block {i + 1}", "exec"), namespace)  # noqa: S102 - our own docs
    out = capsys.readouterr().out
    assert "--epochs must be >= 1" in out  # the error example printed its one line
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "confusion.png").stat().st_size > 0
    assert (tmp_path / "reports" / "three" / "report.html").is_file()
    summary = json.loads((tmp_path / "reports" / "three" / "summary.json").read_text())
    assert [m["label"] for m in summary["models"]] == ["cnn1", "cnn2", "mynet.py:Net"]
    assert len(summary["comparisons"]) == 3
    assert json.loads((tmp_path / "runs" / "mynet" / "config.json").read_text())["extra"] == {"width": 24}

    one_liners = [line for block in code_blocks(text, "bash") for line in block.splitlines()
                  if line.startswith("fashionlab run")]
    assert one_liners == ["fashionlab run --models cnn1,cnn2,mynet.py:Net"]
    job = tmp_path / "job"
    assert main([*shlex.split(one_liners[0])[1:], "--epochs", "1", "--device", "cpu", "--out", str(job)]) == 0
    summary = json.loads((job / "report" / "summary.json").read_text())
    assert [m["label"] for m in summary["models"]] == ["cnn1", "cnn2", "mynet.py:Net"]


# ---------------------------------------------------------------------------------------------- the package


def test_import_is_lazy_and_the_submodules_stay_modules():
    code = ("import sys, fashionlab; assert 'torch' not in sys.modules; "
            "assert {'train', 'predict', 'load_run', 'compare', 'Run'} <= set(dir(fashionlab)); "
            "import fashionlab.train as t; assert fashionlab.train is t and callable(t) and callable(t.train); "
            "import fashionlab.predict as p; assert fashionlab.predict is p and callable(p); "
            "from fashionlab import load_run, Run, compare; from fashionlab.api import load_run as l; "
            "assert load_run is l; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    # The other order: the submodule imported first (as the CLI does), then called as the API.
    code = ("from fashionlab.train import train as _; import fashionlab; "
            "from fashionlab.errors import ConfigError\n"
            "try:\n    fashionlab.train(model='cnn1', epochs=0)\nexcept ConfigError as e:\n    print(e)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--epochs must be >= 1" in proc.stdout, proc.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fashionlab.nope  # noqa: B018


# ---------------------------------------------------------------------------------------------- train


def test_train_resolves_options_exactly_like_the_cli(tmp_path, synthetic_env):
    from fashionlab.config import FIELD_NAMES

    (tmp_path / "opts.yaml").write_text("epochs: 1\nbatch_size: 32\nlr: 0.01\n")
    run = fashionlab.train(model="cnn2", config=tmp_path / "opts.yaml", lr=2e-3, model_args={"width": 8},
                           train_subset=200, device="cpu", out=str(tmp_path / "api"), verbose=False)
    assert main(["train", "--model", "cnn2", "--config", str(tmp_path / "opts.yaml"), "--lr", "2e-3",
                 "--model-arg", "width=8", "--train-subset", "200", "--device", "cpu", "--out", str(tmp_path / "cli"),
                 "--quiet"]) == 0
    api, cli = run.config, json.loads((tmp_path / "cli" / "config.json").read_text())
    assert {k: api[k] for k in FIELD_NAMES - {"out"}} == {k: cli[k] for k in FIELD_NAMES - {"out"}}
    assert api["recipe"] == "cnn2" and api["batch_size"] == 32 and api["lr"] == 2e-3 and api["extra"] == {"width": 8}
    assert api["command"].startswith("fashionlab.train(model='cnn2', ")
    # Same options, same seed: the same model, bit for bit.
    assert np.array_equal(np.load(run.path / "test_probs.npy"), np.load(tmp_path / "cli" / "test_probs.npy"))
    assert isinstance(run, fashionlab.Run) and run.path == tmp_path / "api"


def test_train_from_an_nn_module_object(tmp_path, synthetic_env):
    import torch

    Tiny = tiny_class()
    net = Tiny()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    run = fashionlab.train(model=net, out=str(tmp_path / "obj"), **FAST | {"scheduler": "plateau", "epochs": 1})
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "the caller's object was trained"
    assert run.config["model"] == "object:Tiny" and run.test_metrics["model"] == "object:Tiny"

    for call in (run.load_model, run.evaluate, lambda: fashionlab.predict(run, np.zeros((28, 28), np.uint8))):
        with pytest.raises(ConfigError) as e:
            call()
        assert "was trained from an nn.Module object (object:Tiny); give one of the same architecture again: " \
               "model=Tiny()" in one_line(e)
    loaded = run.load_model(model=Tiny())
    assert isinstance(loaded.net, Tiny) and not loaded.training
    # The same predictions as the evaluation that training ran
    from fashionlab.data import as_input, load_fashion_mnist

    with torch.no_grad():
        pred = loaded(as_input(load_fashion_mnist().test_x)).argmax(1).numpy()
    assert np.array_equal(pred, np.load(run.path / "test_predictions.npy"))
    rows = fashionlab.predict(run, np.zeros((28, 28), np.uint8), model=Tiny())
    assert rows[0]["file"] == "<image 0>" and len(rows[0]["top"]) == 3

    with pytest.raises(ConfigError) as e:  # resuming needs the object too
        fashionlab.train(resume=run, epochs=2, verbose=False)
    assert "trained from an nn.Module object" in one_line(e)
    longer = fashionlab.train(resume=run, model=Tiny(), epochs=2, verbose=False)
    assert [r["epoch"] for r in longer.history] == [1, 2]
    with pytest.raises(ConfigError) as e:
        fashionlab.train(model=Tiny(), model_args={"width": 3}, out=str(tmp_path / "x"), **FAST)
    assert "model_args= is for a model given by name" in one_line(e)
    with pytest.raises(ConfigError) as e:
        fashionlab.train(model=Tiny, out=str(tmp_path / "x"), **FAST)
    assert "model=Tiny is a class; give an object (model=Tiny())" in one_line(e)
    assert not (tmp_path / "x").exists()


def tiny_class():
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                      nn.Flatten(), nn.Linear(16, 10))

        def forward(self, x):
            return self.body(x)

    Tiny.__qualname__ = "Tiny"  # as if defined at the top of a script or notebook
    return Tiny


@pytest.mark.parametrize("kwargs, needle", [
    (dict(model="cnn1", epochs=0), "--epochs must be >= 1 and <= 100000, got 0"),
    (dict(model="cnn1", epochz=3), "unknown option 'epochz' in fashionlab.train()"),
    (dict(model="nope"), "unknown model 'nope'"),
    (dict(model=42), "--model must be a string, got 42"),
    (dict(model="cnn1", model_args=[1]), "model_args must be a dict, got list"),
    (dict(model="cnn1", model_args={"depth": 3}), "does not take these options"),
    (dict(model="cnn1", config="missing.yaml"), "config file missing.yaml not found"),
    (dict(config="a.yaml", resume="b"), "config file a.yaml not found"),
    (dict(resume="no-such-run"), "nothing to resume: no-such-run has no config.json"),
])
def test_train_errors_are_one_line_before_any_folder(tmp_path, synthetic_env, monkeypatch, kwargs, needle):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FashionlabError) as e:
        fashionlab.train(**kwargs, verbose=False)
    assert needle in one_line(e)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------- Run


def test_run_reads_its_folder(trained):
    run = fashionlab.load_run(trained.path)
    assert run == trained and fashionlab.load_run(run) is run
    assert run.config["model"] == "cnn1" and run.config["epochs"] == 1
    (row,) = run.history
    assert row["epoch"] == 1 and isinstance(row["epoch"], int) and isinstance(row["val_acc"], float)
    assert set(row) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    metrics = run.test_metrics
    assert metrics == json.loads((run.path / "test_metrics.json").read_text())
    assert "precision" in run.classification_report and "Ankle boot" in run.classification_report
    text = repr(run)
    assert text.startswith(f"Run({str(run.path)!r}, model='cnn1', epochs=1, best_val_acc=")
    assert f"test_accuracy={metrics['accuracy']:.4f}" in text
    import os

    assert os.fspath(run) == str(run.path)
    model = run.load_model()
    assert not model.training and type(model).__name__ == "Classifier"
    assert run.load_model("last") is not None


def test_run_figures_and_most_confused(trained):
    from matplotlib.figure import Figure

    curves = trained.plot_curves()
    assert isinstance(curves, Figure) and len(curves.axes) == 2
    assert curves.get_suptitle() == "cnn1: training curves"
    confusion = trained.plot_confusion_matrix()
    assert isinstance(confusion, Figure) and [ax.get_title() for ax in confusion.axes] == [
        "cnn1: counts", "cnn1: row-normalized (recall)"]

    cm = np.array(trained.test_metrics["confusion_matrix"])
    pairs = trained.most_confused(k=4)
    off = sorted(((cm[i, j], i, j) for i in range(10) for j in range(10) if i != j and cm[i, j]),
                 key=lambda t: (-t[0], t[1], t[2]))[:4]
    assert [(p["count"], p["true"], p["predicted"]) for p in pairs] == [
        (int(c), fashionlab.CLASSES[i], fashionlab.CLASSES[j]) for c, i, j in off]
    assert all(p["rate"] == pytest.approx(p["count"] / cm[fashionlab.CLASSES.index(p["true"])].sum()) for p in pairs)
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ConfigError) as e:
            trained.most_confused(bad)
        assert "k must be an integer >= 1" in one_line(e)


def test_run_errors(tmp_path, trained):
    for path, needle in ((tmp_path / "missing", "no such folder"), (tmp_path, "no config.json")):
        with pytest.raises(RunError) as e:
            fashionlab.load_run(path)
        assert f"{path} is not a run folder ({needle})" == one_line(e)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError) as e:
        fashionlab.load_run(tmp_path / "file")
    assert "not a folder" in one_line(e)
    with pytest.raises(ConfigError) as e:
        fashionlab.load_run(3)
    assert "takes a run folder path, got 3 (int)" in one_line(e)

    bare = tmp_path / "bare"  # trained but not evaluated, and no finished epoch
    shutil.copytree(trained.path, bare)
    for name in ("test_metrics.json", "classification_report.txt", "metrics.csv"):
        (bare / name).unlink()
    run = fashionlab.load_run(bare)
    assert run.test_metrics is None and run.classification_report is None and run.history == []
    assert repr(run).endswith("epochs=0, not evaluated)")
    for call in (run.plot_confusion_matrix, run.most_confused):
        with pytest.raises(RunError) as e:
            call()
        assert "has not been evaluated on the test set: run.evaluate()" in one_line(e)
    with pytest.raises(RunError) as e:
        run.plot_curves()
    assert "no finished epoch yet" in one_line(e)
    with pytest.raises(ConfigError) as e:
        run.load_model("middle")
    assert "checkpoint must be one of best, last, got 'middle'" == one_line(e)
    with pytest.raises(ConfigError) as e:
        run.load_model(model="cnn1")
    assert "model= must be an nn.Module object" in one_line(e)
    (bare / "checkpoints" / "best.pt").unlink()
    with pytest.raises(RunError) as e:
        run.load_model()
    one_line(e)


def test_evaluate_again(tmp_path, trained, synthetic_env):
    copy = tmp_path / "copy"
    shutil.copytree(trained.path, copy)
    (copy / "test_metrics.json").unlink()
    run = fashionlab.load_run(copy)
    metrics = run.evaluate()
    assert metrics["accuracy"] == trained.test_metrics["accuracy"] == run.test_metrics["accuracy"]


# ---------------------------------------------------------------------------------------------- compare


def test_compare_runs_and_paths(tmp_path, trained, synthetic_env, monkeypatch):
    other = fashionlab.train(model="cnn1", seed=1, label="cnn1-b", out=str(tmp_path / "b"), **FAST)
    summary = fashionlab.compare([trained, str(other.path)], out=tmp_path / "report")
    assert summary["report"] == str(tmp_path / "report" / "report.html") and Path(summary["report"]).is_file()
    on_disk = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert {k: v for k, v in summary.items() if k != "report"} == on_disk
    assert [m["label"] for m in summary["models"]] == ["cnn1", "cnn1-b"]
    assert "p_value" in summary["comparisons"][0] and summary["comparisons"][0]["verdict"]
    monkeypatch.chdir(tmp_path)  # the default folder: reports/compare-<timestamp>
    summary = fashionlab.compare([trained, other])
    assert re.fullmatch(r"reports/compare-\d{8}-\d{6}/report.html", summary["report"])


def test_compare_family(tmp_path, trained, synthetic_env):
    """Labelled later runs make a variant study (each against the first); family="all-pairs" asks every pair."""
    b = fashionlab.train(model="cnn1", seed=1, label="b", out=str(tmp_path / "b"), **FAST)
    c = fashionlab.train(model="cnn1", seed=2, label="c", out=str(tmp_path / "c"), **FAST)
    summaries = {f: fashionlab.compare([trained, b, c], out=tmp_path / str(f), family=f) for f in (None, "all-pairs")}
    pairs = {f: [(x["a"], x["b"]) for x in s["comparisons"]] for f, s in summaries.items()}
    assert pairs[None] == [("cnn1", "b"), ("cnn1", "c")]
    assert pairs["all-pairs"] == [("cnn1", "b"), ("cnn1", "c"), ("b", "c")]
    with pytest.raises(ConfigError) as e:
        fashionlab.compare([trained, b], out=tmp_path / "bad", family="every")
    assert "--family must be one of" in one_line(e) and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("runs, error, needle", [
    ("runs/a", ConfigError, "takes a list of runs or run folders, got 'runs/a' (str)"),
    ([1, 2], ConfigError, "each run must be a Run or a run folder path, got 1 (int)"),
    ([], RunError, "no run folders given"),
])
def test_compare_errors(tmp_path, runs, error, needle):
    with pytest.raises(error) as e:
        fashionlab.compare(runs, out=tmp_path / "r")
    assert needle in one_line(e)


def test_compare_refuses_an_unevaluated_run(tmp_path, trained):
    bare = tmp_path / "bare"
    shutil.copytree(trained.path, bare)
    (bare / "test_metrics.json").unlink()
    with pytest.raises(RunError) as e:
        fashionlab.compare([trained, bare], out=tmp_path / "r")
    assert "has no test_metrics.json" in one_line(e)


# ---------------------------------------------------------------------------------------------- predict


def test_predict_files_match_the_cli_json(tmp_path, trained, capsys):
    from PIL import Image

    photo = tmp_path / "shirt.png"
    Image.new("RGB", (60, 80), "white").save(photo)
    folder = tmp_path / "more"
    folder.mkdir()
    img = Image.new("RGB", (50, 50), "white")
    img.paste((20, 20, 90), (10, 5, 40, 45))
    img.save(folder / "a.jpg")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    inputs = [str(photo), folder, tmp_path / "broken.png"]
    rows = fashionlab.predict(trained, inputs, top_k=2)
    capsys.readouterr()
    assert main(["predict", str(trained.path), *map(str, inputs), "--json", "--top-k", "2"]) == 2
    cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == cli
    assert [r["file"] for r in rows] == [str(photo), str(folder / "a.jpg"), str(tmp_path / "broken.png")]
    assert "error" in rows[2] and rows[0]["warnings"][0].startswith("blank after preprocessing")
    assert fashionlab.predict(str(trained.path), str(folder / "a.jpg"))[0]["top"] == fashionlab.predict(
        trained, [folder / "a.jpg"])[0]["top"]


def test_predict_in_memory_images_are_prepared_like_files(tmp_path, trained):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = np.full((64, 48, 3), 255, np.uint8)
    rgb[8:56, 12:36] = rng.integers(0, 120, size=(48, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "item.png")
    gray = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
    gray[:2], gray[-2:], gray[:, :2], gray[:, -2:] = 0, 0, 0, 0  # a Fashion-MNIST-like image: used as is
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    images = [rgb, Image.fromarray(rgb), rgba, rgb[:, :, :1], gray, Image.open(tmp_path / "item.png")]
    rows = fashionlab.predict(trained, images, top_k=10)
    from_file = fashionlab.predict(trained, tmp_path / "item.png", top_k=10)[0]["top"]
    assert [r["file"] for r in rows] == [f"<image {i}>" for i in range(6)]
    def probs(top):  # class -> probability (a batch of 6 and a batch of 1 may differ in the last digit)
        return {t["index"]: t["prob"] for t in top}

    for i in (0, 1, 2, 5):
        assert probs(rows[i]["top"]) == pytest.approx(probs(from_file), abs=1e-5), i
    assert probs(rows[3]["top"]) != pytest.approx(probs(from_file), abs=1e-5)  # grey levels differ from the RGB's
    assert all(sum(t["prob"] for t in r["top"]) == pytest.approx(1, abs=1e-4) for r in rows)
    assert "warnings" not in rows[4]
    tiny = fashionlab.predict(trained, np.full((10, 12), 200, np.uint8))[0]
    assert tiny["warnings"][0].startswith("tiny image (12x10 pixels")
    assert fashionlab.predict(trained, []) == []


@pytest.mark.parametrize("images, needle", [
    (np.zeros((28, 28), np.float32), "images[0] is a float32 array; give uint8 pixels"),
    ([np.zeros((28, 28), np.uint8), np.zeros((2, 28, 28, 1), np.uint8)], "images[1] has shape (2, 28, 28, 1)"),
    (np.zeros((28, 28, 2), np.uint8), "has shape (28, 28, 2); give HxW or HxWxC"),
    (np.zeros((0, 28), np.uint8), "has shape (0, 28)"),
    ([3], "images[0] is 3 (int); give a file path, a PIL image or a uint8 numpy array"),
    (7, "images must be an image or a list of them, got 7 (int)"),
])
def test_predict_bad_images_are_one_line_errors(trained, images, needle):
    with pytest.raises(ConfigError) as e:
        fashionlab.predict(trained, images)
    assert needle in one_line(e)


def test_predict_errors(tmp_path, trained):
    img = np.zeros((28, 28), np.uint8)
    for source, error, needle in ((tmp_path / "nope", RunError, "does not exist"),
                                  (tmp_path, RunError, "is not a run folder (no config.json)"),
                                  (42, ConfigError, "takes a Run, a run folder or an .onnx file, got 42 (int)")):
        with pytest.raises(error) as e:
            fashionlab.predict(source, img)
        assert needle in one_line(e)
    for kwargs, needle in ((dict(top_k=0), "--top-k must be between 1 and 10, got 0"),
                           (dict(checkpoint="worst"), "checkpoint must be one of best, last")):
        with pytest.raises(ConfigError) as e:
            fashionlab.predict(trained, img, **kwargs)
        assert needle in one_line(e)


def test_predict_with_an_exported_onnx_model(tmp_path, trained, capsys):
    pytest.importorskip("onnxruntime")
    copy = tmp_path / "run"
    shutil.copytree(trained.path, copy)
    assert main(["export", str(copy), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    img = np.zeros((40, 40, 3), np.uint8)
    img[5:35, 12:28] = 220
    onnx_top = fashionlab.predict(tmp_path / "m.onnx", img, top_k=3)[0]["top"]
    # The .onnx graph is fp32: it matches the run computed in fp32 to float rounding...
    from fashionlab.predict import TorchModel, collect_images, predict_items

    fp32 = TorchModel(copy, "best", "cpu")
    run_precision, fp32.precision = fp32.precision, "fp32"
    fp32_top = predict_items(fp32, collect_images(img), top_k=3)[0].top
    assert [t["index"] for t in onnx_top] == [t["index"] for t in fp32_top]
    assert [t["prob"] for t in onnx_top] == pytest.approx([t["prob"] for t in fp32_top], abs=1e-4)
    # ...and predict on the run (its own precision: bf16 where this CPU has it natively) to bf16's 8 bits
    torch_top = fashionlab.predict(trained, img, top_k=3)[0]["top"]
    assert [t["index"] for t in onnx_top] == [t["index"] for t in torch_top]
    bf16_rounding = 1e-4 if run_precision == "fp32" else 1e-2
    assert [t["prob"] for t in onnx_top] == pytest.approx([t["prob"] for t in torch_top], abs=bf16_rounding)


def test_resume_with_a_config_file_is_one_path_for_the_cli_and_the_api(tmp_path, synthetic_env, capsys):
    """`train --resume RUN --config FILE` and fashionlab.train(resume=RUN, config=FILE) resolve alike: the file is
    read like more flags, so a value that changes results is refused in one line (the CLI used to ignore the file
    and exit 0 having changed nothing), and one that may change (epochs, on a plateau schedule) is used."""
    from fashionlab.cli import main

    run = tmp_path / "run"
    fashionlab.train(model="cnn1", epochs=1, train_subset=200, out=str(run), verbose=False)
    changes = tmp_path / "changes.yaml"
    changes.write_text("lr: 0.5\nepochs: 2\n")
    assert main(["train", "--resume", str(run), "--config", str(changes), "--quiet"]) == 2
    assert "cannot change lr" in capsys.readouterr().err
    with pytest.raises(FashionlabError) as e:
        fashionlab.train(resume=run, config=changes, verbose=False)
    assert "cannot change lr" in one_line(e)
    assert len(fashionlab.load_run(run).history) == 1  # nothing trained by either
    longer = tmp_path / "longer.yaml"
    longer.write_text("epochs: 2\n")
    assert main(["train", "--resume", str(run), "--config", str(longer), "--quiet"]) == 0
    assert len(fashionlab.load_run(run).history) == 2
