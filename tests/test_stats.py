import math

import numpy as np
import pytest

from fashionlab.stats import (
    McNemarResult,
    bootstrap_ci,
    format_p,
    mcnemar_exact,
    mean_sd,
    paired_bootstrap_diff,
    verdict,
)


def pair(b: int, c: int, both_right: int = 5, both_wrong: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Correctness vectors with b (A right, B wrong) and c (A wrong, B right) discordant images."""
    a = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    o = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return np.array(a), np.array(o)


def test_mcnemar_known_value():
    result = mcnemar_exact(*pair(10, 2))
    assert result == McNemarResult(b=10, c=2, p_value=pytest.approx(2 * (1 + 12 + 66) / 4096))
    assert result.p_value == pytest.approx(0.0385742, abs=1e-6)


def test_mcnemar_matches_binomial_tail():
    b, c = 3, 17
    tail = sum(math.comb(b + c, i) for i in range(b + 1)) / 2 ** (b + c)
    assert mcnemar_exact(*pair(b, c)).p_value == pytest.approx(2 * tail, rel=1e-12)


@pytest.mark.parametrize("b", [0, 1, 7, 250])
def test_mcnemar_equal_counts_is_one(b):
    assert mcnemar_exact(*pair(b, b)).p_value == 1.0


def test_mcnemar_symmetric():
    a, o = pair(9, 31)
    ab, ba = mcnemar_exact(a, o), mcnemar_exact(o, a)
    assert (ab.b, ab.c) == (ba.c, ba.b) == (9, 31)
    assert ab.p_value == ba.p_value


def test_mcnemar_large_counts_finite():
    p = mcnemar_exact(*pair(3000, 2900)).p_value
    assert math.isfinite(p) and 0 < p <= 1
    assert 0.1 < p < 0.4  # normal approximation: z = 100 / sqrt(5900) = 1.30, p = 0.19
    assert mcnemar_exact(*pair(3000, 100)).p_value == 0.0  # underflows cleanly, no overflow


def test_mcnemar_rejects_bad_input():
    with pytest.raises(ValueError):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ValueError):
        mcnemar_exact(np.ones(3), np.ones(3))


def test_bootstrap_ci_contains_estimate_and_narrows():
    rng = np.random.default_rng(1)
    small, large = rng.random(1000) < 0.9, rng.random(10000) < 0.9
    lo, hi = bootstrap_ci(small)
    assert lo < small.mean() < hi
    lo2, hi2 = bootstrap_ci(large)
    assert lo2 < large.mean() < hi2
    assert hi2 - lo2 < hi - lo
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)  # reproducible


def test_bootstrap_ci_of_several_runs_brackets_mean_accuracy():
    rng = np.random.default_rng(2)
    runs = rng.random((3, 2000)) < [[0.85], [0.88], [0.9]]
    lo, hi = bootstrap_ci(runs, n_boot=500)
    assert lo < runs.mean() < hi


def test_paired_diff_identical_is_zero():
    x = np.random.default_rng(3).random(500) < 0.8
    assert paired_bootstrap_diff(x, x) == (0.0, 0.0, 0.0)


def test_paired_diff_detects_difference():
    a, b = pair(60, 10, both_right=800, both_wrong=130)
    diff, lo, hi = paired_bootstrap_diff(a, b)
    assert diff == pytest.approx(50 / 1000)
    assert 0 < lo < diff < hi
    diff2, lo2, hi2 = paired_bootstrap_diff(b, a)
    assert diff2 == pytest.approx(-diff) and lo2 < diff2 < hi2 < 0


def test_paired_diff_of_seed_means():
    a = np.array([[True, True, False, False], [True, False, False, False]])  # mean acc 0.375
    b = np.array([[True, False, False, False]])  # 0.25
    diff, lo, hi = paired_bootstrap_diff(a, b, n_boot=200)
    assert diff == pytest.approx(0.125)
    assert lo <= diff <= hi


def test_mean_sd():
    assert mean_sd([0.9]) == (0.9, 0.0)
    mean, sd = mean_sd([1.0, 2.0, 3.0])
    assert mean == 2.0 and sd == pytest.approx(1.0)  # sample sd
    with pytest.raises(ValueError):
        mean_sd([])


def test_verdict_strings():
    assert verdict("cnn1", "cnn2", -0.029, 0.0001) == "cnn2 is better than cnn1: +2.9 points, p < 0.001"
    assert verdict("cnn2", "cnn1", 0.029, 0.0001) == "cnn2 is better than cnn1: +2.9 points, p < 0.001"
    assert verdict("X", "Y", 0.004, 0.31) == "no significant difference between X and Y (p = 0.31)"
    assert verdict("X", "Y", 0.01, 0.05) == "no significant difference between X and Y (p = 0.05)"
    assert verdict("X", "Y", 0.01, 0.02, alpha=0.01).startswith("no significant difference")
    assert format_p(0.0385742) == "p = 0.0386"
