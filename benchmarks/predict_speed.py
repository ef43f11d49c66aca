"""Where does `fashionlab predict` spend its time on a folder of images: reading them, or in the model? As JSON.

    python benchmarks/predict_speed.py > docs/benchmarks/predict_speed.json && python benchmarks/results_tables.py
    # the software path of an AVX2-only CPU, on this one (benchmarks/machine.py ISA_CAPS):
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/predict_speed.py > docs/benchmarks/predict_speed-avx2-capped.json

Writes Fashion-MNIST's first --images test images as PNG files, trains a tiny run of each recipe (one epoch on 500
images: the weights do not change the speed; the recipe's architecture, precision and TTA do), then, as
`predict_items` does, reads and prepares every file (decode) and predicts them (model), timing each part: the
model part as `predict` runs it now (TorchModel.logits: the fused CPU graph of cpugraph), in the run's precision at
each --batches size; at the default batch, eagerly (the path before the graph), in fp32, and in int8 (eagerly: not
a path of `predict`); and eager against graph for a few image counts (--break-even), where cpugraph.MIN_IMAGES
comes from. Each model time is the best of --repeats passes over all the images. Issue 30's target: less time in
the model than in decoding. Run it idle: the point is time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from machine import cpu_record  # benchmarks/machine.py: run as a script, this folder is on sys.path


def best_seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return round(best, 3)


def model_time(model, batch, precision: str, size: int | None, repeats: int, graph: bool = True) -> float:
    """Best seconds of predicting `batch` with a TorchModel's network at `precision`, `size` images a pass, through
    the fused CPU graph (cpugraph, as `predict` does; a new graph built in every pass, as a new predict builds
    one) or eagerly."""
    from fashionlab.cpugraph import CpuGraph
    from fashionlab.evaluate import predict_logits

    def run(x):
        return predict_logits(model.model, x, device=model.device, precision=precision, tta=model.tta,
                              channels_last=model.channels_last, batch_size=size,
                              graph=CpuGraph(model.model) if graph else None)

    run(batch[:512])  # warm-up: kernels chosen once
    return best_seconds(partial(run, batch), repeats)


def int8_time(model, batch, repeats: int) -> float:
    """Best seconds of predicting `batch` with the network quantized to int8 (FX post-training static, oneDNN's
    kernels: the engine that follows the ISA caps; calibrated on 512 of the images), channels-last, eagerly, with
    the run's TTA: the path issue 30 asks about, which `predict` does not take (docs/performance.md says why)."""
    import copy

    from throughput import quantize_int8

    from fashionlab.data import as_input
    from fashionlab.evaluate import predict_logits

    quantized = quantize_int8(copy.deepcopy(model.model).eval(), as_input(batch[:512]), engine="onednn")
    run = partial(predict_logits, quantized, device=model.device, precision="fp32", tta=model.tta,
                  channels_last=True)
    run(batch[:512])  # warm-up: kernels chosen once
    return best_seconds(partial(run, batch), repeats)


def predict_once(model, batch):
    """TorchModel.logits as a new `predict` process runs it: its graph built on this call."""
    from fashionlab.cpugraph import CpuGraph

    model.graph = CpuGraph(model.model)
    return model.logits(batch)


def break_even(model, batch, sizes: list[int], repeats: int) -> dict[str, dict[str, float]]:
    """Eager against graph seconds for the first n images, n below and above cpugraph.MIN_IMAGES: the graph's fixed
    cost (trace, freeze, two profiling passes) against what it saves; where MIN_IMAGES comes from."""
    import fashionlab.cpugraph as cpugraph

    chosen, cpugraph.MIN_IMAGES = cpugraph.MIN_IMAGES, 0  # the graph at every n, for this measurement only
    try:
        return {str(n): {way: model_time(model, batch[:n], model.precision, None, repeats, graph=way == "graph")
                         for way in ("eager", "graph")} for n in sizes}
    finally:
        cpugraph.MIN_IMAGES = chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--recipes", default="cnn1,cnn2,fast")
    p.add_argument("--batches", default="32,64,128,256,512,1024", help="images per forward pass to sweep")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--break-even", default="256,512,1024,2048,4096",
                   help="image counts at which eager and graph prediction are compared (cpugraph.MIN_IMAGES)")
    p.add_argument("--data-dir", help="Fashion-MNIST's folder (default: where fashionlab finds it)")
    a = p.parse_args(argv)
    import numpy as np
    import torch
    from PIL import Image

    import fashionlab
    from fashionlab.data import load_fashion_mnist
    from fashionlab.evaluate import inference_batch
    from fashionlab.predict import TorchModel, read_item

    ds = load_fashion_mnist(a.data_dir, download=False, progress=False)
    sweep = [int(b) for b in a.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fashionlab-predict-speed-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        paths = []
        for i, pixels in enumerate(ds.test_x[:a.images].numpy()):
            paths.append(folder / f"{i:05d}.png")
            Image.fromarray(pixels).save(paths[-1])
        for recipe in a.recipes.split(","):
            run = fashionlab.train(recipe=recipe, epochs=1, train_subset=500, out=str(Path(tmp) / recipe),
                                   data_dir=a.data_dir, verbose=False)
            model = TorchModel(Path(run.path), "best", "cpu")
            start = time.perf_counter()
            items = [read_item(model, path, True) for path in paths]
            decode = round(time.perf_counter() - start, 3)
            batch = torch.from_numpy(np.stack([r.pixels for r in items]))

            by_batch = {str(size): model_time(model, batch, model.precision, size, a.repeats) for size in sweep}
            model.logits(batch[:512])
            rows.append({"recipe": recipe, "model": run.config["model"], "tta": model.tta,
                         "precision": model.precision, "default_batch": inference_batch(model.device),
                         "decode_seconds": decode, "model_seconds_by_batch": by_batch,
                         "eager_seconds": model_time(model, batch, model.precision, None, a.repeats, graph=False),
                         "fp32_seconds": model_time(model, batch, "fp32", None, a.repeats),
                         "fp32_eager_seconds": model_time(model, batch, "fp32", None, a.repeats, graph=False),
                         "int8_seconds": int8_time(model, batch, a.repeats),
                         "predict_model_seconds": best_seconds(partial(predict_once, model, batch), a.repeats),
                         "break_even": break_even(model, batch, [int(n) for n in a.break_even.split(",")],
                                                  a.repeats)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    json.dump({"benchmark": "predict_speed", "date": datetime.date.today().isoformat(),
               "time_utc": time.strftime("%H:%M", time.gmtime()),
               "command": " ".join(["python benchmarks/predict_speed.py", *(argv or sys.argv[1:])]),
               "cpu": cpu_record(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "images": a.images, "repeats": a.repeats, "results": rows}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
