import itertools
import math

import numpy as np
import pytest

from fashionlab.stats import (
    McNemarResult,
    bootstrap_ci,
    format_p,
    hierarchical_bootstrap_ci,
    mcnemar_exact,
    mean_sd,
    min_detectable_effect,
    paired_bootstrap_diff,
    seed_level,
    seed_p,
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


# ---------------------------------------------------------------- against independent implementations (scipy)


@pytest.mark.parametrize("b, c", [(0, 0), (0, 1), (1, 0), (3, 3), (10, 2), (2, 10), (7, 19), (40, 61), (250, 198)])
def test_mcnemar_matches_scipy_binomtest(b, c):
    from scipy.stats import binomtest

    expected = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
    assert mcnemar_exact(*pair(b, c)).p_value == pytest.approx(expected, rel=1e-12)


def test_seed_p_matches_scipy_ttest_rel():
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(4)
    for n in (2, 3, 5, 10):
        for _ in range(20):
            a, b = 0.9 + 0.01 * rng.standard_normal(n), 0.91 + 0.01 * rng.standard_normal(n)
            p, test, reason = seed_p(b - a)
            assert p == pytest.approx(ttest_rel(b, a).pvalue, rel=1e-10)
            assert test == "paired t-test" and reason == ""


def sign_flip_p_by_enumeration(d: np.ndarray) -> float:
    """Two-sided exact sign-flip p: the share of the 2**n sign patterns whose |mean| is at least the observed."""
    signs = np.array(list(itertools.product((1, -1), repeat=len(d))))
    means = np.abs((signs * d).mean(axis=1))
    return float(np.mean(means >= abs(d.mean()) - 1e-12))


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("value", [0.01, -0.0237, 1 / 3])
def test_seed_p_with_equal_differences_is_the_exact_sign_flip_p(n, value):
    from scipy.stats import permutation_test

    d = np.full(n, value)
    p, test, reason = seed_p(d)
    assert p == 2 / 2**n > 0  # never 0 by accident
    assert p == pytest.approx(sign_flip_p_by_enumeration(d))
    scipy_p = permutation_test((d, np.zeros(n)), lambda x, y: np.mean(x - y), permutation_type="samples",
                               n_resamples=np.inf).pvalue
    assert p == pytest.approx(scipy_p)
    assert test == "exact sign-flip test" and "t-test is undefined" in reason


def test_seed_p_all_zero_is_one():
    assert seed_p([0.0, 0.0, 0.0]) == (1.0, "none", "all 3 seed differences are 0")


def test_seed_p_catches_equal_differences_before_float_noise():
    # float sd of three equal 0.1s is ~1.7e-17, not 0: a t statistic from it is huge and p ~ 0 by accident
    d = np.full(3, 0.1)
    assert d.std(ddof=1) > 0  # the trap an `sd == 0` check misses
    assert seed_p(d)[0] == 0.25


def test_min_detectable_effect_has_the_stated_power():
    """Simulate paired t-tests (scipy) at the returned effect: about 80% of them reject at alpha."""
    from scipy.stats import ttest_1samp

    rng = np.random.default_rng(5)
    for n, sd in ((3, 1.05), (5, 0.4), (10, 2.0)):
        mde = min_detectable_effect(sd, n)
        sims = rng.normal(mde, sd, size=(40_000, n))
        power = np.mean(ttest_1samp(sims, 0.0, axis=1).pvalue < 0.05)
        assert power == pytest.approx(0.8, abs=0.01), (n, sd, mde, power)
        smaller = np.mean(ttest_1samp(rng.normal(0.7 * mde, sd, size=(40_000, n)), 0.0, axis=1).pvalue < 0.05)
        assert smaller < 0.7
    assert min_detectable_effect(2.0, 5) == pytest.approx(2 * min_detectable_effect(1.0, 5))  # scales with sd
    assert min_detectable_effect(1.0, 10) < min_detectable_effect(1.0, 5) < min_detectable_effect(1.0, 3)


def test_hierarchical_ci_without_image_noise_is_the_t_interval():
    """Rows constant over the images leave only the seed level: the paired t-test's CI (scipy)."""
    from scipy.stats import ttest_rel

    d = np.array([0.0288, 0.0118, 0.0096, 0.02])  # per-seed differences
    lo, hi = hierarchical_bootstrap_ci(np.repeat(d[:, None], 500, axis=1), n_boot=4000)
    expected = ttest_rel(d, np.zeros(len(d))).confidence_interval()
    assert lo == pytest.approx(expected.low, rel=0.03) and hi == pytest.approx(expected.high, rel=0.03)


def test_hierarchical_ci_without_seed_spread_is_the_image_bootstrap():
    """Identical rows leave only the test images: a normal interval with the images' standard error."""
    rng = np.random.default_rng(6)
    row = rng.choice([-1.0, 0.0, 1.0], p=[0.04, 0.9, 0.06], size=4000)
    lo, hi = hierarchical_bootstrap_ci(np.tile(row, (3, 1)), n_boot=4000)
    half = 1.959964 * row.std() / np.sqrt(row.size)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.06)
    assert (lo + hi) / 2 == pytest.approx(row.mean())


def simulated_arms(n_seeds: int, effect: float, seed_sd: float, n_images: int = 4000, rng_seed: int = 0):
    """Per-seed correctness of A (90% accurate) and B (90% + effect + a seed-to-seed deviation), on shared images
    of varying difficulty."""
    rng = np.random.default_rng(rng_seed)
    easy = rng.random(n_images)
    a, b = {}, {}
    for s in range(n_seeds):
        acc_b = 0.9 + effect + seed_sd * rng.standard_normal()
        a[s] = rng.random(n_images) < 0.9 * (0.9 + 0.2 * easy)
        b[s] = rng.random(n_images) < acc_b * (0.9 + 0.2 * easy)
    return a, b


def test_hierarchical_ci_widens_with_seed_spread_and_contains_the_true_effect():
    narrow = seed_level(*simulated_arms(5, 0.02, 0.002), n_boot=1000)
    wide = seed_level(*simulated_arms(5, 0.02, 0.02), n_boot=1000)
    assert wide.ci_high - wide.ci_low > 2 * (narrow.ci_high - narrow.ci_low)
    assert narrow.ci_low < 2.0 < narrow.ci_high  # the true effect, in points
    assert wide.ci_low < 2.0 < wide.ci_high
    # wider than a bootstrap over the test images alone, which ignores the seeds
    a, b = simulated_arms(5, 0.02, 0.02)
    diff, lo, hi = paired_bootstrap_diff(np.stack(list(b.values())), np.stack(list(a.values())), n_boot=1000)
    assert wide.ci_high - wide.ci_low > 100 * (hi - lo)


def test_hierarchical_ci_covers_with_three_seeds():
    """With 3 seed pairs, the 95% CI holds the true effect in about 95% of simulated studies. A percentile
    bootstrap over 3 seeds never reaches past their min and max, so it could cover at most 1 - 2 / 2**3 = 75%."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(300):
        d = rng.normal(0.01, 0.01, size=3)
        lo, hi = hierarchical_bootstrap_ci(np.repeat(d[:, None], 20, axis=1), n_boot=300, seed=int(rng.integers(99)))
        hits += lo < 0.01 < hi
    assert 0.9 <= hits / 300 <= 0.99


# ---------------------------------------------------------------- seed_level: pairing and the small cases


def arm(accuracies: dict[int, float], n: int = 1000) -> dict[int, np.ndarray]:
    """Correctness vectors with exactly the given accuracies (the first round(acc * n) images right)."""
    return {s: np.arange(n) < round(acc * n) for s, acc in accuracies.items()}


def test_seed_level_pairs_by_seed_number_not_rank():
    from scipy.stats import ttest_rel

    a = arm({0: 0.900, 1: 0.910, 2: 0.905, 5: 0.800})
    b = arm({7: 0.990, 2: 0.915, 0: 0.912, 1: 0.913})
    level = seed_level(a, b, n_boot=200)
    assert level.seeds == (0, 1, 2) and level.unpaired_a == (5,) and level.unpaired_b == (7,)
    acc_a, acc_b = [0.900, 0.910, 0.905], [0.912, 0.913, 0.915]
    assert level.differences == pytest.approx([100 * (y - x) for x, y in zip(acc_a, acc_b)])
    assert level.effect == pytest.approx(100 * (np.mean(acc_b) - np.mean(acc_a)))
    assert level.p == pytest.approx(ttest_rel(acc_b, acc_a).pvalue)
    assert level.sd == pytest.approx(100 * np.std(np.subtract(acc_b, acc_a), ddof=1))
    assert level.ci_low < level.effect < level.ci_high
    assert level.mde == pytest.approx(min_detectable_effect(level.sd, 3))


def test_seed_level_below_three_pairs_gives_no_verdict():
    level = seed_level(arm({0: 0.9, 1: 0.91}), arm({0: 0.95, 1: 0.97, 2: 0.96}))
    assert level.n_seeds == 2 and level.effect == pytest.approx(5.5)
    assert level.p is None and level.ci_low is None and level.mde is None
    assert "at least 3" in level.reason and level.unpaired_b == (2,)
    none = seed_level(arm({0: 0.9}), arm({1: 0.95}))
    assert none.n_seeds == 0 and none.effect is None and none.p is None and "no seed number" in none.reason


def test_seed_level_equal_differences():
    level = seed_level(arm({0: 0.90, 1: 0.91, 2: 0.92}), arm({0: 0.91, 1: 0.92, 2: 0.93}))
    assert level.differences == pytest.approx([1.0, 1.0, 1.0]) and level.sd == 0
    assert level.p == 0.25 and level.test == "exact sign-flip test" and level.mde is None
    same = seed_level(arm({0: 0.9, 1: 0.91, 2: 0.92}), arm({0: 0.9, 1: 0.91, 2: 0.92}))
    assert (same.effect, same.p, same.ci_low, same.ci_high) == (0.0, 1.0, 0.0, 0.0)
