"""Training: the whole dataset lives on the device as uint8, batches are indexed and augmented there (or, with
--data-loading stream, decoded from their files by worker processes, batch by batch, and augmented there).

`train(cfg)` reads top to bottom: claim the run folder, data, model, optimizer, then one `train_epoch` per epoch,
then the test evaluation. `train_epoch` is one epoch whole: its steps, its validation, its metrics row and its
checkpoints. What the loop is built from is in trainsetup.py (data splits, model, optimizer, one step), how a
run starts, resumes and records itself in runstart.py. Everything a resumed run needs (weights, optimizer,
scheduler, EMA, every RNG, the epoch's data order and partial sums, the metrics so far) goes into
checkpoints/last.pt, so a killed run resumes bit-identically.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path

import torch
from torch import nn

from fashionlab.config import TrainConfig
from fashionlab.data.load import check_exclude, load_for
from fashionlab.data.stream import batches, loader_workers
from fashionlab.ensemble import train_ensemble
from fashionlab.evaluate import evaluate_run
from fashionlab.files import check_outside
from fashionlab.models import count_params
from fashionlab.runfolder import RESUME_TRUST_ADVICE, RunFolder
from fashionlab.runformat import Progress
from fashionlab.runstart import (
    Context,
    Dist,
    StopFlag,
    TrainState,
    all_reduce,
    broadcast,
    claim_run_dir,
    default_run_dir,
    distributed,
    diverged,
    improves,
    interrupted,
    make_context,
    make_state,
    patience_spent,
    resume_state,
    run_record,
    save_best,
    save_last,
    wrap_model,
)
from fashionlab.tensorboard import TensorBoardLog
from fashionlab.tensorboard import require as require_tensorboard
from fashionlab.trainsetup import make_model, to_input, train_step, validation_metrics


def train(cfg: TrainConfig, *, command: str = "", resume: bool = False, data=None,
          verbose: bool = True, on_epoch=None, evaluate_test: bool = True, trust_model_code: bool = False,
          architecture: nn.Module | None = None, corruptions: bool = False) -> Path:
    """Train `cfg` into its run folder, evaluate the best checkpoint on the test set, return the folder.

    on_epoch(row): called after each epoch with its metrics row (tuners prune from it; it may raise to stop).
    evaluate_test=False skips the test evaluation (hyperparameter search must never see the test set).
    trust_model_code: a resumed run with an external model may import that model's code (from its run folder).
    architecture: an nn.Module object to train (cfg.model is then models.object_name(architecture)).
    corruptions: the test evaluation also runs the corruption suite (evaluate --corruptions).
    """
    check_exclude(cfg, data)  # before any run folder exists (its range once the data is read, if not given here)
    if cfg.ensemble > 1:  # N runs of this function, one per member, then their ensemble
        return train_ensemble(cfg, train, command=command, resume=resume, data=data, verbose=verbose,
                              evaluate_test=evaluate_test, trust_model_code=trust_model_code, architecture=architecture,
                              corruptions=corruptions)
    dist = Dist.from_env()
    folder = RunFolder(cfg.out or default_run_dir(cfg))
    check_outside(folder.path, cfg.data_folder(), "run folder")
    if cfg.tensorboard:
        require_tensorboard()  # before any run folder exists
    claim = claim_run_dir(folder, resume) if dist.main else contextlib.nullcontext()
    with claim, StopFlag() as stop, distributed(dist, cfg) as device, contextlib.ExitStack() as closing:
        ds = data or load_for(cfg, progress=verbose)
        ctx = make_context(cfg, dist, device, ds, folder, verbose)
        spec = folder.model_spec(trust_model_code, trust_advice=RESUME_TRUST_ADVICE) if resume else None
        state = make_state(ctx, make_model(cfg, device, ctx.splits, spec, architecture,
                                           weights_follow=resume and folder.has_checkpoint("last")))
        net = wrap_model(state.model, cfg, dist, device)
        if dist.main and not folder.exists():
            folder.write_config(run_record(ctx, ds, command), ds.test_files, ds.skipped)
        if resume:
            resume_state(ctx, state)
        if getattr(ds, "loading_note", ""):  # own image files: how they are fed, and why
            ctx.log(f"data: {len(ds.classes)} classes, {'x'.join(map(str, ctx.splits.shape))} | images "
                    f"{'streamed from their files' if ds.loading == 'stream' else 'in memory'} ({ds.loading_note})")
        ctx.log(f"{cfg.model}: {count_params(state.model):,} params | {len(ctx.splits.train_y):,} train / "
                f"{len(ctx.splits.val_y):,} val | {device.type} {ctx.precision} | batch {cfg.batch_size} x "
                f"{ctx.steps} steps/epoch | augment {cfg.augment}{' + flip TTA' if cfg.tta else ''}")
        tb = None
        if cfg.tensorboard and dist.main:
            tb = closing.enter_context(TensorBoardLog(folder.path, cfg.to_dict(), history=state.prog.rows))

        while state.prog.epoch < cfg.epochs:
            row = train_epoch(ctx, state, net, stop)
            for hook in (tb.epoch if tb is not None else None, on_epoch):
                if hook is not None:
                    hook(row)
            if patience_spent(cfg, state.prog.bad_epochs):
                ctx.log(f"early stop: no validation improvement for {cfg.patience} epochs")
                break

        if len(ctx.splits.val_y) == 0:
            ctx.log(f"no validation split: best.pt is the last epoch's model (epoch {state.prog.epoch})")
        metrics = None
        if dist.main and evaluate_test:
            metrics = evaluate_run(folder.path, "best", data=ds, device=device, verbose=verbose,
                                   trust_model_code=True, net=copy.deepcopy(architecture) if architecture else None,
                                   corruptions=corruptions)
        if tb is not None:
            tb.finish(metrics)
    return folder.path


def train_epoch(ctx: Context, state: TrainState, net: nn.Module, stop: StopFlag) -> dict[str, float]:
    """One epoch (or the rest of one after a resume), whole: the steps, the validation, the metrics row, then
    best.pt, metrics.csv and last.pt, in that order. Returns the row."""
    cfg, prog = ctx.cfg, state.prog

    # 1. Steps: batches in the epoch's order (the same on every rank), augmented on the device. A stop signal or
    # --checkpoint-every-steps saves last.pt mid-epoch.
    t0 = time.perf_counter()
    if prog.step == 0:
        prog.perm = torch.randperm(len(ctx.splits.train_y), generator=state.order)
    idx = prog.perm[ctx.dist.rank::ctx.dist.world][:ctx.rank_n]
    size = cfg.low_res if prog.epoch < cfg.low_res_epochs else None  # None: the data's own size
    # The images of the steps to come: indexed on the device, or decoded ahead by workers (--data-loading stream)
    images = batches(ctx.splits.train_x, [idx[k * ctx.batch:(k + 1) * ctx.batch] for k in range(prog.step, ctx.steps)],
                     workers=loader_workers(cfg.data_workers))
    with ctx.log.bar(f"epoch {prog.epoch + 1}/{cfg.epochs}", ctx.steps, prog.step) as advance:
        while prog.step < ctx.steps:
            b = idx[prog.step * ctx.batch:(prog.step + 1) * ctx.batch].to(ctx.device)
            x, y = to_input(next(images).to(ctx.device), cfg, state.aug, size), ctx.splits.train_y[b]
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

    # 2. Validation, with rank 0's batch-norm statistics on every rank; a plateau schedule steps on it.
    t0 = time.perf_counter()
    loss_sum, correct, seen = all_reduce(ctx.dist, ctx.device, prog.loss_sum, prog.correct, prog.seen)
    broadcast(ctx.dist, state.model, state.eval_model)
    val_loss, val_acc = validation_metrics(state.eval_model, ctx.splits, cfg, ctx.precision, ctx.device)
    lr = prog.lr
    if state.sched is not None and cfg.scheduler == "plateau":
        state.sched.step(val_acc)

    # 3. The row, the best so far, and the files: best.pt before last.pt, so a kill between them resumes right.
    prog.epoch += 1
    seconds = prog.epoch_seconds + time.perf_counter() - t0
    row = dict(epoch=prog.epoch, train_loss=loss_sum / max(seen, 1), train_acc=correct / max(seen, 1),
               val_loss=val_loss, val_acc=val_acc, lr=lr, seconds=seconds)
    prog.rows.append(row)
    improved = improves(val_acc, prog.best_val_acc, has_val=len(ctx.splits.val_y) > 0)
    if improved:
        prog.best_val_acc, prog.best_epoch, prog.bad_epochs = val_acc, prog.epoch, 0
    else:
        prog.bad_epochs += 1
    prog.step, prog.perm, prog.loss_sum, prog.correct, prog.seen, prog.epoch_seconds = 0, None, 0.0, 0, 0, 0.0
    ctx.log.epoch(row, improved, prog.nan_skipped, prog.rows, cfg.epochs)
    if ctx.dist.main:
        if improved:
            save_best(ctx, state.eval_model, prog.epoch, prog.best_val_acc)
        ctx.folder.write_history(prog.rows)
        save_last(ctx, state)
    return row


def checkpoint_due(cfg: TrainConfig, prog: Progress) -> bool:
    """--checkpoint-every-steps N: save last.pt mid-epoch every N steps."""
    n = cfg.checkpoint_every_steps
    return n > 0 and prog.global_step % n == 0
