"""Fashion-MNIST as uint8 tensors, plus class-stratified splits and subsets."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from fashionlab.about import CLASSES
from fashionlab.data.idx import read_idx
from fashionlab.data.sources import DataSource, locate
from fashionlab.errors import ConfigError, DataError

__all__ = [
    "CLASSES", "DataSource", "FashionMNIST", "as_input", "balanced_limit", "channel_stats", "load_fashion_mnist",
    "locate", "pixel_stats", "read_idx",
    "stratified_split", "stratified_subset",
]


@dataclass(frozen=True, eq=False)  # tensors have no single truth value to compare by
class FashionMNIST:
    train_x: torch.Tensor  # uint8 [N, 28, 28]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor  # uint8 [M, 28, 28]
    test_y: torch.Tensor  # int64 [M]
    source: DataSource

    # What every dataset has (data.own.ImageDataset too): Fashion-MNIST has no validation split of its own.
    classes = CLASSES
    channels = 1
    size = (28, 28)
    val_x = val_y = None
    train_files = val_files = test_files = skipped = ignored = ()

    @property
    def test_sha256(self) -> str:
        """Identifies the test set, so results computed on different test data are never compared."""
        sha = self.source.sha256
        return f"{sha['t10k-images-idx3-ubyte']}:{sha['t10k-labels-idx1-ubyte']}"

    @property
    def identity(self) -> dict:
        counts = {split: dict(zip(CLASSES, torch.bincount(y, minlength=10).tolist()))
                  for split, y in (("train", self.train_y), ("test", self.test_y))}
        return {"kind": "fashion-mnist", "location": "fashion-mnist", "path": str(self.source.path),
                "origin": self.source.origin,
                "fingerprint": self.test_sha256, "classes": list(CLASSES), "channels": 1, "size": [28, 28],
                "counts": counts, "holdout": False, "image_size": None, "skipped": 0}


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None, *, download: bool = True, progress: bool = True, **locate_kwargs
) -> FashionMNIST:
    """Locate (see `locate`), read and sanity-check the four files."""
    source = locate(data_dir, download=download, progress=progress, **locate_kwargs)
    train_x, train_y = _split_arrays(source, "train")
    test_x, test_y = _split_arrays(source, "t10k")
    return FashionMNIST(train_x, train_y, test_x, test_y, source)


def _split_arrays(source: DataSource, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_name, labels_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    images, labels = read_idx(source.files[images_name]), read_idx(source.files[labels_name])
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_name}: expected uint8 images of 28x28, found {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_name}: expected {len(images)} uint8 labels to match {images_name}, "
            f"found {labels.dtype} {labels.shape}"
        )
    if len(labels) and labels.max() >= len(CLASSES):
        raise DataError(f"{labels_name}: label {labels.max()} out of range 0..{len(CLASSES) - 1}")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (train_idx, val_idx) with round(val_fraction * n_c) validation samples from each class c."""
    if not 0 <= val_fraction < 1:  # also rejects NaN
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    labels = torch.as_tensor(labels)
    gen = _generator(seed)
    train, val = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = round(val_fraction * len(idx))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return _sorted_cat(train), _sorted_cat(val)


def balanced_limit(labels: torch.Tensor) -> int:
    """The largest subset stratified_subset can take of `labels`: the smallest class's count, once per class."""
    counts = torch.unique(torch.as_tensor(labels), return_counts=True)[1]
    return len(counts) * int(counts.min()) if len(counts) else 0


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of `n` samples, as equally many per class as possible (the remainder goes to
    randomly chosen classes)."""
    labels = torch.as_tensor(labels)
    classes = torch.unique(labels).tolist()
    limit = balanced_limit(labels)
    if not 0 < n <= limit:
        raise ConfigError(f"subset size must be in 1..{limit} for a class-balanced subset of these labels, got {n}")
    gen = _generator(seed)
    share = [n // len(classes)] * len(classes)
    for i in torch.randperm(len(classes), generator=gen)[: n % len(classes)].tolist():
        share[i] += 1
    picks = []
    for c, k in zip(classes, share):
        idx = torch.nonzero(labels == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:k]])
    return _sorted_cat(picks)


def _sorted_cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts).sort().values if parts else torch.empty(0, dtype=torch.long)


def as_input(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images [N, H, W] (one channel) or [N, C, H, W] -> the models' input: float32 [N, C, H, W] pixels / 255,
    in [0, 1].

    This is the whole input contract of a fashionlab model (and of its exports); the model normalizes itself."""
    x = images_uint8 if images_uint8.ndim == 4 else images_uint8.unsqueeze(1)
    return x.float().div_(255)


def channel_stats(images_uint8) -> tuple[float | list[float], float | list[float]]:
    """pixel_stats of one-channel images [N, H, W] (two floats), or per channel of [N, C, H, W] (two lists); of
    data.stream.FileImages too, decoded a batch at a time (the same histograms, so the same figures)."""
    from fashionlab.data.stream import FileImages, batches, ranges

    if isinstance(images_uint8, FileImages):
        if len(images_uint8) == 0:
            raise ValueError("pixel_stats needs a non-empty uint8 tensor, got no images")
        counts = None
        for part in batches(images_uint8, ranges(len(images_uint8), 1024)):
            c = _histograms(part)
            counts = c if counts is None else counts + c
    else:
        images = torch.as_tensor(images_uint8)
        if images.dtype != torch.uint8 or images.numel() == 0:
            raise ValueError(f"pixel_stats needs a non-empty uint8 tensor, got {images.dtype} {tuple(images.shape)}")
        counts = _histograms(images)
    per = [_stats(c) for c in counts]
    if images_uint8.ndim != 4:
        return per[0]
    return [m for m, _ in per], [s for _, s in per]


def _histograms(images: torch.Tensor) -> torch.Tensor:
    """int64 [C, 256]: each channel's pixel-value counts ([N, H, W] is one channel)."""
    if images.ndim != 4:
        return torch.bincount(images.flatten(), minlength=256)[None]
    return torch.stack([torch.bincount(images[:, c].flatten(), minlength=256) for c in range(images.shape[1])])


def pixel_stats(images_uint8: torch.Tensor) -> tuple[float, float]:
    """Mean and (population) standard deviation of all pixels, in [0, 1] units.

    Computed from a 256-bin histogram: exact, and no float copy of the whole set."""
    images = torch.as_tensor(images_uint8)
    if images.dtype != torch.uint8 or images.numel() == 0:
        raise ValueError(f"pixel_stats needs a non-empty uint8 tensor, got {images.dtype} {tuple(images.shape)}")
    return _stats(torch.bincount(images.flatten(), minlength=256))


def _stats(counts: torch.Tensor) -> tuple[float, float]:
    counts = counts.double()
    values = torch.arange(256, dtype=torch.float64) / 255
    total = counts.sum()
    mean = float((counts * values).sum() / total)
    var = float((counts * (values - mean) ** 2).sum() / total)
    return mean, math.sqrt(var)
