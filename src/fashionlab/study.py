"""`fashionlab run`: train every model (N seeds each, each variant) with its recipe, evaluate, write the report."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from fashionlab.config import FIELD_NAMES, TrainConfig, build_config, parse_model_arg
from fashionlab.errors import ConfigError
from fashionlab.files import check_new_folder, make_folder
from fashionlab.models import known_model, model_names
from fashionlab.recipes import RECIPES, recipe_for

# --quick: a few epochs each, so the whole job stays within minutes on a 2-core CPU.
QUICK = {"epochs": 3}
# What a variant may not set: the job sets these per run.
NOT_VARIANT_KEYS = {"label", "seed", "out", "data_dir", "device", "model", "recipe"}
VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def model_layers(name: str) -> dict:
    """A `--models` entry: a recipe name, or a model (with its own recipe when it has one)."""
    if name in RECIPES or known_model(name):
        return recipe_for(None, name) or {"model": name}
    names = sorted(set(model_names()) | set(RECIPES))
    raise ConfigError(f"unknown model or recipe {name!r}; choose from {', '.join(names)}")


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """'NAME=KEY=VALUE[,KEY=VALUE...]' -> (NAME, {option: value}); values are JSON where they parse as JSON.

    A comma starts a new pair only before `KEY=`, so `augment=flip,crop` keeps its comma. Keys that are not
    training options are model options (the config's `extra`, e.g. `bn=false` for CNN_2).
    """
    name, _, rest = text.partition("=")
    if not VARIANT_NAME.fullmatch(name) or not rest:
        raise ConfigError(f"--variant {text!r}: expected NAME=KEY=VALUE[,KEY=VALUE...], NAME of letters, digits, "
                          "'-', '_', '.', '+'")
    options: dict[str, Any] = {}
    for item in re.split(r",(?=\s*[A-Za-z_][\w-]*=)", rest):
        key, parsed = parse_model_arg(item.strip(), f"--variant {name}:")
        if key in NOT_VARIANT_KEYS:
            raise ConfigError(f"--variant {name}: {key} is set by the job, not by a variant")
        if key in FIELD_NAMES:
            options[key] = parsed
        else:
            options.setdefault("extra", {})[key] = parsed
    return name, options


def plan(models: list[str], variants: list[str], *, seeds: int, quick: bool, epochs: int | None,
         out_dir: Path, device: str, data_dir: str | None) -> list[TrainConfig]:
    """Every run of the job, each config built and validated (and its model built once) before any training."""
    if not models:
        raise ConfigError("--models is empty")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {epochs}")
    parsed = [("", {})] + [parse_variant(v) for v in variants]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise ConfigError(f"--variant names must differ; {sorted({n for n in names if names.count(n) > 1})[0]!r} "
                          "is given twice")
    configs = []
    for model in models:
        base = model_layers(model)
        for name, options in parsed:
            # build_config adds a variant's model options (`extra`) to the recipe's.
            layer = options | ({"label": f"{model}-{name}" if len(models) > 1 else name} if name else {})
            folder = f"{model}-{name}" if name else model
            for seed in range(seeds):
                cfg = build_config(base, QUICK if quick else {}, {"epochs": epochs} if epochs else {}, layer,
                                   {"seed": seed, "out": str(out_dir / f"{folder}-seed{seed}"), "device": device,
                                    "data_dir": data_dir})
                if seed == 0:
                    cfg._check_model_builds(external=True)  # a bad model option fails now, as `train` checks it
                configs.append(cfg)
    return configs


def run_study(models: list[str], *, seeds: int = 1, quick: bool = False, out: str | None = None,
                 data_dir: str | None = None, device: str = "auto", command: str = "",
                 variants: list[str] | None = None, epochs: int | None = None, family: str | None = None) -> Path:
    from fashionlab.data import load_fashion_mnist
    from fashionlab.report import compare_runs, print_summary
    from fashionlab.train import train

    out_dir = Path(out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    configs = plan(models, variants or [], seeds=seeds, quick=quick, epochs=epochs, out_dir=out_dir,
                   device=device, data_dir=data_dir)
    check_new_folder(out_dir, "--out")  # every output path is checked before any training
    for cfg in configs:
        if Path(cfg.out).exists():
            raise ConfigError(f"{cfg.out} already exists; choose another --out")
    data = load_fashion_mnist(data_dir)
    make_folder(out_dir)
    runs = []
    for cfg in configs:
        print(f"== {cfg.label or cfg.model} seed {cfg.seed}: {cfg.epochs} epochs -> {cfg.out}")
        train(cfg, command=command, data=data)
        runs.append(Path(cfg.out))
    summary = compare_runs(runs, out_dir / "report", family=family)
    print_summary(summary)
    print(f"report: {out_dir / 'report' / 'report.html'}")
    return out_dir
