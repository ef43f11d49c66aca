"""Accuracy per CPU-minute: docs/frontier.png and docs/results/frontier.json from the committed results only.

    python benchmarks/frontier.py            # write both
    python benchmarks/frontier.py --check    # exit 1 if docs/results/frontier.json differs from the data

Points: every recipe with measured figures (src/fashionlab/measured.json, as benchmarks/results_tables.py
derives it: test accuracy mean ± sd over the committed seeds; time from the idle-machine runs), and the
conventional DataLoader pipeline of benchmarks/time_to_accuracy.py when it first reached its target (when that
run had the machine to itself). The JSON holds every plotted number with the file it comes from.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import results_tables as rt  # noqa: E402  (the one reader of the committed results)

from fashionlab.numfmt import accuracy_mean_sd  # noqa: E402  (results_tables put src/ on the path)

PNG = ROOT / "docs" / "frontier.png"
JSON = ROOT / "docs" / "results" / "frontier.json"


def points() -> dict:
    m = rt.measured()
    pts = []
    for name, e in m.items():
        if e is None or e.seconds is None:  # no accuracy, or an accuracy without an idle time
            continue
        wall = e.seconds_kind.startswith("wall")
        pts.append({
            "label": f"recipe {name}", "recipe": name, "model": rt.RECIPES[name]["model"],
            "accuracy_mean": e.accuracy_mean, "accuracy_sd": e.accuracy_sd, "n_seeds": e.n_seeds,
            "seeds": e.seeds, "accuracy_source": e.accuracy_source,
            "seconds": e.seconds, "minutes": round(e.seconds / 60, 4),
            "time": "wall" if wall else "training",
            "seconds_kind": e.seconds_kind, "seconds_source": e.seconds_source,
            "machine": e.machine, "torch": e.torch, "date": e.date})
    t = rt.reference()
    d, reached = t["json"], t["reached"]
    if reached and t["idle"]:  # a reference that shared the CPU has no speed figure to plot
        pts.append({
            "label": "DataLoader reference", "recipe": None, "model": "cnn2 (dropout 0.3)",
            "accuracy_mean": reached["test_acc"], "accuracy_sd": None, "n_seeds": 1, "seeds": [d["reference"]["seed"]],
            "accuracy_source": t["file"],
            "seconds": reached["wall_s"], "minutes": round(reached["wall_s"] / 60, 4), "time": "wall",
            "seconds_kind": f"wall_s when the test accuracy first reached the target {d['target']} (epoch "
                            f"{reached['epoch']}): a threshold crossing, not a converged accuracy; one seed; "
                            + ("scheduler stepped on validation accuracy" if t["on_val"]
                               else "in this run its plateau scheduler stepped on test accuracy, so it must be "
                                    "re-measured"),
            "seconds_source": t["file"], "machine": rt.MACHINE, "torch": d["torch"], "date": d["date"],
            "scheduler_on_validation": t["on_val"]})
    dates = sorted({p["date"] for p in pts})
    return {"generated_by": "benchmarks/frontier.py", "machine": rt.MACHINE,
            "torch": sorted({p["torch"] for p in pts}), "dates": dates,
            "not_measured": [n for n, e in m.items() if e is None],
            "not_timed": [n for n, e in m.items() if e is not None and e.seconds is None],
            "notes": ["time 'training': train_seconds of test_metrics.json (training only: no data loading, no "
                      "test evaluation), one run (seed 0) on the idle machine, while the accuracy is over the seeds "
                      "listed; time 'wall': wall seconds from process start (timing.json of "
                      "benchmarks/time_to_accuracy.py), mean over the seeds timed on the idle machine"],
            "points": pts}


def draw(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=120)
    ax = fig.add_subplot()
    styles = {"training": dict(marker="o", color="tab:blue"), "wall": dict(marker="s", color="tab:green")}
    placed: list[tuple[float, float]] = []
    for p in sorted(data["points"], key=lambda q: q["minutes"]):
        style = dict(marker="^", color="tab:red") if p["recipe"] is None else styles[p["time"]]
        y, err = 100 * p["accuracy_mean"], 100 * p["accuracy_sd"] if p["accuracy_sd"] is not None else None
        ax.errorbar(p["minutes"], y, yerr=err, capsize=4, linestyle="none", markersize=7, **style)
        acc = accuracy_mean_sd(p["accuracy_mean"], p["accuracy_sd"], p["n_seeds"])  # one seed: no "± sd"
        n = f"n = {p['n_seeds']} seeds" if p["n_seeds"] > 1 else f"n = 1, seed {p['seeds'][0]}"
        text = (f"{p['label']}\n{acc} ({n})\n{p['minutes']:.2f} min "
                f"({'training' if p['time'] == 'training' else 'wall'})")
        # a label that would overlap its left neighbour's goes above the point instead of below it
        crowded = any(abs(math.log10(p["minutes"] / m)) < 0.3 and abs(y - a) < 0.8 for m, a in placed)
        ax.annotate(text, (p["minutes"], y), xytext=(8, 34 if crowded else -4), textcoords="offset points",
                    fontsize=8, va="top")
        placed.append((p["minutes"], y))
    ax.set_xscale("log")
    xs = [p["minutes"] for p in data["points"]]
    ax.set_xlim(min(xs) / 2, max(xs) * 4)
    ticks = [t for t in (0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if min(xs) / 2 <= t <= max(xs) * 4]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ys = [100 * p["accuracy_mean"] for p in data["points"]]
    ax.set_ylim(min(ys) - 0.8, max(ys) + 1.0)
    ax.set_xlabel("minutes on the CPU, 2 threads, idle (log scale)")
    ax.set_ylabel("test accuracy (%), mean ± sd over seeds")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"Accuracy per CPU-minute: {data['machine']},\ntorch {', '.join(data['torch'])}, "
                 f"measured {', '.join(data['dates'])}", fontsize=10)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="none", markersize=7, **styles["training"], label="recipe, training time"),
               Line2D([], [], linestyle="none", markersize=7, **styles["wall"], label="recipe, wall time (data incl.)")]
    ref = [p for p in data["points"] if p["recipe"] is None]
    if ref:
        stale = "" if ref[0]["scheduler_on_validation"] else "; to be re-measured"
        handles.append(Line2D([], [], linestyle="none", markersize=7, marker="^", color="tab:red",
                              label=f"DataLoader reference, wall time to first reach 93% (one seed{stale})"))
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def as_text(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if frontier.json differs")
    a = p.parse_args(argv)
    data = points()
    if a.check:
        if not JSON.exists() or JSON.read_text() != as_text(data):
            print(f"out of date: {JSON.relative_to(ROOT)} (run: python benchmarks/frontier.py)", file=sys.stderr)
            return 1
        return 0
    JSON.write_text(as_text(data))
    draw(data, PNG)
    print(f"wrote {JSON.relative_to(ROOT)} and {PNG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
