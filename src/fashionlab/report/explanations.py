"""What did the model look at when it confused two classes? Grad-CAM for the report's most-confused pairs.

For each model (its lowest-seed run, as the mistakes gallery shows), the test images of its most frequent
confusions (true -> predicted), most confident first, with the Grad-CAM map of the predicted class from the run's
checkpoint (predict.TorchModel.heatmaps: the same maps as `predict --explain`). Needs the checkpoint and captum; when
either is missing the report says so instead of failing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fashionlab.errors import FashionlabError
from fashionlab.report.compare import RunResults

PAIRS = 3  # most-confused pairs per model
PER_PAIR = 4  # images per pair


def confused_examples(run: RunResults, labels: np.ndarray, images: np.ndarray, k_pairs: int = PAIRS,
                      per_pair: int = PER_PAIR) -> dict[str, Any]:
    """{"pairs": [{"true", "predicted", "count", "examples": [{"index", "confidence", "heat"}]}], "reason": ""};
    with "reason" (and no heat) when the maps cannot be made."""
    wrong = run.predictions != labels
    cells = np.bincount(labels[wrong] * run.probs.shape[1] + run.predictions[wrong],
                        minlength=run.probs.shape[1] ** 2)
    order = [int(c) for c in np.argsort(-cells, kind="stable")[:k_pairs] if cells[c] > 0]
    pairs = []
    for cell in order:
        true, pred = divmod(cell, run.probs.shape[1])
        idx = np.nonzero(wrong & (labels == true) & (run.predictions == pred))[0]
        idx = idx[np.argsort(-run.probs[idx, pred], kind="stable")][:per_pair]
        pairs.append({"true": true, "predicted": pred, "count": int(cells[cell]),
                      "examples": [{"index": int(i), "confidence": float(run.probs[i, pred])} for i in idx]})
    if not pairs:
        return {"pairs": [], "reason": ""}
    try:
        from fashionlab.predict import TorchModel

        model = TorchModel(run.path, str(run.metrics.get("checkpoint", "best")), "cpu")
        index = [e["index"] for p in pairs for e in p["examples"]]
        targets = [p["predicted"] for p in pairs for _ in p["examples"]]
        import torch

        heat = model.heatmaps(torch.from_numpy(np.ascontiguousarray(images[index])), torch.tensor(targets))
    except FashionlabError as e:  # no checkpoint (results committed without it), captum missing, external code
        return {"pairs": pairs, "reason": str(e)}
    maps = iter(heat)
    for p in pairs:
        for e in p["examples"]:
            e["heat"] = next(maps)
    return {"pairs": pairs, "reason": ""}
