"""Where does `fashionlab predict` spend its time on a folder of images: reading them, or in the model? As JSON.

    python benchmarks/predict_speed.py > docs/benchmarks/predict_speed.json && python benchmarks/results_tables.py

Writes Fashion-MNIST's first --images test images as PNG files, trains a tiny run of each recipe (one epoch on 500
images: the weights do not change the speed; the recipe's architecture, precision and TTA do), then, as
`predict_items` does, reads and prepares every file (decode) and predicts them in one batch (model), timing each
part; the model part in fp32 and in the run's own precision as this machine resolves it. Issue 30's target:
less time in the model than in decoding. Run it idle: the point is time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_record  # benchmarks/machine.py: run as a script, this folder is on sys.path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--recipes", default="cnn1,cnn2")
    a = p.parse_args(argv)
    import numpy as np
    import torch
    from PIL import Image

    import fashionlab
    from fashionlab.data import load_fashion_mnist
    from fashionlab.device import resolve_precision
    from fashionlab.evaluate import predict_logits
    from fashionlab.predict import TorchModel, read_item

    ds = load_fashion_mnist(None, download=False, progress=False)
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
                                   verbose=False)
            model = TorchModel(Path(run.path), "best", "cpu")
            start = time.perf_counter()
            items = [read_item(model, path, True) for path in paths]
            decode = time.perf_counter() - start
            batch = torch.from_numpy(np.stack([r.pixels for r in items]))
            precision = resolve_precision(run.config["precision"], model.device)
            model_seconds = {}
            for name in dict.fromkeys(["fp32", precision]):
                predict_logits(model.model, batch[:256], device=model.device, precision=name, tta=model.tta,
                               channels_last=model.channels_last)  # warm-up: kernels chosen once
                start = time.perf_counter()
                predict_logits(model.model, batch, device=model.device, precision=name, tta=model.tta,
                               channels_last=model.channels_last)
                model_seconds[name] = round(time.perf_counter() - start, 3)
            start = time.perf_counter()
            model.logits(batch)
            rows.append({"recipe": recipe, "model": run.config["model"], "tta": model.tta,
                         "run_precision": precision, "decode_seconds": round(decode, 3),
                         "model_seconds": model_seconds,
                         "predict_model_seconds": round(time.perf_counter() - start, 3)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    json.dump({"benchmark": "predict_speed", "date": datetime.date.today().isoformat(),
               "time_utc": time.strftime("%H:%M", time.gmtime()),
               "command": " ".join(["python benchmarks/predict_speed.py", *(argv or sys.argv[1:])]),
               "cpu": cpu_record(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "images": a.images, "results": rows}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
