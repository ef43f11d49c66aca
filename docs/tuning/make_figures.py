"""Tables and plots for docs/tuning.md from the run folders that run_experiments.sh wrote.

    python docs/tuning/make_figures.py RUNS_DIR OUT_DIR

Reads only metrics.csv (validation metrics; the test metrics each run also wrote are not used), the LR
range test's files and the tune study's outputs. Writes results.csv, regularization.png, schedulers.png and
grid.png into OUT_DIR, and copies lr_find.png and the study's plots and best.yaml. results.csv is the raw data:
`python benchmarks/results_tables.py` renders results.md and the figures of docs/tuning.md from it (and its
`--check` fails when they differ).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GRID = [(bs, lr) for bs in (64, 256) for lr in ("1e-3", "3e-3", "1e-2", "3e-2")]
REG = {"reg_defaults": "recipe defaults", "reg_no_dropout": "--dropout 0", "reg_no_wd": "--weight-decay 0",
       "reg_no_aug": "--augment none",
       "reg_all_off": "all off (--dropout 0 --weight-decay 0 --augment none --label-smoothing 0)"}
SEEDS = {"reg_defaults": "seed 0, recipe defaults", "reg_all_off": "seed 0, all off",
         "seed1_reg_defaults": "seed 1, recipe defaults", "seed1_reg_all_off": "seed 1, all off"}
EPOCHS = {"epochs6_defaults": "recipe defaults, --epochs 6", "reg_defaults": "recipe defaults, --epochs 10"}
REUSE = {"tune_best_retrained": "fashionlab train --config tune/best.yaml --train-subset 5000 (trial 5 again)"}
SCHED = {"reg_defaults": "onecycle (recipe)", "sched_cosine": "cosine", "sched_plateau": "plateau",
         "sched_none": "none"}


def metrics(run: Path) -> list[dict[str, float]]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def summary(name: str, label: str, rows: list[dict[str, float]]) -> dict:
    best = max(rows, key=lambda r: r["val_acc"])  # first epoch with the highest validation accuracy
    last = rows[-1]
    return {"run": name, "setting": label, "epochs": len(rows), "best_val_acc": round(best["val_acc"], 4),
            "best_epoch": int(best["epoch"]), "final_val_acc": round(last["val_acc"], 4),
            "final_train_acc": round(last["train_acc"], 4),
            "final_gap_train_minus_val": round(last["train_acc"] - last["val_acc"], 4),
            "final_val_loss": round(last["val_loss"], 4),
            "s_per_epoch": round(sum(r["seconds"] for r in rows) / len(rows), 1)}


def main(runs: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table: list[dict] = []
    sections: dict[str, list[dict]] = {"grid": [], "regularization": [], "schedulers": [], "seeds": [],
                                      "epochs": [], "tune_reuse": []}
    for bs, lr in GRID:
        name = f"grid_bs{bs}_lr{lr}"
        if (runs / name / "metrics.csv").exists():
            sections["grid"].append(summary(name, f"--batch-size {bs} --lr {lr}", metrics(runs / name)))
    for name, label in REG.items():
        if (runs / name / "metrics.csv").exists():
            sections["regularization"].append(summary(name, label, metrics(runs / name)))
    for name, label in SCHED.items():
        if (runs / name / "metrics.csv").exists():
            sections["schedulers"].append(summary(name, f"--scheduler {label}", metrics(runs / name)))
    for name, label in SEEDS.items():
        if (runs / name / "metrics.csv").exists():
            sections["seeds"].append(summary(name, label, metrics(runs / name)))
    for sec, names in (("epochs", EPOCHS), ("tune_reuse", REUSE)):
        for name, label in names.items():
            if (runs / name / "metrics.csv").exists():
                sections[sec].append(summary(name, label, metrics(runs / name)))
    for sec, rows in sections.items():
        table += [{"experiment": sec} | r for r in rows]
    if table:
        with open(out / "results.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(table)

    # Batch size x LR: validation accuracy per epoch.
    if sections["grid"]:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for i, (bs, lr) in enumerate(GRID):
            name = f"grid_bs{bs}_lr{lr}"
            if (runs / name / "metrics.csv").exists():
                rows = metrics(runs / name)
                ax.plot([r["epoch"] for r in rows], [r["val_acc"] for r in rows], marker="o", ms=3,
                        ls="-" if bs == 64 else "--", color=f"C{i % 4}", label=f"batch {bs}, lr {lr}")
        ax.set(xlabel="epoch", ylabel="validation accuracy", title="cnn2, 10k subset, 6 epochs: batch size x peak LR")
        ax.set_ylim(bottom=0.7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "grid.png", dpi=90)
        plt.close(fig)

    # Regularization: train vs validation accuracy, defaults vs all off; all validation curves.
    if all((runs / n / "metrics.csv").exists() for n in ("reg_defaults", "reg_all_off")):
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
        for name, color, label in (("reg_defaults", "C0", "recipe defaults"), ("reg_all_off", "C3", "all off")):
            rows = metrics(runs / name)
            e = [r["epoch"] for r in rows]
            a.plot(e, [r["train_acc"] for r in rows], ls="--", color=color, label=f"{label}: train")
            a.plot(e, [r["val_acc"] for r in rows], ls="-", marker="o", ms=3, color=color, label=f"{label}: val")
        a.set(xlabel="epoch", ylabel="accuracy", title="train (augmented, dropout on) vs validation")
        a.set_ylim(bottom=0.6)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
        for i, (name, label) in enumerate(REG.items()):
            if (runs / name / "metrics.csv").exists():
                rows = metrics(runs / name)
                b.plot([r["epoch"] for r in rows], [r["val_loss"] for r in rows], marker="o", ms=3,
                       color=f"C{i}", label=label.split(" (")[0])
        b.set(xlabel="epoch", ylabel="validation loss", title="validation loss (rises when it overfits)")
        b.grid(alpha=0.3)
        b.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "regularization.png", dpi=90)
        plt.close(fig)

    # Schedulers: validation accuracy and the LR at the end of each epoch.
    if sections["schedulers"]:
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
        for i, (name, label) in enumerate(SCHED.items()):
            if (runs / name / "metrics.csv").exists():
                rows = metrics(runs / name)
                e = [r["epoch"] for r in rows]
                # plateau and none can coincide exactly (plateau never fired): draw them distinguishably
                style = dict(marker="os^x"[i], ms=7 if i == 3 else 4, ls="--" if i == 3 else "-", color=f"C{i}",
                             label=label)
                a.plot(e, [r["val_acc"] for r in rows], **style)
                b.plot(e, [r["lr"] for r in rows], **style)
        a.set(xlabel="epoch", ylabel="validation accuracy", title="cnn2, 10k subset, peak LR 3e-3")
        a.set_ylim(bottom=0.7)
        b.set(xlabel="epoch", ylabel="learning rate (last step of the epoch)", title="LR schedule")
        for ax in (a, b):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "schedulers.png", dpi=90)
        plt.close(fig)

    # Copies: the LR range test and the tune study's outputs.
    for src, dst in ((runs / "lr_find" / "lr_find.png", "lr_find.png"),
                     (runs / "lr_find" / "lr_find.json", "lr_find.json"),
                     (runs / "tune" / "best.yaml", "tune_best.yaml"),
                     (runs / "tune" / "summary.json", "tune_summary.json"),
                     (runs / "tune" / "trials.csv", "tune_trials.csv"),
                     (runs / "tune" / "importance.png", "tune_importance.png"),
                     (runs / "tune" / "history.png", "tune_history.png")):
        if src.exists():
            shutil.copyfile(src, out / dst)
    if (out / "lr_find.json").exists():  # the absolute --out path of the machine it ran on is noise
        j = json.loads((out / "lr_find.json").read_text())
        j["config"]["out"] = "runs/tuning/lr_find"
        (out / "lr_find.json").write_text(json.dumps(j, indent=2) + "\n")
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
