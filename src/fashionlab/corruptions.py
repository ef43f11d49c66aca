"""Common corruptions of test images: a fixed, seeded suite of batched tensor ops with severities 1-5.

`corrupt(images, name, severity, seed)` takes uint8 images N×C×H×W (or N×H×W, the dataset's own shape) and returns
uint8 images of the same shape, so every model sees exactly the same corrupted pixels and applies its own
preprocessing afterwards. All arithmetic runs on the CPU in float64 and is rounded (half to even) to uint8 at the end,
whatever device the images came from.

Determinism. Random draws are float64 uniforms from CPU torch.Generators (Mersenne Twister) seeded through SHA-256
of (seed, corruption, draw, block of 64 images): never Python's hash(). Image i's numbers depend only on (seed,
corruption, i), so chunking a test set (`start=` the index of the chunk's first image) changes nothing, and the same
numbers serve every severity (common random numbers: severity s+1 differs from s only in its parameter, so a curve
over severities is not confounded by fresh noise, and an image rotates the same way at every severity). The output
is identical on every call; across machines it is identical for the pinned torch and Pillow (JPEG uses the libjpeg
that Pillow bundles), barring a last-bit float64 difference (a transcendental function, bilinear sampling) that
lands exactly on a rounding tie.

Severities: the parameters are in the one table PARAMETERS below. horizontal_flip has no scale: every severity is the
same full mirror image, so its five accuracies are equal; it answers "is the model robust to horizontal flips".

The JSON that `evaluate_corruptions` returns (and `corruptions.json` holds); severity keys are strings so that
what is written is what json.load gives back:

    {
      "gaussian_noise": {"1": 0.871, "2": 0.83, "3": 0.74, "4": 0.61, "5": 0.42},
      ...                                  one object per corruption evaluated, accuracy per severity
      "corruptions": ["gaussian_noise", ...],   the corruption keys above, in suite order
      "severities": [1, 2, 3, 4, 5],
      "clean_accuracy": 0.912,
      "mean_corruption_accuracy": 0.70,    mean over corruptions of the mean over severities
      "mean_corruption_error": 0.30,       1 - mean_corruption_accuracy: unnormalised
      "mce": null,                         Hendrycks & Dietterich's mCE, as a ratio (1.0 = the baseline's errors):
                                           mean over corruptions c of sum_s E(c,s) / sum_s E_baseline(c,s)
      "mce_baseline": null,                what "mce" is relative to (a name), null when no baseline was given
      "seed": 0, "n_images": 10000, "suite_version": 1
    }

Per-image correctness, for McNemar tests between models on the same corrupted images, comes from
`corruption_correctness` (a `Correctness`; `to_arrays()` gives np.savez-ready arrays); `summarize_corruptions`
turns it into the JSON above, and `evaluate_corruptions` does both.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fashionlab.errors import ConfigError

SUITE_VERSION = 1  # bump when a parameter or an algorithm changes: older corruptions.json are then not comparable
SEVERITIES = (1, 2, 3, 4, 5)

# The parameter of each corruption at severities 1..5. Sources: MNIST-C (Mu & Gilmer 2019, which runs ImageNet-C's
# code on 28x28 MNIST) and ImageNet-C (Hendrycks & Dietterich 2019, 224 px; its CIFAR-10-C variant is 32 px).
# Per-pixel parameters (noise, contrast, brightness) do not depend on image size and follow MNIST-C = ImageNet-C;
# size-dependent ones (blur, pixelation, JPEG, geometry) are the 28 px ones of MNIST-C where it has them, else ours,
# scaled for 28x28 images as noted. Pixel intensities are in [0, 1] units below.
PARAMETERS: dict[str, tuple] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # std of additive noise (MNIST-C = ImageNet-C)
    "shot_noise": (60, 25, 12, 5, 3),  # photons at full white: Poisson(x * p) / p (MNIST-C = ImageNet-C)
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),  # fraction of values set to 0 or 1, half each (MNIST-C)
    "gaussian_blur": (0.5, 0.75, 1.0, 1.5, 2.0),  # sigma, px. Ours: ImageNet-C's 1-6 (at 224 px) would erase a
    #                                               28 px image; CIFAR-10-C uses 0.4-1.0 at 32 px
    "motion_blur": (2, 3, 4, 6, 8),  # streak length, px, angle uniform in [-45, 45] deg per image as in ImageNet-C.
    #                                  Ours: a box streak spanning about the 3-sigma reach of CIFAR-10-C's (32 px)
    #                                  one-sided Gaussian, sigma 1-2.5, a bit longer at severity 5
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),  # factor pulling each channel to its mean (MNIST-C = ImageNet-C)
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added to the HSV value; grey: x + b (MNIST-C = ImageNet-C)
    "rotation": (10, 20, 30, 45, 60),  # degrees, direction per image; MNIST-C: 0.2-1.0 rad = 11-57 deg
    "translation": (1, 2, 3, 4, 5),  # px along both axes, each sign per image (MNIST-C)
    "horizontal_flip": ("mirror",) * 5,  # no scale: every severity is the same full left-right mirror image
    "pixelate": (2, 3, 4, 5, 6),  # block size, px: each block's mean. MNIST-C downscales by 0.6-0.25 (blocks of
    #                               1.7-4 px); whole blocks keep every severity a regular grid, strictly coarser
    "jpeg": (25, 18, 15, 10, 7),  # Pillow JPEG quality (MNIST-C; ImageNet-C's 80-40 barely changes 28 px images)
}
CORRUPTIONS: tuple[str, ...] = tuple(PARAMETERS)
RANDOM_CORRUPTIONS = frozenset({"gaussian_noise", "shot_noise", "impulse_noise", "motion_blur", "rotation",
                                "translation"})

_BLOCK = 64  # images per generator: image i's draws come from block i // 64, whatever the chunking
_CACHE_ELEMENTS = 2 ** 18  # corrupt in chunks of about this many values (2 MiB per float64 copy: cache-sized)
_PREDICT_ELEMENTS = 2 ** 23  # evaluate_corruptions predicts about this many pixel values at a time


# ---------------------------------------------------------------- randomness


def _stable_seed(*parts) -> int:
    digest = hashlib.sha256("/".join(map(str, ("fashionlab.corruptions", *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2 ** 63 - 1)


class _Randomness:
    """Uniform float64 draws in [0, 1) for images start .. start+n-1 of the whole set. Each call is a new stream."""

    def __init__(self, seed: int, name: str, start: int, n: int):
        self.seed, self.name, self.start, self.n, self.calls = seed, name, start, n, 0

    def uniform(self, *shape: int) -> torch.Tensor:
        """[n, *shape]: the same numbers for image i however the set is chunked."""
        stream, self.calls = self.calls, self.calls + 1
        if self.n == 0:
            return torch.empty((0, *shape), dtype=torch.float64)
        first, last = self.start // _BLOCK, (self.start + self.n - 1) // _BLOCK
        blocks = [torch.rand((_BLOCK, *shape), dtype=torch.float64,
                             generator=torch.Generator().manual_seed(_stable_seed(self.seed, self.name, stream, b)))
                  for b in range(first, last + 1)]
        offset = self.start - first * _BLOCK
        return torch.cat(blocks)[offset:offset + self.n]

    def normal(self, *shape: int) -> torch.Tensor:
        """Standard normal [n, *shape] by Box-Muller, from uniforms only (portable, unlike torch.randn's kernels)."""
        u = self.uniform(2, *shape)
        return torch.sqrt(-2 * torch.log1p(-u[:, 0])) * torch.cos(2 * math.pi * u[:, 1])


# ---------------------------------------------------------------- helpers (float64 images in 0..255, N×C×H×W)


def _filter_axis(x: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """Correlate along H (dim 2) or W (dim 3) with an odd-length kernel, edges replicated. Shifted slices summed in
    a fixed order instead of a convolution, whose summation order depends on the CPU backend."""
    r = (len(weights) - 1) // 2
    padded = F.pad(x, (0, 0, r, r) if dim == 2 else (r, r, 0, 0), mode="replicate")
    out = torch.zeros_like(x)
    for i, wt in enumerate(weights.tolist()):
        out.add_(padded.narrow(dim, i, x.shape[dim]), alpha=wt)
    return out


def _centred_pixels(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates about the image centre, x right [1, 1, W] and y down [1, H, 1]."""
    px = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    py = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    return px[None, None, :], py[None, :, None]


def _sample(x: torch.Tensor, src_x: torch.Tensor, src_y: torch.Tensor, padding: str) -> torch.Tensor:
    """Bilinear resampling: output pixel (n, i, j) reads the input at (src_x, src_y) [N, H, W], in the coordinates
    of _centred_pixels (broadcast); outside the image reads black ("zeros") or the nearest edge ("border")."""
    h, w = x.shape[2:]
    grid = torch.stack(torch.broadcast_tensors(src_x * (2 / w), src_y * (2 / h)), -1)  # align_corners=False units
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


@functools.lru_cache(maxsize=8)
def _poisson_table(photons: float) -> tuple[torch.Tensor, int]:
    """The CDFs of Poisson(v / 255 * photons) for v = 0..255 laid end to end, row v shifted to (v, v + 1]; counts
    per row."""
    k = torch.arange(math.ceil(photons + 12 * math.sqrt(photons) + 12) + 1, dtype=torch.float64)
    level = torch.arange(256, dtype=torch.float64)[:, None]
    rate = level / 255 * photons
    cdf = torch.exp(torch.special.xlogy(k, rate) - rate - torch.lgamma(k + 1)).cumsum(1).clamp(max=1.0)
    cdf[:, -1] = 1.0  # the far tail (beyond 12 standard deviations) goes to the last count
    return (level + cdf).flatten(), len(k)


def _poisson(values: torch.Tensor, photons: float, u: torch.Tensor) -> torch.Tensor:
    """Poisson(values / 255 * photons) for integral values 0..255, by inverse CDF from one uniform u per value, so
    what is drawn never depends on the pixels: one searchsorted of v + u in _poisson_table finds every count."""
    table, counts = _poisson_table(float(photons))
    index = torch.searchsorted(table, (values + u).contiguous(), right=True)
    return (index - values.long() * counts).clamp(0, counts - 1).to(torch.float64)


# ---------------------------------------------------------------- the corruptions: (x, parameter, randomness) -> x


def _gaussian_noise(x, std, rand):
    return x + 255 * std * rand.normal(*x.shape[1:])


def _shot_noise(x, photons, rand):
    return _poisson(x, photons, rand.uniform(*x.shape[1:])) / photons * 255


def _impulse_noise(x, amount, rand):
    u = rand.uniform(*x.shape[1:])
    x = torch.where(u < amount / 2, 0.0, x)  # pepper
    return torch.where(u >= 1 - amount / 2, 255.0, x)  # salt


def _gaussian_blur(x, sigma, rand):
    t = torch.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1, dtype=torch.float64)  # skimage's truncate=4
    weights = torch.exp(-t ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    return _filter_axis(_filter_axis(x, weights, 2), weights, 3)


def _motion_blur(x, length, rand):
    angle = (rand.uniform(1)[:, 0] * 90 - 45) * (math.pi / 180)
    dx, dy = angle.cos()[:, None, None], angle.sin()[:, None, None]
    px, py = _centred_pixels(*x.shape[2:])
    taps = torch.linspace(-length / 2, length / 2, math.ceil(length) + 1, dtype=torch.float64).tolist()
    out = torch.zeros_like(x)
    for t in taps:  # the mean of copies shifted along the streak in sub-pixel steps, edges replicated
        out += _sample(x, px + t * dx, py + t * dy, "border")
    return out / len(taps)


def _contrast(x, factor, rand):
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * factor + mean


def _brightness(x, amount, rand):
    value = x.amax(1, keepdim=True)  # HSV value; raising it keeps hue and saturation
    raised = (value + 255 * amount).clamp(max=255)
    if x.shape[1] == 1:
        return raised
    return torch.where(value > 0, x * (raised / value.clamp(min=1)), raised)  # black has no hue: it turns grey


def _rotation(x, degrees, rand):
    angle = torch.where(rand.uniform(1)[:, 0] < 0.5, -degrees, degrees) * (math.pi / 180)
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    px, py = _centred_pixels(*x.shape[2:])
    return _sample(x, cos * px - sin * py, sin * px + cos * py, "zeros")  # about the centre, black fill


def _translation(x, pixels, rand):
    """Move the content by ±pixels along x, then along y, each sign per image; black fill."""
    backward = rand.uniform(2) < 0.5  # [N, 2]: towards smaller x, smaller y
    for dim, back in ((3, backward[:, 0]), (2, backward[:, 1])):
        padded = F.pad(x, (pixels, pixels, 0, 0) if dim == 3 else (0, 0, pixels, pixels))
        forward_copy = padded.narrow(dim, 0, x.shape[dim])  # out[i] = in[i - pixels]
        backward_copy = padded.narrow(dim, 2 * pixels, x.shape[dim])  # out[i] = in[i + pixels]
        x = torch.where(back[:, None, None, None], backward_copy, forward_copy)
    return x


def _horizontal_flip(x, mirror, rand):
    return x.flip(3)


def _pixelate(x, block, rand):
    h, w = x.shape[2:]
    means = F.avg_pool2d(x, block, ceil_mode=True)  # a block cut by the edge averages the pixels it has
    return means.repeat_interleave(block, 2).repeat_interleave(block, 3)[:, :, :h, :w]


def _jpeg(x, quality, rand):
    """Pillow JPEG of each image (RGB without chroma subsampling if 3 channels, else each channel as greyscale), the
    one non-tensor corruption. Fast: the images, padded to whole 8x8 blocks by repeating their edges as an encoder
    does, are tiled into one mosaic and compressed at once; JPEG codes each block alone, so every image comes back
    exactly as if it had been compressed by itself (tests check this)."""
    n, c, h, w = x.shape
    planes = x.to(torch.uint8).numpy()
    planes = planes.transpose(0, 2, 3, 1) if c == 3 else planes.reshape(n * c, h, w, 1)
    m, hp, wp = len(planes), h + -h % 8, w + -w % 8
    cols = math.ceil(math.sqrt(m))
    rows = math.ceil(m / cols)
    tiles = np.pad(planes, ((0, rows * cols - m), (0, hp - h), (0, wp - w), (0, 0)), mode="edge")
    mosaic = tiles.reshape(rows, cols, hp, wp, -1).transpose(0, 2, 1, 3, 4).reshape(rows * hp, cols * wp, -1)
    buffer = io.BytesIO()
    Image.fromarray(mosaic if c == 3 else mosaic[..., 0]).save(buffer, format="JPEG", quality=quality, subsampling=0)
    decoded = np.asarray(Image.open(buffer)).reshape(rows, hp, cols, wp, -1).transpose(0, 2, 1, 3, 4)
    decoded = decoded.reshape(rows * cols, hp, wp, -1)[:m, :h, :w]
    out = decoded.transpose(0, 3, 1, 2) if c == 3 else decoded.reshape(n, c, h, w)
    return torch.from_numpy(np.ascontiguousarray(out)).to(torch.float64)


_FUNCTIONS: dict[str, Callable[[torch.Tensor, object, _Randomness], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "gaussian_blur": _gaussian_blur, "motion_blur": _motion_blur, "contrast": _contrast, "brightness": _brightness,
    "rotation": _rotation, "translation": _translation, "horizontal_flip": _horizontal_flip, "pixelate": _pixelate,
    "jpeg": _jpeg,
}
assert tuple(_FUNCTIONS) == CORRUPTIONS


# ---------------------------------------------------------------- public API


def check_names(names: Iterable[str] | None) -> tuple[str, ...]:
    """The corruption names asked for (all when None), in suite order; unknown or repeated names are errors."""
    if names is None:
        return CORRUPTIONS
    names = tuple(names)
    unknown = [n for n in names if n not in PARAMETERS]
    if unknown:
        raise ConfigError(f"unknown corruption {unknown[0]!r}; known: {', '.join(CORRUPTIONS)}")
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"corruptions must be distinct and at least one, got {', '.join(names) or 'none'}")
    return tuple(n for n in CORRUPTIONS if n in names)


def _check_severity(severity) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ConfigError(f"corruption severity must be an integer from 1 to 5, got {severity!r}")
    return int(severity)


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0, *, start: int = 0) -> torch.Tensor:
    """`images` (uint8, N×C×H×W or N×H×W, any device) corrupted by `name` at `severity` 1-5: uint8, same shape and
    device. `start` is the index of images[0] in the whole set: corrupt(x[a:b], ..., start=a) == corrupt(x, ...)[a:b].
    """
    check_names([name])
    params = PARAMETERS[name][_check_severity(severity) - 1]
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"corrupt needs uint8 images N×C×H×W or N×H×W, got {images.dtype} {tuple(images.shape)}")
    x = images.detach().cpu()
    x = x.unsqueeze(1) if images.ndim == 3 else x
    out = torch.empty_like(x)
    step = _BLOCK * max(1, _CACHE_ELEMENTS // (_BLOCK * max(1, math.prod(x.shape[1:]))))
    a, start = 0, int(start)
    while a < len(x):  # in cache-sized chunks, aligned to whole blocks of the random draws
        b = min(len(x), ((start + a) // step + 1) * step - start)
        rand = _Randomness(int(seed), name, start + a, b - a)
        out[a:b] = _FUNCTIONS[name](x[a:b].to(torch.float64), params, rand).round().clamp(0, 255)
        a = b
    return (out.squeeze(1) if images.ndim == 3 else out).to(images.device)


@dataclass(frozen=True, eq=False)
class Correctness:
    """Whether each test image was classified correctly: clean, and per (corruption, severity) evaluated."""

    clean: np.ndarray  # bool [N]
    corrupted: dict[tuple[str, int], np.ndarray]  # (name, severity) -> bool [N], in suite order
    seed: int

    def accuracy(self, name: str, severity: int) -> float:
        return float(self.corrupted[name, severity].mean())

    def to_arrays(self) -> dict[str, np.ndarray]:
        """For np.savez: "clean" and "NAME/SEVERITY" -> bool [N], plus "seed"."""
        return {"clean": self.clean, **{f"{n}/{s}": v for (n, s), v in self.corrupted.items()},
                "seed": np.array(self.seed)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Correctness:
        corrupted = {}
        for key in arrays:
            if "/" in key:
                name, severity = key.split("/")
                corrupted[name, int(severity)] = np.asarray(arrays[key], dtype=bool)
        return cls(np.asarray(arrays["clean"], dtype=bool), corrupted, int(arrays["seed"]))


def corruption_correctness(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels,
                           *, names: Iterable[str] | None = None, severities: Iterable[int] = SEVERITIES,
                           seed: int = 0, batch_size: int | None = None,
                           progress: Callable[[int, int, str], None] | None = None) -> Correctness:
    """Per-image correctness of `predict` (uint8 images in the shape given -> predicted classes, int [n]) on the
    clean images and on each corruption at each severity. Images are corrupted and predicted `batch_size` at a
    time (default: about 8M pixel values), which does not change the corrupted pixels. progress(done, total,
    label) is called after each pass: label "clean" or "NAME/SEVERITY"."""
    names, severities = check_names(names), tuple(sorted({_check_severity(s) for s in severities}))
    if not severities:
        raise ConfigError("no corruption severities given")
    images = torch.as_tensor(images)
    labels = torch.as_tensor(labels).reshape(-1).cpu().numpy()
    n = len(images)
    if len(labels) != n or n == 0:
        raise ValueError(f"need one label per image and at least one image, got {n} images and {len(labels)} labels")
    per_image = max(1, images[0].numel())
    batch = batch_size or max(1, _PREDICT_ELEMENTS // per_image)
    passes = [("clean", 0)] + [(name, s) for name in names for s in severities]

    def correct(name: str, severity: int) -> np.ndarray:
        out = np.empty(n, dtype=bool)
        for a in range(0, n, batch):
            x = images[a:a + batch]
            x = x if name == "clean" else corrupt(x, name, severity, seed, start=a)
            pred = torch.as_tensor(predict(x)).reshape(-1).cpu().numpy()
            if len(pred) != len(x):
                raise ValueError(f"predict returned {len(pred)} classes for {len(x)} images")
            out[a:a + len(x)] = pred == labels[a:a + len(x)]
        return out

    results = {}
    for done, (name, severity) in enumerate(passes, 1):
        results[name, severity] = correct(name, severity)
        if progress is not None:
            progress(done, len(passes), "clean" if name == "clean" else f"{name}/{severity}")
    clean = results.pop(("clean", 0))
    return Correctness(clean, results, int(seed))


def mean_corruption_error(errors: Mapping[str, Mapping], baseline_errors: Mapping[str, Mapping] | None = None) -> float:
    """Unnormalised: the mean error over corruptions and severities. With a baseline: Hendrycks & Dietterich's mCE,
    the mean over corruptions c of sum_s E(c, s) / sum_s E_baseline(c, s), as a ratio (1.0 = as bad as the baseline).
    Both map corruption -> {severity (int or str): error}; the baseline must cover every corruption and severity."""
    ratios = []
    for name, by_severity in errors.items():
        errs = {int(s): float(e) for s, e in by_severity.items()}
        if baseline_errors is None:
            ratios.append(sum(errs.values()) / len(errs))
            continue
        base = {int(s): float(e) for s, e in baseline_errors.get(name, {}).items()}
        missing = sorted(set(errs) - set(base))
        if missing:
            raise ConfigError(f"the mCE baseline has no error for {name} at severity {missing[0]}")
        base_sum = sum(base[s] for s in errs)
        if base_sum <= 0:
            raise ConfigError(f"the mCE baseline makes no error on {name}: its corruption error is undefined")
        ratios.append(sum(errs.values()) / base_sum)
    return sum(ratios) / len(ratios)


def corruption_errors(summary: Mapping) -> dict[str, dict[int, float]]:
    """corruption -> {severity: error} from a corruptions.json object (e.g. a baseline run's, for baseline_errors)."""
    return {name: {int(s): 1 - float(acc) for s, acc in summary[name].items()} for name in summary["corruptions"]}


def summarize_corruptions(correctness: Correctness, *, baseline_errors: Mapping[str, Mapping] | None = None,
                          baseline_name: str | None = None) -> dict:
    """The corruptions.json object (see the module docstring) for per-image correctness."""
    names = list(dict.fromkeys(name for name, _ in correctness.corrupted))
    severities = sorted({s for _, s in correctness.corrupted})
    accuracy = {name: {str(s): correctness.accuracy(name, s) for s in severities} for name in names}
    errors = {name: {s: 1 - acc for s, acc in table.items()} for name, table in accuracy.items()}
    mean_accuracy = sum(sum(t.values()) / len(t) for t in accuracy.values()) / len(accuracy)
    return {
        **accuracy,
        "corruptions": names,
        "severities": severities,
        "clean_accuracy": float(correctness.clean.mean()),
        "mean_corruption_accuracy": mean_accuracy,
        "mean_corruption_error": 1 - mean_accuracy,
        "mce": None if baseline_errors is None else mean_corruption_error(errors, baseline_errors),
        "mce_baseline": None if baseline_errors is None else (baseline_name or "baseline"),
        "seed": correctness.seed,
        "n_images": len(correctness.clean),
        "suite_version": SUITE_VERSION,
    }


def evaluate_corruptions(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels,
                         *, names: Iterable[str] | None = None, severities: Iterable[int] = SEVERITIES,
                         seed: int = 0, baseline_errors: Mapping[str, Mapping] | None = None,
                         baseline_name: str | None = None, batch_size: int | None = None,
                         progress: Callable[[int, int, str], None] | None = None) -> dict:
    """The corruptions.json object for `predict` on `images`: corruption_correctness, then summarize_corruptions."""
    correctness = corruption_correctness(predict, images, labels, names=names, severities=severities, seed=seed,
                                         batch_size=batch_size, progress=progress)
    return summarize_corruptions(correctness, baseline_errors=baseline_errors, baseline_name=baseline_name)
