"""Grad-CAM (`fashionlab predict --explain`): the maps against a Grad-CAM written here with hooks, where a model's
evidence lies when we built it to lie in one quadrant, the model left as it was, the PNGs, and the CLI's checks.

captum is an optional extra (`make setup` installs it). Where it is not installed, only the tests of the message
that says so run.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import fashionlab
from fashionlab import predict as predict_module
from fashionlab.cli import main
from fashionlab.errors import ConfigError, FashionlabError, RunError
from fashionlab.explain import gradcam, last_conv, overlay_png
from fashionlab.models import Classifier, Ensemble
from fashionlab.runfolder import RunFolder

HAVE_CAPTUM = importlib.util.find_spec("captum") is not None
needs_captum = pytest.mark.skipif(not HAVE_CAPTUM, reason="captum is not installed: pip install 'fashionlab[explain]'")


def reference_gradcam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """Grad-CAM from its definition: A = the layer's output, w_k = mean over H, W of dY/dA_k,
    relu(sum_k w_k A_k), bilinear to the input's size, each map divided by its maximum."""
    model.eval()
    saved = []
    hook = layer.register_forward_hook(lambda module, inp, out: saved.append(out))
    try:
        scores = model(x).gather(1, targets[:, None]).sum()  # eval mode: each image's score is its own
    finally:
        hook.remove()
    (grads,) = torch.autograd.grad(scores, saved[0])
    cam = torch.relu((grads.mean((2, 3), keepdim=True) * saved[0]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.amax((1, 2), keepdim=True)
    return torch.where(peak > 0, cam / peak.clamp_min(1e-30), cam).detach()


def small_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(8 * 8 * 10, 5))
    with torch.no_grad():  # running statistics that differ from a fresh layer's, so train mode would show
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net


# ---------------------------------------------------------------------------------------------- the maps


@needs_captum
@pytest.mark.parametrize("which", ["default", "first conv"])
def test_gradcam_agrees_with_the_definition(which):
    net = small_net()
    x = torch.rand(8, 3, 16, 20)  # not square: H and W cannot be swapped unnoticed
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    layer = None if which == "default" else net[0]
    ours = gradcam(net, x, targets, layer)
    theirs = reference_gradcam(net, x, targets, layer or net[4])
    assert ours.shape == (8, 16, 20) and ours.dtype == torch.float32
    assert int((ours.flatten(1).amax(1) == 1).sum()) >= 4  # most maps are not all zero: the test compares shapes
    assert ours.min() >= 0 and ours.max() <= 1
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


TOP_LEFT, TOP_RIGHT, WHOLE = (slice(0, 14), slice(0, 14)), (slice(0, 14), slice(14, 28)), (slice(None), slice(None))


class Quadrants(nn.Module):
    """Class c's logit is computed from the pixels of regions[c] of a 28x28 image only: the input is masked into
    one channel group per class before the conv (groups keep them apart). scale: of the logits."""

    def __init__(self, regions=(TOP_RIGHT, TOP_LEFT, WHOLE), scale: float = 1.0):
        super().__init__()
        masks = torch.zeros(len(regions), 28, 28)
        for c, (rows, cols) in enumerate(regions):
            masks[c, rows, cols] = 1
        self.register_buffer("masks", masks[None])
        self.scale = scale
        # 14x14 maps, so the upsampling is tested too
        self.conv = nn.Conv2d(len(regions), 2 * len(regions), 2, stride=2, groups=len(regions), bias=False)
        with torch.no_grad():
            self.conv.weight.uniform_(0.1, 1.0)

    def forward(self, x):
        a = torch.relu(self.conv(x * self.masks))
        return a.view(len(x), len(self.masks[0]), 2, 14, 14).sum((2, 3, 4)) * self.scale


@needs_captum
def test_the_map_lies_where_the_class_looks():
    torch.manual_seed(0)
    model = Quadrants()
    x = torch.rand(4, 1, 28, 28) + 0.1
    for target, (rows, cols) in ((1, TOP_LEFT), (0, TOP_RIGHT)):
        heat = gradcam(model, x, torch.full((4,), target))
        inside = heat[:, rows, cols].sum((1, 2)) / heat.sum((1, 2))
        assert (inside > 0.95).all(), (target, inside)  # the rest: one bilinear row and column at the edge
    whole = gradcam(model, x, torch.full((4,), 2))
    assert (whole[:, 14:, :14].sum((1, 2)) > 0.1 * whole.sum((1, 2))).all()  # the bottom-left counts for class 2


@needs_captum
def test_an_ensembles_map_is_the_mean_of_its_members(tmp_path):
    """No single member's layer explains an ensemble: the default (the last conv) sees only the last member;
    predict gives gradcam every member's last conv, and their maps are averaged."""
    torch.manual_seed(0)
    # Class 1: the top-left for one member, the top-right for the other; logits small enough for a softmax.
    left, right = Quadrants((TOP_RIGHT, TOP_LEFT), scale=0.01), Quadrants((TOP_LEFT, TOP_RIGHT), scale=0.01)
    ensemble = Classifier(Ensemble([left, right]))
    x = torch.rand(3, 1, 28, 28) + 0.1
    target = torch.ones(3, dtype=torch.long)

    def mass(heat, cols):
        return heat[:, :14, cols].sum((1, 2)) / heat.sum((1, 2))

    last_only = gradcam(ensemble, x, target)
    assert (mass(last_only, slice(14, 28)) > 0.95).all()
    both = gradcam(ensemble, x, target, [left.conv, right.conv])
    assert (mass(both, slice(0, 14)) > 0.3).all() and (mass(both, slice(14, 28)) > 0.3).all()
    mean = (gradcam(ensemble, x, target, left.conv) + gradcam(ensemble, x, target, right.conv)) / 2
    torch.testing.assert_close(both, mean / mean.flatten(1).amax(1).view(-1, 1, 1))

    model = predict_module.TorchModel.__new__(predict_module.TorchModel)  # what a run folder of it would load
    model.model, model.device, model.shape = ensemble, "cpu", (1, 28, 28)
    pixels = (x[:, 0] * 200).to(torch.uint8)
    expected = gradcam(ensemble, pixels.float().div(255).unsqueeze(1), target, [left.conv, right.conv])
    np.testing.assert_allclose(model.heatmaps(pixels, target), expected.numpy(), atol=1e-6)


@needs_captum
def test_gradcam_leaves_the_model_as_it_was():
    net = small_net()
    net.train()
    net[6].eval()  # modes mixed on purpose: both must come back as they were
    net[0].weight.grad = torch.full_like(net[0].weight, 0.25)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    x = torch.rand(4, 3, 16, 20)
    first = gradcam(net, x, torch.tensor([0, 1, 2, 3]))
    assert [m.training for m in net.modules()] == modes
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert torch.equal(net[0].weight.grad, torch.full_like(net[0].weight, 0.25))
    assert all(p.grad is None for name, p in net.named_parameters() if name != "0.weight")
    assert not x.requires_grad and x.grad is None and not first.requires_grad
    # It ran in eval mode: in train mode dropout and batch statistics would make each call differ.
    torch.testing.assert_close(gradcam(net.eval(), x, torch.tensor([0, 1, 2, 3])), first)


def test_a_model_without_a_conv_layer_is_one_line_error():
    with pytest.raises(ConfigError) as e:
        last_conv(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))
    assert "no nn.Conv2d" in str(e.value) and "\n" not in str(e.value)


def test_without_captum_the_error_says_how_to_install(monkeypatch, trained, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "captum", None)  # makes `import captum` raise ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(ConfigError) as e:
        gradcam(small_net(), torch.rand(1, 3, 16, 20), torch.tensor([0]))
    assert "pip install 'fashionlab[explain]'" in str(e.value)
    monkeypatch.setattr(predict_module, "load_model", lambda *a: pytest.fail("the model was loaded"))
    rc = main(["predict", str(trained), *two_images(tmp_path), "--explain", str(tmp_path / "heat")])
    out, err = capsys.readouterr()
    assert rc == 2 and not out and len(err.strip().splitlines()) == 1
    assert "pip install 'fashionlab[explain]'" in err and not (tmp_path / "heat").exists()


def test_overlay_png_shows_the_input_beside_the_heat():
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 8:20] = 200
    heat = np.zeros((28, 28))
    heat[:14, :14] = 1.0
    picture = np.asarray(Image.open(io.BytesIO(overlay_png(image, heat))))
    assert picture.shape == (224, 8 * (28 + 1 + 28), 3)  # a 28x28 input 8x as large, twice, and a line between
    left, right = picture[:, :224], picture[:, 232:]
    assert np.array_equal(left[::8, ::8, 0], image) and (left[::8, ::8] == image[..., None]).all()
    assert np.array_equal(right[112:, :][::8, ::8], left[112:, :][::8, ::8])  # no heat: the input shows through
    assert not np.array_equal(right[:112, :112], left[:112, :112])
    rgb = np.stack([image, image // 2, 255 - image])  # the model's layout [C, H, W]
    assert np.asarray(Image.open(io.BytesIO(overlay_png(rgb, heat)))).shape == (224, 456, 3)


# ---------------------------------------------------------------------------------------------- predict --explain


def fashion_item(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.zeros((28, 28), np.uint8)
    a[2:26, 6:22] = rng.integers(90, 250, (24, 16), dtype=np.uint8)
    return a


def two_images(tmp_path: Path) -> list[str]:
    Image.fromarray(fashion_item()).save(tmp_path / "item.png")
    Image.fromarray(255 - np.kron(fashion_item(1), np.ones((5, 5), np.uint8))).save(tmp_path / "photo.png")
    return [str(tmp_path / "item.png"), str(tmp_path / "photo.png")]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["predict", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@needs_captum
def test_explain_writes_one_heatmap_per_input_and_changes_no_prediction(trained, tmp_path, capsys):
    files = two_images(tmp_path)
    out = tmp_path / "heat" / "maps"  # parents made
    plain = cli(capsys, str(trained), *files)
    explained = cli(capsys, str(trained), *files, "--explain", str(out))
    assert explained == plain and plain[0] == 0  # the table and its note are the same
    names = ["00000-item-gradcam.png", "00001-photo-gradcam.png"]
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        assert Image.open(out / name).size == (456, 224)
        Image.open(out / name).verify()

    rc, lines, _ = cli(capsys, str(trained), *files, "--json")
    rc2, explained_lines, _ = cli(capsys, str(trained), *files, "--json", "--explain", str(tmp_path / "json"),
                                  "--save-preprocessed", str(tmp_path / "json"))  # one folder for both: no clash
    assert rc == rc2 == 0
    rows, explained_rows = [json.loads(x) for x in lines.splitlines()], [json.loads(x) for x in
                                                                         explained_lines.splitlines()]
    assert [r | {"explanation": str(tmp_path / "json" / n)} for r, n in zip(rows, names)] == explained_rows
    assert sorted(p.name for p in (tmp_path / "json").iterdir()) == sorted(
        names + ["00000-item.png", "00001-photo.png"])


@needs_captum
def test_the_heatmap_is_of_the_top_class_for_what_the_model_saw(trained, tmp_path):
    results = predict_module.predict(trained, two_images(tmp_path), explain=tmp_path / "heat")
    model = predict_module.TorchModel(trained, "best", "cpu")
    x = torch.from_numpy(np.stack([r.pixels for r in results])).float().div(255).unsqueeze(1)
    top1 = torch.tensor([r.top[0]["index"] for r in results])
    expected = gradcam(model.model, x, top1).numpy()
    assert np.allclose(np.stack([r.heat for r in results]), expected, atol=1e-6)
    assert [Path(r.explanation).name for r in results] == ["00000-item-gradcam.png", "00001-photo-gradcam.png"]


@needs_captum
def test_explain_never_overwrites_and_checks_before_any_work(trained, tmp_path, capsys, monkeypatch):
    files = two_images(tmp_path)
    out = tmp_path / "heat"
    out.mkdir()
    (out / "00001-photo-gradcam.png").write_bytes(b"the user's own file")
    (out / "00000-item.png").write_bytes(b"a --save-preprocessed name: no clash")
    monkeypatch.setattr(predict_module, "load_model", lambda *a: pytest.fail("the model was loaded"))
    rc, stdout, err = cli(capsys, str(trained), *files, "--explain", str(out))
    assert rc == 2 and not stdout and len(err.strip().splitlines()) == 1
    assert "--explain folder" in err and "already holds 00001-photo-gradcam.png" in err and "never overwrites" in err
    assert (out / "00001-photo-gradcam.png").read_bytes() == b"the user's own file"
    assert sorted(p.name for p in out.iterdir()) == ["00000-item.png", "00001-photo-gradcam.png"]

    (tmp_path / "a-file").write_text("keep me")
    rc, stdout, err = cli(capsys, str(trained), *files, "--explain", str(tmp_path / "a-file"))
    assert rc == 2 and not stdout and "is a file, not a folder" in err and len(err.strip().splitlines()) == 1


@needs_captum
def test_explain_never_writes_into_the_runs_dataset_folder(trained, tmp_path, capsys, monkeypatch):
    run = Path(shutil.copytree(trained, tmp_path / "run"))
    data = tmp_path / "my-images"
    data.mkdir()
    config = json.loads((run / "config.json").read_text())
    own = {"path": str(data), "fingerprint": "0" * 64, "classes": list(fashionlab.CLASSES), "channels": 1}
    (run / "config.json").write_text(json.dumps(config | {"dataset": str(data), "data": config["data"] | own}))
    assert RunFolder(run).config()["dataset"] == str(data)  # still a readable run's config
    monkeypatch.setattr(predict_module, "load_model", lambda *a: pytest.fail("the model was loaded"))
    for option in ("--explain", "--save-preprocessed"):
        rc, stdout, err = cli(capsys, str(run), *two_images(tmp_path), option, str(data / "heat"))
        assert rc == 2 and not stdout and len(err.strip().splitlines()) == 1
        assert f"{option} {data / 'heat'} is inside the dataset folder" in err
    assert not any(data.iterdir())


@needs_captum
def test_explain_refuses_an_onnx_model_before_any_work(trained, tmp_path, capsys, monkeypatch):
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not even read")
    real_load_model = predict_module.load_model
    monkeypatch.setattr(predict_module, "load_model", lambda *a: pytest.fail("the model was loaded"))
    rc, stdout, err = cli(capsys, str(fake), *two_images(tmp_path), "--explain", str(tmp_path / "heat"))
    assert rc == 2 and not stdout and len(err.strip().splitlines()) == 1
    assert "--explain needs a run folder" in err and ".onnx" in err and not (tmp_path / "heat").exists()
    monkeypatch.setattr(predict_module, "load_model", real_load_model)

    pytest.importorskip("onnxruntime")
    copy = Path(shutil.copytree(trained, tmp_path / "run"))
    assert main(["export", str(copy), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()
    with pytest.raises(RunError, match="--explain needs a run folder"):
        fashionlab.predict(tmp_path / "m.onnx", fashion_item(), explain=tmp_path / "heat")
    with pytest.raises(RunError, match="--explain needs a run folder"):  # the check below the API's too
        predict_module.predict_items(predict_module.OnnxModel(tmp_path / "m.onnx"),
                                     predict_module.collect_images(fashion_item()), explain=True)
    assert not (tmp_path / "heat").exists()


@needs_captum
def test_the_api_names_in_memory_images_and_reports_the_path(trained, tmp_path):
    files = two_images(tmp_path)
    rows = fashionlab.predict(trained, [fashion_item(2), files[0]], explain=str(tmp_path / "heat"))
    assert [Path(r["explanation"]).name for r in rows] == ["00000-image-0-gradcam.png", "00001-item-gradcam.png"]
    assert all(Path(r["explanation"]).is_file() for r in rows)
    assert [r["top"] for r in rows] == [r["top"] for r in fashionlab.predict(trained, [fashion_item(2), files[0]])]
    with pytest.raises(FashionlabError) as e:  # the same names again: refused, nothing replaced
        fashionlab.predict(trained, [fashion_item(2)], explain=tmp_path / "heat")
    assert "already holds 00000-image-0-gradcam.png" in str(e.value)
    with pytest.raises(ConfigError, match="explain must be a folder path"):
        fashionlab.predict(trained, [fashion_item(2)], explain=True)
