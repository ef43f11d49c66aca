"""`fashionlab run`: train every model (N seeds each, each variant) with its recipe, evaluate, write the report."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from fashionlab.config import FIELD_NAMES, TrainConfig, build_config, own_data_augment, parse_model_arg
from fashionlab.errors import ConfigError
from fashionlab.files import check_new_folder, check_outside, make_folder
from fashionlab.models import known_model, model_names
from fashionlab.recipes import RECIPES, recipe_for

# --quick: at most this many epochs each, fewer (and a stratified subset of the training images) when the steps timed
# on this machine say the whole job would not train in --quick-minutes.
QUICK = {"epochs": 3}
QUICK_MINUTES = 2.0
# Validation, logging and checkpoints on top of the timed steps (measured: ~10% for cnn2 at 54k/6k images).
OVERHEAD = 1.15
MIN_SUBSET = 1000  # 100 images a class: fewer and a 'comparison' is noise
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
         out_dir: Path, device: str, data_dir: str | None, data_options: dict[str, Any] | None = None
         ) -> list[TrainConfig]:
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
                                    "data_dir": data_dir, **(data_options or {})})
                cfg = own_data_augment(cfg, layer)  # a variant's own --augment is kept as given
                if seed == 0:
                    cfg._check_model_builds(external=True)  # a bad model option fails now, as `train` checks it
                configs.append(cfg)
    return configs


def quick_choice(configs: list[TrainConfig], step_seconds: dict[str, float], minutes: float,
                 n_train: int) -> dict[str, Any]:
    """The epochs (1 to QUICK's) and training-set size that let every run of the job train in `minutes`, from the
    seconds of one training step of each run's model measured here: the most epochs on all training images that
    fit; else 2 epochs (1 if even that needs fewer than MIN_SUBSET images) on the stratified subset that fits. Every
    run gets the same epochs and subset, so the comparison stays fair."""
    budget = 60 * minutes

    def seconds(epochs: int, n: int) -> float:
        return sum(OVERHEAD * epochs * -(-n // c.batch_size) * step_seconds[c.model] for c in configs)

    most = QUICK["epochs"]
    for epochs in range(most, 0, -1):
        if seconds(epochs, n_train) <= budget:
            return {"epochs": epochs, "train_subset": None, "estimate_seconds": seconds(epochs, n_train)}
    per_image = seconds(1, n_train) / n_train  # seconds per training image per epoch, the whole job
    for epochs in (2, 1):
        n = int(budget / (epochs * per_image))
        if n >= MIN_SUBSET or epochs == 1:
            n = min(max(MIN_SUBSET, n), n_train)
            return {"epochs": epochs, "train_subset": n, "estimate_seconds": seconds(epochs, n)}
    raise AssertionError("unreachable")


def time_box(configs: list[TrainConfig], minutes: float, n_train: int, log=print,
             shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10) -> list[TrainConfig]:
    """--quick: time a few steps of each model here (as --budget does) on images of `shape` (C, H, W), then fit
    the job into `minutes`."""
    import dataclasses

    from fashionlab.budget import measure_step_seconds

    step = {}
    for cfg in configs:
        if cfg.model not in step:
            step[cfg.model] = measure_step_seconds(cfg, shape=shape, n_classes=n_classes)
    choice = quick_choice(configs, step, minutes, n_train)
    timed = ", ".join(f"{m} {s * 1000:.0f} ms" for m, s in step.items())
    data = (f"all {n_train:,} training images" if choice["train_subset"] is None
            else f"a stratified subset of {choice['train_subset']:,} of the {n_train:,} training images")
    epochs = f"{choice['epochs']} epoch{'s' if choice['epochs'] != 1 else ''}"
    log(f"quick: one training step here takes {timed} (batch {configs[0].batch_size}); {len(configs)} runs of "
        f"{epochs} on {data} should train in about {choice['estimate_seconds'] / 60:.1f} min "
        f"(--quick-minutes {minutes:g})")
    return [dataclasses.replace(c, epochs=choice["epochs"], train_subset=choice["train_subset"]) for c in configs]


def run_study(models: list[str], *, seeds: int = 1, quick: bool = False, out: str | None = None,
              data_dir: str | None = None, device: str = "auto", command: str = "",
              variants: list[str] | None = None, epochs: int | None = None, family: str | None = None,
              quick_minutes: float | None = None, data_options: dict[str, Any] | None = None,
              corruptions: bool = False) -> Path:
    """data_options: the data flags (dataset, image_size, channels, skip_bad), the same for every run.
    corruptions: each run is also evaluated on the corruption suite, and the report compares robustness."""
    from fashionlab.data.load import check_exclude, load_for
    from fashionlab.evaluate import check_corruptions
    from fashionlab.report import compare_runs, print_summary
    from fashionlab.train import train

    out_dir = Path(out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    configs = plan(models, variants or [], seeds=seeds, quick=quick, epochs=epochs, out_dir=out_dir,
                   device=device, data_dir=data_dir, data_options=data_options)
    check_outside(out_dir, configs[0].data_folder(), "--out")  # the data options are the same in every run
    check_new_folder(out_dir, "--out")  # every output path is checked before any training
    for cfg in configs:
        if Path(cfg.out).exists():
            raise ConfigError(f"{cfg.out} already exists; choose another --out")
    data = load_for(configs[0])  # one dataset for every run: the data options are the same in all
    for cfg in configs:
        check_exclude(cfg, data)  # a variant's --exclude file, before the first run trains
    if corruptions:
        check_corruptions(data)
    if quick and epochs is None:
        n_train = round(len(data.train_y) * (1 - configs[0].val_fraction))
        configs = [c.validate() for c in time_box(configs, quick_minutes or QUICK_MINUTES, n_train,
                                                  shape=(data.channels, *data.size), n_classes=len(data.classes))]
    make_folder(out_dir)
    runs = []
    for cfg in configs:
        print(f"== {cfg.label or cfg.model} seed {cfg.seed}: {cfg.epochs} epochs -> {cfg.out}")
        train(cfg, command=command, data=data, corruptions=corruptions)
        runs.append(Path(cfg.out))
    summary = compare_runs(runs, out_dir / "report", family=family)
    print_summary(summary)
    print(f"report: {out_dir / 'report' / 'report.html'}")
    return out_dir
