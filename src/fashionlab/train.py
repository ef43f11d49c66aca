"""Training: the whole dataset lives on the device as uint8, batches are indexed and augmented there.

`train(cfg)` reads top to bottom: data, model, optimizer, then the epoch loop, then the test evaluation.
Everything a resumed run needs (weights, optimizer, scheduler, EMA, every RNG, the epoch's data order and
partial sums, the metrics so far) goes into checkpoints/last.pt, so a killed run resumes bit-identically.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
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

from fashionlab import __version__
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
from fashionlab.models import Classifier, build_model, check_io, count_params
from fashionlab.models.external import record as record_model
from fashionlab.models.external import run_model_spec
from fashionlab.runio import (
    MARKER,
    METRIC_COLUMNS,
    RunLock,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    check_new_folder,
    clean_temp_files,
    load_checkpoint,
    make_folder,
    read_json,
    undo_folder,
)
from fashionlab.tensorboard import TensorBoardLog
from fashionlab.tensorboard import require as require_tensorboard


class TrainingDiverged(FashionlabError):
    exit_code = 3


class Interrupted(FashionlabError):
    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class Splits:
    train_x: torch.Tensor  # uint8 [N, 28, 28] on the device
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    mean: float
    std: float


@dataclass
class Progress:
    """Where training stands; saved in last.pt so a resumed run continues mid-epoch exactly."""

    epoch: int = 0  # epochs completed
    step: int = 0  # steps done in the current epoch
    global_step: int = 0
    perm: torch.Tensor | None = None  # this epoch's data order
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    epoch_seconds: float = 0.0
    best_val_acc: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    nan_skipped: int = 0
    lr: float = 0.0  # the LR of the latest optimizer step (what the epoch row reports)
    rows: list[dict[str, float]] = field(default_factory=list)


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
    train_idx, val_idx = stratified_split(ds.train_y, cfg.val_fraction, cfg.seed)
    if cfg.train_subset is not None:
        train_idx = train_idx[stratified_subset(ds.train_y[train_idx], cfg.train_subset, cfg.seed)]
    # Normalization statistics from the training split only: validation and test stay unseen.
    mean, std = pixel_stats(ds.train_x[train_idx])
    return Splits(ds.train_x[train_idx].to(device), ds.train_y[train_idx].to(device),
                  ds.train_x[val_idx].to(device), ds.train_y[val_idx].to(device), mean, std)


def make_model(cfg: TrainConfig, device: torch.device, splits: Splits, spec: str | None = None,
               net: nn.Module | None = None) -> Classifier:
    """The architecture behind its input normalization (the training split's statistics); `spec` is where an
    external model's code is imported from (its run folder's copy on resume); `net` is an architecture object
    given in Python (used as is: its initialization is the caller's)."""
    torch.manual_seed(cfg.seed)
    net = net if net is not None else build_model(spec or cfg.model, dropout=cfg.dropout, **cfg.extra)
    check_io(net, cfg.model)
    model = Classifier(net, splits.mean, splits.std).to(device)
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


def batches_per_epoch(n: int, batch_size: int) -> int:
    # A trailing batch of one sample would break batch norm; it is dropped (the order changes each epoch).
    full, rest = divmod(n, batch_size)
    return max(1, full + (rest > 1))


def to_input(x_uint8: torch.Tensor, cfg: TrainConfig, gen: torch.Generator | None) -> torch.Tensor:
    x = as_input(x_uint8)
    if gen is not None:
        x = augment(x, cfg.augmentations(), gen, rotate_degrees=cfg.rotate_degrees, crop_pad=cfg.crop_pad,
                    erase_prob=cfg.erase_prob)
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


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
    dist = Dist.from_env()
    run_dir = Path(cfg.out or default_run_dir(cfg))
    if cfg.tensorboard:
        require_tensorboard()  # before any run folder exists
    claim = claim_run_dir(run_dir, resume) if dist.main else contextlib.nullcontext()
    with claim, StopFlag() as stop, distributed(dist, cfg) as device, contextlib.ExitStack() as closing:
        log = Logger(verbose and dist.main)
        ds = data or load_fashion_mnist(cfg.data_dir, progress=verbose)
        splits = prepare_data(cfg, ds, device)
        precision = resolve_precision(cfg.precision, device)
        spec = run_model_spec(run_dir, read_json(run_dir / "config.json"), trust_model_code) if resume else None
        model = make_model(cfg, device, splits, spec, architecture)
        net = wrap_model(model, cfg, dist, device)
        opt = make_optimizer(cfg, model)
        rank_n = len(splits.train_y) // dist.world
        batch = max(1, cfg.batch_size // dist.world)
        steps = batches_per_epoch(rank_n, batch)
        sched, per_step = make_scheduler(cfg, opt, steps)
        ema = make_ema(cfg, model)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        order_gen = torch.Generator().manual_seed(cfg.seed)  # same data order on every rank
        aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1 + 1000 * dist.rank)
        prog = Progress()
        state = dict(model=model, opt=opt, sched=sched, ema=ema, scaler=scaler, order=order_gen, aug=aug_gen)
        if dist.main and not (run_dir / "config.json").exists():
            write_config(run_dir, cfg, ds, splits, command, runtime={
                "device": str(device), "precision": precision, "world_size": dist.world},
                model_origin=record_model(run_dir, cfg.model))
        if resume and (run_dir / "checkpoints" / "last.pt").exists():
            prog = restore(run_dir / "checkpoints" / "last.pt", state)
            log(f"resumed {run_dir} at epoch {prog.epoch + 1}, step {prog.step}")
        elif resume:
            log(f"{run_dir} has no checkpoint yet: starting at epoch 1")
        log(f"{cfg.model}: {count_params(model):,} params | {len(splits.train_y):,} train / {len(splits.val_y):,} val"
            f" | {device.type} {precision} | batch {cfg.batch_size} x {steps} steps/epoch")
        tb = None
        if cfg.tensorboard and dist.main:
            tb = closing.enter_context(TensorBoardLog(run_dir, cfg.to_dict(), history=prog.rows))

        while prog.epoch < cfg.epochs:
            t0 = time.perf_counter()
            if prog.step == 0:
                prog.perm = torch.randperm(len(splits.train_y), generator=order_gen)
            idx = prog.perm[dist.rank::dist.world][:rank_n]
            with log.bar(f"epoch {prog.epoch + 1}/{cfg.epochs}", steps, prog.step) as advance:
                while prog.step < steps:
                    b = idx[prog.step * batch:(prog.step + 1) * batch].to(device)
                    x = to_input(splits.train_x[b], cfg, aug_gen)
                    y = splits.train_y[b]
                    loss, correct = train_step(net, opt, scaler, x, y, cfg, precision, device)
                    if not math.isfinite(loss):
                        if cfg.on_nan == "stop":
                            raise diverged(run_dir, prog, opt, loss)
                        prog.nan_skipped += 1
                    else:
                        prog.loss_sum += loss * len(y)
                        prog.correct += correct
                        prog.seen += len(y)
                        if ema is not None:
                            ema.update_parameters(model)
                    prog.step += 1
                    prog.global_step += 1
                    prog.lr = opt.param_groups[0]["lr"]
                    if sched is not None and per_step:
                        sched.step()
                    advance()
                    if stop.signum is not None or due(cfg, prog):
                        prog.epoch_seconds += time.perf_counter() - t0
                        t0 = time.perf_counter()
                        if dist.main:
                            save_last(run_dir, state, prog, cfg, splits)
                        if stop.signum is not None:
                            raise interrupted(run_dir, prog, stop.signum)
            prog.epoch_seconds += time.perf_counter() - t0
            end_epoch(run_dir, cfg, dist, state, prog, splits, precision, device, log)
            if tb is not None:
                tb.epoch(prog.rows[-1])
            if on_epoch is not None:
                on_epoch(prog.rows[-1])
            if cfg.patience is not None and prog.bad_epochs >= cfg.patience:
                log(f"early stop: no validation improvement for {cfg.patience} epochs")
                break

        if len(splits.val_y) == 0:
            log(f"no validation split: best.pt is the last epoch's model (epoch {prog.epoch})")
        if dist.main and evaluate_test:
            metrics = evaluate_run(run_dir, "best", data=ds, device=device, verbose=verbose, trust_model_code=True,
                                   net=copy.deepcopy(architecture) if architecture is not None else None)
            if tb is not None:
                tb.finish(metrics)
        elif tb is not None:
            tb.finish(None)
    return run_dir


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


def end_epoch(run_dir: Path, cfg: TrainConfig, dist: Dist, state: dict, prog: Progress, splits: Splits,
              precision: str, device, log) -> None:
    """Validate, step the plateau scheduler, log the row, update best.pt, then last.pt (in that order)."""
    t0 = time.perf_counter()
    loss_sum, correct, seen = all_reduce(dist, device, prog.loss_sum, prog.correct, prog.seen)
    eval_model = state["ema"].module if state["ema"] is not None else state["model"]
    broadcast(dist, state["model"], eval_model)
    val_loss, val_acc = validate(eval_model, splits, cfg, precision, device)
    lr = prog.lr
    if state["sched"] is not None and cfg.scheduler == "plateau":
        state["sched"].step(val_acc)
    prog.epoch += 1
    seconds = prog.epoch_seconds + time.perf_counter() - t0
    row = dict(epoch=prog.epoch, train_loss=loss_sum / max(seen, 1), train_acc=correct / max(seen, 1),
               val_loss=val_loss, val_acc=val_acc, lr=lr, seconds=seconds)
    prog.rows.append(row)
    # Without a validation split every epoch "improves", so best.pt is the last model; a NaN never improves.
    improved = len(splits.val_y) == 0 or (math.isfinite(val_acc) and val_acc > prog.best_val_acc)
    if improved:
        prog.best_val_acc, prog.best_epoch, prog.bad_epochs = val_acc, prog.epoch, 0
    else:
        prog.bad_epochs += 1
    prog.step, prog.perm, prog.loss_sum, prog.correct, prog.seen, prog.epoch_seconds = 0, None, 0.0, 0, 0, 0.0
    log.epoch(row, improved, prog.nan_skipped)
    if dist.main:
        if improved:
            save_best(run_dir, eval_model, cfg, splits, prog)
        write_metrics(run_dir, prog.rows)
        save_last(run_dir, state, prog, cfg, splits)


def validate(model: nn.Module, splits: Splits, cfg: TrainConfig, precision: str, device) -> tuple[float, float]:
    if len(splits.val_y) == 0:
        return float("nan"), float("nan")
    logits = predict_logits(model, splits.val_x, device=device, precision=precision,
                            tta=cfg.tta, channels_last=cfg.channels_last)
    y = splits.val_y.cpu()
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def due(cfg: TrainConfig, prog: Progress) -> bool:
    n = cfg.checkpoint_every_steps
    return n > 0 and prog.global_step % n == 0


# ---------------------------------------------------------------------------------------------- run folder


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"


# What a fresh start writes before its first last.pt: a start that fails before then removes exactly these.
STARTED_FILES = ("config.json", "model_source.py", "metrics.csv", "checkpoints/best.pt")


@contextlib.contextmanager
def claim_run_dir(run_dir: Path, resume: bool):
    """Check the run folder before any work, then create, mark and lock it.

    A fresh start that fails before its first last.pt leaves nothing behind; a resumed run is never undone.
    """
    check_run_dir(run_dir, resume)
    fresh = [n for n in (MARKER, ".lock") if not (run_dir / n).exists()]
    created = make_folder(run_dir)
    created = ([run_dir / "checkpoints"] if not (run_dir / "checkpoints").exists() else []) + created
    mine = False
    try:
        with RunLock(run_dir):
            if not resume and (run_dir / "config.json").exists():  # another start won the race for the lock
                raise RunError(f"{run_dir} already holds a run; choose another --out")
            mine = True
            if resume:
                clean_temp_files(run_dir)
            yield
    except BaseException:
        if mine and not resume and not (run_dir / "checkpoints" / "last.pt").exists():
            clean_temp_files(run_dir)
            undo_folder(run_dir, created, [*STARTED_FILES, *fresh])
        raise


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Read-only: may this run start in `run_dir`? Nothing is created or removed here."""
    owner = RunLock.holder(run_dir)
    if owner is not None:
        raise RunError(f"run folder {run_dir} is in use by another training (pid {owner}); "
                       "wait for it or choose another --out")
    if not resume:
        if (run_dir / "config.json").exists():
            raise RunError(f"{run_dir} already holds a run; use --resume {run_dir} to continue it or choose "
                           "another --out")
        check_new_folder(run_dir, "run folder")
        return
    if not (run_dir / "config.json").is_file():
        raise RunError(f"nothing to resume: {run_dir} has no config.json")
    if not (run_dir / "checkpoints" / "last.pt").exists():
        kept = [n for n in ("metrics.csv", "checkpoints/best.pt", "test_metrics.json") if (run_dir / n).exists()]
        if kept:
            raise RunError(f"cannot resume {run_dir}: checkpoints/last.pt is missing, and starting over would "
                           f"overwrite its {kept[0]}; its files are kept (train a new run with another --out)")


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


def write_config(run_dir: Path, cfg: TrainConfig, ds: FashionMNIST, splits: Splits, command: str,
                 runtime: dict[str, Any], model_origin: dict[str, Any] | None) -> None:
    src = ds.source
    info = cfg.to_dict() | {
        "data": {"source": str(Path(src.path).resolve()), "origin": src.origin, "sha256": dict(src.sha256),
                 "test_sha256": ds.test_sha256, "normalize": {"mean": splits.mean, "std": splits.std},
                 "n_train": len(splits.train_y), "n_val": len(splits.val_y)},
        "versions": {"fashionlab": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0], "git": git_state()},
        "runtime": runtime,
        "model_origin": model_origin,
        "command": command,
    }
    atomic_write_json(run_dir / "config.json", info)


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (r[k] if k == "epoch" else f"{r[k]:.6g}") for k in METRIC_COLUMNS})
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())


def checkpoint_base(model: nn.Module, cfg: TrainConfig, splits: Splits) -> dict[str, Any]:
    return {"model": model.state_dict(), "model_name": cfg.model, "config": cfg.to_dict(),
            "normalize": {"mean": splits.mean, "std": splits.std}}


def save_best(run_dir: Path, eval_model: nn.Module, cfg: TrainConfig, splits: Splits, prog: Progress) -> None:
    ckpt = checkpoint_base(eval_model, cfg, splits) | {"epoch": prog.epoch, "val_acc": prog.best_val_acc}
    atomic_torch_save(run_dir / "checkpoints" / "best.pt", ckpt)


def save_last(run_dir: Path, state: dict, prog: Progress, cfg: TrainConfig, splits: Splits) -> None:
    ema, sched = state["ema"], state["sched"]
    ckpt = checkpoint_base(state["model"], cfg, splits) | {
        "epoch": prog.epoch,
        "optimizer": state["opt"].state_dict(),
        "scheduler": sched.state_dict() if sched is not None else None,
        "ema": ema.state_dict() if ema is not None else None,
        "scaler": state["scaler"].state_dict(),
        "progress": asdict(prog),
        "rng": {"torch": torch.get_rng_state(), "order": state["order"].get_state(),
                "aug": state["aug"].get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": list(random.getstate()[1]),
                "numpy": numpy_rng_state()},
    }
    atomic_torch_save(run_dir / "checkpoints" / "last.pt", ckpt)


def numpy_rng_state() -> list:
    # As plain lists: weights_only loading accepts builtins and tensors, not numpy arrays.
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return [keys.tolist(), int(pos), int(has_gauss), float(cached)]


def restore(path: Path, state: dict) -> Progress:
    ckpt = load_checkpoint(path)
    state["model"].load_state_dict(ckpt["model"])
    state["opt"].load_state_dict(ckpt["optimizer"])
    if state["sched"] is not None and ckpt["scheduler"] is not None:
        state["sched"].load_state_dict(ckpt["scheduler"])
    if state["ema"] is not None and ckpt["ema"] is not None:
        state["ema"].load_state_dict(ckpt["ema"])
    state["scaler"].load_state_dict(ckpt["scaler"])
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch"])
    state["order"].set_state(rng["order"])
    state["aug"].set_state(rng["aug"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate((3, tuple(rng["python"]), None))
    keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    return Progress(**ckpt["progress"])


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The saved config of a run; only options that cannot change its results may be overridden (an option given
    again with its saved value is no change). Nothing is imported: an external model is checked by train()."""
    from fashionlab.config import PROVENANCE_KEYS, RESUME_MAY_CHANGE, build_config, normalize_keys

    if not (run_dir / "config.json").is_file():
        raise RunError(f"nothing to resume: {run_dir} has no config.json")
    saved = read_json(run_dir / "config.json")
    changed = sorted(k for k, v in overrides.items() if k not in RESUME_MAY_CHANGE and saved.get(k) != v)
    if changed:
        raise ConfigError(f"--resume continues with the run's saved options; cannot change {', '.join(changed)}")
    keys = {k: v for k, v in saved.items() if k not in PROVENANCE_KEYS}
    per_step = saved.get("scheduler") in ("onecycle", "cosine")
    if per_step and overrides.get("epochs", saved.get("epochs")) != saved.get("epochs"):
        raise ConfigError(f"cannot change --epochs of a run with a {saved['scheduler']} schedule: "
                          "its LR curve is planned for the original length")
    return build_config(normalize_keys(keys, str(run_dir / "config.json")), overrides, {"out": str(run_dir)})


def elastic_restart(cfg: TrainConfig) -> TrainConfig | None:
    """`torchrun --max-restarts` re-runs a failed group's original command: then the run its first attempt
    started in --out is resumed from its last checkpoint instead of refused. None when this is no such restart."""
    restarts = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if not restarts.isdigit() or int(restarts) == 0 or not cfg.out or not (Path(cfg.out) / "config.json").is_file():
        return None
    return resume_config(Path(cfg.out), {})  # the same command: the saved options are this command's


def diverged(run_dir: Path, prog: Progress, opt, loss: float) -> TrainingDiverged:
    last = run_dir / "checkpoints" / "last.pt"
    kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was saved before it"
    return TrainingDiverged(
        f"loss became {loss} at epoch {prog.epoch + 1}, step {prog.step + 1} (lr {opt.param_groups[0]['lr']:.3g}); "
        f"stopped, {kept}. Lower --lr, add --grad-clip, or pass --on-nan skip")


def interrupted(run_dir: Path, prog: Progress, signum: int) -> Interrupted:
    name = signal.Signals(signum).name
    return Interrupted(f"{name} at epoch {prog.epoch + 1}, step {prog.step}: state saved; "
                       f"resume with: fashionlab train --resume {run_dir}", signum)


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
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
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
