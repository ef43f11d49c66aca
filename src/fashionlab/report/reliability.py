"""Can each model's probabilities be trusted? The report's calibration numbers for one group of runs.

From each run's test logits (test_predictions.npz) and the temperature that evaluation fitted on the run's own
validation split (test_metrics.json): the top-label ECE before and after temperature scaling, each as the mean over
the group's seeds with a bootstrap CI over the test images, and the reliability bins of the seeds pooled, for the
diagram. Nothing is fitted here, and nothing on the test set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fashionlab import calibration


def group_calibration(runs: list, labels: np.ndarray | None, n_boot: int, alpha: float, seed: int) -> dict[str, Any]:
    """summary.json's `calibration` of one model: {"available": False, "reason"} when it cannot be computed."""
    if labels is None:
        return {"available": False, "reason": "the test labels could not be loaded"}
    missing = [str(r.path) for r in runs if r.logits is None]
    if missing:
        return {"available": False, "reason": f"no test_predictions.npz in {', '.join(missing)} (evaluated by an "
                                              "older fashionlab: run `fashionlab evaluate RUN` again)"}
    logits = [r.logits.astype(np.float64) for r in runs]
    if not all(np.isfinite(z).all() for z in logits):
        return {"available": False, "reason": "non-finite test logits (a diverged run)"}
    temperatures = [_temperature(r.metrics) for r in runs]
    out = {"available": True, "n_bins": calibration.N_BINS,
           "before": _side(logits, labels, n_boot, alpha, seed),
           "temperature": temperatures, "after": None,
           "after_reason": ""}
    if all(t is not None for t in temperatures):
        out["after"] = _side([z / t for z, t in zip(logits, temperatures)], labels, n_boot, alpha, seed)
    else:
        reasons = {str(r.metrics.get("temperature_reason") or "no temperature in test_metrics.json")
                   for r, t in zip(runs, temperatures) if t is None}
        out["after_reason"] = "no temperature was fitted: " + "; ".join(sorted(reasons))
    return out


def _temperature(metrics: dict[str, Any]) -> float | None:
    t = metrics.get("temperature")
    ok = not metrics.get("temperature_reason") and isinstance(t, (int, float)) and not isinstance(t, bool)
    return float(t) if ok and 0 < t < float("inf") else None


def _side(logits: list[np.ndarray], labels: np.ndarray, n_boot: int, alpha: float, seed: int) -> dict[str, Any]:
    """ECE per run, its mean's CI, and the pooled reliability bins, of one set of logits per run."""
    per_run = [calibration.ece(z, labels) for z in logits]
    return {"ece": per_run, "ece_mean": float(np.mean(per_run)),
            "ece_ci": list(calibration.mean_ece_ci(logits, labels, n_boot=n_boot, alpha=alpha, seed=seed)),
            "bins": calibration.reliability_bins(np.concatenate(logits), np.tile(labels, len(logits))).as_dict()}
