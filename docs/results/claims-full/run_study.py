"""The claims study at full length (issue 28): does each ingredient of CNN_2's recipe help?

Six arms, each the recipe with one ingredient removed (plus CNN_1 for scale), every arm at its recipe's own
length (cnn2: 30 epochs, cnn1: 10) and with flip test-time augmentation off in every arm, so that the
augmentation arm is no longer scored on flipped views it never trained on. Seeds run seed-major (every arm's
seed 0, then every arm's seed 1, ...) so that a study cut short still has whole seeds.

Each training is its own `fashionlab train` process with one thread, `--workers` at a time; a run that has not
started by `--deadline` seconds is not started. With `--pack DIR` the finished runs are packed for transport:
the small files of every run in one archive, then best.pt checkpoints in the order of PACK_ORDER in chunks,
within `--pack-limit-mb`.

    python docs/results/claims-full/run_study.py --runs runs/claims-full --workers 2 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ARMS: dict[str, list[str]] = {
    "cnn2": ["--recipe", "cnn2"],
    "no-augment": ["--recipe", "cnn2", "--label", "no-augment", "--augment", "none"],
    "no-bn": ["--recipe", "cnn2", "--label", "no-bn", "--model-arg", "bn=false"],
    "no-dropout": ["--recipe", "cnn2", "--label", "no-dropout", "--dropout", "0"],
    "no-schedule": ["--recipe", "cnn2", "--label", "no-schedule", "--scheduler", "none"],
    "cnn1": ["--recipe", "cnn1"],
}
COMMON = ["--no-tta", "--quiet"]
# Checkpoints travel in this order when space is short: the augmentation question (robustness) needs these first.
PACK_ORDER = ("cnn2", "no-augment", "no-schedule", "no-bn", "no-dropout", "cnn1")
SMALL_FILES = ("config.json", "metrics.csv", "test_metrics.json", "classification_report.txt",
               "test_predictions.npy", "test_probs.npy")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, required=True, help="folder for the run folders (runs/<arm>-seed<N>)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--deadline", type=float, default=float("inf"), help="seconds after which no run is started")
    p.add_argument("--kill-after", type=float, default=float("inf"),
                   help="seconds after which unfinished runs are stopped (their folders are not packed)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train flags (tests: --epochs 1)")
    p.add_argument("--pack", type=Path, help="write the transport archives here")
    p.add_argument("--pack-limit-mb", type=float, default=60.0)
    args = p.parse_args()

    arms = args.arms.split(",")
    jobs = [(arm, s) for s in range(args.first_seed, args.first_seed + args.seeds) for arm in arms]
    (args.runs / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def one(job: tuple[str, int]) -> dict:
        arm, seed = job
        name = f"{arm}-seed{seed}"
        if time.time() - t0 > args.deadline:
            return {"run": name, "status": "not started (deadline)"}
        if (args.runs / name / "test_metrics.json").exists():
            return {"run": name, "status": "done before"}
        cmd = [sys.executable, "-m", "fashionlab", "train", *ARMS[arm], *COMMON, "--seed", str(seed),
               "--device", args.device, "--out", str(args.runs / name), *args.extra]
        start = time.time()
        with open(args.runs / "logs" / f"{name}.log", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                rc = proc.wait(timeout=max(1.0, t0 + args.kill_after - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = f"killed at {args.kill_after:g} s"
        row = {"run": name, "status": "ok" if rc == 0 else f"exit {rc}" if isinstance(rc, int) else rc, "command": " ".join(cmd[1:]),
               "start_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start)),
               "wall_s": round(time.time() - start, 1)}
        print(json.dumps(row), flush=True)
        return row

    with ThreadPoolExecutor(args.workers) as pool:
        rows = list(pool.map(one, jobs))
    record = {"study": "claims-full", "workers": args.workers, "threads_per_run": 1, "machine": machine(),
              "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0)),
              "wall_s": round(time.time() - t0, 1), "runs": rows}
    (args.runs / f"study-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(t0))}.json").write_text(
        json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "runs"}), flush=True)
    if args.pack:
        pack(args.runs, args.pack, args.pack_limit_mb * 2**20)
    return 0


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "")
    except OSError:
        pass
    return info


def pack(runs: Path, out: Path, limit: float) -> None:
    """Small files of every run (and the logs and study records) in one archive; checkpoints after, in chunks."""
    out.mkdir(parents=True, exist_ok=True)
    small = out / "runs-small.tar.xz"
    with tarfile.open(small, "w:xz") as tar:
        for path in sorted(runs.glob("*.json")) + sorted((runs / "logs").glob("*.log")):
            tar.add(path, arcname=str(path.relative_to(runs)))
        for run in sorted(d for d in runs.iterdir() if (d / "test_metrics.json").exists()):
            for f in SMALL_FILES:
                if (run / f).exists():
                    tar.add(run / f, arcname=f"{run.name}/{f}")
    used = small.stat().st_size
    ckpts = [d / "checkpoints" / "best.pt" for arm in PACK_ORDER for d in sorted(runs.glob(f"{arm}-seed*"))
             if (d / "checkpoints" / "best.pt").exists() and (d / "test_metrics.json").exists()]
    chunks: list[list[Path]] = [[]]
    chunk_limit, chunk_size = 15.5 * 2**20, 0
    for ck in ckpts:
        size = ck.stat().st_size
        if used + size > limit:
            break
        if chunk_size + size > chunk_limit:
            if len(chunks) == 7:  # the transport returns 8 files at most
                break
            chunks.append([])
            chunk_size = 0
        chunks[-1].append(ck)
        chunk_size += size
        used += size
    for n, chunk in enumerate(c for c in chunks if c):
        with tarfile.open(out / f"checkpoints-{n}.tar", "w") as tar:
            for ck in chunk:
                tar.add(ck, arcname=f"{ck.parent.parent.name}/checkpoints/best.pt")

if __name__ == "__main__":
    raise SystemExit(main())
