"""A look at the data before training: counts per split and class, pixel statistics, sample images."""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from fashionlab.about import CLASSES
from fashionlab.data import FashionMNIST, pixel_stats
from fashionlab.errors import RunError
from fashionlab.files import write_new_file

SCALE = 2  # 28-pixel images are too small to judge at 1x
PAD = 2
LABEL_WIDTH = 90


def _split_summary(labels: torch.Tensor) -> dict:
    counts = torch.bincount(labels, minlength=len(CLASSES)).tolist()
    return {"count": len(labels), "per_class": dict(zip(CLASSES, counts))}


def summarize(ds: FashionMNIST, train_idx: torch.Tensor | None = None, val_idx: torch.Tensor | None = None) -> dict:
    """Source, per-split and per-class counts, and the train split's pixel mean/std in [0, 1] units."""
    train_x, train_y = ds.train_x, ds.train_y
    if train_idx is not None:
        train_x, train_y = train_x[train_idx], train_y[train_idx]
    splits = {"train": _split_summary(train_y)}
    if val_idx is not None:
        splits["val"] = _split_summary(ds.train_y[val_idx])
    splits["test"] = _split_summary(ds.test_y)
    mean, std = pixel_stats(train_x)
    return {
        "source": str(ds.source.path),
        "origin": ds.source.origin,
        "splits": splits,
        "pixel_mean": mean,
        "pixel_std": std,
    }


def save_grid(ds: FashionMNIST, path: str | os.PathLike, per_class: int = 8, seed: int = 0) -> Path:
    """A PNG with `per_class` random training images per class, one labelled row per class."""
    cell = 28 * SCALE + PAD
    grid = Image.new("L", (LABEL_WIDTH + per_class * cell, len(CLASSES) * cell), color=255)
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=12)
    gen = torch.Generator().manual_seed(seed)
    for row, name in enumerate(CLASSES):
        idx = torch.nonzero(ds.train_y == row).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)[:per_class]]
        draw.text((4, row * cell + cell // 2), name, fill=0, font=font, anchor="lm")
        for col, i in enumerate(idx.tolist()):
            tile = Image.fromarray(ds.train_x[i].numpy()).resize((28 * SCALE,) * 2, Image.Resampling.NEAREST)
            grid.paste(tile, (LABEL_WIDTH + col * cell, row * cell))
    return _save_new(grid, Path(path))


def _save_new(image: Image.Image, path: Path) -> Path:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    try:
        write_new_file(path, buf.getvalue())  # complete or not at all, never over a file that appeared meanwhile
    except FileExistsError:
        raise RunError(f"{path} already exists; fashionlab does not overwrite files it did not create") from None
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror or e}") from None
    return path
