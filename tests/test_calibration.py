"""Calibration metrics and temperature scaling, each checked against an oracle that is not the function itself:
torch's cross_entropy, scikit-learn's binary Brier score, hand-computed bins, and synthetic data whose calibration
is known by construction (labels drawn from the model's own probabilities)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import brier_score_loss

from fashionlab.calibration import (
    N_BINS,
    brier,
    calibration_metrics,
    ece,
    ece_ci,
    fit_temperature,
    nll,
    reliability_bins,
)

KEYS = {"nll", "brier", "ece", "temperature", "ece_calibrated", "nll_calibrated", "temperature_reason"}


def calibrated_sample(n: int, seed: int, classes: int = 10, scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): perfectly calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * scale
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    labels = (rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1)  # inverse-CDF draw of one class per row
    return logits.astype(np.float32), np.minimum(labels, classes - 1)


def two_class(confidences: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose top-label confidence is each given value (predicted class 0), labels right or wrong."""
    c = np.asarray(confidences, dtype=np.float64)
    logits = np.log(np.stack([c, 1 - c], axis=1))
    return logits, np.where(correct, 0, 1)


def test_nll_matches_torch_cross_entropy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(500, 10)) * 4
    labels = rng.integers(0, 10, 500)
    expected = F.cross_entropy(torch.tensor(logits), torch.tensor(labels)).item()
    assert nll(logits, labels) == pytest.approx(expected, rel=1e-12)
    assert nll(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels)) == pytest.approx(expected, rel=1e-5)


def test_nll_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 0.0]])
    assert nll(logits, np.array([0, 0])) == pytest.approx(1e4 / 2)


def test_brier_matches_sklearn_one_vs_rest_sum():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(300, 4)) * 3
    labels = rng.integers(0, 4, 300)
    p = torch.softmax(torch.tensor(logits), dim=1).numpy()
    expected = sum(brier_score_loss(labels == k, p[:, k]) for k in range(4))
    assert brier(logits, labels) == pytest.approx(expected, rel=1e-12)


def test_brier_by_hand():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]]))
    # label 0: 0.3^2 + 0.2^2 + 0.1^2 = 0.14; label 2: 0.7^2 + 0.2^2 + 0.9^2 = 1.34
    assert brier(logits, np.array([0, 2])) == pytest.approx((0.14 + 1.34) / 2)


def test_ece_and_bins_by_hand():
    # 15 bins of width 1/15: 0.95 -> bin 14 (14.25), 0.55 -> bin 8 (8.25).
    # bin 14: one right, one wrong: |0.5 - 0.95| = 0.45; bin 8: one right, one wrong: |0.5 - 0.55| = 0.05
    logits, labels = two_class([0.95, 0.95, 0.55, 0.55], [True, False, True, False])
    assert ece(logits, labels) == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)
    bins = reliability_bins(logits, labels)
    assert len(bins.edges) == N_BINS + 1 and bins.edges[0] == 0 and bins.edges[-1] == 1
    assert bins.count.tolist() == [0] * 8 + [2] + [0] * 5 + [2]
    assert bins.confidence[8] == pytest.approx(0.55) and bins.confidence[14] == pytest.approx(0.95)
    assert bins.accuracy[8] == 0.5 and bins.accuracy[14] == 0.5
    assert np.isnan(bins.confidence[0]) and np.isnan(bins.accuracy[0])
    d = bins.as_dict()
    json.dumps(d, allow_nan=False)
    assert d["confidence"][0] is None and d["count"][14] == 2

    # all right: bin 14 gap 0.05, bin 8 gap 0.45
    logits, labels = two_class([0.95, 0.95, 0.55, 0.55], [True, True, True, True])
    assert ece(logits, labels) == pytest.approx(0.5 * 0.05 + 0.5 * 0.45)


def test_bin_edges_go_up_and_one_goes_last():
    # [0, 0]: confidence exactly 0.5, an edge with 4 bins -> bin 2 ([0.5, 0.75)), not bin 1.
    # [0, -1000]: confidence exactly 1.0 -> the last bin.
    logits = np.array([[0.0, 0.0], [0.0, -1000.0]])
    bins = reliability_bins(logits, np.array([0, 0]), n_bins=4)
    assert bins.count.tolist() == [0, 0, 1, 1]
    assert bins.confidence[2] == 0.5 and bins.confidence[3] == 1.0
    assert ece(logits, np.array([0, 0]), n_bins=4) == pytest.approx(0.5 * 0.5)


def test_ece_equals_weighted_bin_gaps():
    logits, labels = calibrated_sample(2000, seed=3, scale=4)
    bins = reliability_bins(logits, labels)
    full = bins.count > 0
    weighted = (bins.count[full] / 2000 * np.abs(bins.accuracy[full] - bins.confidence[full])).sum()
    assert ece(logits, labels) == pytest.approx(weighted)


def test_perfectly_calibrated_data():
    logits, labels = calibrated_sample(50_000, seed=4)
    assert ece(logits, labels) < 0.01
    val_logits, val_labels = calibrated_sample(50_000, seed=5)
    fit = fit_temperature(val_logits, val_labels)
    assert fit.converged and fit.reason == ""
    assert fit.temperature == pytest.approx(1.0, abs=0.03)


def test_overconfident_logits_fit_temperature_near_three():
    val_logits, val_labels = calibrated_sample(50_000, seed=6)
    test_logits, test_labels = calibrated_sample(20_000, seed=7)
    fit = fit_temperature(val_logits * 3, val_labels)
    assert fit.converged
    assert fit.temperature == pytest.approx(3.0, rel=0.05)
    assert fit.nll_after < fit.nll_before

    m = calibration_metrics(test_logits * 3, test_labels, val_logits * 3, val_labels)
    assert m["temperature"] == fit.temperature and m["temperature_reason"] is None
    assert m["ece_calibrated"] < m["ece"] / 3
    assert m["nll_calibrated"] < m["nll"]
    assert m["ece"] == pytest.approx(ece(test_logits * 3, test_labels))
    assert m["ece_calibrated"] == pytest.approx(ece(test_logits * 3 / fit.temperature, test_labels))


@pytest.mark.parametrize("scale", [0.4, 1.0, 3.0])
def test_fitted_temperature_minimises_validation_nll(scale):
    val_logits, val_labels = calibrated_sample(5000, seed=8)
    z = val_logits * scale
    fit = fit_temperature(z, val_labels)
    assert fit.converged
    at_t = nll(z / fit.temperature, val_labels)
    assert at_t == pytest.approx(fit.nll_after)
    assert at_t <= nll(z, val_labels) == pytest.approx(fit.nll_before)
    for factor in (0.95, 1.05, 0.99, 1.01):
        assert at_t <= nll(z / (fit.temperature * factor), val_labels)


@pytest.mark.parametrize("logits, labels, says", [
    (np.zeros((0, 10)), np.zeros(0, dtype=int), "empty"),
    (np.random.default_rng(0).normal(size=(50, 10)), np.full(50, 3), "one class"),
    (np.array([[0.0, np.nan], [1.0, 0.0]]), np.array([0, 1]), "non-finite"),
    (np.array([[0.0, np.inf], [1.0, 0.0]]), np.array([0, 1]), "non-finite"),
    (np.zeros((4, 1)), np.zeros(4, dtype=int), "fewer than two classes"),
    # every item right: the NLL keeps falling as T -> 0, no interior minimum
    (np.array([[2.0, 0.0], [0.0, 2.0], [3.0, 1.0]]), np.array([0, 1, 0]), "lowest at T=0.05"),
    # every item wrong with growing margins: the NLL falls as T grows
    (np.array([[0.0, 2.0], [2.0, 0.0], [0.0, 3.0]]), np.array([0, 1, 0]), "lowest at T=20"),
    # logits equal across classes: the NLL is log 2 at every T
    (np.ones((4, 2)), np.array([0, 1, 0, 1]), "does not change"),
])
def test_degenerate_validation_keeps_t_one(logits, labels, says):
    fit = fit_temperature(logits, labels)
    assert fit.temperature == 1.0 and not fit.converged and says in fit.reason
    test_logits, test_labels = calibrated_sample(200, seed=9)
    m = calibration_metrics(test_logits, test_labels, logits, labels)
    assert m["temperature"] == 1.0 and m["temperature_reason"] == fit.reason
    assert m["ece_calibrated"] == m["ece"] and m["nll_calibrated"] == m["nll"]
    json.dumps(m, allow_nan=False)


def test_no_validation_split_records_null_temperature():
    logits, labels = calibrated_sample(300, seed=10)
    m = calibration_metrics(logits, labels)
    assert set(m) == KEYS
    assert m["temperature"] is None and m["ece_calibrated"] is None and m["nll_calibrated"] is None
    assert m["temperature_reason"] == "no validation split"
    assert m["nll"] == pytest.approx(nll(logits, labels)) and m["brier"] == pytest.approx(brier(logits, labels))
    json.dumps(m, allow_nan=False)


def test_metrics_are_json_ready_plain_values():
    val_logits, val_labels = calibrated_sample(2000, seed=11)
    test_logits, test_labels = calibrated_sample(1000, seed=12)
    m = calibration_metrics(torch.tensor(test_logits * 2), torch.tensor(test_labels), val_logits * 2, val_labels)
    assert set(m) == KEYS
    text = json.dumps(m, allow_nan=False)
    assert json.loads(text) == m
    for k in KEYS - {"temperature_reason"}:
        assert type(m[k]) is float and math.isfinite(m[k])


def test_non_finite_test_logits_give_null_metrics():
    logits, labels = calibrated_sample(100, seed=13)
    logits[5, 2] = np.nan
    val_logits, val_labels = calibrated_sample(1000, seed=14)
    m = calibration_metrics(logits, labels, val_logits, val_labels)
    assert m["nll"] is None and m["brier"] is None and m["ece"] is None
    assert m["ece_calibrated"] is None and m["nll_calibrated"] is None
    assert m["temperature"] is not None and m["temperature_reason"] is None
    json.dumps(m, allow_nan=False)


def test_ece_ci_constant_items_collapse_to_the_point():
    # every resample of identical items has the same ECE: |1 - 0.95| = 0.05
    logits, labels = two_class([0.95] * 50, [True] * 50)
    lo, hi = ece_ci(logits, labels, n_boot=200)
    assert lo == pytest.approx(0.05) and hi == pytest.approx(0.05)


def test_ece_ci_brackets_a_clear_miscalibration_and_is_reproducible():
    logits, labels = calibrated_sample(3000, seed=15)
    point = ece(logits * 3, labels)
    lo, hi = ece_ci(logits * 3, labels, n_boot=500, seed=1)
    assert 0 <= lo < point < hi <= 1
    assert (lo, hi) == ece_ci(logits * 3, labels, n_boot=500, seed=1)
    small_lo, small_hi = ece_ci(logits[:300] * 3, labels[:300], n_boot=500, seed=1)
    assert small_hi - small_lo > hi - lo  # ten times fewer images, a wider interval


def test_ece_ci_chunks_match_one_chunk(monkeypatch):
    import fashionlab.calibration as cal

    logits, labels = calibrated_sample(400, seed=16)
    whole = ece_ci(logits, labels, n_boot=300, seed=2)
    monkeypatch.setattr(cal, "_CHUNK_ELEMENTS", 400 * 7)  # 7 resamples per chunk
    assert ece_ci(logits, labels, n_boot=300, seed=2) == pytest.approx(whole)


@pytest.mark.parametrize("logits, labels", [
    (np.zeros((3, 4)), np.zeros(2, dtype=int)),  # lengths differ
    (np.zeros(4), np.zeros(4, dtype=int)),  # logits not 2-D
    (np.zeros((3, 4)), np.array([0, 1, 4])),  # label out of range
    (np.zeros((3, 4)), np.array([0, -1, 2])),
    (np.zeros((3, 4)), np.array([0.5, 1, 2])),  # not integers
])
def test_bad_shapes_or_labels_raise(logits, labels):
    for f in (nll, brier, ece, fit_temperature, calibration_metrics):
        with pytest.raises(ValueError):
            f(logits, labels)


def test_metric_functions_reject_empty_or_non_finite():
    with pytest.raises(ValueError, match="no items"):
        ece(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="non-finite"):
        nll(np.array([[np.nan, 0.0]]), np.array([0]))
    with pytest.raises(ValueError, match="n_bins"):
        ece(np.zeros((2, 3)), np.array([0, 1]), n_bins=0)
    with pytest.raises(ValueError, match="both"):
        calibration_metrics(np.zeros((2, 3)), np.array([0, 1]), val_logits=np.zeros((2, 3)))
