"""How do the models hold up on corrupted test images? The report's robustness numbers, from each run's
corruptions.npz (`fashionlab evaluate RUN --corruptions`: whether each test image was right, clean and under every
corruption and severity of the seeded suite, the same corrupted images for every run).

For each pair of the report's test family and each corruption, both questions the report asks of clean accuracy,
on the test images under that corruption at all five severities (5 x n answers per run):
- seed level (does this training choice differ?): stats.seed_level, seeds paired by number;
- per image (do these trained models differ?): McNemar's exact test on each seed pair, p the largest of them. The
  5 severities of one image are counted as 5 pairs; they are not independent, so read this p as approximate.
Each level is Holm-adjusted over every (pair, corruption) test of the family. Better and worse follow the seed level.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fashionlab.corruptions import CORRUPTIONS, SEVERITIES, mean_corruption_error
from fashionlab.stats import MIN_SEED_PAIRS, format_p, holm_both_levels, mcnemar_exact, mean_sd, seed_level


def robustness(groups: list, pairs: list[tuple[Any, Any]], n_boot: int, alpha: float, seed: int) -> dict[str, Any]:
    """summary.json's `robustness`: {"available": False, "reason"} unless every run has a usable corruptions.npz
    from the same suite."""
    runs = [r for g in groups for r in g.runs]
    problems = [r.corruption_problem for r in runs if r.corruption_problem]
    if problems:
        return {"available": False, "reason": problems[0]}
    missing = [str(r.path) for r in runs if r.corrupted is None]
    if missing:
        return {"available": False,
                "reason": f"no corruptions.npz in {', '.join(missing)}: run `fashionlab evaluate RUN --corruptions` "
                          "(or `fashionlab run --corruptions`)"}
    suites = {r.corruption_suite for r in runs}
    if len(suites) > 1:
        return {"available": False, "reason": "the runs were evaluated on different corruption suites (seed, "
                                              "version): evaluate them all again with --corruptions"}
    names = [c for c in CORRUPTIONS if all(f"{c}/{s}" in r.corrupted for r in runs for s in SEVERITIES)]
    if not names:
        return {"available": False, "reason": "no corruption was evaluated at every severity in every run"}
    models = [_model(g, names) for g in groups]
    base_errors = {c: {s: 1 - a for s, a in models[0]["accuracy"][c].items()} for c in names}
    for m in models:
        errors = {c: {s: 1 - a for s, a in m["accuracy"][c].items()} for c in names}
        m["mce"] = mean_corruption_error(errors, base_errors) if all(
            sum(base_errors[c].values()) > 0 for c in names) else None
    tests = [_test(a, b, c, n_boot, alpha, seed) for a, b in pairs for c in names]
    holm_both_levels(tests, alpha)
    for t in tests:
        t["verdict"] = _verdict(t)
    return {"available": True, "reason": "", "corruptions": names, "severities": list(SEVERITIES),
            "suite_seed": next(iter(suites))[0], "base": groups[0].label, "models": models, "comparisons": tests}


def _answers(run, name: str) -> np.ndarray:
    return np.concatenate([run.corrupted[f"{name}/{s}"] for s in SEVERITIES]).astype(bool)


def _model(group, names: list[str]) -> dict[str, Any]:
    """Accuracy per corruption and severity, mean over the group's seeds; the mean over the suite per seed."""
    runs = group.runs
    accuracy = {c: {s: float(np.mean([r.corrupted[f"{c}/{s}"].mean() for r in runs])) for s in SEVERITIES}
                for c in names}
    per_seed = [float(np.mean([r.corrupted[f"{c}/{s}"].mean() for c in names for s in SEVERITIES])) for r in runs]
    mean, sd = mean_sd(per_seed)
    return {"label": group.label, "seeds": [r.seed for r in runs],
            "clean": float(np.mean([r.corrupted["clean"].mean() for r in runs])),
            "accuracy": accuracy, "mean_corrupted": {"mean": mean, "sd": sd, "n": len(per_seed), "values": per_seed}}


def _test(a, b, name: str, n_boot: int, alpha: float, seed: int) -> dict[str, Any]:
    """B against A on one corruption, at both levels (as report.compare's clean-accuracy pairs)."""
    runs_a, runs_b = {r.seed: r for r in a.runs}, {r.seed: r for r in b.runs}
    answers_a = {s: _answers(r, name) for s, r in runs_a.items()}
    answers_b = {s: _answers(r, name) for s, r in runs_b.items()}
    level = seed_level(answers_a, answers_b, n_boot, alpha, seed)
    matched = [(s, s) for s in level.seeds]
    if not matched and len(a.runs) == len(b.runs) == 1:  # two single runs are one pair whatever their seeds
        matched = [(a.runs[0].seed, b.runs[0].seed)]
    pairs = []
    for sa, sb in matched:
        m = mcnemar_exact(answers_a[sa], answers_b[sb])
        pairs.append({"seed_a": sa, "seed_b": sb, "b": m.b, "c": m.c, "p_value": m.p_value})
    diff = float(np.mean([v.mean() for v in answers_b.values()]) - np.mean([v.mean() for v in answers_a.values()]))
    return {"a": a.label, "b": b.label, "corruption": name, "diff": diff,
            "pairs": pairs, "p_value": max(p["p_value"] for p in pairs) if pairs else None, "p_adjusted": None,
            "consistent": bool(pairs) and all(np.sign(p["c"] - p["b"]) == np.sign(diff) != 0 for p in pairs),
            "seed_level": {"n_seeds": level.n_seeds, "effect": level.effect, "ci_low": level.ci_low,
                           "ci_high": level.ci_high, "p": level.p, "p_adjusted": None, "test": level.test,
                           "reason": level.reason}}


def _verdict(t: dict[str, Any]) -> str:
    """A few words for the table cell: better/worse only from the seed level."""
    s = t["seed_level"]
    if s["p"] is None:
        n = s["n_seeds"]
        return f"no verdict ({n} seed pair{'' if n == 1 else 's'}; {MIN_SEED_PAIRS} needed)"
    if not s["significant"]:
        return f"not shown to differ ({format_p(s['p_adjusted'])})"
    return f"{t['b']} {'more' if s['effect'] > 0 else 'less'} robust ({format_p(s['p_adjusted'])})"
