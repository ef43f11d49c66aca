"""Ensembles on the validation split: members of one recipe that differ only in their seed (one split for all),
and the accuracy of averaging the softmax of the first k of them, as JSON. The test set is never read.

Members are the run folders `--ensemble` would train (fashionlab.ensemble: --out/members/member0, member1, ...):
a member already trained is reused, one that was interrupted is resumed, so two processes can train different
members at once (--only) and a later call evaluates them all.

    python benchmarks/ensemble.py --recipe fast95 --members 3 --out runs/ens-fast95 --only 0   # one process
    python benchmarks/ensemble.py --recipe fast95 --members 3 --out runs/ens-fast95 --only 1   # another
    python benchmarks/ensemble.py --recipe fast95 --members 3 --out runs/ens-fast95 > ensemble-fast95.json
    python benchmarks/ensemble.py --quick --out /tmp/ens    # CI smoke test: subset, 1 epoch, 2 members
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from fashionlab.config import build_config
from fashionlab.data import load_fashion_mnist
from fashionlab.device import resolve_precision
from fashionlab.ensemble import finished, member_configs
from fashionlab.errors import FashionlabError
from fashionlab.evaluate import load_run_model, predict_logits
from fashionlab.recipes import recipe_overrides
from fashionlab.runfolder import RunFolder
from fashionlab.train import train
from fashionlab.trainsetup import prepare_data


def members(a: argparse.Namespace) -> list:
    """What `--ensemble` would train: seed + k, each on the split of --seed."""
    base = {"val_fraction": a.val_fraction, "seed": a.seed, "ensemble": a.members, "out": str(a.out)}
    if a.quick:
        base |= {"train_subset": 1000, "epochs": 1}
    return member_configs(build_config(recipe_overrides(a.recipe), json.loads(a.set), base), RunFolder(a.out))


def evaluate(cfgs: list, data) -> dict:
    """Validation accuracy of each member and of the mean softmax of the first k members, k = 1..n."""
    device = torch.device("cpu")
    splits = prepare_data(cfgs[0], data, device)  # the same split for every member: split_seed
    probs = []
    for cfg in cfgs:
        model, _ = load_run_model(Path(cfg.out), "best", device)
        probs.append(predict_logits(model, splits.val_x, device=device, tta=cfg.tta,
                                    precision=resolve_precision(cfg.precision, device)).softmax(1))
    y = splits.val_y.cpu()
    acc = [round((p.argmax(1) == y).float().mean().item(), 6) for p in probs]
    ens = [round((sum(probs[:k]).argmax(1) == y).float().mean().item(), 6) for k in range(1, len(probs) + 1)]
    return {"n_val": len(y), "member_val_acc": acc, "ensemble_val_acc": ens}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="fast")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--set", default="{}", help="JSON object of options changed for every member")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="the split's seed and the first member's")
    p.add_argument("--out", type=Path, required=True, help="folder of the member runs (kept, reused)")
    p.add_argument("--only", type=int, action="append", help="train only member K (repeatable); no evaluation")
    p.add_argument("--data-dir")
    p.add_argument("--quick", action="store_true", help="CI smoke test: subset, 1 epoch")
    a = p.parse_args()
    if a.members < 1 or any(k not in range(a.members) for k in a.only or []):
        sys.exit(f"error: --members must be >= 1 and --only in 0..{a.members - 1}")
    try:
        if not isinstance(json.loads(a.set), dict):
            sys.exit(f"error: --set must be a JSON object of options, got {a.set!r}")
        cfgs = members(a)
        data = load_fashion_mnist(a.data_dir, progress=False)
        t0 = time.perf_counter()
        for k in a.only or range(a.members):
            if not finished(cfgs[k]):
                train(cfgs[k], resume=RunFolder(cfgs[k].out).exists(), evaluate_test=False, data=data, verbose=False)
        if a.only:
            return
        result = evaluate(cfgs, data)
    except (FashionlabError, json.JSONDecodeError) as e:
        sys.exit(f"error: {e}")
    print(json.dumps({"benchmark": "ensemble", "recipe": a.recipe, "recipe_settings": recipe_overrides(a.recipe),
                      "changed": json.loads(a.set), "val_fraction": a.val_fraction, "split_seed": a.seed,
                      "member_seeds": [c.seed for c in cfgs], "checkpoint": "best", **result,
                      "seconds_this_call": round(time.perf_counter() - t0, 1), "torch": torch.__version__,
                      "date": time.strftime("%Y-%m-%d")}, indent=2))


if __name__ == "__main__":
    main()
