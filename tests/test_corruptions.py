"""The corruption suite (fashionlab.corruptions): shapes, determinism, what each corruption does, and the evaluation
built on it."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import fashionlab.corruptions as C
from fashionlab.corruptions import (
    CORRUPTIONS,
    RANDOM_CORRUPTIONS,
    SEVERITIES,
    Correctness,
    corrupt,
    corruption_correctness,
    corruption_errors,
    evaluate_corruptions,
)
from fashionlab.errors import ConfigError


def clothes(n: int, channels: int = 1, h: int = 28, w: int = 28, seed: int = 0) -> torch.Tensor:
    """Garment-like uint8 images [n, channels, h, w]: a textured bright blob on black, like Fashion-MNIST's."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((n, channels, h, w), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
        ry, rx = rng.uniform(0.2, 0.4) * h, rng.uniform(0.2, 0.4) * w
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        texture = 150 + 60 * np.sin(xx / rng.uniform(1.5, 4)) * np.cos(yy / rng.uniform(1.5, 4))
        for c in range(channels):
            out[i, c] = np.where(inside, np.clip(texture * rng.uniform(0.7, 1.0), 0, 255), 0)
    return torch.from_numpy(out)


def mean_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().mean().item()


# ---------------------------------------------------------------- shapes and determinism


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (4, 3, 28, 28), (3, 3, 20, 33), (2, 1, 9, 13), (6, 28, 28)])
def test_every_corruption_keeps_shape_and_dtype(shape):
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for name in CORRUPTIONS:
        for s in SEVERITIES:
            y = corrupt(x, name, s)
            assert y.shape == x.shape and y.dtype == torch.uint8 and y.device == x.device, (name, s)
    assert corrupt(x[:0], "gaussian_noise", 3).shape == x[:0].shape


def test_same_seed_same_pixels_and_only_random_corruptions_depend_on_it():
    x = clothes(16)
    for name in CORRUPTIONS:
        a, b, other = corrupt(x, name, 3, seed=0), corrupt(x, name, 3, seed=0), corrupt(x, name, 3, seed=1)
        assert torch.equal(a, b), name
        assert torch.equal(a, other) != (name in RANDOM_CORRUPTIONS), name
        assert not torch.equal(a, x), f"{name} changed nothing"


def test_chunking_does_not_change_pixels(monkeypatch):
    x = clothes(150, seed=1)  # not a whole number of the 64-image random blocks
    for name in sorted(RANDOM_CORRUPTIONS) + ["jpeg", "gaussian_blur"]:
        whole = corrupt(x, name, 4, seed=3)
        parts = [corrupt(x[a:b], name, 4, seed=3, start=a) for a, b in ((0, 37), (37, 100), (100, 150))]
        assert torch.equal(torch.cat(parts), whole), name
        assert torch.equal(corrupt(x[70:71], name, 4, seed=3, start=70), whole[70:71]), name
    default = {name: corrupt(x, name, 2, seed=3) for name in CORRUPTIONS}
    monkeypatch.setattr(C, "_CACHE_ELEMENTS", 1)  # internal chunks of one 64-image random block each
    for name in CORRUPTIONS:
        assert torch.equal(corrupt(x, name, 2, seed=3), default[name]), name


# Mean absolute pixel change that each (corruption, severity) makes to clothes(8, seed=5), recorded when the suite
# was fixed. The suite is a contract (corruptions.json files are compared across runs): a change here means a new
# SUITE_VERSION. Loose enough (0.05 of a grey level) that a rare float rounding tie on another CPU cannot matter.
GOLDEN = {
    "gaussian_noise": [10.436, 15.64, 23.382, 33.315, 46.701],
    "shot_noise": [5.144, 7.924, 11.139, 16.489, 20.138],
    "impulse_noise": [3.811, 7.57, 12.449, 22.153, 34.219],
    "gaussian_blur": [2.375, 5.153, 7.268, 11.067, 14.477],
    "motion_blur": [4.508, 6.763, 8.017, 11.277, 14.254],
    "contrast": [30.583, 35.607, 40.815, 45.91, 48.339],
    "brightness": [25.861, 50.998, 75.881, 100.709, 123.872],
    "rotation": [7.715, 13.525, 18.393, 24.309, 29.448],
    "translation": [11.244, 20.945, 28.895, 35.148, 39.763],
    "horizontal_flip": [37.842, 37.842, 37.842, 37.842, 37.842],
    "pixelate": [6.354, 10.053, 13.628, 16.045, 19.041],
    "jpeg": [5.484, 6.945, 7.427, 7.361, 7.956],
}


def test_suite_is_unchanged():
    x = clothes(8, seed=5)
    got = {name: [round(mean_change(corrupt(x, name, s), x), 3) for s in SEVERITIES] for name in CORRUPTIONS}
    assert set(got) == set(GOLDEN)
    for name in CORRUPTIONS:
        assert got[name] == pytest.approx(GOLDEN[name], abs=0.05), (name, got[name])
    assert C.SUITE_VERSION == 1


# ---------------------------------------------------------------- what each corruption does


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "motion_blur",
                                  "contrast", "brightness", "rotation", "translation", "pixelate", "jpeg"])
def test_change_grows_with_severity(name):
    x = clothes(64, seed=2)
    changes = [mean_change(corrupt(x, name, s), x) for s in SEVERITIES]
    assert all(a < b for a, b in zip(changes, changes[1:])), changes


def test_common_random_numbers_across_severities():
    """Impulse noise hits a growing set of pixels: each severity's hits include the milder one's."""
    x = torch.full((32, 1, 28, 28), 128, dtype=torch.uint8)
    hit = [corrupt(x, "impulse_noise", s) != 128 for s in SEVERITIES]
    for milder, harsher in zip(hit, hit[1:]):
        assert milder.sum() < harsher.sum() and not (milder & ~harsher).any()


def test_horizontal_flip_is_the_mirror_image_at_every_severity():
    x = clothes(10, channels=3, h=20, w=33)
    for s in SEVERITIES:
        assert torch.equal(corrupt(x, "horizontal_flip", s), torch.flip(x, dims=[-1]))
        assert torch.equal(corrupt(x[:, 0], "horizontal_flip", s), torch.flip(x[:, 0], dims=[-1]))


@pytest.mark.parametrize("severity", SEVERITIES)
def test_translation_moves_content_by_the_severity_in_pixels(severity):
    x = torch.zeros(64, 2, 28, 28, dtype=torch.uint8)
    x[:, 0, 10, 12], x[:, 1, 11, 12] = 200, 100  # two channels, must move together
    y = corrupt(x, "translation", severity)
    moves = set()
    for img in y:
        (r, c), = torch.nonzero(img[0]).tolist()
        assert img[0, r, c] == 200 and torch.nonzero(img[1]).tolist() == [[r + 1, c]] and img[1, r + 1, c] == 100
        moves.add((r - 10, c - 12))
    p = severity
    assert moves == {(-p, -p), (-p, p), (p, -p), (p, p)}  # all four diagonal directions, chosen per image
    corner = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    corner[:, 0, 0, 0] = 255
    kept = corrupt(corner, "translation", 1).flatten(1).sum(1)
    assert set(kept.tolist()) == {0, 255}  # content pushed out of the image is lost; black comes in


def test_rotation_turns_each_image_one_way_or_the_other():
    t_shape = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    t_shape[0, 0, 5:9, 6:22], t_shape[0, 0, 9:24, 12:16] = 220, 180  # a "T": left-right symmetric
    y = corrupt(t_shape.expand(40, -1, -1, -1), "rotation", 5)
    distinct = torch.unique(y, dim=0)
    assert len(distinct) == 2  # +60 and -60 degrees
    assert (distinct[0].int() - distinct[1].flip(-1).int()).abs().max() <= 1  # mirror images of each other
    assert mean_change(distinct[0], t_shape[0]) > 20
    yy, xx = torch.meshgrid(torch.arange(28) - 13.5, torch.arange(28) - 13.5, indexing="ij")
    blob = (200 * torch.exp(-(yy ** 2 + xx ** 2) / 50)).round().byte()[None, None].expand(8, 1, 28, 28)
    assert mean_change(corrupt(blob, "rotation", 5), blob) < 1  # turned about the image centre, a round blob centred
    off_centre = blob.roll(5, 3)  # there stays put, and one beside it moves
    assert mean_change(corrupt(off_centre, "rotation", 5), off_centre) > 10


def test_noise_statistics():
    grey = torch.full((64, 1, 28, 28), 128, dtype=torch.uint8)
    diff = corrupt(grey, "gaussian_noise", 1).double() - 128
    assert diff.mean().abs() < 0.5 and diff.std().item() == pytest.approx(0.08 * 255, rel=0.03)
    photons = 60
    counts = (corrupt(grey, "shot_noise", 1).double() * photons / 255).round()  # back to photon counts
    rate = 128 / 255 * photons
    assert counts.mean().item() == pytest.approx(rate, rel=0.01)
    assert counts.var().item() == pytest.approx(rate, rel=0.05)
    assert torch.equal(corrupt(torch.zeros_like(grey), "shot_noise", 5), torch.zeros_like(grey))  # no light: no shot
    y = corrupt(grey, "impulse_noise", 5)
    assert (y == 0).double().mean().item() == pytest.approx(0.27 / 2, abs=0.01)
    assert (y == 255).double().mean().item() == pytest.approx(0.27 / 2, abs=0.01)
    assert ((y == 0) | (y == 255) | (y == 128)).all()


def test_contrast_brightness_and_pixelate():
    x = clothes(16, channels=3)
    y = corrupt(x, "contrast", 5)
    assert torch.allclose(y.double().mean((2, 3)), x.double().mean((2, 3)), atol=0.5)  # each channel keeps its mean
    assert (y.double().amax((2, 3)) - y.double().amin((2, 3)) <= 0.05 * 255 + 1).all()
    grey = clothes(16)
    assert torch.equal(corrupt(grey, "brightness", 2), (grey.double() + 0.2 * 255).round().clamp(max=255).byte())
    rgb = torch.tensor([[0, 0, 0], [200, 100, 50], [250, 125, 0]], dtype=torch.uint8).T.reshape(1, 3, 1, 3)
    out = corrupt(rgb, "brightness", 1)[0, :, 0].T.tolist()
    assert out[0] == [26, 26, 26]  # black turns grey
    assert out[1] == [226, 113, 56]  # brighter, same hue and saturation: (200 + 25.5) / 200 times each channel
    assert out[2] == [255, 128, 0]  # the value cannot pass white
    x = clothes(4, h=28, w=30)
    p = corrupt(x, "pixelate", 3)  # 4x4 blocks, each its mean; the last column of blocks is 2 px wide
    assert torch.equal(p, p[:, :, ::4, ::4].repeat_interleave(4, 2).repeat_interleave(4, 3)[:, :, :, :30])
    assert torch.equal(p[:, :, 4, 28], x[:, :, 4:8, 28:30].double().mean((2, 3)).round().byte())


def test_jpeg_is_pillows_jpeg_of_each_image_and_mild_at_severity_1():
    for x in (clothes(23, seed=4), clothes(10, channels=3, h=20, w=33, seed=4)):
        y = corrupt(x, "jpeg", 2)
        for img, got in zip(x, y):
            buffer = io.BytesIO()
            pil = Image.fromarray(img[0].numpy()) if len(img) == 1 else Image.fromarray(img.permute(1, 2, 0).numpy())
            pil.save(buffer, format="JPEG", quality=18, subsampling=0)
            alone = torch.from_numpy(np.asarray(Image.open(buffer)).copy())
            assert torch.equal(got, alone[None] if alone.ndim == 2 else alone.permute(2, 0, 1))
    x = clothes(64)
    y = corrupt(x, "jpeg", 1)
    assert (y != x).double().mean() > 0.2 and mean_change(y, x) < 6


# ---------------------------------------------------------------- evaluation


def oracle_data():
    """Images with labels, some left-right symmetric, one black; all distinct."""
    x = clothes(30, seed=7)
    x[:8] = torch.maximum(x[:8], x[:8].flip(-1))  # symmetric
    x[8] = 0  # black
    labels = torch.arange(30) % 10
    assert len({bytes(img.numpy()) for img in x}) == 30
    return x, labels


def lookup_predictor(images: torch.Tensor, labels: torch.Tensor):
    """The true label of an image identical to a clean one, else a wrong class: accuracy = fraction unchanged."""
    table = {bytes(img.numpy()): int(label) for img, label in zip(images, labels)}
    return lambda batch: torch.tensor([table.get(bytes(img.numpy()), 10) for img in batch], dtype=torch.int64)


def test_oracle_accuracy_is_the_fraction_of_images_left_unchanged():
    x, labels = oracle_data()
    calls = []
    result = evaluate_corruptions(lookup_predictor(x, labels), x, labels, seed=4,
                                  progress=lambda *a: calls.append(a))
    assert result["clean_accuracy"] == 1.0
    for name in CORRUPTIONS:
        for s in SEVERITIES:
            unchanged = (corrupt(x, name, s, seed=4) == x).flatten(1).all(1).double().mean().item()
            assert result[name][str(s)] == unchanged, (name, s)
    assert all(result["horizontal_flip"][str(s)] == 9 / 30 for s in SEVERITIES)  # 8 symmetric + black
    assert all(result["brightness"][str(s)] == 0 for s in SEVERITIES)  # black turns grey: nothing stays
    assert all(result["shot_noise"][str(s)] >= 1 / 30 for s in SEVERITIES)  # black has no shot noise
    assert result["rotation"]["5"] < 1 / 30 + 1e-9 and result["gaussian_noise"]["5"] == 0
    assert len(calls) == 1 + 60 and calls[0] == (1, 61, "clean") and calls[-1] == (61, 61, "jpeg/5")
    chunked = evaluate_corruptions(lookup_predictor(x, labels), x, labels, seed=4, batch_size=7)
    assert chunked == result  # predicting in chunks sees the same corrupted pixels
    other_seed = evaluate_corruptions(lookup_predictor(x, labels), x, labels, seed=5)
    assert other_seed["horizontal_flip"] == result["horizontal_flip"]


def test_summary_of_a_constant_predictor_and_the_mce():
    x = clothes(40, seed=8)
    labels = torch.tensor([0] * 12 + [3] * 28)
    always_0 = lambda batch: torch.zeros(len(batch), dtype=torch.int64)  # noqa: E731
    result = evaluate_corruptions(always_0, x[:, 0], labels)  # N×H×W, the dataset's own shape
    assert result["corruptions"] == list(CORRUPTIONS) and result["severities"] == list(SEVERITIES)
    assert all(result[name] == {str(s): 0.3 for s in SEVERITIES} for name in CORRUPTIONS)
    assert result["clean_accuracy"] == 0.3 and result["mean_corruption_accuracy"] == pytest.approx(0.3)
    assert result["mean_corruption_error"] == pytest.approx(0.7)
    assert result["mce"] is None and result["mce_baseline"] is None
    assert result["seed"] == 0 and result["n_images"] == 40 and result["suite_version"] == C.SUITE_VERSION
    assert json.loads(json.dumps(result)) == result  # JSON as is: string severity keys

    itself = evaluate_corruptions(always_0, x, labels, baseline_errors=corruption_errors(result), baseline_name="cnn1")
    assert itself["mce"] == pytest.approx(1.0) and itself["mce_baseline"] == "cnn1"
    better = {name: {s: 0.35 for s in SEVERITIES} for name in CORRUPTIONS}
    assert evaluate_corruptions(always_0, x, labels, baseline_errors=better)["mce"] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="no error for jpeg"):
        evaluate_corruptions(always_0, x, labels, baseline_errors={k: v for k, v in better.items() if k != "jpeg"})
    with pytest.raises(ConfigError, match="makes no error on contrast"):
        evaluate_corruptions(always_0, x, labels, baseline_errors={**better, "contrast": {s: 0 for s in SEVERITIES}})


def test_subsets_and_per_image_correctness(tmp_path):
    x, labels = oracle_data()
    predict = lookup_predictor(x, labels)
    correct = corruption_correctness(predict, x, labels, names=["rotation", "horizontal_flip"], severities=[3, 1])
    assert list(correct.corrupted) == [("rotation", 1), ("rotation", 3), ("horizontal_flip", 1),
                                       ("horizontal_flip", 3)]  # suite order, severities sorted
    flipped = correct.corrupted["horizontal_flip", 3]
    assert flipped.dtype == bool and flipped.shape == (30,) and flipped[:9].all() and not flipped[9:].any()
    np.savez(tmp_path / "c.npz", **correct.to_arrays())
    with np.load(tmp_path / "c.npz") as arrays:
        again = Correctness.from_arrays(arrays)
    assert again.seed == 0 and list(again.corrupted) == list(correct.corrupted)
    assert all(np.array_equal(again.corrupted[k], v) for k, v in correct.corrupted.items())
    summary = C.summarize_corruptions(again)
    assert summary["corruptions"] == ["rotation", "horizontal_flip"] and summary["severities"] == [1, 3]
    assert summary["horizontal_flip"] == {"1": 0.3, "3": 0.3} and "gaussian_noise" not in summary


def test_bad_input_is_refused():
    x = clothes(4)
    with pytest.raises(ConfigError, match="unknown corruption 'fog'"):
        corrupt(x, "fog", 1)
    for severity in (0, 6, True, "3", 2.0):
        with pytest.raises(ConfigError, match="severity"):
            corrupt(x, "contrast", severity)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(x.float(), "contrast", 1)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(x[0, 0], "contrast", 1)
    with pytest.raises(ConfigError, match="distinct"):
        corruption_correctness(lambda b: torch.zeros(len(b)), x, torch.zeros(4), names=["jpeg", "jpeg"])
    with pytest.raises(ValueError, match="one label per image"):
        corruption_correctness(lambda b: torch.zeros(len(b)), x, torch.zeros(3))
    with pytest.raises(ValueError, match="predict returned 1 classes for 4 images"):
        corruption_correctness(lambda b: torch.zeros(1), x, torch.zeros(4))
