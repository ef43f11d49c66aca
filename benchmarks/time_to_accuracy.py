"""Time to accuracy: a fashionlab recipe against a conventional PyTorch pipeline, side by side, as JSON.

Each recipe seed is one `fashionlab train --recipe R --seed N` process, timed from process start to exit:
starting Python, importing torch, reading and verifying the IDX files, training, the test evaluation and
the run folder's report, everything a user waits for. With --save DIR each seed's test_metrics.json,
config.json and metrics.csv are copied to DIR/seed<N>/ with a timing.json beside them (wall seconds, the
command, threads, date, and whether the machine was idle: pass --shared when other work ran at the same
time, so that the accuracy counts and the time does not).

The reference is what a typical tutorial does: a torch Dataset with per-sample transforms behind a
DataLoader, fp32, CNN_2, Adam + ReduceLROnPlateau. It trains on 90% of the training images and steps its
plateau scheduler on the other 10% (a stratified validation split), as a careful pipeline would; it is timed
until its test accuracy first reaches the target. The test set is read each epoch *by this benchmark only*,
to report that moment: no training decision depends on it, and the clock is paused while it is evaluated.
fashionlab's own training never sees it.

    python benchmarks/time_to_accuracy.py --recipe fast --seeds 3 --save docs/results/fast --no-reference
    python benchmarks/time_to_accuracy.py --recipe fast95 --seeds 2 --first-seed 1 --shared --save docs/results/fast95
    python benchmarks/time_to_accuracy.py --quick                            # CI smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from step_time import cpu_name  # the benchmarks' one reading of the CPU's name (this script's folder is on sys.path)

from fashionlab.data import load_fashion_mnist

SAVED = ("test_metrics.json", "config.json", "metrics.csv")


def recipe_command(recipe: str, seed: int, out: Path, a: argparse.Namespace) -> list[str]:
    cmd = ["fashionlab", "train", "--recipe", recipe, "--seed", str(seed), "--out", str(out), "--quiet"]
    for flag, value in (("--epochs", a.epochs), ("--train-subset", a.train_subset), ("--data-dir", a.data_dir)):
        if value is not None:
            cmd += [flag, str(value)]
    if a.device != "auto":
        cmd += ["--device", a.device]
    return cmd + (["--compile"] if a.compile else [])


def run_recipe(recipe: str, seed: int, a: argparse.Namespace) -> dict:
    """One seed in its own process; the wall clock runs from launching Python to its exit."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = recipe_command(recipe, seed, run, a)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fashionlab", *cmd[1:]], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"error: seed {seed} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        metrics = json.loads((run / "test_metrics.json").read_text())
        config = json.loads((run / "config.json").read_text())
        result = {"seed": seed, "epochs": config["epochs"], "wall_s": round(wall, 2),
                  "train_s": metrics["train_seconds"], "test_acc": metrics["accuracy"],
                  "threads": config["runtime"].get("threads"), "idle": not a.shared}
        if a.save:
            save_seed(run, Path(a.save) / f"seed{seed}", result, " ".join(cmd))
    return result


def save_seed(run: Path, dest: Path, result: dict, command: str) -> None:
    dest.mkdir(parents=True)  # an existing seed folder is never overwritten (checked before any training)
    for name in SAVED:
        shutil.copy2(run / name, dest / name)
    timing = {"wall_s": result["wall_s"], "idle": result["idle"], "threads": result["threads"],
              "measures": "wall seconds from launching the process to its exit: Python start, imports, data "
                          "loading and verification, training, test evaluation, report files",
              "command": command, "benchmark": "benchmarks/time_to_accuracy.py",
              "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count()}, "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (dest / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")


class PerSampleDataset(torch.utils.data.Dataset):
    """The conventional way: one image at a time through Python transforms."""

    def __init__(self, x, y, train: bool, mean: float, std: float):
        self.x, self.y, self.train, self.mean, self.std = x, y, train, mean, std

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i].float().div(255).unsqueeze(0)
        if self.train:
            if torch.rand(()) < 0.5:
                img = img.flip(2)
            padded = F.pad(img, (2, 2, 2, 2))
            dy, dx = torch.randint(0, 5, (2,)).tolist()
            img = padded[:, dy:dy + 28, dx:dx + 28]
        return (img - self.mean) / self.std, self.y[i]


def run_reference(seed: int, target: float, max_epochs: int, subset: int | None, data_dir: str | None) -> dict:
    from fashionlab.data import pixel_stats, stratified_split, stratified_subset
    from fashionlab.models import build_model

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    data = load_fashion_mnist(data_dir, progress=False)
    train_idx, val_idx = stratified_split(data.train_y, 0.1, seed)
    if subset:
        train_idx = train_idx[stratified_subset(data.train_y[train_idx], subset, seed)]
    mean, std = pixel_stats(data.train_x[train_idx])
    loader = torch.utils.data.DataLoader(
        PerSampleDataset(data.train_x[train_idx], data.train_y[train_idx], True, mean, std),
        batch_size=64, shuffle=True, num_workers=0)
    val = torch.utils.data.DataLoader(
        PerSampleDataset(data.train_x[val_idx], data.train_y[val_idx], False, mean, std), batch_size=1000)
    test = torch.utils.data.DataLoader(PerSampleDataset(data.test_x, data.test_y, False, mean, std), batch_size=1000)
    model = build_model("cnn2", dropout=0.3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=2)
    history, reached, paused = [], None, 0.0
    for epoch in range(1, max_epochs + 1):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        val_acc = accuracy(model, val)
        sched.step(val_acc)  # the only decision made per epoch: on validation, never on test
        wall = time.perf_counter() - t0 - paused
        t_test = time.perf_counter()
        test_acc = accuracy(model, test)  # for the report only: when the target is first reached
        paused += time.perf_counter() - t_test
        history.append({"epoch": epoch, "val_acc": val_acc, "test_acc": test_acc, "wall_s": round(wall, 2)})
        if test_acc >= target:
            reached = history[-1]
            break
    return {"seed": seed, "target": target, "scheduler_metric": "val_acc", "val_images": len(val_idx),
            "reached": reached, "history": history}


def accuracy(model: torch.nn.Module, loader: torch.utils.data.DataLoader) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return correct / len(loader.dataset)


def summary(runs: list[dict]) -> dict:
    accs = [r["test_acc"] for r in runs]
    walls = [r["wall_s"] for r in runs if r["idle"]]
    return {"runs": runs, "mean_test_acc": round(statistics.mean(accs), 4),
            "sd_test_acc": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
            "mean_wall_s": round(statistics.mean(walls), 2) if walls else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="fast")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--seeds", type=int, default=3, help="how many seeds (0: the reference only)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST, FIRST+1, ...")
    p.add_argument("--save", metavar="DIR", help="copy each seed's results to DIR/seed<N>/ (never overwritten)")
    p.add_argument("--shared", action="store_true", help="other work shares the machine: times are not idle times")
    p.add_argument("--target", type=float, default=0.93)
    p.add_argument("--reference-max-epochs", type=int, default=30)
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quick", action="store_true", help="CI smoke test: subset, 1 epoch, 1 seed")
    a = p.parse_args()
    if a.quick:
        a.epochs, a.seeds, a.train_subset, a.reference_max_epochs = 1, 1, 2000, 1
    seeds = range(a.first_seed, a.first_seed + a.seeds)
    if a.save:
        taken = [str(Path(a.save) / f"seed{s}") for s in seeds if (Path(a.save) / f"seed{s}").exists()]
        if taken:
            sys.exit(f"error: {', '.join(taken)} already exist; results are never overwritten")
    recipe_runs = [run_recipe(a.recipe, s, a) for s in seeds]
    out = {"benchmark": "time_to_accuracy", "recipe": a.recipe, "target": a.target,
           "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(),
                       "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "idle": not a.shared,
           "fashionlab": summary(recipe_runs) if recipe_runs else None}
    if not a.no_reference:
        ref = run_reference(0, a.target, a.reference_max_epochs, a.train_subset, a.data_dir)
        out["reference"] = ref
        if ref["reached"] and recipe_runs and out["fashionlab"]["mean_wall_s"]:
            out["speedup_to_target"] = round(ref["reached"]["wall_s"] / out["fashionlab"]["mean_wall_s"], 2)
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
