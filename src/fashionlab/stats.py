"""Statistics for comparing classifiers on one test set: McNemar's exact test and bootstrap CIs.

Pure functions on per-image correctness vectors (bool, one entry per test image, test-set order).
Bootstrap functions also accept a 2-D array [n_runs, n_images] (several seeds of one model): the
statistic is then the mean over runs, and every bootstrap sample resamples the same test images for
all runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class PairedT:
    n: int  # seed pairs
    mean_diff: float  # mean of acc_a - acc_b over the pairs
    p_value: float | None  # two-sided; None with fewer than 2 pairs


def paired_t(acc_a: Sequence[float], acc_b: Sequence[float]) -> PairedT:
    """Paired t-test on per-seed accuracies (seed i of A with seed i of B): does the difference exceed the
    seed-to-seed spread? With identical differences (sd 0) the p-value is 0 if they are non-zero, else 1."""
    from scipy.stats import t as student_t

    d = np.asarray(acc_a, dtype=np.float64) - np.asarray(acc_b, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError("paired_t needs two equally long, non-empty lists of accuracies")
    mean = float(d.mean())
    if d.size < 2:
        return PairedT(int(d.size), mean, None)
    sd = float(d.std(ddof=1))
    if sd == 0:
        return PairedT(int(d.size), mean, 0.0 if mean != 0 else 1.0)
    t = mean / (sd / np.sqrt(d.size))
    return PairedT(int(d.size), mean, float(min(1.0, 2 * student_t.sf(abs(t), d.size - 1))))


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
    "McNemarResult", "PairedT", "bootstrap_ci", "format_p", "holm", "mcnemar_exact", "mean_sd",
    "paired_bootstrap_diff", "paired_t", "verdict",
]
