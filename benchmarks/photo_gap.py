"""Accuracy on test images rendered as product photos vs on the raw test tensors, as JSON.

Each test image becomes a large RGB JPEG of a dark item on a light, tinted background, off-centre on a
non-square canvas (tests/test_predict.py: render_as_photo); `fashionlab predict` must undo all of that.

    python benchmarks/photo_gap.py RUN_DIR [--n 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fashionlab.data import load_fashion_mnist  # noqa: E402
from fashionlab.predict import TorchModel, predict  # noqa: E402
from test_predict import render_as_photo  # noqa: E402  (the renderer the test uses, not a copy)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--n", type=int, default=1000, help="test images to render (a seeded random sample)")
    p.add_argument("--data-dir")
    a = p.parse_args()
    data = load_fashion_mnist(a.data_dir, progress=False)
    rng = np.random.default_rng(0)
    idx = torch.from_numpy(rng.choice(len(data.test_y), min(a.n, len(data.test_y)), replace=False))
    y = data.test_y[idx].numpy()
    raw = TorchModel(a.run_dir, "best", "cpu").logits(data.test_x[idx]).argmax(1).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        for k, i in enumerate(idx.tolist()):
            render_as_photo(data.test_x[i].numpy(), rng).save(Path(tmp) / f"{k:05d}.jpg", quality=90)
        photo = np.array([r.top[0]["index"] for r in predict(a.run_dir, [Path(tmp)], top_k=1)])
    raw_acc, photo_acc = float((raw == y).mean()), float((photo == y).mean())
    print(json.dumps({"run": str(a.run_dir), "n": len(y), "raw_acc": raw_acc, "photo_acc": photo_acc,
                      "gap_points": round(100 * (raw_acc - photo_acc), 2), "agree": float((raw == photo).mean()),
                      "torch": torch.__version__,
                      "date": time.strftime("%Y-%m-%d", time.gmtime())}))


if __name__ == "__main__":
    main()
