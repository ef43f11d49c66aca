"""A look at the data before training: counts per split and class, pixel statistics, sample images, and the
problems a dataset can have (the dataset card of `fashionlab data`)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from fashionlab.data import channel_stats
from fashionlab.data.load import split, take
from fashionlab.errors import RunError
from fashionlab.files import write_new_file

PAD = 2
LABEL_WIDTH = 110
MAX_GRID_CLASSES = 30  # rows of the sample grid: a dataset with more classes shows its first 30
TILE = 56  # pixels a sample is shown at (28-pixel images at 2x), whatever its own size
IMBALANCE_WARNING = 3.0  # largest / smallest class: from here on accuracy alone hides the small classes


def _split_summary(labels: torch.Tensor, classes) -> dict:
    counts = torch.bincount(labels, minlength=len(classes)).tolist()
    return {"count": len(labels), "per_class": dict(zip(classes, counts))}


def summarize(ds, train_idx: torch.Tensor | None = None, val_idx: torch.Tensor | None = None) -> dict:
    """Source, per-split and per-class counts, and the train split's pixel mean/std in [0, 1] units (one number
    for one channel, a list per channel for more)."""
    train_x, train_y = ds.train_x, ds.train_y
    if train_idx is not None:
        train_x, train_y = take(train_x, train_idx), train_y[train_idx]
    splits = {"train": _split_summary(train_y, ds.classes)}
    if val_idx is not None:
        splits["val"] = _split_summary(ds.train_y[val_idx], ds.classes)
    elif getattr(ds, "val_y", None) is not None:
        splits["val"] = _split_summary(ds.val_y, ds.classes)
    splits["test"] = _split_summary(ds.test_y, ds.classes)
    mean, std = channel_stats(train_x)
    source = getattr(ds, "source", None)
    return {
        "source": str(source.path) if source is not None else ds.identity.get("path"),
        "origin": source.origin if source is not None else ds.identity.get("kind"),
        "splits": splits,
        "pixel_mean": mean,
        "pixel_std": std,
    }


def card(ds, val_fraction: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """`fashionlab data --json`: what the dataset is and what is wrong with it. Counts are of the split a training
    with these --val-fraction and --seed options uses (a dataset's own validation split when it has one)."""
    from fashionlab.data.own import problems

    s = split(ds, val_fraction, seed)
    counts = {name: _split_summary(y, ds.classes)["per_class"]
              for name, y in (("train", s.train_y), ("val", s.val_y), ("test", ds.test_y))}
    mean, std = channel_stats(s.train_x)
    found = problems(ds)
    identity = dict(ds.identity)
    return {
        "name": identity.get("location"), "kind": identity.get("kind"), "path": identity.get("path"),
        "origin": identity.get("origin"),  # Fashion-MNIST: how its files were found (--data-dir, cache, system...)
        "fingerprint": identity.get("fingerprint"), "test_sha256": ds.test_sha256,
        "classes": list(ds.classes), "counts": counts, "channels": ds.channels, "size": list(ds.size),
        "sizes_found": identity.get("sizes_found"), "modes_found": identity.get("modes_found"),
        "mean": mean, "std": std,
        "bad_files": list(ds.skipped), "ignored_files": list(ds.ignored),
        "train_test_duplicates": found["train_test_duplicates"],
        "empty_classes": found.get("empty_classes", []),
        "missing_in_train": found.get("missing_in_train", []),
        "imbalance": found.get("imbalance"),
        "holdout": bool(identity.get("holdout")),
    }


def card_problems(c: dict[str, Any]) -> list[str]:
    """The problems a dataset card records, one sentence each (the `data` command, report.html, summary.md)."""
    dup = c.get("train_test_duplicates") or {"count": 0, "examples": []}
    problems = []
    if c.get("bad_files"):
        problems.append(f"{len(c['bad_files'])} unreadable image files: " + "; ".join(c["bad_files"][:5]))
    if dup["count"]:
        problems.append(f"{dup['count']} test images are exact copies of training images (leakage), e.g. "
                        + ", ".join(f"{a} = {b}" for a, b in dup["examples"][:3]))
    if c.get("empty_classes"):
        problems.append("classes without training images: " + ", ".join(c["empty_classes"]))
    if c.get("missing_in_train"):
        problems.append("test classes that train lacks: " + ", ".join(c["missing_in_train"]))
    if c.get("imbalance") and c["imbalance"] >= IMBALANCE_WARNING:
        problems.append(f"class imbalance: the largest class has {c['imbalance']:.1f}x the training images of the "
                        "smallest")
    return problems


def save_grid(ds, path: str | os.PathLike, per_class: int = 8, seed: int = 0) -> Path:
    """A PNG with `per_class` random training images per class, one row per class labelled with its name."""
    classes = list(ds.classes)[:MAX_GRID_CLASSES]
    cell = TILE + PAD
    grid = Image.new("RGB", (LABEL_WIDTH + per_class * cell, len(classes) * cell), color=(255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=12)
    gen = torch.Generator().manual_seed(seed)
    for row, name in enumerate(classes):
        idx = torch.nonzero(ds.train_y == row).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)[:per_class]]
        draw.text((4, row * cell + cell // 2), name[:16], fill=(0, 0, 0), font=font, anchor="lm")
        for col, i in enumerate(idx.tolist()):
            pixels = ds.train_x[i].numpy()
            tile = Image.fromarray(pixels if pixels.ndim == 2 else pixels.transpose(1, 2, 0))
            tile = tile.resize((TILE, TILE), Image.Resampling.NEAREST)
            grid.paste(tile.convert("RGB"), (LABEL_WIDTH + col * cell, row * cell))
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
