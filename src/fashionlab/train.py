"""Training: the whole dataset lives on the device as uint8, batches are indexed and augmented there.

`train(cfg)` reads top to bottom: data, model, optimizer, then the epoch loop, then the test evaluation.
Everything a resumed run needs (weights, optimizer, scheduler, EMA, every RNG, the epoch's data order and
partial sums, the metrics so far) goes into checkpoints/last.pt, so a killed run resumes bit-identically.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fashionlab import CLASSES, __version__
from fashionlab.config import TrainConfig
from fashionlab.data import (
    FashionMNIST,
    as_input,
    load_fashion_mnist,
    pixel_stats,
    stratified_split,
    stratified_subset,
)
from fashionlab.data.augment import augment
from fashionlab.device import autocast, resolve_device, resolve_precision
from fashionlab.errors import ConfigError, FashionlabError, RunError
from fashionlab.evaluate import evaluate_run, predict_logits
from fashionlab.models import Classifier, build_model, check_io, count_params, set_bn_momentum, whiten_first_conv
from fashionlab.models.external import record as record_model
from fashionlab.models.external import run_model_spec
from fashionlab.runfolder import RunFolder
from fashionlab.runio import (
    MARKER,
    Progress,
    RunLock,
    check_new_folder,
    clean_temp_files,
    make_folder,
    undo_folder,
)
from fashionlab.tensorboard import TensorBoardLog
from fashionlab.tensorboard import require as require_tensorboard


class TrainingDiverged(FashionlabError):
    exit_code = 3


class Interrupted(FashionlabError):
    def __init__(self, where: str, signum: int, run_dir: Path):
        super().__init__(f"{signal.Signals(signum).name} {where}: state saved; "
                         f"resume with: fashionlab train --resume {run_dir}")
        self.where, self.signum, self.exit_code = where, signum, 128 + signum


@dataclass
class Splits:
    train_x: torch.Tensor  # uint8 [N, 28, 28] on the device
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    mean: float
    std: float


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


class StopFlag:
    """SIGINT/SIGTERM only set a flag; the loop finishes the current step, saves, then stops."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


# ---------------------------------------------------------------------------------------------- setup


def prepare_data(cfg: TrainConfig, ds: FashionMNIST, device: torch.device) -> Splits:
    train_idx, val_idx = stratified_split(ds.train_y, cfg.val_fraction, cfg.data_seed())
    if cfg.train_subset is not None:
        train_idx = train_idx[stratified_subset(ds.train_y[train_idx], cfg.train_subset, cfg.data_seed())]
    if len(train_idx) < len(CLASSES):
        subset = f", --train-subset {cfg.train_subset}" if cfg.train_subset is not None else ""
        raise ConfigError(f"--val-fraction {cfg.val_fraction}{subset} leaves {len(train_idx)} of {len(ds.train_y)} "
                          f"images to train on; at least {len(CLASSES)} (one per class) are needed")
    # Normalization statistics from the training split only: validation and test stay unseen.
    mean, std = pixel_stats(ds.train_x[train_idx])
    return Splits(ds.train_x[train_idx].to(device), ds.train_y[train_idx].to(device),
                  ds.train_x[val_idx].to(device), ds.train_y[val_idx].to(device), mean, std)


def make_model(cfg: TrainConfig, device: torch.device, splits: Splits, spec: str | None = None,
               net: nn.Module | None = None, weights_follow: bool = False) -> Classifier:
    """The architecture behind its input normalization (the training split's statistics); `spec` is where an
    external model's code is imported from (its run folder's copy on resume); `net` is an architecture object
    given in Python (used as is: its initialization is the caller's). weights_follow: a checkpoint's weights will
    replace these (a resume), so the data-dependent init is skipped."""
    torch.manual_seed(cfg.seed)
    net = net if net is not None else build_model(spec or cfg.model, dropout=cfg.dropout, **cfg.extra)
    check_io(net, cfg.model)
    if cfg.batch_size < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        raise ConfigError(f"--batch-size 1: {cfg.model} has batch norm, which needs at least 2 images per batch")
    if cfg.low_res_epochs and cfg.low_res < 28:
        check_io(net, cfg.model, cfg.low_res)
    model = Classifier(net, splits.mean, splits.std).to(device)
    if cfg.whiten and not weights_follow:
        whiten_first_conv(model, splits.train_x)
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
        saved = state["slow"]  # a list of tensors: checked with the rest of last.pt (runio._resume_state_problem)
        if [t.shape for t in saved] != [t.shape for t in self.slow]:
            raise ValueError("its lookahead weights do not match the model's parameters")
        for slow, t in zip(self.slow, saved):
            slow.copy_(t)


def batches_per_epoch(n: int, batch_size: int) -> int:
    # A trailing batch of one sample would break batch norm; it is dropped (the order changes each epoch).
    full, rest = divmod(n, batch_size)
    return max(1, full + (rest > 1))


def to_input(x_uint8: torch.Tensor, cfg: TrainConfig, gen: torch.Generator | None, size: int = 28) -> torch.Tensor:
    x = as_input(x_uint8)
    if gen is not None:
        x = augment(x, cfg.augmentations(), gen, rotate_degrees=cfg.rotate_degrees, crop_pad=cfg.crop_pad,
                    erase_prob=cfg.erase_prob)
    if size != x.shape[-1]:  # progressive resizing: early epochs see smaller images, for fewer FLOPs
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Context:
    """What stays fixed while a run trains: its options, where it runs, its data, its folder and its log."""

    cfg: TrainConfig
    dist: Dist
    device: torch.device
    precision: str
    splits: Splits
    folder: RunFolder
    log: Logger
    rank_n: int  # training images this rank sees per epoch
    batch: int  # images per step on this rank
    steps: int  # steps per epoch


@dataclass
class TrainState:
    """Everything that changes while a run trains; state_dict() is what last.pt holds to resume bit-identically."""

    model: Classifier
    opt: torch.optim.Optimizer
    sched: Any  # an LR scheduler or None
    per_step: bool  # the scheduler steps per batch (else per epoch, on validation accuracy)
    ema: Any  # AveragedModel or None
    lookahead: Lookahead | None
    scaler: torch.amp.GradScaler
    order: torch.Generator  # the data order, the same on every rank
    aug: torch.Generator  # augmentation, per rank
    prog: Progress = field(default_factory=Progress)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "epoch": self.prog.epoch,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "lookahead": self.lookahead.state_dict() if self.lookahead is not None else None,
            "scaler": self.scaler.state_dict(),
            "progress": asdict(self.prog),
            "rng": {"torch": torch.get_rng_state(), "order": self.order.get_state(), "aug": self.aug.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    "python": list(random.getstate()[1]), "numpy": numpy_rng_state()},
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        self.model.load_weights(ckpt["model"], ckpt["normalize"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.sched is not None and ckpt["scheduler"] is not None:
            self.sched.load_state_dict(ckpt["scheduler"])
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.load_state_dict(ckpt["ema"])
        if self.lookahead is not None and ckpt.get("lookahead") is not None:  # absent from older last.pt files
            self.lookahead.load_state_dict(ckpt["lookahead"])
        self.scaler.load_state_dict(ckpt["scaler"])
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        self.order.set_state(rng["order"])
        self.aug.set_state(rng["aug"])
        if rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate((3, tuple(rng["python"]), None))
        keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        self.prog = Progress(**ckpt["progress"])


def make_context(cfg: TrainConfig, dist: Dist, device: torch.device, ds: FashionMNIST, folder: RunFolder,
                 verbose: bool) -> Context:
    splits = prepare_data(cfg, ds, device)
    rank_n = len(splits.train_y) // dist.world
    batch = max(1, cfg.batch_size // dist.world)
    return Context(cfg, dist, device, resolve_precision(cfg.precision, device), splits, folder,
                   Logger(verbose and dist.main), rank_n, batch, batches_per_epoch(rank_n, batch))


def make_state(ctx: Context, model: Classifier) -> TrainState:
    cfg = ctx.cfg
    opt = make_optimizer(cfg, model)
    sched, per_step = make_scheduler(cfg, opt, ctx.steps)
    return TrainState(model, opt, sched, per_step, make_ema(cfg, model),
                      Lookahead(model, cfg.lookahead) if cfg.lookahead > 0 else None,
                      torch.amp.GradScaler(ctx.device.type, enabled=ctx.precision == "fp16"),
                      torch.Generator().manual_seed(cfg.seed),
                      torch.Generator(device=ctx.device).manual_seed(cfg.seed + 1 + 1000 * ctx.dist.rank))


# ---------------------------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig, *, command: str = "", resume: bool = False, data: FashionMNIST | None = None,
          verbose: bool = True, on_epoch=None, evaluate_test: bool = True, trust_model_code: bool = False,
          architecture: nn.Module | None = None) -> Path:
    """Train `cfg` into its run folder, evaluate the best checkpoint on the test set, return the folder.

    on_epoch(row): called after each epoch with its metrics row (tuners prune from it; it may raise to stop).
    evaluate_test=False skips the test evaluation (hyperparameter search must never see the test set).
    trust_model_code: a resumed run with an external model may import that model's code (from its run folder).
    architecture: an nn.Module object to train (cfg.model is then models.object_name(architecture)).
    """
    if cfg.ensemble > 1:
        from fashionlab.ensemble import train_ensemble

        return train_ensemble(cfg, command=command, resume=resume, data=data, verbose=verbose,
                              evaluate_test=evaluate_test, trust_model_code=trust_model_code, architecture=architecture)
    dist = Dist.from_env()
    folder = RunFolder(cfg.out or default_run_dir(cfg))
    if cfg.tensorboard:
        require_tensorboard()  # before any run folder exists
    claim = claim_run_dir(folder, resume) if dist.main else contextlib.nullcontext()
    with claim, StopFlag() as stop, distributed(dist, cfg) as device, contextlib.ExitStack() as closing:
        ds = data or load_fashion_mnist(cfg.data_dir, progress=verbose)
        ctx = make_context(cfg, dist, device, ds, folder, verbose)
        spec = run_model_spec(folder.path, folder.saved_config(), trust_model_code) if resume else None
        state = make_state(ctx, make_model(cfg, device, ctx.splits, spec, architecture,
                                           weights_follow=resume and folder.has_checkpoint("last")))
        net = wrap_model(state.model, cfg, dist, device)
        if dist.main and not folder.exists():
            folder.write_config(run_record(ctx, ds, command))
        if resume:
            resume_state(ctx, state)
        ctx.log(f"{cfg.model}: {count_params(state.model):,} params | {len(ctx.splits.train_y):,} train / "
                f"{len(ctx.splits.val_y):,} val | {device.type} {ctx.precision} | batch {cfg.batch_size} x "
                f"{ctx.steps} steps/epoch")
        tb = None
        if cfg.tensorboard and dist.main:
            tb = closing.enter_context(TensorBoardLog(folder.path, cfg.to_dict(), history=state.prog.rows))

        while state.prog.epoch < cfg.epochs:
            train_epoch(ctx, state, net, stop)
            end_epoch(ctx, state)
            for hook in (tb.epoch if tb is not None else None, on_epoch):
                if hook is not None:
                    hook(state.prog.rows[-1])
            if cfg.patience is not None and state.prog.bad_epochs >= cfg.patience:
                ctx.log(f"early stop: no validation improvement for {cfg.patience} epochs")
                break

        if len(ctx.splits.val_y) == 0:
            ctx.log(f"no validation split: best.pt is the last epoch's model (epoch {state.prog.epoch})")
        metrics = None
        if dist.main and evaluate_test:
            metrics = evaluate_run(folder.path, "best", data=ds, device=device, verbose=verbose,
                                   trust_model_code=True, net=copy.deepcopy(architecture) if architecture else None)
        if tb is not None:
            tb.finish(metrics)
    return folder.path


def train_epoch(ctx: Context, state: TrainState, net: nn.Module, stop: StopFlag) -> None:
    """One epoch, or the rest of one after a resume: batches in the epoch's order, augmented on the device.
    A stop signal or --checkpoint-every-steps saves last.pt mid-epoch."""
    cfg, prog = ctx.cfg, state.prog
    t0 = time.perf_counter()
    if prog.step == 0:
        prog.perm = torch.randperm(len(ctx.splits.train_y), generator=state.order)
    idx = prog.perm[ctx.dist.rank::ctx.dist.world][:ctx.rank_n]
    size = cfg.low_res if prog.epoch < cfg.low_res_epochs else 28
    with ctx.log.bar(f"epoch {prog.epoch + 1}/{cfg.epochs}", ctx.steps, prog.step) as advance:
        while prog.step < ctx.steps:
            b = idx[prog.step * ctx.batch:(prog.step + 1) * ctx.batch].to(ctx.device)
            x, y = to_input(ctx.splits.train_x[b], cfg, state.aug, size), ctx.splits.train_y[b]
            loss, correct = train_step(net, state.opt, state.scaler, x, y, cfg, ctx.precision, ctx.device)
            if not math.isfinite(loss):
                if cfg.on_nan == "stop":
                    raise diverged(ctx.folder, prog, state.opt, loss)
                prog.nan_skipped += 1
            else:
                prog.loss_sum += loss * len(y)
                prog.correct += correct
                prog.seen += len(y)
                if state.ema is not None:
                    state.ema.update_parameters(state.model)
            prog.step += 1
            prog.global_step += 1
            if state.lookahead is not None:
                state.lookahead.step(prog.global_step)
            prog.lr = state.opt.param_groups[0]["lr"]
            if state.sched is not None and state.per_step:
                state.sched.step()
            advance()
            if stop.signum is not None or checkpoint_due(cfg, prog):
                prog.epoch_seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                if ctx.dist.main:
                    save_last(ctx, state)
                if stop.signum is not None:
                    raise interrupted(ctx.folder, prog, stop.signum)
    prog.epoch_seconds += time.perf_counter() - t0


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


def end_epoch(ctx: Context, state: TrainState) -> None:
    """Validate, step the plateau scheduler, log the row, update best.pt, then last.pt (in that order)."""
    cfg, prog = ctx.cfg, state.prog
    t0 = time.perf_counter()
    loss_sum, correct, seen = all_reduce(ctx.dist, ctx.device, prog.loss_sum, prog.correct, prog.seen)
    broadcast(ctx.dist, state.model, state.eval_model)
    val_loss, val_acc = validation_metrics(state.eval_model, ctx.splits, cfg, ctx.precision, ctx.device)
    lr = prog.lr
    if state.sched is not None and cfg.scheduler == "plateau":
        state.sched.step(val_acc)
    prog.epoch += 1
    seconds = prog.epoch_seconds + time.perf_counter() - t0
    row = dict(epoch=prog.epoch, train_loss=loss_sum / max(seen, 1), train_acc=correct / max(seen, 1),
               val_loss=val_loss, val_acc=val_acc, lr=lr, seconds=seconds)
    prog.rows.append(row)
    # Without a validation split every epoch "improves", so best.pt is the last model; a NaN never improves.
    improved = len(ctx.splits.val_y) == 0 or (math.isfinite(val_acc) and val_acc > prog.best_val_acc)
    if improved:
        prog.best_val_acc, prog.best_epoch, prog.bad_epochs = val_acc, prog.epoch, 0
    else:
        prog.bad_epochs += 1
    prog.step, prog.perm, prog.loss_sum, prog.correct, prog.seen, prog.epoch_seconds = 0, None, 0.0, 0, 0, 0.0
    ctx.log.epoch(row, improved, prog.nan_skipped)
    if ctx.dist.main:
        if improved:
            save_best(ctx, state)
        ctx.folder.write_history(prog.rows)
        save_last(ctx, state)


def validation_metrics(model: nn.Module, splits: Splits, cfg: TrainConfig, precision: str,
                       device) -> tuple[float, float]:
    """(loss, accuracy) on the validation split; NaN without one. (TrainConfig.validate checks options.)"""
    if len(splits.val_y) == 0:
        return float("nan"), float("nan")
    logits = predict_logits(model, splits.val_x, device=device, precision=precision,
                            tta=cfg.tta, channels_last=cfg.channels_last)
    y = splits.val_y.cpu()
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def checkpoint_due(cfg: TrainConfig, prog: Progress) -> bool:
    """--checkpoint-every-steps N: save last.pt mid-epoch every N steps."""
    n = cfg.checkpoint_every_steps
    return n > 0 and prog.global_step % n == 0


# ---------------------------------------------------------------------------------------------- run folder


def default_run_dir(cfg: TrainConfig) -> Path:
    name = cfg.model.rsplit(":", 1)[-1].removesuffix(".py")  # FILE.py:NAME -> NAME
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


# What a fresh start writes before its first last.pt: a start that fails before then removes exactly these.
STARTED_FILES = (RunFolder.CONFIG, RunFolder.SOURCE_COPY, RunFolder.METRICS,
                 f"{RunFolder.CHECKPOINTS}/best.pt")


@contextlib.contextmanager
def claim_run_dir(folder: RunFolder, resume: bool):
    """Check the run folder before any work, then create, mark and lock it.

    A fresh start that fails before it has started (RunFolder.started: its first last.pt) leaves nothing behind;
    a resumed run is never undone.
    """
    check_run_dir(folder, resume)
    run_dir = folder.path
    fresh = [n for n in (MARKER, ".lock") if not (run_dir / n).exists()]
    created = make_folder(run_dir)
    checkpoints = run_dir / RunFolder.CHECKPOINTS
    created = ([checkpoints] if not checkpoints.exists() else []) + created
    mine = False
    try:
        with RunLock(run_dir):
            if not resume and folder.exists():  # another start won the race for the lock
                raise RunError(f"{run_dir} already holds a run; choose another --out")
            mine = True
            if resume:
                clean_temp_files(run_dir)
            yield
    except BaseException:
        if mine and not resume and not folder.started():
            clean_temp_files(run_dir)
            undo_folder(run_dir, created, [*STARTED_FILES, *fresh])
        raise


def check_run_dir(folder: RunFolder, resume: bool) -> None:
    """Read-only: may this run start in `folder`? Nothing is created or removed here."""
    run_dir = folder.path
    owner = RunLock.holder(run_dir)
    if owner is not None:
        raise RunError(f"run folder {run_dir} is in use by another training (pid {owner}); "
                       "wait for it or choose another --out")
    if not resume:
        if folder.exists():
            raise RunError(f"{run_dir} already holds a run; use --resume {run_dir} to continue it or choose "
                           "another --out")
        check_new_folder(run_dir, "run folder")
        return
    if not folder.exists():
        raise RunError(f"nothing to resume: {run_dir} has no {RunFolder.CONFIG}")
    if not folder.started():
        produced = (RunFolder.METRICS, f"{RunFolder.CHECKPOINTS}/best.pt", RunFolder.TEST_METRICS)
        kept = [n for n in produced if folder.file(n).exists()]
        if kept:
            raise RunError(f"cannot resume {run_dir}: checkpoints/last.pt is missing, and starting over would "
                           f"overwrite its {kept[0]}; its files are kept (train a new run with another --out)")


def resume_state(ctx: Context, state: TrainState) -> None:
    if ctx.folder.has_checkpoint("last"):
        try:
            state.load_state_dict(ctx.folder.load_checkpoint("last"))
        except ValueError as e:  # a state whose types runio checked but whose shapes do not fit this model
            raise RunError(f"cannot resume: {ctx.folder.checkpoint_path('last')} is damaged: {e}") from None
        ctx.log(f"resumed {ctx.folder.path} at epoch {state.prog.epoch + 1}, step {state.prog.step}")
    else:
        ctx.log(f"{ctx.folder.path} has no checkpoint yet: starting at epoch 1")


def git_state() -> dict[str, Any] | None:
    """The commit and dirty flag of the checkout fashionlab runs from (an editable install), else None."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def run_record(ctx: Context, ds: FashionMNIST, command: str) -> dict[str, Any]:
    """config.json: every option, plus where the data, code and machine came from."""
    src, splits = ds.source, ctx.splits
    return ctx.cfg.to_dict() | {
        "data": {"source": str(Path(src.path).resolve()), "origin": src.origin, "sha256": dict(src.sha256),
                 "test_sha256": ds.test_sha256, "normalize": {"mean": splits.mean, "std": splits.std},
                 "n_train": len(splits.train_y), "n_val": len(splits.val_y)},
        "versions": {"fashionlab": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0], "git": git_state()},
        "runtime": {"device": str(ctx.device), "precision": ctx.precision, "world_size": ctx.dist.world,
                    "threads": torch.get_num_threads()},
        "model_origin": record_model(ctx.folder.path, ctx.cfg.model),
        "command": command,
    }


def checkpoint_meta(ctx: Context) -> dict[str, Any]:
    splits = ctx.splits
    return {"model_name": ctx.cfg.model, "config": ctx.cfg.to_dict(),
            "normalize": {"mean": splits.mean, "std": splits.std}}


def save_best(ctx: Context, state: TrainState) -> None:
    ctx.folder.save_checkpoint("best", checkpoint_meta(ctx) | {
        "model": state.eval_model.state_dict(), "epoch": state.prog.epoch, "val_acc": state.prog.best_val_acc})


def save_last(ctx: Context, state: TrainState) -> None:
    ctx.folder.save_checkpoint("last", checkpoint_meta(ctx) | state.state_dict())


def numpy_rng_state() -> list:
    # As plain lists: weights_only loading accepts builtins and tensors, not numpy arrays.
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return [keys.tolist(), int(pos), int(has_gauss), float(cached)]


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The saved config of a run; only options that cannot change its results may be overridden (an option given
    again with its saved value is no change). Nothing is imported: an external model is checked by train()."""
    from fashionlab.config import PROVENANCE_KEYS, RESUME_MAY_CHANGE, build_config, normalize_keys

    folder = RunFolder(run_dir)
    if not folder.exists():
        raise RunError(f"nothing to resume: {run_dir} has no {RunFolder.CONFIG}")
    saved = folder.saved_config()
    changed = sorted(k for k, v in overrides.items() if k not in RESUME_MAY_CHANGE and saved.get(k) != v)
    if changed:
        raise ConfigError(f"--resume continues with the run's saved options; cannot change {', '.join(changed)}")
    keys = {k: v for k, v in saved.items() if k not in PROVENANCE_KEYS}
    per_step = saved.get("scheduler") in ("onecycle", "cosine")
    if per_step and overrides.get("epochs", saved.get("epochs")) != saved.get("epochs"):
        raise ConfigError(f"cannot change --epochs of a run with a {saved['scheduler']} schedule: "
                          "its LR curve is planned for the original length")
    return build_config(normalize_keys(keys, str(folder.file(RunFolder.CONFIG))), overrides, {"out": str(run_dir)})


def elastic_restart(cfg: TrainConfig) -> TrainConfig | None:
    """`torchrun --max-restarts` re-runs a failed group's original command: then the run its first attempt
    started in --out is resumed from its last checkpoint instead of refused. None when this is no such restart."""
    restarts = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if not restarts.isdigit() or int(restarts) == 0 or not cfg.out or not RunFolder(cfg.out).exists():
        return None
    return resume_config(Path(cfg.out), {})  # the same command: the saved options are this command's


def diverged(folder: RunFolder, prog: Progress, opt, loss: float) -> TrainingDiverged:
    last = folder.checkpoint_path("last")
    kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was saved before it"
    return TrainingDiverged(
        f"loss became {loss} at epoch {prog.epoch + 1}, step {prog.step + 1} (lr {opt.param_groups[0]['lr']:.3g}); "
        f"stopped, {kept}. Lower --lr, add --grad-clip, or pass --on-nan skip")


def interrupted(folder: RunFolder, prog: Progress, signum: int) -> Interrupted:
    return Interrupted(f"at epoch {prog.epoch + 1}, step {prog.step}", signum, folder.path)


# ---------------------------------------------------------------------------------------------- distributed


@contextlib.contextmanager
def distributed(dist: Dist, cfg: TrainConfig):
    """Device selection, determinism flags, and (under torchrun) the process group."""
    device = resolve_device(cfg.device)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if dist.world == 1:
        yield device
        return
    import torch.distributed as td

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    td.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        td.destroy_process_group()


def wrap_model(model: nn.Module, cfg: TrainConfig, dist: Dist, device) -> nn.Module:
    net = model
    if dist.world > 1:
        if cfg.sync_bn and device.type != "cuda":
            raise ConfigError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm only runs on GPU modules "
                              "(on the CPU, drop --sync-bn; each rank then normalizes its own shard)")
        if cfg.sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    return net


def broadcast(dist: Dist, *modules: nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank: each rank's last forward
    updated its own, so without this the ranks would validate differently and disagree on the plateau
    LR, early stopping and the best epoch."""
    if dist.world == 1:
        return
    import torch.distributed as td

    for module in modules:
        for buf in module.buffers():
            td.broadcast(buf, src=0)


def all_reduce(dist: Dist, device, *values: float) -> list[float]:
    if dist.world == 1:
        return list(values)
    import torch.distributed as td

    t = torch.tensor(values, dtype=torch.float64, device=device)
    td.all_reduce(t)
    return t.tolist()


# ---------------------------------------------------------------------------------------------- output


class Logger:
    """A rich progress bar per epoch and a one-line summary after it; silent when not verbose."""

    def __init__(self, verbose: bool):
        self.verbose = verbose
        if verbose:
            from rich.console import Console

            self.console = Console(stderr=True, soft_wrap=True)

    def __call__(self, msg: str) -> None:
        if self.verbose:
            self.console.print(msg, highlight=False)

    @contextlib.contextmanager
    def bar(self, label: str, total: int, done: int):
        if not self.verbose:
            yield lambda: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
        from rich.progress import Progress as ProgressBar  # not train.Progress, which is where training stands

        with ProgressBar("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=self.console, transient=True) as p:
            task = p.add_task(label, total=total, completed=done)
            yield lambda: p.advance(task)

    def epoch(self, r: dict, improved: bool, nan_skipped: int) -> None:
        mark = " *" if improved else ""  # a new best.pt
        skipped = f" | {nan_skipped} non-finite batches skipped" if nan_skipped else ""
        val = ("no val split" if math.isnan(r["val_acc"])
               else f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.4f}{mark}")
        self(f"epoch {r['epoch']:>3} | train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f} | "
             f"{val} | lr {r['lr']:.2e} | {r['seconds']:.1f}s{skipped}")
