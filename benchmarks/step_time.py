"""Reference step times for `fashionlab train --budget`: seconds per training step of each recipe, as JSON.

Run it on the machine the recipes' times were measured on, idle, with its usual threads; the committed
output is docs/benchmarks/step_time.json, which benchmarks/results_tables.py copies into measured.json:

    python benchmarks/step_time.py > docs/benchmarks/step_time.json && python benchmarks/results_tables.py
    python benchmarks/step_time.py --recipes cnn1 --repeats 1      # a quick look
    python benchmarks/step_time.py --recipes fast94 --update docs/benchmarks/step_time.json   # one recipe re-timed

Each figure is the median over --repeats calls of fashionlab.budget.measure_step_seconds, the very function
--budget calls on the user's machine (warm-up steps, then timed steps at the recipe's batch size, precision
and memory format, on random inputs), so the two are comparable.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    import torch

    from fashionlab.budget import measure_step_seconds, recipe_config
    from fashionlab.device import resolve_device, resolve_precision
    from fashionlab.recipes import RECIPES, recipe_overrides

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma list (default: every recipe)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--repeats", type=int, default=3, help="calls per recipe; the median is reported")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--update", metavar="FILE", type=Path,
                   help="replace only these recipes' entries in FILE (a previous output) and write it back, so a "
                        "recipe re-timed in a later sitting gets its step time from that same sitting")
    a = p.parse_args(argv)
    try:
        before = json.loads(a.update.read_text()) if a.update else {"recipes": {}}
        # An entry kept from an earlier sitting keeps that sitting's date: the file's "date" becomes today's.
        previous = {name: {"measured": before["date"]} | e if "measured" not in e and "date" in before else e
                    for name, e in before["recipes"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"error: --update needs a previous output of this script: {a.update}: {e}")
    device = resolve_device(a.device)
    results = {}
    for name in [r.strip() for r in a.recipes.split(",") if r.strip()]:
        cfg = recipe_config(name, device.type)
        runs = [measure_step_seconds(cfg, device, warmup=a.warmup, steps=a.steps) for _ in range(a.repeats)]
        results[name] = {"step_seconds": round(statistics.median(runs), 6), "repeats_s": [round(r, 6) for r in runs],
                         "batch_size": cfg.batch_size, "precision": resolve_precision(cfg.precision, device),
                         "channels_last": cfg.channels_last, "settings": recipe_overrides(name),
                         "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        print(f"{name}: {results[name]['step_seconds']:.4f} s per step", file=sys.stderr)
    out = {"benchmark": "step_time", "device": device.type,
           "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(),
                       "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
           "torch": torch.__version__, "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
           "warmup": a.warmup, "steps": a.steps, "repeats": a.repeats, "recipes": previous | results}
    text = json.dumps(out, indent=2) + "\n"
    if a.update:
        a.update.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
