"""Can the model's probabilities be trusted? Calibration metrics and temperature scaling, pure functions on logits.

Every function takes logits (N x C, a NumPy array or a torch tensor on any device) and integer labels (N) and
works in float64. Probabilities are the softmax of the logits; the prediction is the arg-max (the first on ties);
the confidence is the top-label probability.

- `nll`: mean negative log-likelihood of the true class (natural log), the loss the models were trained on.
- `brier`: the multi-class Brier score (Brier 1950): mean over items of sum_k (p_k - [y = k])^2, in [0, 2].
- `ece`: the top-label expected calibration error (Naeini et al. 2015, "Obtaining Well Calibrated Probabilities
  Using Bayesian Binning", AAAI; in the form used by Guo et al. 2017): the confidences are put in `n_bins`
  equal-width bins over [0, 1] and ECE = sum_b (n_b / N) |accuracy_b - mean confidence_b|.
  Bin convention: bin b holds edges[b] <= confidence < edges[b + 1] with edges = linspace(0, 1, n_bins + 1), so a
  confidence exactly on an inner edge goes to the upper bin, and 1.0 goes to the last bin. (The reference code of
  Guo et al., github.com/gpleiss/temperature_scaling, uses edges[b] < confidence <= edges[b + 1]; the two differ
  only for confidences exactly on an edge.)
- `reliability_bins`: the same bins, for a reliability diagram.
- `ece_ci`, `mean_ece_ci`: percentile bootstrap CIs of the ECE (of one run, of the mean of several) over test
  images.
- `fit_temperature`: temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks", ICML):
  one scalar T > 0 minimising the NLL of logits / T. It takes validation logits only: fitting T on the test set
  would make the calibrated test metrics optimistic, so no function here fits on what it then scores.
- `calibration_metrics`: the calibration keys of test_metrics.json, JSON-ready.

Only numpy here; scipy is imported inside `fit_temperature`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

N_BINS = 15  # Guo et al. 2017 use 15 bins
T_BOUNDS = (0.05, 20.0)  # the temperature search interval; a minimum at its edge counts as no fit
_CHUNK_ELEMENTS = 1 << 22  # resampled indices per bootstrap chunk: ~32 MB of int64


def nll(logits: Any, labels: Any) -> float:
    """Mean negative log-likelihood of the true class, natural log (= torch's cross_entropy, mean reduction)."""
    return _nll(*_inputs(logits, labels))


def brier(logits: Any, labels: Any) -> float:
    """Multi-class Brier score: mean over items of sum_k (p_k - [y = k])^2; 0 is perfect, 2 the worst."""
    z, y = _inputs(logits, labels)
    p = _softmax(z)
    p[np.arange(len(y)), y] -= 1.0
    return float((p**2).sum(axis=1).mean())


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of the top-label confidence. Empty bins have NaN confidence and accuracy."""

    edges: np.ndarray  # n_bins + 1 bin edges, 0 to 1
    count: np.ndarray  # items per bin (int)
    confidence: np.ndarray  # mean confidence per bin
    accuracy: np.ndarray  # fraction correct per bin

    def as_dict(self) -> dict[str, list]:
        """JSON-ready lists; None for the empty bins' confidence and accuracy."""
        def clean(a: np.ndarray) -> list:
            return [float(v) if math.isfinite(v) else None for v in a]
        return {"edges": clean(self.edges), "count": [int(c) for c in self.count],
                "confidence": clean(self.confidence), "accuracy": clean(self.accuracy)}


def reliability_bins(logits: Any, labels: Any, n_bins: int = N_BINS) -> ReliabilityBins:
    """Count, mean confidence and accuracy per equal-width confidence bin (the module docstring's convention)."""
    z, y = _inputs(logits, labels)
    conf, correct = _confidence_correct(z, y)
    edges = np.linspace(0.0, 1.0, _check_bins(n_bins) + 1)
    b = _bin_index(conf, edges)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins: 0 / 0 = NaN, as documented
        confidence = np.bincount(b, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(b, weights=correct, minlength=n_bins) / count
    return ReliabilityBins(edges, count, confidence, accuracy)


def ece(logits: Any, labels: Any, n_bins: int = N_BINS) -> float:
    """Top-label expected calibration error: sum over bins of (n_b / N) |accuracy_b - confidence_b|."""
    z, y = _inputs(logits, labels)
    conf, correct = _confidence_correct(z, y)
    b = _bin_index(conf, np.linspace(0.0, 1.0, _check_bins(n_bins) + 1))
    # n_b |acc_b - conf_b| = |sum over the bin of (correct - confidence)|
    return float(np.abs(np.bincount(b, weights=correct - conf, minlength=n_bins)).sum() / len(y))


def ece_ci(logits: Any, labels: Any, n_bins: int = N_BINS, n_boot: int = 2000, alpha: float = 0.05,
           seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) CI of the ECE, resampling test images with replacement.

    For calibrated logits pass logits / T. The ECE is biased upwards on finite samples (|.| of a noisy gap), and so
    are its resamples: for a well-calibrated model the interval can lie above the point estimate.
    """
    return mean_ece_ci([logits], labels, n_bins, n_boot, alpha, seed)


def mean_ece_ci(logits_per_run: Sequence[Any], labels: Any, n_bins: int = N_BINS, n_boot: int = 2000,
                alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean ECE of several runs (seeds) on one test set: each resample draws test
    images with replacement and scores every run on the same images, as the report's accuracy CI does."""
    if not logits_per_run:
        raise ValueError("no runs")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    edges = np.linspace(0.0, 1.0, _check_bins(n_bins) + 1)
    bins, gaps = [], []
    for logits in logits_per_run:
        z, y = _inputs(logits, labels)
        conf, correct = _confidence_correct(z, y)
        bins.append(_bin_index(conf, edges))
        gaps.append(correct - conf)
    n = len(y)
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // n)
    samples = np.zeros(n_boot)
    for start in range(0, n_boot, rows):
        k = min(n_boot, start + rows) - start
        idx = rng.integers(0, n, size=(k, n))
        for b, gap in zip(bins, gaps):
            # per resample and bin, the sum of (correct - confidence): one bincount over (row, bin) pairs
            cell = b[idx] + n_bins * np.arange(k)[:, None]
            sums = np.bincount(cell.ravel(), weights=gap[idx].ravel(), minlength=k * n_bins).reshape(k, n_bins)
            samples[start:start + k] += np.abs(sums).sum(axis=1) / n
    lo, hi = np.quantile(samples / len(bins), [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class TemperatureFit:
    """One temperature fitted on validation logits. When not converged, temperature is 1.0 and reason says why."""

    temperature: float
    converged: bool
    reason: str  # "" when converged
    nll_before: float | None  # validation NLL at T = 1 (None when it cannot be computed: empty or non-finite)
    nll_after: float | None  # validation NLL at the returned temperature


def fit_temperature(val_logits: Any, val_labels: Any) -> TemperatureFit:
    """Temperature scaling (Guo et al. 2017): the T > 0 minimising the validation NLL of val_logits / T.

    Pass validation logits only, never test logits. The NLL is convex in beta = 1/T (a log-sum-exp minus a linear
    term), hence unimodal in log T: the slope in beta at the two ends of T in [0.05, 20] tells whether the minimum
    lies inside, and a bounded Brent search over log T then finds it. Degenerate data (no items, fewer than two
    classes, one class among the labels, non-finite logits), no minimum inside the interval (e.g. every validation
    item right, so the NLL keeps falling as T -> 0, or logits that do not depend on the class) or a search that
    does not converge give T = 1.0, converged=False and the reason. Wrong shapes or labels raise ValueError.
    """
    z, y = _inputs(val_logits, val_labels, allow_empty=True, allow_nonfinite=True)

    def failed(reason: str) -> TemperatureFit:
        before = nll(z, y) if len(y) and np.isfinite(z).all() else None
        return TemperatureFit(1.0, False, reason, before, before)

    if len(y) == 0:
        return failed("empty validation set")
    if not np.isfinite(z).all():
        return failed("non-finite validation logits")
    if z.shape[1] < 2:
        return failed("fewer than two classes")
    if len(np.unique(y)) < 2:
        return failed("the validation labels hold one class only")

    # d NLL / d beta at beta = 1/T: the minimum lies inside the interval iff NLL falls at T_max and rises at T_min
    t_min, t_max = T_BOUNDS
    falls_to_t_min, falls_to_t_max = _nll_slope(z / t_min, z, y) <= 0, _nll_slope(z / t_max, z, y) >= 0
    if falls_to_t_min and falls_to_t_max:  # convex with both end slopes 0: flat
        return failed("the validation NLL does not change with T; kept T=1")
    if falls_to_t_min or falls_to_t_max:
        edge = t_min if falls_to_t_min else t_max
        return failed(f"the validation NLL has no minimum for T in [{t_min:g}, {t_max:g}]: it is lowest at "
                      f"T={edge:g}; kept T=1")

    from scipy.optimize import minimize_scalar

    def objective(log_t: float) -> float:
        return _nll(z * math.exp(-log_t), y)

    res = minimize_scalar(objective, bounds=(math.log(t_min), math.log(t_max)), method="bounded",
                          options={"xatol": 1e-6})
    if not res.success or not math.isfinite(res.fun):
        return failed(f"the temperature fit did not converge ({res.message}); kept T=1")
    return TemperatureFit(float(math.exp(res.x)), True, "", nll(z, y), float(res.fun))


def calibration_metrics(test_logits: Any, test_labels: Any, val_logits: Any = None,
                        val_labels: Any = None, n_bins: int = N_BINS) -> dict[str, float | str | None]:
    """The calibration keys of test_metrics.json: plain floats, strings or None, finite (json allow_nan=False).

    nll, brier, ece: on the test logits (None when they are not all finite, e.g. a diverged model).
    temperature: fitted on the validation logits (never on test); None with temperature_reason "no validation
    split" when val_logits is None; 1.0 with the reason when the fit fails. temperature_reason is None when fitted.
    ece_calibrated, nll_calibrated: the test ECE and NLL of test_logits / temperature (None when temperature is).
    """
    if (val_logits is None) != (val_labels is None):
        raise ValueError("give both val_logits and val_labels, or neither")
    z, y = _inputs(test_logits, test_labels, allow_nonfinite=True)
    finite = bool(np.isfinite(z).all())
    out: dict[str, float | str | None] = {
        "nll": nll(z, y) if finite else None,
        "brier": brier(z, y) if finite else None,
        "ece": ece(z, y, n_bins) if finite else None,
        "temperature": None, "ece_calibrated": None, "nll_calibrated": None,
        "temperature_reason": "no validation split",
    }
    if val_logits is not None:
        fit = fit_temperature(val_logits, val_labels)
        out["temperature"] = fit.temperature
        out["temperature_reason"] = None if fit.converged else fit.reason
        if finite:
            out["ece_calibrated"] = ece(z / fit.temperature, y, n_bins)
            out["nll_calibrated"] = nll(z / fit.temperature, y)
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in out.items()}


def _inputs(logits: Any, labels: Any, allow_empty: bool = False,
            allow_nonfinite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """float64 logits (N x C) and int64 labels (N), checked; torch tensors are moved to the CPU."""
    z = np.asarray(_numpy(logits), dtype=np.float64)
    y = np.asarray(_numpy(labels))
    if z.ndim != 2 or y.ndim != 1 or len(z) != len(y):
        raise ValueError(f"need logits N x C and labels N, got {z.shape} and {y.shape}")
    if len(y) == 0 and not allow_empty:
        raise ValueError("no items")
    if len(y) and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError("labels must be integers")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"labels must lie in [0, {z.shape[1]}), got {y.min()}..{y.max()}")
    if not allow_nonfinite and not np.isfinite(z).all():
        raise ValueError("non-finite logits")
    return z, y


def _numpy(x: Any) -> Any:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x  # a torch tensor, without importing torch


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    s = z - z.max(axis=1, keepdims=True)  # log-softmax, shifted so exp cannot overflow
    return float((np.log(np.exp(s).sum(axis=1)) - s[np.arange(len(y)), y]).mean())


def _nll_slope(scaled: np.ndarray, z: np.ndarray, y: np.ndarray) -> float:
    """d/d beta of the mean NLL of beta * z, at the beta giving `scaled`: mean of E_p[z] - z_y, p = softmax(scaled)."""
    return float(((_softmax(scaled) * z).sum(axis=1) - z[np.arange(len(y)), y]).mean())


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _confidence_correct(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-label probability (1 / sum exp(z - max z), exact for ties such as [0, 0] -> 0.5) and correctness."""
    conf = 1.0 / np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)
    return conf, (z.argmax(axis=1) == y).astype(np.float64)


def _bin_index(conf: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """edges[b] <= conf < edges[b + 1]; 1.0 in the last bin."""
    return np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, len(edges) - 2)


def _check_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


__all__ = [
    "N_BINS", "T_BOUNDS", "ReliabilityBins", "TemperatureFit", "brier", "calibration_metrics", "ece", "ece_ci",
    "fit_temperature", "mean_ece_ci", "nll", "reliability_bins",
]
