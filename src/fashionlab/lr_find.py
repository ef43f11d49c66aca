"""`fashionlab lr-find`: the learning-rate range test (L. Smith, "Cyclical Learning Rates", 2017).

Raise the LR exponentially from --start-lr to --end-lr over --steps training steps, follow the smoothed
training loss, stop once it diverges, and suggest the LR where it falls fastest. The model is a throwaway
copy: nothing is saved but the curve, and the process's RNG state is restored afterwards.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fashionlab.config import add_arguments as add_train_arguments
from fashionlab.config import given, resolve
from fashionlab.errors import ConfigError, RunError

EMA = 0.9  # the stopping rule's running average of the loss (one step's loss is too noisy to compare)
DIVERGE_FACTOR = 4.0  # stop when that average exceeds this multiple of its minimum
OUTPUTS = ("lr_find.png", "lr_find.csv", "lr_find.json")


@dataclass
class RangeTest:
    lrs: list[float]
    losses: list[float]  # raw per-step training loss
    smoothed: list[float]  # centred moving average of `losses`: unlike a running average, it does not lag
    diverged: bool
    suggested_lr: float | None  # steepest descent of the smoothed loss, None if it never descends
    min_loss_lr: float | None  # where the smoothed loss is lowest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)
    parser.add_argument("--steps", type=int, default=200, help="training steps in the sweep (default 200)")
    parser.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    parser.add_argument("--end-lr", type=float, default=10.0, help="last learning rate (default 10)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from fashionlab.data.load import load_for
    from fashionlab.files import check_new_folder, check_outside

    if args.steps < 10:
        raise ConfigError(f"--steps must be >= 10, got {args.steps}")
    if not 0 < args.start_lr < args.end_lr:
        raise ConfigError(f"need 0 < --start-lr < --end-lr, got {args.start_lr} and {args.end_lr}")
    cfg = resolve(given(args), args.config_file)
    out = Path(cfg.out or f"runs/lr_find-{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    check_outside(out, cfg.data_folder(), "--out")
    check_new_folder(out, "--out")  # before any work: new, empty, or made by fashionlab; never a file of the user's
    if any((out / name).exists() for name in OUTPUTS):
        raise RunError(f"{out} already holds an LR range test; choose another --out")
    ds = load_for(cfg, progress=not args.quiet)
    t0 = time.perf_counter()
    result = range_test(cfg, ds, steps=args.steps, start_lr=args.start_lr, end_lr=args.end_lr,
                        verbose=not args.quiet)
    save(out, result, cfg.to_dict() | {"steps": args.steps, "start_lr": args.start_lr, "end_lr": args.end_lr},
         seconds=time.perf_counter() - t0)
    if result.suggested_lr is None:
        print("no suggestion: the smoothed loss never went down; raise --end-lr or --steps")
    else:
        print(f"suggested lr {result.suggested_lr:.2e} (steepest descent of the smoothed loss; "
              f"lowest loss at {result.min_loss_lr:.2e})")
        print(f"  try: fashionlab train --model {cfg.model} --batch-size {cfg.batch_size} "
              f"--lr {result.suggested_lr:.2e}")
    print(f"curve: {out / 'lr_find.png'}")
    return 0


def range_test(cfg, ds, *, steps: int, start_lr: float, end_lr: float, verbose: bool = False) -> RangeTest:
    """Sweep the LR on `cfg`'s model, optimizer, batch size, augmentation and precision (its scheduler is
    replaced by the sweep). Reads the training split only: validation and test images stay unseen."""
    import torch

    from fashionlab.device import resolve_device, resolve_precision
    from fashionlab.runstart import Logger
    from fashionlab.trainsetup import make_model, make_optimizer, prepare_data, to_input, train_step

    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    lrs: list[float] = []
    losses: list[float] = []
    diverged = False
    # make_model reseeds the global RNG; fork_rng gives the caller its state back untouched.
    with torch.random.fork_rng(devices=[]):
        splits = prepare_data(cfg, ds, device)
        model = make_model(cfg, device, splits)
        opt = make_optimizer(cfg, model)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        order = torch.Generator().manual_seed(cfg.seed)
        aug = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        n = len(splits.train_y)
        batch = min(cfg.batch_size, n)
        perm, pos = torch.randperm(n, generator=order), 0
        avg, best = 0.0, math.inf
        with Logger(verbose).bar("lr range test", steps, 0) as advance:
            for i in range(steps):
                lr = start_lr * (end_lr / start_lr) ** (i / (steps - 1))
                for group in opt.param_groups:
                    group["lr"] = lr
                if pos + batch > n:
                    perm, pos = torch.randperm(n, generator=order), 0
                b = perm[pos:pos + batch].to(device)
                pos += batch
                x = to_input(splits.train_x[b], cfg, aug)
                loss, _ = train_step(model, opt, scaler, x, splits.train_y[b], cfg, precision, device)
                if not math.isfinite(loss):
                    diverged = True
                    break
                lrs.append(lr)
                losses.append(loss)
                advance()
                avg = EMA * avg + (1 - EMA) * loss
                running = avg / (1 - EMA ** (i + 1))  # bias correction: the average starts at 0
                best = min(best, running)
                if running > DIVERGE_FACTOR * best:
                    diverged = True
                    break
    smoothed = smooth(losses)
    suggested, lowest = suggest(lrs, smoothed)
    return RangeTest(lrs, losses, smoothed, diverged, suggested, lowest)


def smooth(values: list[float]) -> list[float]:
    """Centred moving average over about 5% of the points (edges padded with the end values)."""
    import numpy as np

    k = max(2, len(values) // 40)
    padded = np.pad(np.asarray(values, dtype=float), k, mode="edge")
    return np.convolve(padded, np.ones(2 * k + 1) / (2 * k + 1), mode="valid").tolist() if values else []


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float | None, float | None]:
    """(LR of the steepest descent of the smoothed loss against log LR, LR of its minimum).

    Only the part before the minimum counts (past it the loss rises towards divergence), and the
    first steps are skipped: there the LR is too small to move anything and the EMA is still settling."""
    import numpy as np

    if len(smoothed) < 3:
        return None, None
    loss = np.asarray(smoothed)
    log_lr = np.log10(lrs)
    lowest = int(loss.argmin())
    start = min(10, len(loss) // 10)
    if lowest - start < 2:
        return None, float(lrs[lowest])
    slope = np.gradient(loss[start:lowest + 1], log_lr[start:lowest + 1])
    steepest = start + int(slope.argmin())
    return float(lrs[steepest]), float(lrs[lowest])


def save(out: Path, result: RangeTest, settings: dict, seconds: float) -> None:
    from fashionlab.files import atomic_write_json, atomic_write_text, make_folder

    make_folder(out)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "lr", "loss", "smoothed_loss"])
    for i, (lr, loss, avg) in enumerate(zip(result.lrs, result.losses, result.smoothed), start=1):
        w.writerow([i, f"{lr:.6g}", f"{loss:.6g}", f"{avg:.6g}"])
    atomic_write_text(out / "lr_find.csv", buf.getvalue())
    summary = {k: v for k, v in asdict(result).items() if k not in ("lrs", "losses", "smoothed")}
    summary |= {"steps_run": len(result.lrs), "stopped_at_lr": result.lrs[-1] if result.lrs else None,
                "seconds": round(seconds, 1), "config": settings}
    atomic_write_json(out / "lr_find.json", summary)
    plot(out / "lr_find.png", result, title=f"LR range test: {settings['model']}, batch {settings['batch_size']}, "
                                            f"{settings['optimizer']}")


def plot(path: Path, r: RangeTest, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fashionlab.files import atomic_save_figure

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(r.lrs, r.losses, color="0.75", lw=0.8, label="loss per step")
    ax.plot(r.lrs, r.smoothed, color="C0", lw=2, label="smoothed loss")
    if r.suggested_lr is not None:
        i = r.lrs.index(r.suggested_lr)
        ax.axvline(r.suggested_lr, color="C3", ls="--", lw=1)
        ax.plot([r.suggested_lr], [r.smoothed[i]], "o", color="C3", ms=8,
                label=f"suggested lr {r.suggested_lr:.1e} (steepest descent)")
    if r.smoothed:
        # The diverging tail would squash the interesting part of the curve: cap the y axis.
        low, first = min(r.smoothed), r.smoothed[0]
        ax.set_ylim(low - 0.05 * (first - low) - 0.02, max(first, low) * 1.25)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    atomic_save_figure(path, fig)
    plt.close(fig)
