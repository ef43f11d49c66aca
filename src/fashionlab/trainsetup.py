"""What a training run is built from: its data splits on the device, the model behind its normalization, the
optimizer, LR schedule, EMA and Lookahead, the batch input (augmented on the device), one optimizer step and the
validation metrics. Each is a function of the options (TrainConfig) and tensors; nothing here touches a run folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fashionlab.about import CLASSES
from fashionlab.config import TrainConfig
from fashionlab.data import as_input, channel_stats
from fashionlab.data.augment import augment
from fashionlab.data.load import split_for, take
from fashionlab.data.stream import FileImages, materialize
from fashionlab.device import autocast
from fashionlab.errors import ConfigError
from fashionlab.evaluate import predict_logits
from fashionlab.models import Classifier, build_model, check_io, set_bn_momentum, whiten_first_conv


@dataclass
class Splits:
    # uint8 [N, H, W] (one channel) or [N, C, H, W], on the device; or FileImages, decoded batch by batch
    # (--data-loading stream). The labels are always tensors on the device.
    train_x: torch.Tensor | FileImages
    train_y: torch.Tensor
    val_x: torch.Tensor | FileImages
    val_y: torch.Tensor
    mean: float | list[float]  # one channel: floats, as every Fashion-MNIST run has saved them; else per channel
    std: float | list[float]
    classes: tuple[str, ...] = CLASSES
    shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W) of one input image
    excluded: dict[str, Any] | None = None  # --exclude: what left the training portion (config.json's data.exclude)


def prepare_data(cfg: TrainConfig, ds, device: torch.device) -> Splits:
    s = split_for(cfg, ds)
    # Normalization statistics from the training split only: validation and test stay unseen.
    mean, std = channel_stats(s.train_x)
    return Splits(on(s.train_x, device), s.train_y.to(device), on(s.val_x, device), s.val_y.to(device), mean, std,
                  tuple(ds.classes), (ds.channels, *ds.size), s.excluded)


def on(x, device: torch.device):
    """Images on the device; FileImages stay files (their batches are moved as they are decoded)."""
    return x if isinstance(x, FileImages) else x.to(device)


def geometry(shape: tuple[int, int, int], classes) -> dict[str, Any]:
    """The keywords a registered model is built with for this data (external models get none: they must fit)."""
    return {"in_channels": shape[0], "num_classes": len(classes), "image_size": tuple(shape[1:])}


def make_model(cfg: TrainConfig, device: torch.device, splits: Splits, spec: str | None = None,
               net: nn.Module | None = None, weights_follow: bool = False) -> Classifier:
    """The architecture behind its input normalization (the training split's statistics); `spec` is where an
    external model's code is imported from (its run folder's copy on resume); `net` is an architecture object
    given in Python (used as is: its initialization is the caller's). weights_follow: a checkpoint's weights will
    replace these (a resume), so the data-dependent init is skipped."""
    torch.manual_seed(cfg.seed)
    if net is None:
        net = build_model(spec or cfg.model, dropout=cfg.dropout, **geometry(splits.shape, splits.classes),
                          **cfg.extra)
    check_io(net, cfg.model, shape=splits.shape, num_classes=len(splits.classes))
    if cfg.batch_size < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        raise ConfigError(f"--batch-size 1: {cfg.model} has batch norm, which needs at least 2 images per batch")
    if cfg.low_res_epochs and cfg.low_res < min(splits.shape[1:]):
        check_io(net, cfg.model, cfg.low_res, shape=splits.shape, num_classes=len(splits.classes))
    model = Classifier(net, splits.mean, splits.std).to(device)
    if cfg.whiten and not weights_follow:
        first = torch.arange(min(10_000, len(splits.train_y)), device=splits.train_y.device)
        whiten_first_conv(model, as_input(materialize(take(splits.train_x, first)).to(device)))
    if cfg.bn_momentum is not None:
        set_bn_momentum(model, cfg.bn_momentum)
    # channels_last lets oneDNN/cuDNN pick their fastest convolution kernels.
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    # No weight decay on biases and norm scales: decaying them only hurts (common practice since ResNet).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.Adam(groups, lr=cfg.lr)


def make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int):
    """Returns (scheduler or None, whether it steps per batch)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.scheduler == "plateau":
        # Halve the LR when validation accuracy stops improving (validation only, never test).
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=2), False
    if cfg.scheduler == "onecycle":
        # OneCycleLR divides by zero when its warm-up rounds to under a step: a tiny run (a few steps)
        # gets a cycle of at least 4 steps with a 2-step warm-up and stops early in its anneal.
        cycle = max(total, 4)
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cycle,
                                                   pct_start=max(0.25, 2 / cycle)), True
    if cfg.scheduler == "cosine":
        warm = int(cfg.warmup_epochs * steps_per_epoch)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

        return torch.optim.lr_scheduler.LambdaLR(opt, factor), True
    return None, False


def make_ema(cfg: TrainConfig, model: nn.Module):
    if cfg.ema <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    # use_buffers: batch-norm statistics are averaged too, so the EMA model is usable as is.
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)


class Lookahead:
    """Lookahead (Zhang et al. 2019, arXiv:1907.08610) around any optimizer: every k steps the slow weights move
    alpha of the way to the fast ones and the fast ones restart from there. alpha = 0.5 is the paper's default."""

    def __init__(self, model: nn.Module, k: int, alpha: float = 0.5):
        self.params, self.k, self.alpha = list(model.parameters()), k, alpha
        self.slow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def step(self, global_step: int) -> None:
        if global_step % self.k == 0:
            for slow, fast in zip(self.slow, self.params):
                slow.lerp_(fast, self.alpha)
                fast.copy_(slow)

    def state_dict(self) -> dict[str, Any]:
        return {"slow": self.slow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["slow"]  # a list of tensors: checked with the rest of last.pt (runformat._resume_state_problem)
        if [t.shape for t in saved] != [t.shape for t in self.slow]:
            raise ValueError("its lookahead weights do not match the model's parameters")
        for slow, t in zip(self.slow, saved):
            slow.copy_(t)


def batches_per_epoch(n: int, batch_size: int) -> int:
    # A trailing batch of one sample would break batch norm; it is dropped (the order changes each epoch).
    full, rest = divmod(n, batch_size)
    return max(1, full + (rest > 1))


def to_input(x_uint8: torch.Tensor, cfg: TrainConfig, gen: torch.Generator | None,
             size: int | None = None) -> torch.Tensor:
    x = as_input(x_uint8)
    if gen is not None:
        x = augment(x, cfg.augmentations(), gen, rotate_degrees=cfg.rotate_degrees, crop_pad=cfg.crop_pad,
                    erase_prob=cfg.erase_prob)
    if size is not None and size != x.shape[-1]:  # progressive resizing: early epochs see smaller images
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def train_step(net, opt, scaler, x, y, cfg: TrainConfig, precision: str, device) -> tuple[float, int]:
    with autocast(device, precision):
        logits = net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    opt.zero_grad(set_to_none=True)
    value = loss.item()
    if not math.isfinite(value):
        return value, 0  # no update from a non-finite loss
    scaler.scale(loss).backward()
    if cfg.grad_clip > 0:
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    scaler.step(opt)
    scaler.update()
    return value, int((logits.argmax(1) == y).sum())


def validation_metrics(model: nn.Module, splits: Splits, cfg: TrainConfig, precision: str,
                       device) -> tuple[float, float]:
    """(loss, accuracy) on the validation split; NaN without one. (TrainConfig.validate checks options.)"""
    if len(splits.val_y) == 0:
        return float("nan"), float("nan")
    logits = predict_logits(model, splits.val_x, device=device, precision=precision,
                            tta=cfg.tta, channels_last=cfg.channels_last)
    y = splits.val_y.cpu()
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()
