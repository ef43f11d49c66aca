"""Ablations on the validation split: a recipe, then the same recipe with one thing changed, as JSON lines.

The test set is never read: this is how recipes are tuned (docs/performance.md records what it printed).

    python benchmarks/ablate.py --recipe fast --val-fraction 0.1 \
        --variant 'flip+crop={"augment": "flip,crop"}' --variant '5 epochs={"epochs": 5}'
    python benchmarks/ablate.py --quick          # CI smoke test
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

from fashionlab.config import build_config
from fashionlab.data import load_fashion_mnist
from fashionlab.errors import FashionlabError
from fashionlab.recipes import recipe_overrides
from fashionlab.train import train


def parse_variant(text: str) -> tuple[str, dict]:
    name, sep, overrides = text.partition("=")
    try:
        values = json.loads(overrides) if sep else None
    except json.JSONDecodeError as e:
        values, name = None, f"{name}: {e}"
    if not isinstance(values, dict):
        sys.exit(f"error: --variant must be NAME='{{json object of options}}', got {text!r}")
    return name, values


def run_variant(recipe: str, base: dict, overrides: dict, data, tmp: Path) -> dict:
    cfg = build_config(recipe_overrides(recipe), base, overrides, {"out": str(tmp / f"run{time.monotonic_ns()}")})
    t0 = time.perf_counter()
    run_dir = train(cfg, data=data, verbose=False, evaluate_test=False)
    with open(run_dir / "metrics.csv") as f:
        val = [round(float(r["val_acc"]), 4) for r in csv.DictReader(f)]
    return {"val_acc": val, "best_val_acc": max(val), "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="fast")
    p.add_argument("--variant", action="append", default=[], help="NAME=JSON overrides; repeatable")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--no-baseline", action="store_true", help="only the variants (the baseline was run before)")
    p.add_argument("--quick", action="store_true", help="CI smoke test: subset, 1 epoch")
    a = p.parse_args()
    base = {"val_fraction": a.val_fraction, "seed": a.seed}
    variants = [*([] if a.no_baseline else [("baseline", {})]), *map(parse_variant, a.variant)]
    if a.quick:
        base |= {"train_subset": 1000, "epochs": 1}
        variants = variants[:2] if len(variants) > 1 else [*variants, ("lr x2", {"lr": 8e-3})]
    try:
        data = load_fashion_mnist(a.data_dir, progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            for name, overrides in variants:
                result = run_variant(a.recipe, base, overrides, data, Path(tmp))
                print(json.dumps({"variant": name, "recipe": a.recipe, "recipe_settings": recipe_overrides(a.recipe),
                                  **base, "overrides": overrides, **result}), flush=True)
    except FashionlabError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
