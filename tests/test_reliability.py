"""Faults a long training meets: SIGKILL at any point (mid-save too), SIGTERM, disk errors, a second writer.

Each resumed run must end with exactly the metrics (every column but `seconds`) and test metrics of the
same run left alone.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fashionlab.errors import RunError
from fashionlab.files import atomic_write_bytes
from fashionlab.runformat import load_checkpoint

ARGS = ["--model", "cnn1", "--epochs", "3", "--batch-size", "32", "--val-fraction", "0.2", "--device", "cpu",
        "--augment", "flip,rotate,crop,erase", "--scheduler", "onecycle", "--ema", "0.9",
        "--checkpoint-every-steps", "7", "--quiet"]

# A subprocess that SIGKILLs itself inside the Nth atomic write, after the temp file is written but
# before the rename: the worst moment for a checkpoint save.
KILL_MID_SAVE = """
import os, signal, sys
import fashionlab.files as files
n = int(os.environ["KILL_AT_WRITE"])
real_replace = os.replace
calls = {"n": 0}
def replace(src, dst):
    calls["n"] += 1
    if calls["n"] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)
files.os.replace = replace
from fashionlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data_env(tmp_path_factory):
    from conftest import write_synthetic_dataset

    root = tmp_path_factory.mktemp("reliability")
    data = write_synthetic_dataset(root / "data", n_train=1200, n_test=200)
    env = {**os.environ, "FASHIONLAB_DATA": str(data), "FASHIONLAB_SKIP_VERIFY": "1",
           "FASHIONLAB_SYSTEM_DIR": str(root / "none"), "OMP_NUM_THREADS": "1"}
    return root, env


@pytest.fixture(scope="module")
def reference(data_env):
    root, env = data_env
    run = root / "reference"
    proc = subprocess.run([sys.executable, "-m", "fashionlab", "train", *ARGS, "--out", str(run)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return run


def comparable(run: Path):
    with open(run / "metrics.csv") as f:
        rows = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
    m = json.loads((run / "test_metrics.json").read_text())
    return rows, m["accuracy"], m["confusion_matrix"]


def start(env, run, extra_env=None, script=None):
    cmd = [sys.executable, "-c", script, "train"] if script else [sys.executable, "-m", "fashionlab", "train"]
    return subprocess.Popen([*cmd, *ARGS, "--out", str(run)], env={**env, **(extra_env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def resume(env, run):
    proc = subprocess.run([sys.executable, "-m", "fashionlab", "train", "--resume", str(run), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def wait_for(path: Path, proc, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, "training ended before the kill point"
        assert time.time() - t0 < timeout
        time.sleep(0.02)


def wait_for_saves(path: Path, proc, n: int, timeout=120):
    """Until `path` has been (atomically) replaced n times: progress, not wall time, so the kill lands
    mid-run on a fast idle machine and on a loaded one alike."""
    seen, t0 = set(), time.time()
    while len(seen) < n:
        assert proc.poll() is None, f"training ended after {len(seen)} of {n} saves, before the kill point"
        assert time.time() - t0 < timeout
        try:
            st = path.stat()
            seen.add((st.st_ino, st.st_mtime_ns))  # each save is a new file, written at a new moment
        except FileNotFoundError:
            pass
        time.sleep(0.002)


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_random_point_then_resume_is_identical(data_env, reference, seed):
    root, env = data_env
    run = root / f"killed-{seed}"
    proc = start(env, run)
    rng = random.Random(seed)
    # 16 saves in all (every 7 steps and at each epoch end): kill after the 2nd-6th, a moment later.
    wait_for_saves(run / "checkpoints" / "last.pt", proc, rng.randint(2, 6))
    time.sleep(rng.uniform(0.0, 0.02))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "test_metrics.json").exists(), "the kill came too late to test anything"
    resume(env, run)
    assert comparable(run) == comparable(reference)


@pytest.mark.parametrize("kill_at", [3, 8])
def test_sigkill_during_checkpoint_save_then_resume_is_identical(data_env, reference, kill_at):
    root, env = data_env
    run = root / f"mid-save-{kill_at}"
    proc = start(env, run, {"KILL_AT_WRITE": str(kill_at)}, script=KILL_MID_SAVE)
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    leftovers = list(run.rglob(".*.tmp-*"))
    assert leftovers, "the kill should leave a half-finished temp file behind"
    resume(env, run)
    assert not list(run.rglob(".*.tmp-*")), "temp files are cleaned on the next start"
    assert comparable(run) == comparable(reference)


def test_sigterm_saves_and_exits_143_then_resumes(data_env, reference):
    root, env = data_env
    run = root / "terminated"
    proc = start(env, run)
    wait_for(run / "checkpoints" / "last.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "resume with: fashionlab train --resume" in err and "Traceback" not in err
    load_checkpoint(run / "checkpoints" / "last.pt")
    resume(env, run)
    assert comparable(run) == comparable(reference)


def test_second_writer_is_refused_while_first_runs(data_env):
    root, env = data_env
    run = root / "busy"
    first = start(env, run)
    wait_for(run / "config.json", first)
    second = subprocess.run([sys.executable, "-m", "fashionlab", "train", *ARGS, "--out", str(run)], env=env,
                            capture_output=True, text=True, timeout=120)
    first.kill()
    first.wait()
    assert second.returncode == 2
    assert "in use by another training" in second.stderr and len(second.stderr.strip().splitlines()) == 1


def test_nan_from_the_cli_is_one_line_and_nonzero(data_env):
    root, env = data_env
    proc = subprocess.run([sys.executable, "-m", "fashionlab", "train", "--model", "cnn1", "--epochs", "1",
                           "--lr", "1e30", "--optimizer", "sgd", "--scheduler", "none", "--device", "cpu",
                           "--quiet", "--out", str(root / "nan")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert proc.stderr.startswith("error: loss became") and len(proc.stderr.strip().splitlines()) == 1


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.csv"
    target.write_text("old contents\n")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(RunError, match="No space left on device; the previous file is intact"):
        atomic_write_bytes(target, b"new contents that never land\n")
    assert target.read_text() == "old contents\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_disk_full_during_training_keeps_previous_checkpoint(tmp_path, synthetic_data_dir, monkeypatch):
    import fashionlab.files as files
    from fashionlab.config import build_config
    from fashionlab.data import load_fashion_mnist
    from fashionlab.train import train

    data = load_fashion_mnist(synthetic_data_dir, verify=False, progress=False)
    cfg = build_config(dict(model="cnn1", epochs=3, batch_size=64, device="cpu", out=str(tmp_path / "run")))
    real_fsync, calls = os.fsync, {"n": 0}

    def fsync_fails_later(fd):  # the disk fills up after the first epoch's files are written
        calls["n"] += 1
        if calls["n"] > 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync_fails_later)
    with pytest.raises(RunError, match="No space left on device"):
        train(cfg, data=data, verbose=False)
    monkeypatch.setattr(files.os, "fsync", real_fsync)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1
    assert not list((tmp_path / "run").rglob(".*.tmp-*"))
