"""Does `train --budget` keep its word? For each budget: the recipe it picks, its predicted time and accuracy, and
then the actual time and test accuracy of training that recipe here, as JSON.

    python benchmarks/budget_check.py > docs/benchmarks/budget_check.json && python benchmarks/results_tables.py
    python benchmarks/budget_check.py --budgets 45s     # one budget, a look

Each budget goes through budget.choose, the function `--budget` calls (recipes timed here from the most accurate
down, the first whose estimate times measured.json's margin fits is chosen), then fashionlab.train trains that
recipe as `--budget` would; a budget nothing fits is recorded as refused. Before a new run, keep the previous
budget_check.json as budget_check-<date>-<HHMM>.json: the margin is taken over all of them. The
wall time runs from before the step timing to the end of the test evaluation: what the user waits for. Run it
idle: the point is time.
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
    p.add_argument("--budgets", default="1m,2m,8m", help="comma list of durations (default 1m,2m,8m)")
    a = p.parse_args(argv)
    import torch

    import fashionlab
    from fashionlab.budget import (
        ESTIMATOR,
        choose,
        load_margin,
        load_measured,
        measure_step_seconds,
        parse_duration,
        recipe_config,
    )
    from fashionlab.device import resolve_device
    from fashionlab.errors import ConfigError

    device = resolve_device("auto")
    margin = load_margin()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fashionlab-budget-check-") as tmp:
        for budget in a.budgets.split(","):
            start = time.perf_counter()
            try:
                choice = choose(parse_duration(budget), load_measured(), device.type,
                                lambda name: measure_step_seconds(recipe_config(name, device.type), device),
                                margin=margin)
            except ConfigError as e:  # no recipe fits: --budget refuses, and so nothing trains
                rows.append({"budget": budget, "budget_seconds": parse_duration(budget), "recipe": None,
                             "refused": str(e), "wall_seconds": round(time.perf_counter() - start, 1)})
                print(json.dumps(rows[-1]), file=sys.stderr)
                continue
            c = choice.chosen
            run = fashionlab.train(recipe=c.recipe, out=str(Path(tmp) / budget), verbose=False)
            wall = time.perf_counter() - start
            rows.append({
                "budget": budget, "budget_seconds": choice.budget_seconds, "recipe": c.recipe,
                "predicted_seconds": round(c.seconds, 1), "predicted_with_margin": round(c.at_most, 1),
                "timing_seconds": round(c.timing_seconds, 1),
                "step_ratio": round(c.ratio, 3),
                "reference_seconds": c.reference_seconds,
                "reference_seconds_kind": choice.reference.seconds_kind if choice.reference else None,
                "reference_machine": choice.reference.machine if choice.reference else None,
                "predicted_accuracy": c.accuracy_mean, "predicted_accuracy_sd": c.accuracy_sd,
                "predicted_n_seeds": c.n_seeds,
                "not_chosen": [{"recipe": e.recipe, "predicted_seconds": round(e.seconds, 1)}
                               for e in choice.more_accurate],
                "train_seconds": run.test_metrics["train_seconds"], "wall_seconds": round(wall, 1),
                "test_accuracy": run.test_metrics["accuracy"],
            })
            print(json.dumps(rows[-1]), file=sys.stderr)
    record = {
        "benchmark": "budget_check",
        "date": datetime.date.today().isoformat(),
        "time_utc": time.strftime("%H:%M", time.gmtime()),
        "command": " ".join(["python benchmarks/budget_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "cpu": cpu_record(), "device": str(device), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "estimator": ESTIMATOR, "margin": margin,
        "results": rows,
    }
    json.dump(record, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
