"""End-to-end time of `make run` (or another make target) from a fresh clone, as JSON.

What a new user waits for: cloning aside, `make TARGET` creates .venv, installs the package and its
dependencies (from pip's cache or PyPI), makes sure the data is present, then runs the job. Run it on an idle
machine; the committed output is docs/benchmarks/make-run.json:

    python benchmarks/make_run.py > docs/benchmarks/make-run.json
    python benchmarks/make_run.py --target run-full > docs/benchmarks/make-run-full.json   # ~15 min more
    # the software path of an AVX2-only CPU on this one (benchmarks/machine.py ISA_CAPS):
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        python benchmarks/make_run.py > docs/benchmarks/make-run-avx2-capped.json
    # ... and a slower machine's step times: the same, inside a cgroup whose CPU quota is 0.5 CPU over 100 ms periods
    # (as root, cgroup v1; the record says so, benchmarks/machine.py cpu_quota). Its steps: cnn1 ~0.2 s, cnn2 ~1 s at
    # batch 128, about the AVX2-only EPYC of issue 30 (cnn2 ~100 training images/s per core) or slower:
    G=/sys/fs/cgroup/cpu/slow; mkdir -p $G; echo 100000 > $G/cpu.cfs_period_us; echo 50000 > $G/cpu.cfs_quota_us
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 sh -c \
        "echo \\$\\$ > $G/tasks; exec python benchmarks/make_run.py" > docs/benchmarks/make-run-avx2-capped-slow.json

`make setup data` runs first and is timed apart (setup_s), so job_s is the main job alone, as a user who has run
`make` once before waits for it; wall_s is the two together.

The clone is of the committed HEAD of this repository, into a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_record  # (this script's folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="run", help="make target (default: run)")
    p.add_argument("--make-args", default="", help="extra make arguments, e.g. RUN_ARGS='--quick --epochs 1'")
    a = p.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="fashionlab-make-") as tmp:
        clone = Path(tmp) / "fashionlab"
        clone_s, proc = run(["git", "clone", "--quiet", str(ROOT), str(clone)], Path(tmp))
        if proc.returncode:
            sys.exit(f"error: git clone failed: {proc.stderr.strip()[:200]}")
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}  # the clone makes its own .venv
        setup_s, proc = run(["make", "setup", "data"], clone, env)
        if proc.returncode:
            sys.exit(f"error: make setup data failed: {(proc.stdout + proc.stderr).strip()[-400:]}")
        make = ["make", a.target, *a.make_args.split()]
        make_s, proc = run(make, clone, env)
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        tail = lines[-15:]
        quick = [line for line in lines if line.startswith("quick: ")]  # what --quick chose, and why
    out = {"benchmark": "make_run", "command": " ".join(make), "commit": commit, "returncode": proc.returncode,
           "wall_s": round(setup_s + make_s, 1), "setup_s": round(setup_s, 1), "job_s": round(make_s, 1),
           "clone_s": round(clone_s, 1),
           "measures": "wall seconds in a fresh clone: setup_s of `make setup data` (venv creation, pip install, data "
                       "check), then job_s of the make command (the job itself); wall_s their sum (the clone's time "
                       "is clone_s, not included)",
           "output_tail": tail, "quick": quick, "cpu": cpu_record(),
           "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
