"""`fashionlab train --budget 5m`: the most accurate measured recipe that fits a time budget on this machine.

Each recipe in measured.json may carry, per device kind ("cpu", "cuda", "mps"), a reference: the recipe's
measured time on the reference machine (`seconds`) and the seconds per training step of that run (`step_seconds`:
its time over its steps). Here one step is timed (`measure_step_seconds`: a few steps of the recipe's model at
its batch size, precision and memory format, on random inputs: a few seconds in all), and the reference time is
scaled by the ratio of the two:

    estimate here = reference seconds × step seconds here / step seconds of the reference run

An isolated step misses part of a run's cost (validation, the first training of a sitting), so the estimate
times measured.json's `budget_margin` (what the committed budget checks of this estimator found) must fit.
Recipes are timed from the most accurate down; the first that fits is chosen.
"""

from __future__ import annotations

import contextlib
import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fashionlab.errors import ConfigError
from fashionlab.measured import Recipe, Reference
from fashionlab.numfmt import accuracy_over_seeds, duration, percent

# Bump when the estimate's formula or its reference step times change: budget checks of an older estimator say
# nothing of this one's error, and the margin is taken over this one's checks only.
ESTIMATOR = 2  # 2: reference step time = the reference run's own seconds / steps (1: benchmarks/step_time.py's)

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> float:
    """'90s', '5m', '1h', '1h30m', '1.5h' -> seconds; a one-line ConfigError otherwise."""
    cleaned = str(text).strip().lower().replace(" ", "")
    match = _DURATION.fullmatch(cleaned)
    if not cleaned or match is None or not any(match.groups()):
        hint = "; give a unit" if re.fullmatch(r"\d+(?:\.\d+)?", cleaned) else ""
        raise ConfigError(f"--budget {text!r} is not a duration{hint}: use e.g. 90s, 5m, 1h or 1h30m")
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    seconds = 3600 * h + 60 * m + s
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"--budget {text!r} must be a duration longer than zero")
    return seconds


# ---------------------------------------------------------------------------------------------------------
# timing one training step


def measure_step_seconds(cfg, device=None, *, warmup: int = 3, steps: int = 5,
                         shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10) -> float:
    """Median seconds of one training step of cfg's model, as train.train_epoch takes it (augmentation of a
    uint8 batch, forward, loss, backward, optimizer step, EMA update) at cfg's batch size, precision and
    memory format, on random inputs of `shape` (C, H, W) in `n_classes` classes (a user's dataset; Fashion-MNIST's
    by default); `warmup` untimed steps first (oneDNN/cuDNN choose kernels then).

    The same function times the user's machine (--budget) and, for the record, the reference one
    (benchmarks/step_time.py). It leaves the global random state as it found it."""
    import torch

    from fashionlab.trainsetup import make_ema, make_optimizer, to_input, train_step

    with _timing_model(cfg, device, shape, n_classes) as (model, device, precision, one, sync):
        opt = make_optimizer(cfg, model)
        ema = make_ema(cfg, model)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        aug = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        images = torch.randint(0, 256, (cfg.batch_size, *one), dtype=torch.uint8).to(device)
        y = torch.randint(0, n_classes, (cfg.batch_size,)).to(device)
        times = []
        for i in range(warmup + steps):
            sync()
            t0 = time.perf_counter()
            x = to_input(images, cfg, aug)
            train_step(model, opt, scaler, x, y, cfg, precision, device)
            if ema is not None:
                ema.update_parameters(model)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_predict_seconds(cfg, device=None, *, images: int = 256, shape: tuple[int, int, int] = (1, 28, 28),
                            n_classes: int = 10, evaluation_images: int | None = None) -> float:
    """Seconds to predict one image with cfg's model as training's validation does (evaluate.predict_logits, eager,
    at the inference batch, in cfg's precision and memory format; both views with --tta), on `images` random
    inputs of `shape` after one untimed batch; with evaluation_images, as `evaluate` predicts that many (the test
    set): through the fused CPU graph where cpugraph builds one for them (built before the timing), else eagerly.
    Leaves the global random state as it found it."""
    import torch

    from fashionlab.cpugraph import CpuGraph
    from fashionlab.evaluate import inference_batch, predict_logits
    from fashionlab.trainsetup import to_input

    with _timing_model(cfg, device, shape, n_classes) as (model, device, precision, one, sync):
        x = torch.randint(0, 256, (images, *one), dtype=torch.uint8)
        batch = inference_batch(device)
        graph = CpuGraph(model) if evaluation_images else None
        if graph is not None:  # built as predict_logits builds it, from its first batch, for the whole test set
            model.eval()
            graph.get(to_input(x[:batch].to(device), cfg, None), precision, evaluation_images)

        def predict(part: torch.Tensor) -> None:
            predict_logits(model, part, device=device, precision=precision, tta=cfg.tta,
                           channels_last=cfg.channels_last, graph=graph)

        predict(x[:batch])
        sync()
        t0 = time.perf_counter()
        predict(x)
        sync()
        return (time.perf_counter() - t0) / images


def measure_corruption_seconds(images) -> float:
    """Seconds to make one image's corrupted copies, every corruption at every severity of the suite (what
    `evaluate --corruptions` makes of each test image before predicting it), timed on `images` (uint8, as the
    dataset holds them: a few dozen are enough)."""
    from fashionlab.corruptions import CORRUPTIONS, SEVERITIES, corrupt

    t0 = time.perf_counter()
    for name in CORRUPTIONS:
        for severity in SEVERITIES:
            corrupt(images, name, severity)
    return (time.perf_counter() - t0) / len(images)


def measure_output_seconds(classes: list[str], n_test: int, epochs: int) -> float:
    """Seconds to make what a run's test evaluation writes besides numbers (evaluate.run_outputs: its classification
    report, and its confusion and curves figures rendered as files.figure_png renders them), for n_test placeholder
    predictions in these classes and `epochs` rows of history. Their imports are made first, untimed: a process
    makes them once. `run --quick` counts each run's and the report's fixed costs in this unit."""
    import numpy as np
    from matplotlib.figure import Figure  # noqa: F401 (imported untimed)
    from sklearn.metrics import classification_report  # noqa: F401 (imported untimed)

    from fashionlab.evaluate import run_outputs
    from fashionlab.files import figure_png

    k = len(classes)
    rng = np.random.default_rng(0)
    y = rng.integers(0, k, n_test)
    pred = np.where(rng.random(n_test) < 0.9, y, rng.integers(0, k, n_test))
    history = [{"epoch": str(e), "train_loss": "0.5", "val_loss": "0.4", "train_acc": "0.8", "val_acc": "0.85"}
               for e in range(1, epochs + 1)]
    t0 = time.perf_counter()
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    _, *figures = run_outputs(y, pred, {"model": "timing", "confusion_matrix": cm.tolist()}, history, classes)
    for fig in figures:
        figure_png(fig)
    return time.perf_counter() - t0


@contextlib.contextmanager
def _timing_model(cfg, device, shape: tuple[int, int, int], n_classes: int):
    """cfg's model built as training builds it, for inputs of `shape` in `n_classes` classes, inside a fork of the
    random state: (model, device, precision, one image's shape as a dataset holds it, a device sync)."""
    import torch

    from fashionlab.device import resolve_device, resolve_precision
    from fashionlab.trainsetup import Splits, make_model

    device = resolve_device(cfg.device) if device is None else torch.device(device)
    precision = resolve_precision(cfg.precision, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    fork = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        one = shape if shape[0] > 1 else shape[1:]  # one channel: [N, H, W], as a dataset holds it
        none = torch.zeros(0, *one, dtype=torch.uint8)
        labels = torch.zeros(0, dtype=torch.long)
        stats = (0.286, 0.353) if shape[0] == 1 else ([0.5] * shape[0], [0.25] * shape[0])  # FM's; any will do
        splits = Splits(none, labels, none, labels, *stats, classes=tuple(map(str, range(n_classes))), shape=shape)
        model = make_model(cfg, device, splits)  # seeds torch with cfg.seed, as training does
        yield model, device, precision, one, sync


def recipe_config(name: str, device: str = "auto"):
    """The configuration recipe NAME trains with (its settings and defaults; only the device given)."""
    from fashionlab.config import build_config
    from fashionlab.recipes import recipe_overrides

    return build_config(recipe_overrides(name), {"device": device})


# ---------------------------------------------------------------------------------------------------------
# choosing


@dataclass
class Estimate:
    recipe: str
    accuracy_mean: float
    accuracy_sd: float
    n_seeds: int
    reference_seconds: float
    ratio: float  # step seconds here / on the reference machine
    timing_seconds: float = 0.0  # spent timing recipes here before this one was chosen: the user waits for it too
    margin: float = 1.0  # measured.json's budget_margin: how far such estimates have run over

    @property
    def seconds(self) -> float:
        return self.reference_seconds * self.ratio + self.timing_seconds

    @property
    def at_most(self) -> float:
        """The estimate with the margin: what must fit in the budget."""
        return self.seconds * self.margin


@dataclass
class Choice:
    budget_seconds: float
    device: str
    chosen: Estimate
    more_accurate: list[Estimate] = field(default_factory=list)  # timed and too slow for the budget
    reference: Reference | None = None  # the chosen recipe's reference on this device kind

    def lines(self) -> list[str]:
        c, ref = self.chosen, self.reference
        where = ref.machine if ref is not None else "the reference machine"
        out = [f"--budget {duration(self.budget_seconds)}: recipe {c.recipe}",
               f"  expected test accuracy {accuracy_over_seeds(c.accuracy_mean, c.accuracy_sd, c.n_seeds)} "
               f"on the reference machine ({where})",
               f"  estimated time here: {duration(c.seconds)} ({self.device}; a training step takes "
               f"{c.ratio:.2f}× as long as on the reference machine, where the run took "
               f"{duration(c.reference_seconds)}; {duration(c.timing_seconds)} of it spent timing the recipes)"]
        if c.margin > 1:
            out.append(f"  up to {duration(c.at_most)} with the margin: such estimates have run up to "
                       f"{c.margin:.2f}× over in budget checks (docs/performance.md), and this must fit the budget")
        out += [f"  not chosen: {e.recipe} ({percent(e.accuracy_mean)}) would take about "
                f"{duration(e.seconds)} here" + (f" (up to {duration(e.at_most)})" if e.margin > 1 else "")
                for e in self.more_accurate]
        return out


def candidates(table: dict[str, Recipe | None], device: str) -> list[tuple[str, Recipe, Reference]]:
    """(recipe, measured figures, reference for this device kind) for each recipe with a measured accuracy and a
    reference step time on this kind of device, most accurate first."""
    found = []
    for name, entry in table.items():
        if entry is None:
            continue
        ref = entry.budget_reference.get(device)
        if ref is None or not ref.step_seconds or not ref.seconds:
            continue
        found.append((name, entry, ref))
    return sorted(found, key=lambda t: (-t[1].accuracy_mean, t[2].seconds))


def choose(budget_seconds: float, table: dict[str, Recipe | None], device: str,
           step_seconds_here: Callable[[str], float], clock: Callable[[], float] = time.perf_counter,
           margin: float = 1.0) -> Choice:
    """The most accurate recipe whose estimated time here, times `margin`, fits the budget. Recipes are timed here
    (`step_seconds_here(name)`) from the most accurate down, and timing stops at the first that fits. The time the
    timing took counts against the budget (a 1-minute budget once chose a 55-s recipe after 8 s of timing), and the
    margin covers what a few timed steps miss (budget checks ran up to margin x the estimate)."""
    start = clock()
    found = candidates(table, device)
    if not found:
        raise ConfigError(f"--budget: no recipe has a measured accuracy and a reference step time for a {device} "
                          "device (see `fashionlab recipes`); give --recipe or --model instead")
    tried: list[Estimate] = []
    for name, entry, ref in found:
        ratio = step_seconds_here(name) / ref.step_seconds
        est = Estimate(name, entry.accuracy_mean, entry.accuracy_sd, entry.n_seeds, ref.seconds, ratio,
                       clock() - start, margin)
        if est.at_most <= budget_seconds:
            return Choice(budget_seconds, device, est, tried, ref)
        tried.append(est)
    fastest = min(tried, key=lambda e: e.seconds)
    with_margin = f" (up to {duration(fastest.at_most)} with the margin of {margin:.2f}×)" if margin > 1 else ""
    raise ConfigError(f"--budget {duration(budget_seconds)}: no measured recipe fits; the fastest, "
                      f"{fastest.recipe}, would take about {duration(fastest.seconds)} here{with_margin}")


def load_measured() -> dict[str, Recipe | None]:
    """The shipped measured.json's recipes (validated by fashionlab.measured)."""
    from fashionlab.measured import load

    return load().recipes


def load_margin() -> float:
    """The shipped measured.json's budget margin (1.0 when --budget has not been checked)."""
    from fashionlab.measured import load

    margin = load().budget_margin
    return 1.0 if margin is None else margin.factor


def pick_recipe(budget: str, options: dict[str, Any], config_file=None, *, resume=None,
                log: Callable[[str], None] | None = print, table: dict[str, Recipe | None] | None = None,
                step_seconds_here: Callable[[str], float] | None = None) -> str:
    """The recipe `train --budget BUDGET` trains, with `options` (the other options given) and `config_file`.
    Every problem is a one-line ConfigError raised before anything is written."""
    from fashionlab.config import FASHION_MNIST, FIELDS, flag, read_config_file
    from fashionlab.device import cpu_has_bf16, resolve_device

    seconds = parse_duration(budget)
    if resume:
        raise ConfigError("--budget picks a recipe for a new run; a resumed run keeps its own")
    file_layer = read_config_file(config_file) if config_file else {}
    dataset = options.get("dataset") or file_layer.get("dataset") or FASHION_MNIST
    if dataset != FASHION_MNIST:  # the table's accuracies and step times are Fashion-MNIST's (60k 28x28 images)
        raise ConfigError("--budget picks among recipes measured on Fashion-MNIST; on your own data (--data) give "
                          "--recipe or --model and --epochs yourself")
    for where, layer in (("", options), (f" (in {config_file})", file_layer)):
        named = [k for k in ("recipe", "model") if layer.get(k) is not None]
        if named:
            raise ConfigError(f"--budget picks the recipe itself: not with --{named[0]}{where}")
    device = resolve_device(options.get("device") or file_layer.get("device") or "auto")
    measure = step_seconds_here or (lambda name: measure_step_seconds(recipe_config(name, device.type), device))
    choice = choose(seconds, load_measured() if table is None else table, device.type, measure,
                    margin=load_margin() if table is None else 1.0)
    if log is not None:
        for line in choice.lines():
            log(line)
        ref = choice.reference
        if device.type == "cpu" and ref is not None and ref.precision == "bf16" and not cpu_has_bf16():
            log(f"  warning: the reference trained in bf16 on a CPU with native bf16 ({ref.machine}); this CPU "
                "has none (no AVX-512 BF16 or AMX), so it trains in fp32: the time above is scaled from a step "
                "timed here in fp32, and the accuracy may differ a little from the reference's")
        changed = sorted(k for k in {**file_layer, **options} if k in FIELDS and FIELDS[k].metadata["results"]
                         and k != "seed")
        if changed:
            log(f"  note: {', '.join(flag(k) for k in changed)} change the recipe; the accuracy "
                "and time above are the recipe's own")
    return choice.chosen.recipe
