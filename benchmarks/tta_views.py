"""Multi-view test-time augmentation, measured on a run's validation split (never the test set), as JSON.

Averages the softmax of several views of each validation image: the image, its mirror, and copies shifted
by one pixel (zero fill), with the weights named in each row. The run must have a validation split.

    fashionlab train --recipe fast --val-fraction 0.1 --out runs/fast-val
    python benchmarks/tta_views.py runs/fast-val > docs/benchmarks/tta-views-fast.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fashionlab.data import as_input, load_fashion_mnist
from fashionlab.device import autocast, resolve_precision
from fashionlab.errors import FashionlabError
from fashionlab.evaluate import load_run_model
from fashionlab.runstart import resume_config
from fashionlab.trainsetup import prepare_data

# name -> {view: weight}; a view is (mirror, dy, dx)
VIEW_SETS = {
    "identity": {(False, 0, 0): 1},
    "flip (the recipes' --tta)": {(False, 0, 0): 1, (True, 0, 0): 1},
    "flip + diagonal shifts, 0.5/0.25/0.25": {(False, 0, 0): 2, (True, 0, 0): 2, (False, 1, 1): 1, (False, -1, -1): 1,
                                              (True, 1, 1): 1, (True, -1, -1): 1},
    "flip + diagonal shifts, equal": {(False, 0, 0): 1, (True, 0, 0): 1, (False, 1, 1): 1, (False, -1, -1): 1,
                                      (True, 1, 1): 1, (True, -1, -1): 1},
    "flip + 4 one-pixel shifts of each": {(m, dy, dx): 1 for m in (False, True)
                                          for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))},
}


def view(x: torch.Tensor, mirror: bool, dy: int, dx: int) -> torch.Tensor:
    if mirror:
        x = x.flip(3)
    return torch.roll(F.pad(x, (1, 1, 1, 1)), (dy, dx), (2, 3))[:, :, 1:-1, 1:-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run folder with a validation split")
    p.add_argument("--data-dir")
    a = p.parse_args()
    try:
        model, _ = load_run_model(Path(a.run), "best")
        cfg = json.loads((Path(a.run) / "config.json").read_text())
        if not cfg["val_fraction"]:
            sys.exit(f"error: {a.run} has no validation split; this benchmark never reads the test set")
        ds = load_fashion_mnist(a.data_dir, progress=False)
        splits = prepare_data(resume_config(Path(a.run), {}), ds, torch.device("cpu"))  # the run's own split
    except FashionlabError as e:
        sys.exit(f"error: {e}")
    x, y = as_input(splits.val_x), splits.val_y
    device, precision = torch.device("cpu"), resolve_precision(cfg["precision"], torch.device("cpu"))
    probs: dict[tuple, torch.Tensor] = {}

    @torch.no_grad()
    def softmax(v: tuple) -> torch.Tensor:
        if v not in probs:
            xv = view(x, *v).contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                probs[v] = torch.cat([model(xv[i:i + 1000]).float().softmax(1) for i in range(0, len(xv), 1000)])
        return probs[v]

    rows = []
    for name, weights in VIEW_SETS.items():
        p_avg = sum(w * softmax(v) for v, w in weights.items()) / sum(weights.values())
        acc = (p_avg.argmax(1) == y).float().mean().item()
        rows.append({"views": name, "n_views": len(weights), "val_acc": round(acc, 6)})
    settings = ("model", "recipe", "epochs", "batch_size", "lr", "optimizer", "scheduler", "label_smoothing",
                "augment", "tta", "val_fraction", "seed")
    out = {"benchmark": "tta_views", "run": a.run, "run_command": cfg.get("command"),
           "run_settings": {k: cfg.get(k) for k in settings}, "n_val": len(y), "precision": precision,
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "results": rows}
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
