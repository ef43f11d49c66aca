"""How should `run --quick` spend a box that fits one epoch on every training image but not two? As JSON.

    python benchmarks/quick_epochs.py > docs/benchmarks/quick_epochs.json && python benchmarks/results_tables.py

Trains each model with its recipe (as `run --quick` does) three ways per seed, and records the best validation
accuracy of each (the split `run` uses; the test evaluation each training ends with is not read):
  one-epoch-all      1 epoch on all training images: what the box chose before
  two-epochs-half    2 epochs on a stratified half: the same number of steps, half the distinct images
  two-epochs-90      2 epochs on a stratified 90%: 1.8x the steps, the box filled
study.quick_choice picks the epochs and subset that train on the most images (epochs x images), and within TIE of
that the most distinct images; this measures both halves of that rule. Wall times are per run (training and evaluation);
run it idle.
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

ARMS = {"one-epoch-all": (1, 1.0), "two-epochs-half": (2, 0.5), "two-epochs-90": (2, 0.9)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="cnn1,cnn2")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--train-images", type=int, help="what the arms take their fractions of (default: every "
                   "training image of the split; fewer for a check of this script)")
    p.add_argument("--data-dir", help="Fashion-MNIST's folder (default: where fashionlab finds it)")
    a = p.parse_args(argv)
    import torch

    import fashionlab
    from fashionlab.budget import recipe_config
    from fashionlab.data import load_fashion_mnist
    from fashionlab.data.load import split_for

    data = load_fashion_mnist(a.data_dir, download=False, progress=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fashionlab-quick-epochs-") as tmp:
        for model in a.models.split(","):
            every = len(split_for(recipe_config(model), data).train_y)  # the recipe's own split
            n_train = min(every, a.train_images or every)
            for seed in range(a.seeds):
                for arm, (epochs, fraction) in ARMS.items():
                    subset = None if fraction == 1.0 and n_train == every else int(n_train * fraction)
                    start = time.perf_counter()
                    run = fashionlab.train(recipe=model, epochs=epochs, train_subset=subset, seed=seed,
                                           out=str(Path(tmp) / f"{model}-{arm}-{seed}"), data_dir=a.data_dir,
                                           verbose=False)
                    wall = time.perf_counter() - start
                    rows.append({"model": model, "seed": seed, "arm": arm, "epochs": epochs,
                                 "train_images": subset or n_train,
                                 "best_val_acc": max(h["val_acc"] for h in run.history),
                                 "wall_s": round(wall, 1)})
                    print(json.dumps(rows[-1]), file=sys.stderr)
    json.dump({"benchmark": "quick_epochs", "date": datetime.date.today().isoformat(),
               "time_utc": time.strftime("%H:%M", time.gmtime()),
               "command": " ".join(["python benchmarks/quick_epochs.py", *(argv or sys.argv[1:])]),
               "cpu": cpu_record(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "arms": {k: {"epochs": e, "fraction": f} for k, (e, f) in ARMS.items()}, "results": rows},
              sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
