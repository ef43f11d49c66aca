"""Test accuracy of a run's model after int8 post-training quantization vs in fp32, as JSON.

Calibrates on 2,048 training images (never test images), then classifies the 10k test set both ways
(no TTA). Pairs with `throughput.py --precisions int8`, which measures the speed.

    python benchmarks/int8_accuracy.py RUN_DIR
"""

from __future__ import annotations

import argparse
import json

import torch
from throughput import quantize_int8

from fashionlab.data import load_fashion_mnist
from fashionlab.evaluate import load_run_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--calibration", type=int, default=2048, help="training images used to calibrate")
    p.add_argument("--data-dir")
    a = p.parse_args()
    model, ckpt = load_run_model(a.run_dir, "best", "cpu")
    model.eval()
    mean, std = ckpt["normalize"]["mean"], ckpt["normalize"]["std"]
    data = load_fashion_mnist(a.data_dir, progress=False)

    def norm(u8: torch.Tensor) -> torch.Tensor:
        return ((u8.float() / 255 - mean) / std).unsqueeze(1)

    pick = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))[:a.calibration]
    quantized = quantize_int8(model, norm(data.train_x[pick]))
    x, y = norm(data.test_x), data.test_y
    with torch.no_grad():
        fp32 = torch.cat([model(b) for b in x.split(1000)]).argmax(1)
        int8 = torch.cat([quantized(b) for b in x.split(1000)]).argmax(1)
    print(json.dumps({"run": a.run_dir, "n_test": len(y), "fp32_acc": round((fp32 == y).float().mean().item(), 4),
                      "int8_acc": round((int8 == y).float().mean().item(), 4),
                      "agree": round((fp32 == int8).float().mean().item(), 4), "tta": False}))


if __name__ == "__main__":
    main()
