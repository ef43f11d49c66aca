"""The speed-up ladder: from a tutorial's DataLoader pipeline to the `fast` recipe, one change per rung, as JSON.

Every rung trains the same 54k-image split (a stratified 10% is held out, as the reference does) for the
same number of timed epochs, in this one process, one rung after another, so the rungs share the machine's
state. Each rung changes one thing from the rung before:

  1. reference: torch Dataset with per-sample flip/translate transforms behind a DataLoader, CNN_2
     (dropout 0.3), fp32, contiguous, batch 64, Adam 1e-3 (what benchmarks/time_to_accuracy.py runs)
  2. + the images resident on the device as one uint8 tensor, flip/translate as batched tensor ops
  3. + bf16 autocast and channels-last
  4. + fastnet with the `fast` recipe's batch size, AdamW with one-cycle, label smoothing, flip only: the
     `fast` recipe's training

Rungs 1-3 optimise the same way, so they need the same number of epochs to an accuracy; rung 4 changes
the model and the schedule, so it also changes how many epochs it needs (the `fast` recipe trains a fixed
number). The JSON gives seconds per epoch for every rung; docs/performance.md multiplies them by the epochs
each rung needs, taken from the committed runs, and says so.

    python benchmarks/ladder.py > docs/benchmarks/ladder.json     # idle machine, a few minutes
    python benchmarks/ladder.py --quick                            # CI smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch
import torch.nn.functional as F

from fashionlab.data import as_input, load_fashion_mnist, pixel_stats, stratified_split
from fashionlab.data.augment import augment
from fashionlab.models import Classifier, build_model
from fashionlab.recipes import recipe_overrides

RUNGS = (
    ("1 reference: DataLoader, per-sample transforms, CNN_2, fp32", dict(loader=True, model="cnn2", bf16=False)),
    ("2 + resident tensors, batched augmentation", dict(loader=False, model="cnn2", bf16=False)),
    ("3 + bf16 autocast, channels-last", dict(loader=False, model="cnn2", bf16=True)),
    ("4 + fastnet and the `fast` recipe's batch, AdamW one-cycle, flip only", dict(loader=False, model="fastnet",
                                                                                    bf16=True)),
)


def batches(rung: dict, x: torch.Tensor, y: torch.Tensor, batch: int, gen: torch.Generator, stats):
    """(inputs, labels) for one epoch, the rung's way."""
    if rung["loader"]:
        from time_to_accuracy import PerSampleDataset  # the reference's own Dataset

        ds = PerSampleDataset(x, y, True, *stats)
        yield from torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0, generator=gen)
        return
    names = ("flip",) if rung["model"] == "fastnet" else ("flip", "crop")
    order = torch.randperm(len(y), generator=gen)
    for i in range(0, len(y) - 1, batch):
        b = order[i:i + batch]
        xb = augment(as_input(x[b]), names, gen, crop_pad=2)
        yield (xb.contiguous(memory_format=torch.channels_last) if rung["bf16"] else xb), y[b]


def time_rung(rung: dict, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> dict:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    fast = recipe_overrides("fast")
    if rung["model"] == "fastnet":
        batch, net = fast["batch_size"], Classifier(build_model("fastnet"))
        opt = torch.optim.AdamW(net.parameters(), lr=fast["lr"], weight_decay=fast["weight_decay"])
        steps = epochs * -(-len(y) // batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=fast["lr"], total_steps=steps)
        smoothing = fast["label_smoothing"]
    else:
        batch, net, sched, smoothing = 64, Classifier(build_model("cnn2", dropout=0.3)), None, 0.0
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    if rung["bf16"]:
        net = net.to(memory_format=torch.channels_last)
    stats = pixel_stats(x)
    if not rung["loader"]:
        net.normalize.mean.fill_(stats[0]), net.normalize.std.fill_(stats[1])
    else:  # the reference normalises in its Dataset; the model then sees standardised inputs
        net.normalize.mean.fill_(0.0), net.normalize.std.fill_(1.0)
    seconds = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for xb, yb in batches(rung, x, y, batch, gen, stats):
            with torch.autocast("cpu", torch.bfloat16, enabled=rung["bf16"]):
                loss = F.cross_entropy(net(xb), yb, label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
        seconds.append(round(time.perf_counter() - t0, 2))
    return {"seconds_per_epoch": round(sum(seconds) / len(seconds), 2), "epoch_seconds": seconds,
            "batch_size": batch, "images_per_epoch": len(y)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per rung")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--quick", action="store_true", help="CI smoke test: 1,000 images")
    a = p.parse_args()
    data = load_fashion_mnist(a.data_dir, progress=False)
    train_idx, _ = stratified_split(data.train_y, 0.1, a.seed)
    if a.quick:
        train_idx = train_idx[:1000]
    x, y = data.train_x[train_idx], data.train_y[train_idx]
    rows, previous = [], None
    for name, rung in RUNGS:
        r = {"rung": name, **rung, **time_rung(rung, x, y, a.epochs, a.seed)}
        r["speedup_vs_previous"] = round(previous / r["seconds_per_epoch"], 2) if previous else None
        previous = r["seconds_per_epoch"]
        rows.append(r)
        print(f"{name}: {r['seconds_per_epoch']} s/epoch", file=sys.stderr)
    out = {"benchmark": "ladder", "epochs_timed": a.epochs, "seed": a.seed, "threads": torch.get_num_threads(),
           "machine": platform.machine(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rungs": rows,
           "speedup_total_per_epoch": round(rows[0]["seconds_per_epoch"] / rows[-1]["seconds_per_epoch"], 2)}
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
