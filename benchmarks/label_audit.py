"""Does `fashionlab audit-labels` find label errors? Fashion-MNIST's training set with a fraction of its labels
flipped at random (seeded, each to another class), audited with cnn1, K folds of E epochs; recall and precision of
the flagged items against the flips, as JSON.

    python benchmarks/label_audit.py > docs/benchmarks/label_audit.json && python benchmarks/results_tables.py
    python benchmarks/label_audit.py --train-items 3000 --epochs 1     # a look, in seconds

The noisy training set is written as an .npz dataset (the test set stays clean) into a temporary folder, and the
audit runs there as the command a user types (a subprocess). issue 29's target: with 8% flipped, cnn1 with 3 folds
of 3 epochs finds at least half of the flipped labels, with at least half of its flagged items truly flipped.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_record  # benchmarks/machine.py: run as a script, this folder is on sys.path


def noisy_npz(path: Path, fraction: float, seed: int, train_items: int | None, data_dir: str | None) -> np.ndarray:
    """Write Fashion-MNIST with `fraction` of the training labels flipped to another class (uniformly among the
    other nine) to `path`; return the flipped indices (into the written training items, in order)."""
    from fashionlab.data import load_fashion_mnist

    ds = load_fashion_mnist(data_dir, download=False, progress=False)
    x, y = ds.train_x.numpy(), ds.train_y.numpy().astype(np.int64)
    if train_items is not None:
        x, y = x[:train_items], y[:train_items]
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(len(y), size=round(fraction * len(y)), replace=False))
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, len(ds.classes), len(flipped))) % len(ds.classes)
    np.savez(path, x_train=x, y_train=noisy, x_test=ds.test_x.numpy(), y_test=ds.test_y.numpy().astype(np.int64),
             classes=np.array(ds.classes))
    return flipped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fraction", type=float, default=0.08, help="fraction of training labels flipped (default 0.08)")
    p.add_argument("--seed", type=int, default=0, help="seed of the flips (default 0)")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--model", default="cnn1")
    p.add_argument("--train-items", type=int, default=None, help="only the first N training items (a quick look)")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST's IDX folder (default: where fashionlab finds it)")
    a = p.parse_args(argv)
    import torch

    with tempfile.TemporaryDirectory(prefix="fashionlab-label-audit-") as tmp:
        data = Path(tmp) / "fashion-mnist-noisy.npz"
        flipped = noisy_npz(data, a.fraction, a.seed, a.train_items, a.data_dir)
        out = Path(tmp) / "audit"
        command = ["fashionlab", "audit-labels", "--data", str(data), "--model", a.model, "--folds", str(a.folds),
                   "--epochs", str(a.epochs), "--out", str(out)]
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fashionlab", *command[1:]], stdout=sys.stderr,
                              env=os.environ.copy())
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(f"audit-labels failed with exit code {proc.returncode}", file=sys.stderr)
            return 1
        with open(out / "label_issues.csv", newline="") as f:
            flagged = np.array([int(r["index"]) for r in csv.DictReader(f)], dtype=np.int64)
        summary = json.loads((out / "summary.json").read_text())
    found = np.intersect1d(flagged, flipped)
    record = {
        "what": f"audit-labels on Fashion-MNIST's training set with {a.fraction:.0%} of its labels flipped at random "
                f"(seed {a.seed}, each to another class); the test set is clean",
        "n_items": int(summary["n_items"]), "n_flipped": int(len(flipped)), "n_flagged": int(len(flagged)),
        "n_flagged_flipped": int(len(found)),
        "recall": len(found) / len(flipped) if len(flipped) else None,
        "precision": len(found) / len(flagged) if len(flagged) else None,
        "heldout_accuracy": summary["heldout_accuracy"],
        "model": a.model, "folds": a.folds, "epochs": a.epochs, "fraction": a.fraction, "seed": a.seed,
        "command": shlex.join(command).replace(str(Path(tmp)), "$TMP"),
        "date": datetime.date.today().isoformat(), "wall_seconds": round(wall, 1),
        "cpu": cpu_record(), "torch": torch.__version__, "cleanlab": summary["cleanlab"],
        "threads": torch.get_num_threads(),
    }
    json.dump(record, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
