"""Load evaluated run folders, group them by model, and compute every number of the report."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fashionlab.about import CLASSES, __version__
from fashionlab.config import MAX_LABEL, MAX_TEXT, NOT_RESULTS, PROVENANCE_KEYS
from fashionlab.errors import ConfigError, FashionlabError, RunError
from fashionlab.report.reliability import group_calibration
from fashionlab.report.robustness import robustness
from fashionlab.runfolder import RunFolder
from fashionlab.runformat import METRIC_COLUMNS, is_int, is_real
from fashionlab.stats import (
    bootstrap_ci,
    format_p,
    holm_both_levels,
    mcnemar_exact,
    mean_sd,
    paired_bootstrap_diff,
    seed_level,
    verdict,
)

CONVERGENCE_THRESHOLD = 0.90  # validation accuracy for "epochs to reach 90%"
FAMILIES = ("base", "all-pairs")  # which pairs are tested, and Holm-adjusted together
REQUIRED_METRICS = ("model", "accuracy", "macro_f1", "per_class", "confusion_matrix", "n_test", "test_sha256")
HISTORY_COLUMNS = tuple(c for c in METRIC_COLUMNS if c != "seconds")  # seconds depend on the machine's load


@dataclass
class RunResults:
    """What compare reads of one run folder (not api.Run, the user's handle on a run)."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]  # test_metrics.json
    history: dict[str, np.ndarray]  # metrics.csv, one array per column
    predictions: np.ndarray  # int64 [n_test]
    probs: np.ndarray  # float32 [n_test, n_classes]
    logits: np.ndarray | None = None  # float32 [n_test, n_classes] (test_predictions.npz), None for older runs
    corrupted: dict[str, np.ndarray] | None = None  # corruptions.npz: "clean", "NAME/SEVERITY" -> bool [n_test]
    corruption_suite: tuple[int, Any] | None = None  # (its seed, corruptions.json's suite_version)
    corruption_problem: str = ""  # why corruptions.npz is not used (from another evaluation)

    @property
    def model(self) -> str:
        return str(self.metrics["model"])

    @property
    def recipe(self) -> str | None:
        return self.metrics.get("recipe")

    @property
    def seed(self) -> int:
        seed = self.metrics.get("seed")
        return int(seed if seed is not None else self.config.get("seed") or 0)


@dataclass
class Group:
    """Runs of one model (several seeds), sorted by seed."""

    label: str
    runs: list[RunResults]


@dataclass
class TestData:
    labels: np.ndarray | None = None  # int64 [n_test]
    images: np.ndarray | None = None  # uint8 [n_test, H, W] or [n_test, C, H, W]
    note: str = ""  # why they are missing
    card: dict[str, Any] | None = None  # the dataset card (data.inspect.card) of the data the runs were trained on


@dataclass
class Comparison:
    groups: list[Group]
    data: TestData
    class_names: list[str]
    correct: dict[Path, np.ndarray] = field(default_factory=dict)  # per run: bool [n_test], needs labels
    summary: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- loading


def load_results(path: Path | str) -> RunResults:
    """Read one evaluated run folder; anything missing or inconsistent is a one-line RunError."""
    folder = RunFolder(path).require()
    path = folder.path
    evaluate = f"run `fashionlab evaluate {path}` first"
    for name in (RunFolder.TEST_METRICS, RunFolder.PREDICTIONS, RunFolder.PROBS):
        if not os.path.lexists(folder.file(name)):  # anything else by that name (a FIFO) is refused when read
            raise RunError(f"{path} has no {name}: {evaluate}")
    config, metrics = folder.config(), folder.test_metrics()
    missing = [key for key in REQUIRED_METRICS if key not in metrics]
    if missing:
        raise RunError(f"{path}/test_metrics.json lacks {', '.join(missing)}: {evaluate} again")
    problem = metrics_problem(metrics)
    if problem:
        raise RunError(f"{path}/test_metrics.json: {problem}: {evaluate} again")
    n = metrics["n_test"]
    predictions, probs = folder.test_arrays()
    n_classes = len(metrics["confusion_matrix"])
    if predictions.shape != (n,) or probs.shape != (n, n_classes):
        raise RunError(
            f"{path}: test_predictions.npy {predictions.shape} / test_probs.npy {probs.shape} do not match "
            f"n_test={n}: {evaluate} again"
        )
    logits = folder.test_logits()
    if logits is not None and logits.shape != (n, n_classes):
        raise RunError(f"{path}: test_predictions.npz holds logits {logits.shape}, not ({n}, {n_classes}): "
                       f"{evaluate} again")
    results = RunResults(path, config, metrics, _history(folder), predictions, probs, logits)
    corrupted = folder.corruption_arrays()
    if corrupted is not None:
        again = f"run `fashionlab evaluate {path} --corruptions` again"
        bad = [k for k, v in corrupted.items() if k != "seed" and np.shape(v) != (n,)]
        if bad or "clean" not in corrupted or "seed" not in corrupted:
            raise RunError(f"{path}: corruptions.npz does not match the {n} test images: {again}")
        info = folder.corruptions() or {}
        if (info.get("checkpoint"), info.get("test_sha256")) != (metrics.get("checkpoint"), metrics["test_sha256"]):
            # evaluated again since, on another checkpoint or test set: these are another model's answers
            results.corruption_problem = f"{path}: corruptions.npz is from an earlier evaluation; {again}"
        else:
            results.corrupted = corrupted
            results.corruption_suite = (int(corrupted["seed"]), info.get("suite_version"))
    return results


def metrics_problem(m: dict[str, Any]) -> str | None:
    """What in test_metrics.json the report cannot use (a value of the wrong type), or None."""
    if not isinstance(m["model"], str) or not isinstance(m["test_sha256"], str):
        return "model and test_sha256 must be strings"
    if not is_int(m["n_test"]) or m["n_test"] < 1:
        return f"n_test must be a positive integer, got {str(m['n_test'])[:40]!r}"
    if not all(is_real(m[k]) and 0 <= m[k] <= 1 for k in ("accuracy", "macro_f1")):
        return "accuracy and macro_f1 must be numbers in [0, 1]"
    cm = m["confusion_matrix"]
    if not (isinstance(cm, list) and cm and all(isinstance(row, list) and len(row) == len(cm) and
                                                all(map(is_int, row)) for row in cm)):
        return "confusion_matrix must be a square list of lists of integer counts"
    if not (isinstance(m["per_class"], dict) and all(isinstance(v, dict) for v in m["per_class"].values())):
        return "per_class must map each class to its precision, recall and f1"
    bad = [k for k in ("params", "mflops", "train_seconds", "best_epoch") if m.get(k) is not None and not is_real(m[k])]
    return f"{', '.join(bad)} must be numbers" if bad else None


def _history(folder: RunFolder) -> dict[str, np.ndarray]:
    """metrics.csv as one array per column."""
    if not os.path.lexists(folder.file(RunFolder.METRICS)):  # a FIFO or a device is read, and refused, by history()
        raise RunError(f"{folder.file(RunFolder.METRICS)} not found: the run folder is incomplete")
    rows = folder.history()  # every column present, or a RunError naming the missing ones
    return {col: np.array([float(r[col]) for r in rows]) for col in HISTORY_COLUMNS}


def load_test_data(runs: Sequence[RunResults], data=None) -> TestData:
    """The test images and labels the runs were evaluated on: those of `data`, the dataset they were just trained
    on (`run`: not read and checked a second time), when its test set is theirs; else read again from the data
    their config.json names (Fashion-MNIST's verified files, or the user's own dataset, checked against its
    fingerprint)."""
    expected = runs[0].metrics["test_sha256"]
    if data is not None and data.test_sha256 == expected:
        return _test_data(data, runs[0].config)
    try:
        from fashionlab.data.load import load_for_run
    except ImportError as e:
        return TestData(note=f"the data package cannot be imported ({e})")
    problems = []
    seen = set()
    for run in runs:
        record = run.config.get("data") or {}
        where = record.get("path") or record.get("source")
        if not where or where in seen:
            continue
        seen.add(where)
        try:
            ds = load_for_run(run.config, progress=False)
        except (FashionlabError, OSError, ValueError) as e:
            problems.append(f"{where}: {e}")
            continue
        if ds.test_sha256 != expected:
            problems.append(f"{where}: holds a different test set than the runs were evaluated on")
            continue
        return _test_data(ds, run.config)
    return TestData(note="; ".join(problems) or "no run records its data source in config.json")


def _test_data(ds, config: dict[str, Any]) -> TestData:
    from fashionlab.data.stream import materialize

    return TestData(labels=ds.test_y.numpy().astype(np.int64), images=materialize(ds.test_x).numpy(),
                    card=_card(ds, config))


def _card(ds, config: dict[str, Any]) -> dict[str, Any] | None:
    """The dataset card, with the split sizes of the (first) run's own validation split."""
    from fashionlab.data.inspect import card

    seed = config.get("seed", 0) if config.get("split_seed") is None else config["split_seed"]
    try:
        return card(ds, float(config.get("val_fraction", 0.1)), int(seed)) | {
            "name": "Fashion-MNIST" if (config.get("dataset") or "fashion-mnist") == "fashion-mnist"
            else str(config.get("dataset"))}
    except FashionlabError:
        return None


# ---------------------------------------------------------------- grouping


# Options that do not change what is trained (from the config's fields), the seed, and what a run records about
# itself: runs differing only in these are replicates of one setting. A label changes nothing trained, but it
# names a group, so runs with different labels stay apart.
NOT_SETTINGS = (NOT_RESULTS - {"label"}) | {"seed"} | set(PROVENANCE_KEYS)


def settings(run: RunResults) -> dict[str, Any]:
    return {k: v for k, v in run.config.items() if k not in NOT_SETTINGS}


def setting_diff(run: RunResults, others: Sequence[RunResults]) -> str:
    """The options where this run's setting differs from the others', e.g. "augment=flip,crop, tta=True"."""
    mine = settings(run)
    keys = sorted({k for o in others for k in {*settings(o), *mine} - {"label"}
                   if mine.get(k) != settings(o).get(k)})
    return ", ".join(f"{k}={mine.get(k)}" for k in keys) or "same settings"


def group_name(run: RunResults) -> str:
    """The run's label, else its model name, shortened to the stated limits (config.MAX_LABEL for a label): a
    config.json written before labels were limited, or edited, may hold megabytes, which every table, legend and
    summary would repeat."""
    label = run.config.get("label")
    name, limit = (label, MAX_LABEL) if isinstance(label, str) and label else (run.model, MAX_TEXT)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def group_runs(runs: Sequence[RunResults]) -> list[Group]:
    """Group runs by (model, recipe, every training option but the seed), in command-line order; the runs of
    one group are its seeds.

    Two runs of one group with the same seed are not replicates: each becomes a group of its own.
    Labels are the run's `label` (set by `run --variant`) or the model name, with the recipe, the options that
    differ, then the folder name or path, added where needed to be unique.
    """
    by_key: dict[str, list[RunResults]] = defaultdict(list)
    for run in runs:
        by_key[json.dumps([run.model, run.recipe, settings(run)], sort_keys=True, default=str)].append(run)
    members: list[list[RunResults]] = []
    for group in by_key.values():
        seeds = [r.seed for r in group]
        members += [group] if len(set(seeds)) == len(seeds) else [[r] for r in group]
    base = [group_name(rs[0]) for rs in members]
    labels = list(base)

    def differs(r: RunResults) -> str:
        same_model = [o[0] for o in members if o[0].model == r.model and o[0] is not r]
        return setting_diff(r, same_model)

    for detail in (lambda r: r.recipe or "no recipe", differs, lambda r: r.path.name, lambda r: str(r.path)):
        clashing = {label for label in labels if labels.count(label) > 1}
        labels = [f"{name} ({detail(rs[0])})" if label in clashing else label
                  for name, label, rs in zip(base, labels, members)]
    return [Group(label, sorted(rs, key=lambda r: r.seed)) for label, rs in zip(labels, members)]


# ---------------------------------------------------------------- numbers


def build_comparison(
    run_dirs: Sequence[Path | str], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0, family: str | None = None,
    data=None,
) -> Comparison:
    """Load, check and group the runs, and compute the summary (sections 1 and 2 of the report).

    family: "base" (each group against the first), "all-pairs", or None for default_family's choice.
    data: the dataset the runs were trained on, when the caller holds it (see load_test_data).
    """
    if family is not None and family not in FAMILIES:
        raise ConfigError(f"--family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if not run_dirs:
        raise RunError("no run folders given")
    paths = [Path(p) for p in run_dirs]
    resolved = [p.resolve() for p in paths]
    for i, p in enumerate(resolved):
        if p in resolved[:i]:
            raise RunError(f"run folder {paths[i]} is given twice")
    runs = [load_results(p) for p in paths]
    first = runs[0]
    for run in runs[1:]:
        if run.metrics["test_sha256"] != first.metrics["test_sha256"]:
            raise RunError(
                f"{run.path} and {first.path} were evaluated on different test data (test_sha256 "
                f"{run.metrics['test_sha256'][:12]}... vs {first.metrics['test_sha256'][:12]}...); "
                "evaluate them on the same data to compare them"
            )
    groups = group_runs(runs)
    test = load_test_data(runs, data)
    n_classes = len(first.metrics["confusion_matrix"])
    names = list(first.metrics["per_class"])  # the class names, in output order (JSON keeps the order)
    if len(names) != n_classes:
        names = list(CLASSES) if n_classes == len(CLASSES) else [str(i) for i in range(n_classes)]
    comp = Comparison(groups, test, names)
    if test.labels is not None:
        comp.correct = {r.path: r.predictions == test.labels for r in runs}
    comp.summary = _summarise(comp, n_boot, alpha, seed, family or default_family(groups))
    return comp


def default_family(groups: Sequence[Group]) -> str:
    """The test family that matches the question. Later groups named by a label (`run --variant`, `train --label`)
    make a variant study: each is a change to the first group, the base, and the questions asked are each change
    against the base, not change against change. Without labels, models are compared without a base: every pair."""
    return "base" if any(g.runs[0].config.get("label") for g in groups[1:]) else "all-pairs"


def family_pairs(groups: Sequence[Group], family: str) -> list[tuple[Group, Group]]:
    if family == "base":
        return [(groups[0], g) for g in groups[1:]]
    return list(itertools.combinations(groups, 2))


def _summarise(comp: Comparison, n_boot: int, alpha: float, seed: int, family: str) -> dict[str, Any]:
    first = comp.groups[0].runs[0]
    comparisons = [
        _pair_summary(a, b, comp.correct, n_boot, alpha, seed) for a, b in family_pairs(comp.groups, family)
    ] if comp.correct else []
    _correct_for_multiplicity(comparisons, alpha)
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "fashionlab": __version__,
        "test_sha256": first.metrics["test_sha256"],
        "n_test": int(first.metrics["n_test"]),
        "alpha": alpha,
        "n_boot": n_boot,
        "convergence_threshold": CONVERGENCE_THRESHOLD,
        "labels_available": comp.data.labels is not None,
        "labels_note": comp.data.note,
        "dataset": comp.data.card,
        "base": comp.groups[0].label,
        "family": family,
        "models": [_model_summary(g, comp, n_boot, alpha, seed) for g in comp.groups],
        "comparisons": comparisons,
        "versus_base": _versus_base(comp.groups[0].label, comparisons),
        "robustness": robustness(comp.groups, family_pairs(comp.groups, family), n_boot, alpha, seed),
    }


def _stat(values: Sequence[float | None]) -> dict[str, Any]:
    """mean ± sample sd over the present values; `n` counts them."""
    present = [float(v) for v in values if v is not None]
    mean, sd = mean_sd(present) if present else (None, None)
    return {"mean": mean, "sd": sd, "n": len(present), "values": list(values)}


def _correct_matrix(group: Group, correct: dict[Path, np.ndarray]) -> np.ndarray | None:
    if correct:
        return np.stack([correct[r.path] for r in group.runs])
    if len(group.runs) == 1:  # without labels one run's CI still follows from its count of correct answers
        run = group.runs[0]
        n_right = int(np.trace(np.asarray(run.metrics["confusion_matrix"])))
        return (np.arange(int(run.metrics["n_test"])) < n_right)[None]
    return None


def _model_summary(group: Group, comp: Comparison, n_boot: int, alpha: float, seed: int) -> dict[str, Any]:
    runs = group.runs
    matrix = _correct_matrix(group, comp.correct)
    accuracy = [float(m.mean()) for m in matrix] if comp.correct else [float(r.metrics["accuracy"]) for r in runs]
    ci = list(bootstrap_ci(matrix, n_boot, alpha, seed)) if matrix is not None else None

    def metric(key: str) -> list[float | None]:
        return [r.metrics.get(key) for r in runs]

    return {
        "label": group.label,
        "model": runs[0].model,
        "recipe": runs[0].recipe,
        "changed": "" if group is comp.groups[0] else setting_diff(runs[0], [comp.groups[0].runs[0]]),
        "runs": [str(r.path) for r in runs],
        "seeds": [r.seed for r in runs],
        "accuracy": _stat(accuracy) | {"ci": ci},
        "macro_f1": _stat(metric("macro_f1")),
        "params": _stat(metric("params")),
        "mflops": _stat(metric("mflops")),
        "train_seconds": _stat(metric("train_seconds")),
        "best_epoch": _stat(metric("best_epoch")),
        "train_val_gap": _stat([_final_gap(r) for r in runs]),
        "epochs_to_threshold": _stat([_epochs_to(r, CONVERGENCE_THRESHOLD) for r in runs]),
        "training": [_training(r) for r in runs],
        "hardest_classes": [{"class": c, "f1": f1} for c, f1 in hardest_classes(group, comp.class_names)],
        "top_confusions": top_confusions(group, comp.class_names),
        "calibration": group_calibration(runs, comp.data.labels, n_boot, alpha, seed),
    }


def _training(run: RunResults) -> dict[str, Any]:
    """What the run trained on: its epochs (as metrics.csv records them: early stopping may end a run sooner), the
    training and validation images (config.json's data record; None for a run from before it kept them), and
    whether they were stratified subsets (--train-subset, --val-subset, or `run --quick`'s choice)."""
    record = run.config.get("data") if isinstance(run.config.get("data"), dict) else {}
    return {"epochs": len(run.history["epoch"]),
            "n_train": record.get("n_train") if is_int(record.get("n_train")) else None,
            "n_val": record.get("n_val") if is_int(record.get("n_val")) else None,
            "train_subset": run.config.get("train_subset") is not None,
            "val_subset": run.config.get("val_subset") is not None}


def _final_gap(run: RunResults) -> float | None:
    h = run.history
    return float(h["train_acc"][-1] - h["val_acc"][-1]) if len(h["epoch"]) else None


def _epochs_to(run: RunResults, threshold: float) -> int | None:
    reached = np.nonzero(run.history["val_acc"] >= threshold)[0]
    return int(run.history["epoch"][reached[0]]) if reached.size else None


def _pair_summary(
    a: Group, b: Group, correct: dict[Path, np.ndarray], n_boot: int, alpha: float, seed: int
) -> dict[str, Any]:
    """A against B at both levels.

    Per image (do these trained models differ on this test set?): McNemar on each pair of runs with the same seed
    number, p the largest of them (intersection-union); two single runs are one pair whatever their seeds. `diff`
    (A - B, a fraction) and `ci` compare the mean accuracies over all runs, bootstrapping the test images.
    Seed level (does this training choice differ?): stats.seed_level, in accuracy points of B - A.
    Runs without a partner of the same seed enter only the mean accuracies and `diff`: named in `warning`.
    """
    runs_a, runs_b = {r.seed: r for r in a.runs}, {r.seed: r for r in b.runs}
    level = seed_level({s: correct[r.path] for s, r in runs_a.items()},
                       {s: correct[r.path] for s, r in runs_b.items()}, n_boot, alpha, seed)
    matched = [(runs_a[s], runs_b[s]) for s in level.seeds]
    single = len(a.runs) == len(b.runs) == 1
    if single and not matched:
        matched = [(a.runs[0], b.runs[0])]
    pairs = []
    for ra, rb in matched:
        m = mcnemar_exact(correct[ra.path], correct[rb.path])
        pairs.append({"seed_a": ra.seed, "seed_b": rb.seed, "b": m.b, "c": m.c, "p_value": m.p_value,
                      "significant": m.p_value < alpha})
    diff, lo, hi = paired_bootstrap_diff(
        np.stack([correct[r.path] for r in a.runs]), np.stack([correct[r.path] for r in b.runs]), n_boot, alpha, seed
    )
    unpaired = [] if single else ([(a.label, runs_a[s]) for s in level.unpaired_a]
                                  + [(b.label, runs_b[s]) for s in level.unpaired_b])
    warning = ""
    if unpaired:
        named = ", ".join(f"{label} seed {r.seed} ({r.path})" for label, r in unpaired)
        one = len(unpaired) == 1
        warning = (f"unequal seeds in {a.label} and {b.label}: {named} {'has' if one else 'have'} no run of the "
                   f"same seed in the other group, so {'it enters' if one else 'they enter'} only the mean "
                   "accuracies, not the seed pairs")
    return {"a": a.label, "b": b.label, "diff": diff, "ci": [lo, hi],
            "p_value": max(pr["p_value"] for pr in pairs) if pairs else None, "p_adjusted": None,
            "consistent": bool(pairs) and all(np.sign(pr["b"] - pr["c"]) == np.sign(diff) != 0 for pr in pairs),
            "pairs": pairs,
            "seed_level": {"n_seeds": level.n_seeds, "seeds": list(level.seeds),
                           "differences": list(level.differences), "effect": level.effect,
                           "ci_low": level.ci_low, "ci_high": level.ci_high, "p": level.p, "p_adjusted": None,
                           "test": level.test, "sd": level.sd, "mde": level.mde, "reason": level.reason,
                           "unpaired": [str(r.path) for _, r in unpaired]},
            "warning": warning}


def _correct_for_multiplicity(comparisons: list[dict[str, Any]], alpha: float) -> None:
    """Holm-Bonferroni over the pairs of the family, for each level apart. The training-choice verdict (the only
    text saying better or worse) and `significant` follow the seed level; `models_differ` the per-image test."""
    n_images, n_seeds = holm_both_levels(comparisons, alpha)
    for c in comparisons:
        c["significant"] = c["seed_level"]["significant"]
        c["verdict"] = _choice_verdict(c, alpha, n_seeds)
        c["models_verdict"] = _models_verdict(c, alpha, n_images)


def _choice_verdict(c: dict[str, Any], alpha: float, n_tests: int) -> str:
    """Does this training choice differ: the seed-level verdict, with the smallest detectable effect when not."""
    s, a, b = c["seed_level"], c["a"], c["b"]
    if s["p"] is None:
        return f"no training-choice verdict on {b} against {a}: {s['reason']}"
    how = f"seed level: {s['n_seeds']} seed pairs, {s['test']}"
    if n_tests > 1:
        how += f", Holm-adjusted over {n_tests} tests, raw {format_p(s['p'])}"
    if s["reason"]:
        how += f"; {s['reason']}"
    text = verdict(a, b, -s["effect"] / 100, s["p_adjusted"], alpha)  # better/worse: from the seed level only
    if s["significant"]:
        return f"{text}; this training choice differs ({how})"
    text += f"; this training choice is not shown to differ ({how})"
    if s["mde"] is not None:
        text += (f"; the smallest effect these {s['n_seeds']} seeds could detect is {s['mde']:.2f} points "
                 f"(80% power, alpha {alpha})")
    return text


def _models_verdict(c: dict[str, Any], alpha: float, n_tests: int) -> str:
    """Do these trained models differ on this test set: the per-image verdict, which says nothing of better."""
    a, b = c["a"], c["b"]
    if c["p_value"] is None:
        return f"no per-image test of {a} and {b}: no run of one has a run of the same seed in the other"
    p = f"McNemar {format_p(c['p_adjusted'])}" + (f", Holm-adjusted over {n_tests} tests" if n_tests > 1 else "")
    if len(c["pairs"]) > 1:
        n_sig = sum(pr["significant"] for pr in c["pairs"])
        p += f"; largest p of {len(c['pairs'])} seed pairs, {n_sig}/{len(c['pairs'])} significant"
    if c["models_differ"]:
        return f"these trained models differ on this test set ({b} − {a}: {-100 * c['diff']:+.1f} points; {p})"
    if c["p_adjusted"] < alpha:
        return f"these trained models differ on this test set, but the seed pairs disagree in direction ({p})"
    return f"these trained models do not differ significantly on this test set ({p})"


def _versus_base(base: str, comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each other group against the base (the first group): per-image difference (group - base), CI and adjusted
    p, and the seed level (already group - base)."""
    rows = []
    for c in comparisons:
        if c["a"] != base:
            continue
        lo, hi = c["ci"]
        s = c["seed_level"]
        rows.append({"label": c["b"], "diff": -c["diff"], "ci": [-hi, -lo], "p_value": c["p_value"],
                     "p_adjusted": c["p_adjusted"], "models_differ": c["models_differ"],
                     "seed_level": s, "seed_p_adjusted": s["p_adjusted"], "significant": c["significant"],
                     "verdict": c["verdict"], "models_verdict": c["models_verdict"], "warning": c["warning"]})
    return rows


# ---------------------------------------------------------------- per-class views (sections 4 and 5)


def group_confusion(group: Group) -> np.ndarray:
    """Confusion counts summed over the group's runs (rows = true class)."""
    return sum(np.asarray(r.metrics["confusion_matrix"], dtype=np.int64) for r in group.runs)


def top_confusions(group: Group, class_names: Sequence[str], k: int = 5) -> list[dict[str, Any]]:
    """The k largest off-diagonal cells: count is per run (mean over seeds), rate is count / class size."""
    counts = group_confusion(group)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    off = [(i, j) for i in range(len(counts)) for j in range(len(counts)) if i != j and counts[i, j] > 0]
    off.sort(key=lambda ij: (-counts[ij], ij))
    return [{"true": class_names[i], "predicted": class_names[j], "count": float(counts[i, j] / len(group.runs)),
             "rate": float(rates[i, j])} for i, j in off[:k]]


def per_class_stats(group: Group, class_names: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """metric -> (mean, sd) over the group's runs, one entry per class (NaN where a run lacks the class)."""
    out = {}
    for metric in ("precision", "recall", "f1"):
        table = np.array([[r.metrics["per_class"].get(name, {}).get(metric, np.nan) for name in class_names]
                          for r in group.runs], dtype=np.float64)
        sd = table.std(axis=0, ddof=1) if len(table) > 1 else np.zeros(len(class_names))
        out[metric] = (table.mean(axis=0), sd)
    return out


def hardest_classes(group: Group, class_names: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The k classes with the lowest (mean) F1."""
    f1 = per_class_stats(group, class_names)["f1"][0]
    order = [i for i in np.argsort(f1, kind="stable") if np.isfinite(f1[i])]
    return [(class_names[i], float(f1[i])) for i in order[:k]]


def worst_mistakes(run: RunResults, labels: np.ndarray, k: int = 16) -> list[dict[str, Any]]:
    """The run's k most confident mistakes: index, true and predicted class, confidence."""
    wrong = np.nonzero(run.predictions != labels)[0]
    confidence = run.probs[wrong, run.predictions[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:k]
    return [{"index": int(i), "true": int(labels[i]), "predicted": int(run.predictions[i]),
             "confidence": float(run.probs[i, run.predictions[i]])} for i in order]
