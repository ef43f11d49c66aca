"""Test accuracy of a run's model after int8 post-training quantization vs in fp32, as JSON.

Calibrates on 2,048 training images (never test images), then classifies the 10k test set both ways
(no TTA). Pairs with `throughput.py --precisions int8`, which measures the speed.

    python benchmarks/int8_accuracy.py RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from throughput import quantize_int8

from fashionlab.data import as_input, load_fashion_mnist
from fashionlab.evaluate import load_run_model, predict_logits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--calibration", type=int, default=2048, help="training images used to calibrate")
    p.add_argument("--data-dir")
    a = p.parse_args()
    model, _ = load_run_model(a.run_dir, "best", "cpu")
    model.eval()
    data = load_fashion_mnist(a.data_dir, progress=False)
    pick = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))[:a.calibration]
    calibration = as_input(data.train_x[pick])  # the model normalizes its own input
    quantized = quantize_int8(model, calibration)
    y = data.test_y
    fp32, int8 = (predict_logits(m, data.test_x, device="cpu", channels_last=False).argmax(1)
                  for m in (model, quantized))
    print(json.dumps({"run": a.run_dir, "n_test": len(y), "fp32_acc": round((fp32 == y).float().mean().item(), 4),
                      "int8_acc": round((int8 == y).float().mean().item(), 4),
                      "agree": round((fp32 == int8).float().mean().item(), 4), "tta": False,
                      "calibration": a.calibration, "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "date": time.strftime("%Y-%m-%d", time.gmtime())}))


if __name__ == "__main__":
    main()
