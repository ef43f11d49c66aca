"""Starting, resuming and recording a training run: the run folder claimed (checked, made, locked, undone if the
start fails), config.json's record of where everything came from, the fixed context and the changing state of a
run (TrainState.state_dict() is last.pt), checkpoints, resume, devices and processes under torchrun, the console log.

train.py's loop uses these; ensemble.py uses them for the ensemble's own folder.
"""

from __future__ import annotations

import contextlib
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
from torch import nn

from fashionlab.about import __version__
from fashionlab.config import TrainConfig
from fashionlab.data.load import data_record
from fashionlab.device import resolve_device, resolve_precision
from fashionlab.errors import ConfigError, FashionlabError, RunError
from fashionlab.files import MARKER, RunLock, check_new_folder, clean_temp_files, make_folder, undo_folder
from fashionlab.models import Classifier
from fashionlab.runfolder import RunFolder
from fashionlab.runformat import Progress
from fashionlab.trainsetup import (
    Lookahead,
    Splits,
    batches_per_epoch,
    make_ema,
    make_optimizer,
    make_scheduler,
    prepare_data,
)


class TrainingDiverged(FashionlabError):
    exit_code = 3


class Interrupted(FashionlabError):
    def __init__(self, where: str, signum: int, run_dir: Path):
        super().__init__(f"{signal.Signals(signum).name} {where}: state saved; "
                         f"resume with: fashionlab train --resume {run_dir}")
        self.where, self.signum, self.exit_code = where, signum, 128 + signum


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


class Logger:
    """A rich progress bar per epoch on a terminal and, always, a one-line summary after each epoch with the time
    left; silent when not verbose. In a log file (no terminal) there is no bar: a transient bar there leaves a blank
    line per epoch."""

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
        if not self.verbose or not self.console.is_terminal:
            yield lambda: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
        from rich.progress import Progress as ProgressBar  # not train.Progress, which is where training stands

        with ProgressBar("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=self.console, transient=True) as p:
            task = p.add_task(label, total=total, completed=done)
            yield lambda: p.advance(task)

    def epoch(self, r: dict, improved: bool, nan_skipped: int, rows: list[dict] | None = None,
              epochs: int | None = None) -> None:
        """rows, epochs: the run's rows so far and its length, for the estimate of the time left (the mean epoch
        so far times the epochs to go)."""
        from fashionlab.numfmt import time_left

        mark = " *" if improved else ""  # a new best.pt
        skipped = f" | {nan_skipped} non-finite batches skipped" if nan_skipped else ""
        val = ("no val split" if math.isnan(r["val_acc"])
               else f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.4f}{mark}")
        left = ""
        if rows and epochs and epochs > r["epoch"]:
            left = time_left(sum(x['seconds'] for x in rows) / len(rows) * (epochs - r['epoch']))
        self(f"epoch {r['epoch']:>3} | train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f} | "
             f"{val} | lr {r['lr']:.2e} | {r['seconds']:.1f}s{left}{skipped}")


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


def make_context(cfg: TrainConfig, dist: Dist, device: torch.device, ds, folder: RunFolder,
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


def default_run_dir(cfg: TrainConfig) -> Path:
    name = cfg.model.rsplit(":", 1)[-1].removesuffix(".py")  # FILE.py:NAME -> NAME
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


@contextlib.contextmanager
def claim_run_dir(folder: RunFolder, resume: bool):
    """Check the run folder before any work, then create, mark and lock it.

    A fresh start that fails before it has started (RunFolder.started: its first last.pt) leaves nothing behind;
    a resumed run is never undone.
    """
    check_run_dir(folder, resume)
    run_dir = folder.path
    fresh = [n for n in (MARKER, RunLock.NAME) if not (run_dir / n).exists()]
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
            undo_folder(run_dir, created, [*RunFolder.STARTED_FILES, *fresh])
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
        produced = (RunFolder.METRICS, RunFolder.checkpoint_file("best"), RunFolder.TEST_METRICS)
        kept = [n for n in produced if folder.file(n).exists()]
        if kept:
            raise RunError(f"cannot resume {run_dir}: checkpoints/last.pt is missing, and starting over would "
                           f"overwrite its {kept[0]}; its files are kept (train a new run with another --out)")


def resume_state(ctx: Context, state: TrainState) -> None:
    check_same_exclusion(ctx)
    if ctx.folder.has_checkpoint("last"):
        try:
            state.load_state_dict(ctx.folder.load_checkpoint("last"))
        except ValueError as e:  # a state whose types runformat checked but whose shapes do not fit this model
            raise RunError(f"cannot resume: {ctx.folder.checkpoint_path('last')} is damaged: {e}") from None
        ctx.log(f"resumed {ctx.folder.path} at epoch {state.prog.epoch + 1}, step {state.prog.step}")
    else:
        ctx.log(f"{ctx.folder.path} has no checkpoint yet: starting at epoch 1")


def check_same_exclusion(ctx: Context) -> None:
    """A resumed run trains on what it started on: its --exclude file must hold what it held then (its sha256)."""
    saved = (ctx.folder.saved_config().get("data") or {}).get("exclude") or {}
    now = ctx.splits.excluded or {}
    if saved.get("sha256") != now.get("sha256"):
        raise RunError(f"cannot resume {ctx.folder.path}: its --exclude file {ctx.cfg.exclude} has changed since the "
                       f"run started (sha256 {str(saved.get('sha256'))[:12]}... then, {str(now.get('sha256'))[:12]}... "
                       "now); train a new run with another --out")


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


def run_record(ctx: Context, ds, command: str) -> dict[str, Any]:
    """config.json: every option, plus where the data, code and machine came from."""
    splits = ctx.splits
    return ctx.cfg.to_dict() | {
        "data": data_record(ds) | {"normalize": {"mean": splits.mean, "std": splits.std},
                                   "n_train": len(splits.train_y), "n_val": len(splits.val_y)}
                | ({"exclude": splits.excluded} if splits.excluded is not None else {}),
        "versions": {"fashionlab": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0], "git": git_state()},
        "runtime": {"device": str(ctx.device), "precision": ctx.precision, "world_size": ctx.dist.world,
                    "threads": torch.get_num_threads(), "data_loading": getattr(ds, "loading", "memory")},
        "model_origin": ctx.folder.record_model_source(ctx.cfg.model),
        "command": command,
    }


def checkpoint_meta(ctx: Context) -> dict[str, Any]:
    splits = ctx.splits
    # The input shape and class names travel with the weights: evaluate, predict and export rebuild the model
    # and name its outputs from the checkpoint alone.
    return {"model_name": ctx.cfg.model, "config": ctx.cfg.to_dict(),
            "normalize": {"mean": splits.mean, "std": splits.std},
            "input_shape": list(splits.shape), "classes": list(splits.classes)}


def save_best(ctx: Context, model: nn.Module, epoch: int, val_acc: float) -> None:
    """best.pt: the model to evaluate (an EMA's average, an ensemble's members), the epoch and the validation
    accuracy that chose it. The one writer of best.pt, for single runs and ensembles alike."""
    ctx.folder.save_checkpoint("best", checkpoint_meta(ctx) | {
        "model": model.state_dict(), "epoch": epoch, "val_acc": val_acc})


def save_last(ctx: Context, state: TrainState) -> None:
    ctx.folder.save_checkpoint("last", checkpoint_meta(ctx) | state.state_dict())


def improves(val_acc: float, best: float, has_val: bool) -> bool:
    """Whether an epoch's validation accuracy makes a new best.pt. Without a validation split every epoch
    "improves", so best.pt is the last model; a NaN never improves; a tie does not."""
    return not has_val or (math.isfinite(val_acc) and val_acc > best)


def epochs_since_best(val_accs: list[float], has_val: bool = True) -> int:
    """Epochs since the last improvement, by `improves` (what --patience counts), replayed from a history."""
    best, bad = Progress.best_val_acc, 0
    for v in val_accs:
        best, bad = (v, 0) if improves(v, best, has_val) else (best, bad + 1)
    return bad


def patience_spent(cfg: TrainConfig, bad_epochs: int) -> bool:
    """--patience N: stop after N epochs without a new best."""
    return cfg.patience is not None and bad_epochs >= cfg.patience


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
