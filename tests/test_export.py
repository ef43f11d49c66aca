"""`fashionlab export`: every format reloads, matches PyTorch, carries its metadata; ONNX parity is checked
and reported; `fashionlab predict` runs an exported .onnx like the run folder it came from."""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_synthetic_dataset
from fashionlab import CLASSES
from fashionlab.cli import build_parser, main
from fashionlab.config import build_config
from fashionlab.data import load_fashion_mnist
from fashionlab.evaluate import load_run_model
from fashionlab.export import DEFAULT_NAMES, FORMATS, ExportError, export_run, resolve_format
from fashionlab.predict import predict
from fashionlab.train import train

TINY = dict(model="cnn2", epochs=1, batch_size=64, val_fraction=0.2, device="cpu", precision="fp32",
            extra={"width": 8, "hidden": 32}, tta=True)  # cnn2: batch norm and dropout must export in eval mode


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    data = load_fashion_mnist(write_synthetic_dataset(root / "data"), verify=False, progress=False)
    return train(build_config(TINY | {"out": str(root / "run")}), data=data, verbose=False)


@pytest.fixture
def inputs() -> np.ndarray:
    return torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0)).numpy()


def reference(run_dir: Path, x: np.ndarray) -> np.ndarray:
    model, _ = load_run_model(run_dir, "best", "cpu")
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def read_metadata(fmt: str, path: Path) -> dict[str, str]:
    keys = ["fashionlab.classes", "fashionlab.mean", "fashionlab.std", "fashionlab.model", "fashionlab.tta"]
    if fmt == "onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    extra = dict.fromkeys(keys, "")
    if fmt == "exported":
        torch.export.load(str(path), extra_files=extra)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.load(str(path), _extra_files=extra)
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}


@pytest.mark.parametrize("fmt, dynamic", [("onnx", False), ("onnx", True), ("exported", False),
                                          ("exported", True), ("torchscript", False)])
def test_export_reloads_matches_and_carries_metadata(run_dir, tmp_path, inputs, fmt, dynamic):
    out = tmp_path / f"model-{fmt}"
    r = export_run(run_dir, fmt, out, dynamic_batch=dynamic)
    assert r.path == out and out.is_file()
    assert r.argmax_equal == r.n_checked == 256 and r.max_abs_diff <= 1e-3  # random images: no verified data
    run = FORMATS[fmt][1](out.read_bytes())
    batch = len(inputs) if dynamic else 1
    got = np.concatenate([run(inputs[i:i + batch]) for i in range(0, len(inputs), batch)])
    np.testing.assert_allclose(got, reference(run_dir, inputs), atol=1e-4)
    meta = read_metadata(fmt, out)
    norm = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["normalize"]
    assert json.loads(meta["fashionlab.classes"]) == list(CLASSES)
    assert float(meta["fashionlab.mean"]) == norm["mean"] and float(meta["fashionlab.std"]) == norm["std"]
    assert meta["fashionlab.model"] == "cnn2" and meta["fashionlab.tta"] == "true"
    if fmt == "onnx":  # the other formats' extra files are read by the keys asked for
        temperature = json.loads((run_dir / "test_metrics.json").read_text())["temperature"]
        assert temperature is not None and float(meta["fashionlab.temperature"]) == temperature


def test_onnx_batch_dimension_is_fixed_unless_dynamic(run_dir, tmp_path):
    import onnxruntime as ort

    for dynamic in (False, True):
        path = export_run(run_dir, "onnx", tmp_path / f"{dynamic}.onnx", dynamic_batch=dynamic).path
        shape = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
        assert shape[1:] == [1, 28, 28] and (isinstance(shape[0], str) if dynamic else shape[0] == 1)


def test_cli_default_path_and_reported_parity(run_dir, capsys, monkeypatch):
    monkeypatch.setenv("FASHIONLAB_SKIP_VERIFY", "1")  # the run's synthetic test images count as "real"
    assert main(["export", str(run_dir), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert (run_dir / DEFAULT_NAMES["onnx"]).is_file()
    # The synthetic run has 200 test images, all checked (the real test set gives 256).
    assert re.search(r"onnxruntime vs PyTorch on 200 real test images: max \|logit diff\| [0-9.e+-]+, "
                     r"argmax identical 200/200", out), out
    args = build_parser("export").parse_args(["export", str(run_dir)])
    assert (resolve_format(args.format, args.out), args.out, args.dynamic_batch, args.checkpoint) == \
        ("exported", None, False, "best")
    # A second export to the default path would replace a file that may be the user's by now: refused, kept.
    (run_dir / DEFAULT_NAMES["onnx"]).write_bytes(b"the user's model")
    assert main(["export", str(run_dir), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and len(err.strip().splitlines()) == 1
    assert (run_dir / DEFAULT_NAMES["onnx"]).read_bytes() == b"the user's model"
    (run_dir / DEFAULT_NAMES["onnx"]).unlink()  # the module's run folder is shared with later tests


@pytest.mark.parametrize("name, given, written", [("m.onnx", None, "onnx"), ("m.pt2", None, "exported"),
                                                  ("m.pt", None, "torchscript"), ("m.bin", None, "exported"),
                                                  ("m.bin", "onnx", "onnx")])
def test_the_out_suffix_chooses_the_format_when_none_is_given(run_dir, tmp_path, name, given, written):
    out = tmp_path / name
    assert main(["export", str(run_dir), "--out", str(out), *(["--format", given] if given else [])]) == 0
    assert out.is_file() and FORMATS[written][1](out.read_bytes()) is not None  # its own format's loader reads it


def test_a_suffix_that_names_another_format_is_refused_before_any_work(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--format", "exported", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "has the suffix of format onnx, not exported" in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_mismatch_fails_clearly_and_writes_nothing(run_dir, tmp_path, capsys, monkeypatch):
    exporter, runner = FORMATS["onnx"]

    def noisy(data: bytes):
        run = runner(data)
        return lambda x: run(x) + 0.01

    monkeypatch.setitem(FORMATS, "onnx", (exporter, noisy))
    with pytest.raises(ExportError, match=r"max \|logit diff\| 0\.01 .*nothing written"):
        export_run(run_dir, "onnx", tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "bad.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: onnx export does not match PyTorch") and len(err.strip().splitlines()) == 1


def test_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "is not a run folder" in capsys.readouterr().err


@pytest.mark.parametrize("dynamic", [False, True])
def test_predict_with_onnx_matches_the_run_folder(run_dir, tmp_path, dynamic):
    rng = np.random.default_rng(0)
    for k in range(3):
        a = np.zeros((28, 28), np.uint8)
        a[3:25, 6:22] = rng.integers(60, 256, (22, 16), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(255 - np.kron(a, np.ones((4, 4), np.uint8))).save(buf, "PNG")
        (tmp_path / f"{k}.png").write_bytes(buf.getvalue())
    onnx_path = export_run(run_dir, "onnx", tmp_path / "m.onnx", dynamic_batch=dynamic).path
    from_run = predict(run_dir, [tmp_path], top_k=10)
    from_onnx = predict(onnx_path, [tmp_path], top_k=10)
    assert len(from_run) == len(from_onnx) == 3
    raw = predict(onnx_path, [tmp_path], top_k=10, calibrate=False)
    for a, b, c in zip(from_run, from_onnx, raw):  # TTA and the temperature (from the metadata) apply in both
        assert [t["index"] for t in a.top][:3] == [t["index"] for t in b.top][:3]
        np.testing.assert_allclose([t["prob"] for t in a.top], [t["prob"] for t in b.top], atol=1e-4)
        assert [t["index"] for t in c.top] == [t["index"] for t in b.top]  # calibration keeps the ranking...
        assert max(abs(t["prob"] - u["prob"]) for t, u in zip(b.top, c.top)) > 1e-3  # ...and moves the numbers
