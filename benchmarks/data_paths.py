"""What reading a folder of image files costs, and the two ways to train from one (--data-loading), as JSON.

Fashion-MNIST, exported as 70,000 PNGs in ImageFolder layout (`fashionlab data --export-imagefolder`), is read
as a user's folder would be:

- decode: every file decoded by data.decoding.decode_files with 1, 2, ... worker processes (images/s);
- first read: read_dataset(loading="memory") with an empty cache (listing, decoding, fingerprint, cache write);
- cache read: the same call again, served from the decode cache (target: at most 2 s for 70,000 images);
- epochs: `fashionlab train --data FOLDER --model cnn2` for 2 epochs with --data-loading memory, then stream (2
  and 1 loader workers), alternating; the epoch time is metrics.csv's `seconds`, the second epoch's (the first
  carries warm-up). Target: a stream epoch at most 1.5x a memory epoch. The runs must train to identical metrics.

Run it idle (nothing else timed or training on the machine); the committed output is docs/benchmarks/
data_paths.json, rendered into docs/performance.md by benchmarks/results_tables.py:

    python benchmarks/data_paths.py > docs/benchmarks/data_paths.json && python benchmarks/results_tables.py
    python benchmarks/data_paths.py --quick      # 6,000 training images, 1 epoch: a look, not a figure
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_record  # benchmarks/machine.py: run as a script, this folder is on sys.path

TARGET_CACHE_S = 2.0  # cache load of 70,000 images (issue 26)
TARGET_STREAM_RATIO = 1.5  # stream epoch / memory epoch (issue 26)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - start, 3)


def export(folder: Path, train_subset: int | None) -> tuple[int, float]:
    """Fashion-MNIST as PNGs (all of it, or a stratified subset of train and a tenth as many test images)."""
    from types import SimpleNamespace

    from fashionlab.data import load_fashion_mnist, stratified_subset
    from fashionlab.data.own import export_imagefolder

    ds = load_fashion_mnist(progress=False)
    if train_subset is not None:
        tr = stratified_subset(ds.train_y, train_subset, 0)
        te = stratified_subset(ds.test_y, train_subset // 10, 0)
        ds = SimpleNamespace(train_x=ds.train_x[tr], train_y=ds.train_y[tr], test_x=ds.test_x[te],
                             test_y=ds.test_y[te], classes=ds.classes, val_x=None, val_y=None)
    counts, seconds = timed(lambda: export_imagefolder(ds, folder, progress=False))
    return counts["train"] + counts["test"], seconds


def train_epochs(folder: Path, out: Path, loading: str, workers: int | None, epochs: int) -> dict:
    cmd = [sys.executable, "-m", "fashionlab", "train", "--data", str(folder), "--model", "cnn2", "--epochs",
           str(epochs), "--seed", "0", "--data-loading", loading, "--out", str(out)]
    if workers is not None:
        cmd += ["--data-workers", str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {"epoch_seconds": [float(r["seconds"]) for r in rows],
            "metrics": [{k: v for k, v in r.items() if k != "seconds"} for r in rows],
            "command": " ".join(["fashionlab", *cmd[3:]])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="6,000 training images and 1 epoch: a look, not a figure")
    p.add_argument("--workers", default=None, help="comma list of decode worker counts (default: 1..cores, max 4)")
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args(argv)
    import PIL
    import torch

    from fashionlab.data.decoding import decode_files
    from fashionlab.data.own import read_dataset

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = [int(w) for w in a.workers.split(",")] if a.workers else list(range(1, min(cores, 4) + 1))
    epochs = 1 if a.quick else a.epochs
    with tempfile.TemporaryDirectory(prefix="fashionlab-data-paths-") as tmp:
        tmp = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")  # an empty decode cache, and no trace left behind
        folder = tmp / "fashion-mnist-png"
        n_images, export_s = export(folder, 6000 if a.quick else None)
        paths = sorted(str(f) for f in folder.rglob("*.png"))
        decode = []
        for w in workers:
            got, seconds = timed(lambda w=w: decode_files(paths, None, None, workers=w, progress=False))
            assert all(g.error is None for g in got)
            decode.append({"workers": w, "seconds": seconds, "images_per_s": round(len(paths) / seconds)})
        _, first_read_s = timed(lambda: read_dataset(str(folder), loading="memory", progress=False))
        _, cache_read_s = timed(lambda: read_dataset(str(folder), loading="memory", progress=False))
        _, stream_scan_s = timed(lambda: read_dataset(str(folder), loading="stream", progress=False))
        runs = {}
        for name, loading, w in (("memory", "memory", None), ("stream", "stream", 2), ("stream-1-worker", "stream", 1)):
            runs[name] = train_epochs(folder, tmp / name, loading, w, epochs)
    same = all(r["metrics"] == runs["memory"]["metrics"] for r in runs.values())
    last = {name: r["epoch_seconds"][-1] for name, r in runs.items()}
    record = {
        "benchmark": "data_paths",
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python benchmarks/data_paths.py", *(argv if argv is not None else sys.argv[1:])]),
        "cpu": cpu_record(),
        "python": platform.python_version(), "torch": torch.__version__, "pillow": PIL.__version__,
        "torch_threads": torch.get_num_threads(),
        "images": n_images, "export_seconds": export_s,
        "decode": decode,
        "first_read_seconds": first_read_s, "cache_read_seconds": cache_read_s, "stream_scan_seconds": stream_scan_s,
        "epochs": {name: {"command": r["command"], "epoch_seconds": r["epoch_seconds"]} for name, r in runs.items()},
        "same_metrics": same,
        "stream_over_memory": {name: round(s / last["memory"], 3) for name, s in last.items() if name != "memory"},
        "targets": {"cache_read_seconds": TARGET_CACHE_S, "stream_over_memory": TARGET_STREAM_RATIO},
    }
    json.dump(record, sys.stdout, indent=1)
    print()
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
