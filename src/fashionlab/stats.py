"""Statistics for comparing classifiers on one test set, at two levels.

Per image (do these trained models differ on this test set?): McNemar's exact test and bootstrap CIs, pure
functions on per-image correctness vectors (bool, one entry per test image, test-set order). Bootstrap functions
also accept a 2-D array [n_runs, n_images] (several seeds of one model): the statistic is then the mean over runs,
and every bootstrap sample resamples the same test images for all runs.

Per seed (does this training choice differ?): seed_level pairs runs by seed number and weighs the difference
against the seed-to-seed spread: a hierarchical bootstrap CI, a paired t-test (or exact sign-flip) p, and the
smallest effect the seeds could detect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_CHUNK_ELEMENTS = 1 << 22  # indices per resampling chunk: ~32 MB of int64


@dataclass(frozen=True)
class McNemarResult:
    b: int  # A right, B wrong
    c: int  # A wrong, B right
    p_value: float  # two-sided exact


def _binomial_lower_tail_half(n: int, k: int) -> float:
    """P(X <= k) for X ~ Bin(n, 1/2), exact: integer sum of binomial coefficients over 2**n."""
    total, term = 0, 1  # term = comb(n, i), updated in place
    for i in range(k + 1):
        total += term
        term = term * (n - i) // (i + 1)
    return total / (1 << n)  # int / int is correctly rounded, underflows to 0.0, never overflows


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """McNemar's exact test on paired correctness: p = min(1, 2 P(X <= min(b, c))), X ~ Bin(b+c, 1/2)."""
    a, b_ = _as_bool(correct_a), _as_bool(correct_b)
    if a.shape != b_.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D vectors of the same length, got {a.shape} and {b_.shape}")
    b = int(np.count_nonzero(a & ~b_))
    c = int(np.count_nonzero(~a & b_))
    if b + c == 0:
        return McNemarResult(b, c, 1.0)
    p = min(1.0, 2.0 * _binomial_lower_tail_half(b + c, min(b, c)))
    return McNemarResult(b, c, p)


def bootstrap_ci(
    correct: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) CI of the accuracy (mean over runs if 2-D)."""
    values = _per_image(correct)
    return _percentiles(_resampled_means(values, n_boot, seed), alpha)


def paired_bootstrap_diff(
    correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Accuracy difference A - B and its percentile bootstrap CI, resampling the same test images.

    2-D inputs [n_runs, n_images] give the difference of mean accuracies over runs (the run counts
    of A and B may differ).
    """
    a, b = _per_image(correct_a), _per_image(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"A and B cover different numbers of test images: {a.size} vs {b.size}")
    d = a - b
    if not d.any():
        return 0.0, 0.0, 0.0
    lo, hi = _percentiles(_resampled_means(d, n_boot, seed), alpha)
    return float(d.mean()), lo, hi


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone), in the input order.

    Rejecting where adjusted p < alpha controls the family-wise error rate at alpha over all the tests.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def holm_both_levels(tests: list[dict[str, Any]], alpha: float) -> tuple[int, int]:
    """Holm over a family of pair records (the report's: per-image "p_value", "consistent" and a "seed_level" with
    "p"), each level apart: sets "p_adjusted" at both levels, seed_level["significant"] and "models_differ".
    Returns how many tests each level had (per image, seed level)."""
    images = [t for t in tests if t["p_value"] is not None]
    for t, p_adj in zip(images, holm([t["p_value"] for t in images])):
        t["p_adjusted"] = p_adj
    seeds = [t["seed_level"] for t in tests if t["seed_level"]["p"] is not None]
    for s, p_adj in zip(seeds, holm([s["p"] for s in seeds])):
        s["p_adjusted"] = p_adj
    for t in tests:
        s = t["seed_level"]
        s["significant"] = s["p_adjusted"] is not None and s["p_adjusted"] < alpha
        t["models_differ"] = t["p_adjusted"] is not None and t["p_adjusted"] < alpha and t["consistent"]
    return len(images), len(seeds)


# ---------------------------------------------------------------- seed level: does the training choice differ?

MIN_SEED_PAIRS = 3  # below this a t-test has 1 degree of freedom and a sign-flip p cannot go under 0.5


@dataclass(frozen=True)
class SeedLevel:
    """B against A as training choices: runs paired by seed number, every figure in accuracy points of B - A."""

    seeds: tuple[int, ...]  # the seed numbers both have, sorted
    unpaired_a: tuple[int, ...]  # seeds of A without a run of the same seed in B (and the other way round)
    unpaired_b: tuple[int, ...]
    differences: tuple[float, ...]  # per seed pair: accuracy of B - accuracy of A
    effect: float | None  # their mean; None without a pair
    ci_low: float | None  # hierarchical bootstrap (1 - alpha) CI of the effect; None below MIN_SEED_PAIRS
    ci_high: float | None
    p: float | None  # two-sided; None below MIN_SEED_PAIRS
    test: str  # how p was found
    sd: float | None  # sd of the differences
    mde: float | None  # smallest |effect| these seeds detect with power 0.8 at alpha; None where sd says nothing
    reason: str  # why a figure is missing or p is not a t-test's; "" otherwise

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)


def seed_level(
    correct_a: Mapping[int, np.ndarray], correct_b: Mapping[int, np.ndarray], n_boot: int = 2000,
    alpha: float = 0.05, seed: int = 0,
) -> SeedLevel:
    """Does training choice B differ from A? Per-image correctness by seed number, for each arm.

    Runs pair by seed number only; seeds of one arm missing in the other are returned as unpaired and left out.
    Effect: mean over the pairs of acc(B) - acc(A); CI: hierarchical bootstrap over seed pairs and test images;
    p: paired t-test over the seed pairs (seed_p). Fewer than MIN_SEED_PAIRS pairs: effect only, with a reason.
    """
    seeds = sorted(set(correct_a) & set(correct_b))
    unpaired_a = tuple(sorted(set(correct_a) - set(seeds)))
    unpaired_b = tuple(sorted(set(correct_b) - set(seeds)))
    if not seeds:
        return SeedLevel((), unpaired_a, unpaired_b, (), None, None, None, None, "none", None, None,
                         f"no seed number is in both groups; at least {MIN_SEED_PAIRS} seed pairs are needed")
    a = np.stack([_as_bool(correct_a[s]) for s in seeds])
    b = np.stack([_as_bool(correct_b[s]) for s in seeds])
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"every run needs one correctness entry per test image, got {a.shape} and {b.shape}")
    # From integer counts, so that equal differences are equal floats and sd 0 is exact.
    counts = b.sum(axis=1, dtype=np.int64) - a.sum(axis=1, dtype=np.int64)
    d = 100 * counts / a.shape[1]
    n, effect = len(seeds), float(d.mean())
    if n < MIN_SEED_PAIRS:
        return SeedLevel(tuple(seeds), unpaired_a, unpaired_b, tuple(map(float, d)), effect, None, None, None,
                         "none", float(d.std(ddof=1)) if n > 1 else None, None,
                         f"only {n} seed pair{'s' if n > 1 else ''}; at least {MIN_SEED_PAIRS} are needed to "
                         "weigh the difference against the seed-to-seed spread")
    lo, hi = hierarchical_bootstrap_ci(b.astype(np.float64) - a, n_boot, alpha, seed)
    p, test, reason = seed_p(d)
    sd = float(d.std(ddof=1))
    mde = min_detectable_effect(sd, n, alpha) if sd > 0 else None
    return SeedLevel(tuple(seeds), unpaired_a, unpaired_b, tuple(map(float, d)), effect, 100 * lo, 100 * hi, p,
                     test, sd, mde, reason)


def seed_p(differences: Sequence[float] | np.ndarray) -> tuple[float, str, str]:
    """Two-sided p that per-seed differences have mean 0: (p, test, reason).

    A paired t-test (the same as scipy.stats.ttest_rel on the two arms). With every difference equal the t
    statistic is undefined (sd 0), and a tiny float sd would give p ~ 0 by accident, so that case is caught
    first: all zero gives p = 1; all equal and non-zero, the exact sign-flip permutation test, p = 2 / 2**n (of
    the 2**n sign patterns only the observed one and its mirror have a mean as far from 0).
    """
    from scipy.stats import t as student_t

    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"seed_p needs at least 2 differences, got shape {d.shape}")
    n = d.size
    if np.all(d == d[0]):
        if d[0] == 0:
            return 1.0, "none", f"all {n} seed differences are 0"
        return (min(1.0, 2.0 / 2**n), "exact sign-flip test",
                f"all {n} seed differences are equal, so the t-test is undefined")
    t = d.mean() / (d.std(ddof=1) / np.sqrt(n))
    return float(min(1.0, 2 * student_t.sf(abs(t), n - 1))), "paired t-test", ""


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true mean difference that a two-sided paired t-test over n pairs, whose differences have this
    sd, detects with the given power: solves P(|T| > t_crit) = power for T ~ noncentral t(n - 1, delta sqrt(n) / sd).
    """
    from scipy.optimize import brentq
    from scipy.stats import nct
    from scipy.stats import t as student_t

    if n < 2 or sd < 0:
        raise ValueError(f"need n >= 2 pairs and sd >= 0, got n={n}, sd={sd}")
    df = n - 1
    crit = student_t.ppf(1 - alpha / 2, df)

    def shortfall(nc: float) -> float:
        return nct.sf(crit, df, nc) + nct.cdf(-crit, df, nc) - power

    hi = 1.0
    while shortfall(hi) < 0:  # power grows with the noncentrality: bracket the root
        hi *= 2
    return float(brentq(shortfall, 0.0, hi, xtol=1e-10) * sd / np.sqrt(n))


def hierarchical_bootstrap_ci(
    differences: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """(1 - alpha) CI of the mean of `differences` [n_pairs, n_images] (one row per seed pair, e.g. correctness
    of B minus correctness of A per test image), covering both seed-to-seed and test-set sampling.

    Each bootstrap sample draws the seed pairs with replacement, then the test images with replacement (the same
    images for every run). Its percentiles would be too narrow with few seeds: resampling n values understates
    their variance by (n - 1) / n, and a percentile interval over 3 seeds never reaches past the seeds' own range.
    So the bootstrap variance is split (law of total variance) into the seed part, whose expectation is
    (n - 1) / n x the t-test's squared standard error, and what the image resampling adds; the interval is
    mean +- t(df) x sqrt(t-test SE^2 + image part), df by Welch-Satterthwaite. With the images held fixed it is
    the paired t-test's interval; with no seed spread, a normal interval over the images. The image part counts
    each seed's own image noise a second time: conservative.
    """
    from scipy.stats import t as student_t

    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] < 2 or d.shape[1] == 0:
        raise ValueError(f"need [n_pairs >= 2, n_images >= 1] differences, got shape {d.shape}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    n_pairs, n_images = d.shape
    means = np.empty(n_boot)
    rows = max(1, _CHUNK_ELEMENTS // n_images)
    for start in range(0, n_boot, rows):
        k = min(n_boot, start + rows) - start
        pair_weights = _counts(rng.integers(0, n_pairs, size=(k, n_pairs)), n_pairs)
        image_weights = _counts(rng.integers(0, n_images, size=(k, n_images)), n_images)
        per_pair = image_weights @ d.T / n_images  # [k, n_pairs]: each pair's mean on the resampled images
        means[start:start + k] = (pair_weights * per_pair).sum(axis=1) / n_pairs
    seed_var = d.mean(axis=1).var(ddof=1) / n_pairs  # the paired t-test's squared standard error
    image_var = max(0.0, means.var(ddof=1) - (n_pairs - 1) / n_pairs * seed_var)
    total = seed_var + image_var
    df = total**2 * (n_pairs - 1) / seed_var**2 if seed_var > 0 else np.inf
    half = float(student_t.ppf(1 - alpha / 2, df) * np.sqrt(total))
    mean = float(d.mean())
    return mean - half, mean + half


def _counts(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each of 0..n-1 occurs in each row of `indices` [k, m], as float64 [k, n]."""
    k = indices.shape[0]
    flat = (indices + n * np.arange(k)[:, None]).ravel()
    return np.bincount(flat, minlength=k * n).reshape(k, n).astype(np.float64)


def mean_sd(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); the sd of a single value is 0."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean_sd of no values")
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else 0.0)


def format_p(p: float) -> str:
    """'p < 0.001' or 'p = 0.0386' (three significant digits)."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def verdict(name_a: str, name_b: str, diff: float, p: float, alpha: float = 0.05) -> str:
    """Plain-language result of comparing A with B; `diff` is accuracy A - B as a fraction."""
    if p >= alpha or diff == 0:
        return f"no significant difference between {name_a} and {name_b} ({format_p(p)})"
    better, worse = (name_a, name_b) if diff > 0 else (name_b, name_a)
    return f"{better} is better than {worse}: +{abs(diff) * 100:.1f} points, {format_p(p)}"


def _as_bool(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.bool_:
        raise ValueError(f"expected a boolean correctness array, got dtype {x.dtype}")
    return x


def _per_image(correct: np.ndarray) -> np.ndarray:
    """Per-image mean correctness over runs as float64 [n_images]."""
    x = _as_bool(correct)
    if x.ndim == 2:
        x = x.mean(axis=0)
    elif x.ndim != 1:
        raise ValueError(f"expected [n_images] or [n_runs, n_images], got shape {x.shape}")
    if x.size == 0:
        raise ValueError("no test images")
    return x.astype(np.float64)


def _resampled_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of n_boot resamples (with replacement) of `values`, drawn as index-matrix chunks."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = values.size
    rows = max(1, _CHUNK_ELEMENTS // n)
    means = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[idx].mean(axis=1)
    return means


def _percentiles(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


__all__ = [
    "MIN_SEED_PAIRS", "McNemarResult", "SeedLevel", "bootstrap_ci", "format_p", "hierarchical_bootstrap_ci", "holm",
    "mcnemar_exact", "mean_sd", "min_detectable_effect", "paired_bootstrap_diff", "seed_level", "seed_p",
    "verdict",
]
