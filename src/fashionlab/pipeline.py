"""`fashionlab run`: train every model (N seeds each) with its recipe, evaluate, write the comparison report."""

from __future__ import annotations

import time
from pathlib import Path

from fashionlab.config import build_config
from fashionlab.errors import ConfigError
from fashionlab.models import MODELS
from fashionlab.recipes import RECIPES, recipe_overrides

# --quick: a few epochs each, so the whole job stays within minutes on a 2-core CPU.
QUICK = {"epochs": 3}


def model_layers(name: str) -> dict:
    if name in RECIPES:
        return recipe_overrides(name)
    if name in MODELS:
        return {"model": name}
    raise ConfigError(f"unknown model or recipe {name!r}; choose from {', '.join(sorted(set(MODELS) | set(RECIPES)))}")


def run_pipeline(models: list[str], *, seeds: int = 1, quick: bool = False, out: str | None = None,
                 data_dir: str | None = None, device: str = "auto", command: str = "") -> Path:
    from fashionlab.data import load_fashion_mnist
    from fashionlab.report import compare_runs, print_summary
    from fashionlab.train import train

    if not models:
        raise ConfigError("--models is empty")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    layers = {m: model_layers(m) for m in models}  # validate every name before any training
    out_dir = Path(out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    data = load_fashion_mnist(data_dir)
    runs = []
    for name in models:
        for seed in range(seeds):
            run_dir = out_dir / f"{name}-seed{seed}"
            cfg = build_config(layers[name], QUICK if quick else {},
                               {"seed": seed, "out": str(run_dir), "device": device, "data_dir": data_dir})
            print(f"== {name} seed {seed}: {cfg.epochs} epochs -> {run_dir}")
            train(cfg, command=command, data=data)
            runs.append(run_dir)
    summary = compare_runs(runs, out_dir / "report")
    print_summary(summary)
    print(f"report: {out_dir / 'report' / 'report.html'}")
    return out_dir
