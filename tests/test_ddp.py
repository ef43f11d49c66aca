"""Data-parallel training under torchrun (gloo on the CPU): two processes train like one."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from fashionlab.cli import main

RUN_FILES = ["config.json", "metrics.csv", "checkpoints/best.pt", "checkpoints/last.pt", "test_metrics.json"]
# cnn1 has no batch norm and no dropout, so two ranks' half-batches add up to exactly the one-process batch.
TRAIN = ["train", "--model", "cnn1", "--epochs", "2", "--batch-size", "32", "--lr", "3e-3", "--val-fraction", "0.2",
         "--device", "cpu", "--quiet"]


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def rows(run) -> list[dict[str, float]]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def test_two_processes_train_like_one(tmp_path, synthetic_env):
    two, one = tmp_path / "two", tmp_path / "one"
    proc = torchrun(2, "-m", "fashionlab", *TRAIN, "--out", str(two))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main([*TRAIN, "--out", str(one)]) == 0
    for run in (one, two):
        for name in RUN_FILES:
            assert (run / name).is_file(), f"{run.name}/{name}"
    r1, r2 = rows(one), rows(two)
    assert [r["epoch"] for r in r2] == [1, 2]
    # Rank r trains on positions r, r+2, ... of each step's batch and DDP averages the gradients: the same
    # updates as one process, up to float (bf16) rounding. A broken shard or gradient sync would show here.
    assert r2[0]["train_loss"] == pytest.approx(r1[0]["train_loss"], rel=0.02)
    assert r2[0]["train_acc"] == pytest.approx(r1[0]["train_acc"], abs=0.02)
    acc = [json.loads((run / "test_metrics.json").read_text())["accuracy"] for run in (one, two)]
    assert min(acc) > 0.5 and abs(acc[0] - acc[1]) < 0.1, acc  # chance is 0.1


# Prints every rank's epoch decisions: ranks must agree on them, or plateau LRs drift apart and early
# stopping stops one rank while the others wait for it forever.
PROBE = """
import json, os, sys
import fashionlab.train as t
real = t.train_epoch
def train_epoch(*args):
    out = real(*args)
    prog = args[1].prog  # train_epoch(ctx, state, net, stop)
    row = {k: v for k, v in prog.rows[-1].items() if k != "seconds"}
    print("ROW", os.environ["RANK"], json.dumps(row | {"bad_epochs": prog.bad_epochs}), flush=True)
    return out
t.train_epoch = train_epoch
from fashionlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ranks_agree_on_validation_with_batch_norm(tmp_path, synthetic_env):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    proc = torchrun(2, str(probe), "train", "--model", "cnn2", "--epochs", "1", "--batch-size", "32",
                    "--train-subset", "200", "--device", "cpu", "--quiet", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = dict(line.split(" ", 2)[1:] for line in proc.stdout.splitlines() if line.startswith("ROW "))
    assert set(seen) == {"0", "1"}
    assert json.loads(seen["0"]) == json.loads(seen["1"])


def test_sync_bn_on_the_cpu_is_a_clear_error_not_a_pytorch_crash():
    import torch

    from fashionlab.config import build_config
    from fashionlab.errors import ConfigError
    from fashionlab.models import build_model
    from fashionlab.runstart import Dist, wrap_model

    cfg = build_config({"model": "cnn2", "sync_bn": True, "device": "cpu"})
    with pytest.raises(ConfigError, match="--sync-bn needs CUDA"):
        wrap_model(build_model("cnn2"), cfg, Dist(rank=0, world=2), torch.device("cpu"))
