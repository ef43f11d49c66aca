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
from fashionlab.numfmt import plural, time_left
from fashionlab.recipes import RECIPES, recipe_for

# --quick: at most this many epochs each; fewer, a stratified subset of the training images, then of the validation
# split, when the times measured on this machine say the whole job would not train and evaluate in --quick-minutes.
QUICK = {"epochs": 3}
QUICK_MINUTES = 2.0
# Checkpoints, logging and the first batches of an epoch on top of the timed training steps (validation and the
# test evaluation are estimated apart, from the timed predictions).
OVERHEAD = 1.1
MIN_SUBSET = 1000  # 100 images a class: fewer and a 'comparison' is noise
# Training steps a run takes at the least: fewer and batch norm's running statistics are still mostly their initial
# values (measured, AVX2-capped CPU at 0.3 CPU: cnn2 validated at 10% after 8 steps, at 68% after 26).
MIN_STEPS = 24
MIN_VAL = 1000  # 100 a class: the best epoch and the calibration temperature are chosen on these
# The box buys the most training (epochs x images), and within this fraction of the most, the most distinct images:
# benchmarks/quick_epochs.py (docs/performance.md) found two epochs on 90% of the images better than one on all of
# them in every seed, and at equal steps no difference between half the images twice and all of them once.
TIE = 0.1
CORRUPTION_SAMPLE = 64  # test images --quick --corruptions corrupts to time the suite (one of its random blocks)
# What the job does after each run's test predictions (its figures, metrics and logits written) and in the report
# (for each run: its results read and bootstrapped; for each model: its figures), in units of one run's evaluation
# figures timed here (budget.measure_output_seconds). Measured natively (Xeon, AVX-512, 2026-12-06) in `run --quick`
# jobs of 2 and 6 runs of 2 models, the unit 0.75 s: 1.4 units a run after its predictions, and a report of 4.3
# units for 2 runs and 6.2 for 6 (about 0.5 a run and 1.7 a model).
FIXED_UNITS = {"run": 1.9, "model": 1.7}
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


def quick_choice(configs: list[TrainConfig], step_seconds: dict[str, float], predict_seconds: dict[str, float],
                 minutes: float, *, n_train: int, n_val: int, n_test: int, train_limit: int | None = None,
                 val_limit: int | None = None, spent: float = 0.0, test_passes: int = 1,
                 corrupt_seconds: float = 0.0, eval_predict_seconds: dict[str, float] | None = None,
                 fixed_seconds: float = 0.0) -> dict[str, Any]:
    """What lets the whole job fit in `minutes`: every run's training, its validation after each epoch, and its
    test evaluation (the test set, and the validation split again for the calibration temperature), from the
    seconds of one training step and of predicting one image (both views with TTA) of each run's model, measured
    here: predict_seconds as training validates, eval_predict_seconds as `evaluate` predicts (default: the same).
    For each number of epochs (1 to QUICK's), all the training images or the largest stratified subset that fits
    (at least MIN_SUBSET images and MIN_STEPS steps); of these, the one with the most distinct images among those
    within TIE of the most training (epochs × images). If none fits, the same with a stratified subset of the
    validation split (at least MIN_VAL images); else the smallest job, over the box (the estimate says so). The
    test set stays whole: the runs are compared on it. train_limit, val_limit: the largest class-balanced subsets
    the splits allow (data.stratified_subset). spent: seconds the job has already taken (its start, reading the
    data, timing these), counted in the box and in the estimate. test_passes: passes over the test set each run
    predicts (1; with the corruption suite, 1 + its corruptions × severities), and corrupt_seconds the seconds each
    run takes to make one test image's corrupted copies. fixed_seconds: what the job takes whatever the choice
    besides these (each run's figures, the report). Every run gets the same choice, so the comparison stays fair."""
    box = 60 * minutes
    predict = sum(predict_seconds[c.model] for c in configs)  # one image, validated by every run
    evaluated = sum((eval_predict_seconds or predict_seconds)[c.model] for c in configs)
    test = n_test * (evaluated * test_passes + len(configs) * corrupt_seconds) + fixed_seconds  # whatever the choice
    per_image = sum(OVERHEAD * step_seconds[c.model] / c.batch_size for c in configs)  # one image trained on by each
    train_limit = min(n_train, train_limit or n_train)
    val_limit = min(n_val, val_limit or n_val)

    def seconds(epochs: int, n: int, v: int) -> float:
        train = sum(OVERHEAD * epochs * -(-n // c.batch_size) * step_seconds[c.model] for c in configs)
        return spent + train + (predict * epochs + evaluated) * v + test

    def choice(epochs: int, n: int, v: int) -> dict[str, Any]:
        return {"epochs": epochs, "train_subset": None if n == n_train else n,
                "val_subset": None if v == n_val else v, "estimate_seconds": seconds(epochs, n, v)}

    batch = max(c.batch_size for c in configs)

    def smallest_n(epochs: int) -> int:
        return min(train_limit, max(MIN_SUBSET, -(-MIN_STEPS // epochs) * batch))

    def largest_n(epochs: int, v: int) -> int | None:
        """All the training images, or the largest stratified subset (at least smallest_n), that `epochs` epochs
        validated on v images fit; None: not even the smallest."""
        if seconds(epochs, n_train, v) <= box:
            return n_train
        least = smallest_n(epochs)
        n = min(train_limit, max(least, int((box - spent - (predict * epochs + evaluated) * v - test)
                                            / (epochs * per_image))))
        while n > least and seconds(epochs, n, v) > box:  # a last, partial batch is a whole step
            n = max(least, n - batch)
        return n if seconds(epochs, n, v) <= box else None

    smallest_v = min(MIN_VAL, val_limit)
    # the validation images that fit beside the smallest training (validated after its epoch, then once more)
    fitting_v = int((box - seconds(1, smallest_n(1), 0)) / (predict + evaluated)) if predict + evaluated else n_val
    for v in (n_val, max(smallest_v, min(val_limit, fitting_v))):
        fits = [(epochs, n) for epochs in range(QUICK["epochs"], 0, -1) if (n := largest_n(epochs, v)) is not None]
        if fits:  # the most distinct images of those within TIE of the most training (epochs x images)
            most = max(e * n for e, n in fits)
            epochs, n = max((f for f in fits if f[0] * f[1] >= (1 - TIE) * most), key=lambda f: (f[1], -f[0]))
            return choice(epochs, n, v)
    return choice(1, smallest_n(1), smallest_v)


def time_box(configs: list[TrainConfig], minutes: float, data, log=print, *,
             corruptions: bool = False, started: float | None = None) -> list[TrainConfig]:
    """--quick: time a few training steps and predictions of each model here (as --budget does) on images of the
    dataset's shape, and with `corruptions` the making of the corruption suite's copies of a few test images,
    then fit the job into `minutes`. started: time.perf_counter() when the job began (its imports and the reading
    of the data then count in the box too); default: when this timing begins."""
    import dataclasses

    from fashionlab.budget import (
        measure_corruption_seconds,
        measure_output_seconds,
        measure_predict_seconds,
        measure_step_seconds,
    )
    from fashionlab.corruptions import CORRUPTIONS, SEVERITIES
    from fashionlab.data import balanced_limit
    from fashionlab.data.load import split_for

    s = split_for(configs[0], data)  # the split of every run, but for a variant's --exclude
    shape, n_classes, n_test = (data.channels, *data.size), len(data.classes), len(data.test_y)
    step, predict, evaluated = {}, {}, {}
    t0 = time.perf_counter() if started is None else started
    for cfg in configs:
        if cfg.model not in step:
            step[cfg.model] = measure_step_seconds(cfg, shape=shape, n_classes=n_classes)
            predict[cfg.model] = measure_predict_seconds(cfg, shape=shape, n_classes=n_classes)
            evaluated[cfg.model] = measure_predict_seconds(cfg, shape=shape, n_classes=n_classes,
                                                           evaluation_images=n_test)
    passes = 1 + len(CORRUPTIONS) * len(SEVERITIES) if corruptions else 1
    # test_x[:n] is a tensor, decoded if the test set is streamed from files
    corrupt = measure_corruption_seconds(data.test_x[:CORRUPTION_SAMPLE]) if corruptions else 0.0
    unit = measure_output_seconds(list(data.classes), n_test, QUICK["epochs"])
    models = len({group_of(c) for c in configs})
    fixed = unit * (FIXED_UNITS["run"] * len(configs) + FIXED_UNITS["model"] * models)
    n_train, n_val = len(s.train_y), len(s.val_y)
    choice = quick_choice(configs, step, predict, minutes, n_train=n_train, n_val=n_val, n_test=n_test,
                          train_limit=balanced_limit(s.train_y), val_limit=balanced_limit(s.val_y),
                          spent=time.perf_counter() - t0, test_passes=passes, corrupt_seconds=corrupt,
                          eval_predict_seconds=evaluated, fixed_seconds=fixed)
    timed = ", ".join(f"{m} {t * 1000:.0f} ms" for m, t in step.items())
    tta = {c.model: c.tta for c in reversed(configs)}  # as timed: each model's first run
    predicted = ", ".join(f"{m} {t * 1000:.2g} ms{' (both flip views)' if tta[m] else ''}"  # 0.02 ms, 5.1 ms, 12 ms
                          for m, t in predict.items())
    predicted += f" in validation, {', '.join(f'{m} {t * 1000:.2g} ms' for m, t in evaluated.items())} in the test " \
                 "evaluation"  # on a CPU through the fused graph
    data_text = (f"all {n_train:,} training images" if choice["train_subset"] is None
                 else f"a stratified subset of {choice['train_subset']:,} of the {n_train:,} training images")
    if choice["val_subset"] is not None:
        data_text += f", validated on a stratified {choice['val_subset']:,} of the {n_val:,} validation images"
    epochs = plural(choice["epochs"], "epoch")
    over = (f"; more than the box: the smallest job --quick makes (the {n_test:,} test images are always evaluated "
            f"whole)" if choice["estimate_seconds"] > 60 * minutes else "")
    suite = (f", the corruption suite included ({passes - 1} corrupted copies of each test image, "
             f"{corrupt * 1000:.2g} ms an image to make),") if corruptions else ""
    log(f"quick: one training step here takes {timed} (batch {configs[0].batch_size}) and predicting an image "
        f"{predicted}; {len(configs)} runs of {epochs} on {data_text} should train and evaluate{suite} in about "
        f"{choice['estimate_seconds'] / 60:.1f} min, {'startup, ' if started is not None else ''}timing, figures and "
        f"report included (--quick-minutes {minutes:g}){over}")
    return [dataclasses.replace(c, epochs=choice["epochs"], train_subset=choice["train_subset"],
                                val_subset=choice["val_subset"]) for c in configs]


def group_of(cfg: TrainConfig) -> str:
    """The report's group of a run: its label (a variant), else its model. Runs of one group train alike."""
    return cfg.label or cfg.model


def runs_left(remaining: list[TrainConfig], took: dict[str, list[float]]) -> str:
    """' | ~2 min 5 s left in the runs': the remaining runs (this one included), each at the mean time of the finished
    runs of its model or variant (its seeds train alike); "" while one of them has no finished run to go by."""
    names = [group_of(c) for c in remaining]
    if not names or any(n not in took for n in names):
        return ""
    left = sum(sum(took[n]) / len(took[n]) for n in names)
    return time_left(left, " in the runs")


def run_study(models: list[str], *, seeds: int = 1, quick: bool = False, out: str | None = None,
              data_dir: str | None = None, device: str = "auto", command: str = "",
              variants: list[str] | None = None, epochs: int | None = None, family: str | None = None,
              quick_minutes: float | None = None, data_options: dict[str, Any] | None = None,
              corruptions: bool = False) -> Path:
    """data_options: the data flags (dataset, image_size, channels, skip_bad), the same for every run.
    corruptions: each run is also evaluated on the corruption suite, and the report compares robustness."""
    started = time.perf_counter()  # --quick's box counts the job from here: imports, reading the data, timing
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
        configs = [c.validate() for c in time_box(configs, quick_minutes or QUICK_MINUTES, data,
                                                  corruptions=corruptions, started=started)]
    make_folder(out_dir)
    runs, took = [], {}
    for i, cfg in enumerate(configs):
        print(f"== {group_of(cfg)} seed {cfg.seed} (run {i + 1} of {len(configs)}): {plural(cfg.epochs, 'epoch')} "
              f"-> {cfg.out}{runs_left(configs[i:], took)}", flush=True)
        t0 = time.perf_counter()
        train(cfg, command=command, data=data, corruptions=corruptions)
        took.setdefault(group_of(cfg), []).append(time.perf_counter() - t0)
        runs.append(Path(cfg.out))
    summary = compare_runs(runs, out_dir / "report", family=family, data=data)
    print_summary(summary)
    print(f"report: {out_dir / 'report' / 'report.html'}")
    return out_dir
