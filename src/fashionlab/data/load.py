"""The one way every command gets its data: `--data SPEC` (Fashion-MNIST, or the user's own images through
data.own) to a dataset, and a dataset plus the run's options to its train/validation split.

A dataset is either `data.FashionMNIST` or `data.own.ImageDataset`; both have train_x/train_y/test_x/test_y (uint8
images [N, H, W] with one channel, [N, C, H, W] with three), classes, channels, size, val_x/val_y (a given
validation split, or None: carved from train), test_sha256 and identity (config.json's record of the data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fashionlab.config import FASHION_MNIST, TrainConfig, check_data_options, parse_image_size
from fashionlab.data import load_fashion_mnist, stratified_split, stratified_subset
from fashionlab.data.exclude import Exclusion, read_exclude
from fashionlab.data.stream import FileImages
from fashionlab.errors import ConfigError, RunError
from fashionlab.reading import show_path


def load_dataset(spec: str = FASHION_MNIST, *, data_dir: str | None = None, image_size: str | None = None,
                 channels: int | None = None, skip_bad: bool = False, loading: str = "auto",
                 workers: int | None = None, progress: bool = True, download: bool = True):
    """The dataset `spec` names (see TrainConfig.dataset); a bad spec or a bad file is a one-line error."""
    check_data_options(spec, data_dir=data_dir, image_size=image_size, channels=channels, loading=loading)
    if spec == FASHION_MNIST:
        return load_fashion_mnist(data_dir, download=download, progress=progress)
    from fashionlab.data.own import read_dataset

    return read_dataset(spec, image_size=parse_image_size(image_size), channels=channels, skip_bad=skip_bad,
                        loading=loading, workers=workers, progress=progress)


def load_for(cfg: TrainConfig, *, progress: bool = True):
    """The dataset a training configuration names."""
    return load_dataset(cfg.dataset, data_dir=cfg.data_dir, image_size=cfg.image_size, channels=cfg.channels,
                        skip_bad=cfg.skip_bad, loading=cfg.data_loading, workers=cfg.data_workers, progress=progress)


def load_for_run(config: dict[str, Any], *, progress: bool = True, loading: str = "auto"):
    """The dataset a run folder's config.json was trained on, checked to be the same data (its fingerprint, or for
    Fashion-MNIST its verified hashes): results on changed data would be compared as if they were not. `loading`:
    see read_dataset (evaluation may stream what training streamed; the default keeps what fits in memory)."""
    spec = config.get("dataset") or FASHION_MNIST
    record = config.get("data") or {}
    if spec == FASHION_MNIST:
        return load_fashion_mnist(config.get("data_dir") or record.get("source"), download=False, progress=progress)
    where = record.get("path") or spec
    channels = record.get("channels") or config.get("channels")  # what training decided, not re-guessed
    ds = load_dataset(str(where), image_size=config.get("image_size"), channels=channels,
                      skip_bad=bool(config.get("skip_bad")), loading=loading, workers=config.get("data_workers"),
                      progress=progress)
    saved = record.get("fingerprint")
    if saved and ds.identity.get("fingerprint") != saved:
        raise RunError(f"the dataset at {where} has changed since this run was trained (fingerprint "
                       f"{str(saved)[:12]}... then, {str(ds.identity.get('fingerprint'))[:12]}... now); its results "
                       "would not be comparable: train a new run on the data as it is now")
    return ds


@dataclass
class SplitArrays:
    train_x: torch.Tensor | FileImages
    train_y: torch.Tensor
    val_x: torch.Tensor | FileImages
    val_y: torch.Tensor
    excluded: dict[str, Any] | None = None  # --exclude: Exclusion.record(), for config.json's data record


def take(x, idx: torch.Tensor):
    """Rows `idx` of images: indexed from a tensor, still unread from FileImages."""
    return x.take(idx) if isinstance(x, FileImages) else x[idx]


def split(ds, val_fraction: float, seed: int, train_subset: int | None = None,
          exclude: Exclusion | None = None, val_subset: int | None = None) -> SplitArrays:
    """The run's training and validation images: the dataset's own validation split when it has one, else a
    stratified `val_fraction` of train (seeded), and of that a stratified `val_subset`; then the --exclude items
    leave the training portion (validation is the same with or without them); then a stratified subset of what is
    left. The one definition, used by training and by evaluation (calibration is fitted on this validation
    split)."""
    n_classes = len(ds.classes)
    if getattr(ds, "val_x", None) is not None:
        train_x, train_y, val_x, val_y = ds.train_x, ds.train_y, ds.val_x, ds.val_y
        train_idx = torch.arange(len(train_y))
    else:
        train_idx, val_idx = stratified_split(ds.train_y, val_fraction, seed)
        train_x, train_y, val_x, val_y = ds.train_x, ds.train_y, take(ds.train_x, val_idx), ds.train_y[val_idx]
    if val_subset is not None:
        if val_subset > len(val_y):
            raise ConfigError(f"--val-subset {val_subset} is more than the {len(val_y)} validation images")
        keep = stratified_subset(val_y, val_subset, seed)
        val_x, val_y = take(val_x, keep), val_y[keep]
    excluded = None
    if exclude is not None:
        exclude.check_range(len(ds.train_y))
        before = len(train_idx)
        train_idx = train_idx[~torch.isin(train_idx, torch.from_numpy(exclude.indices).to(train_idx.dtype))]
        excluded = exclude.record(before - len(train_idx))
    if train_subset is not None:
        train_idx = train_idx[stratified_subset(train_y[train_idx], train_subset, seed)]
    if len(train_idx) < n_classes:
        subset = f", --train-subset {train_subset}" if train_subset is not None else ""
        left = f" and --exclude {show_path(exclude.path)}" if exclude is not None else ""
        raise ConfigError(f"--val-fraction {val_fraction}{subset}{left} leaves {len(train_idx)} of {len(ds.train_y)} "
                          f"images to train on; at least {n_classes} (one per class) are needed")
    return SplitArrays(take(train_x, train_idx), train_y[train_idx], val_x, val_y, excluded)


def split_for(cfg: TrainConfig, ds, exclude: Exclusion | None = None) -> SplitArrays:
    """The split of `cfg`; exclude: its --exclude file already read (else it is read here)."""
    if exclude is None and cfg.exclude is not None:
        exclude = read_exclude(cfg.exclude)
    return split(ds, cfg.val_fraction, cfg.data_seed(), cfg.train_subset, exclude, cfg.val_subset)


def check_exclude(cfg: TrainConfig, ds=None) -> None:
    """Before a run folder is made: cfg's --exclude file reads, and (with the dataset at hand) names only its
    training items. A one-line ConfigError otherwise."""
    if cfg.exclude is None:
        return
    exclusion = read_exclude(cfg.exclude)
    if ds is not None:
        exclusion.check_range(len(ds.train_y))


def data_record(ds) -> dict[str, Any]:
    """config.json's `data` record, the dataset's part (the run adds its normalization and split sizes)."""
    if getattr(ds, "source", None) is not None:  # Fashion-MNIST: where its verified files were found
        src = ds.source
        return {"kind": FASHION_MNIST, "source": str(Path(src.path).resolve()), "origin": src.origin,
                "sha256": dict(src.sha256), "test_sha256": ds.test_sha256}
    return dict(ds.identity) | {"source": ds.identity["path"], "test_sha256": ds.test_sha256}
