"""Scale-out for real: tune workers on a PostgreSQL server (one killed mid-trial), torchrun across two nodes,
and a torchrun group restarted after a worker is killed. Everything runs on this machine, on synthetic data."""

from __future__ import annotations

import csv
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RUN_FILES = ["config.json", "metrics.csv", "checkpoints/best.pt", "checkpoints/last.pt", "test_metrics.json"]
SMALL = ["--model", "cnn1", "--train-subset", "500", "--val-fraction", "0.1", "--batch-size", "32", "--device", "cpu",
         "--quiet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float, procs=()):
    """Poll `check()` until it returns something truthy; fail if it takes too long or a process dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                out = p.stdout.read() if p.stdout else ""
                pytest.fail(f"waiting for {what}: process {p.args[:6]} exited with {p.returncode}\n{out[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on a free local port: initdb into a temp dir, run as a non-root user."""
    pytest.importorskip("psycopg2", reason="the tune extra's PostgreSQL driver (psycopg2-binary) is not installed")
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server not installed (Debian: apt-get install postgresql; `make test` does it as root)")
    as_user = {}
    base = Path(tempfile.mkdtemp(prefix="fashionlab-pg-"))
    if os.geteuid() == 0:  # postgres refuses to run as root
        users = [u for u in ("postgres", "nobody") if u in {p.pw_name for p in pwd.getpwall()}]
        if not users:
            pytest.skip("running as root and there is no postgres/nobody user to run the PostgreSQL server as")
        user = pwd.getpwnam(users[0])
        os.chown(base, user.pw_uid, user.pw_gid)
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    data, port = base / "data", free_port()
    try:
        subprocess.run([bindir / "initdb", "-D", data, "-U", "fashionlab", "--auth=trust", "--no-sync", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120, **as_user)
        opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = subprocess.run([bindir / "pg_ctl", "-D", data, "-o", opts, "-l", base / "server.log", "-w", "start"],
                               capture_output=True, text=True, timeout=120, **as_user)
        log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
        assert start.returncode == 0, f"pg_ctl start failed: {start.stdout}{start.stderr}\n{log[-2000:]}"
        yield f"postgresql://fashionlab@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True,
                           timeout=60, **as_user)
        shutil.rmtree(base, ignore_errors=True)


def test_tune_workers_on_postgresql_survive_a_killed_worker(tmp_path, synthetic_env, postgres_url):
    """Three workers share a study; one is SIGKILLed mid-trial. The heartbeat marks its trial FAIL and queues
    it again, a replacement worker runs the dead worker's remaining trials, and the study ends with every
    requested trial finished and nothing left running."""
    import optuna

    from fashionlab.tune import with_driver

    per_worker, heartbeat = 3, 2
    out = tmp_path / "tune"

    def worker(trials: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "fashionlab", "tune", *SMALL, "--epochs", "2", "--trials", str(trials),
               "--storage", postgres_url, "--study", "scale", "--heartbeat", str(heartbeat), "--out", str(out)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())

    workers = [worker(per_worker) for _ in range(3)]
    tag = f"{socket.gethostname()}:{workers[0].pid}"  # the victim, as tune records a trial's worker

    def trials():
        try:
            return optuna.load_study(study_name="scale", storage=with_driver(postgres_url)).get_trials(deepcopy=False)
        except KeyError:  # no worker has created the study yet
            return []

    def victims_running_trial():
        return next((t for t in trials() if t.state == optuna.trial.TrialState.RUNNING
                     and t.user_attrs.get("worker") == tag), None)

    try:
        with _quiet_optuna():
            target, final = kill_one_then_replace(workers, per_worker, heartbeat, trials, victims_running_trial,
                                                  worker, tag)
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
    by_number = {t.number: t for t in final}
    killed = by_number[target.number]
    assert killed.state == optuna.trial.TrialState.FAIL  # only the heartbeat check can have failed it
    states = [t.state for t in final]
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.WAITING not in states
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    assert sum(s.is_finished() and s != optuna.trial.TrialState.FAIL for s in states) == 3 * per_worker
    retries = [t for t in final if t.system_attrs.get("failed_trial") == target.number]
    assert len(retries) == 1 and retries[0].state != optuna.trial.TrialState.FAIL
    assert retries[0].params == killed.params  # the killed trial's point was tried again, not lost
    assert (out / "summary.json").is_file() and (out / "trials.csv").is_file()


def kill_one_then_replace(workers, per_worker, heartbeat, trials, victims_running_trial, worker, tag):
    """SIGKILL workers[0] mid-trial, start a replacement for its remaining trials once the killed trial's
    heartbeat is past its grace period, wait for every live worker; return (killed trial, final trials)."""
    victim = workers[0]
    target = wait_for("the victim to start a trial", victims_running_trial, 120, [victim])
    time.sleep(0.2)  # its heartbeat thread has recorded a beat
    still = victims_running_trial()
    assert still is not None and still.number == target.number, "the victim's trial ended before it was killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    killed_at = time.monotonic()
    finished_by_victim = sum(t.state.is_finished() and t.user_attrs.get("worker") == tag for t in trials())
    # Once the grace period (3 heartbeats) has passed, the replacement's first trial start is sure to find the
    # stale trial (the survivors may find it first).
    time.sleep(max(0.0, killed_at + 3 * heartbeat + 1 - time.monotonic()))
    workers.append(worker(per_worker - finished_by_victim))
    for p in workers[1:]:
        output = p.communicate(timeout=300)[0]
        assert p.returncode == 0, output[-3000:]
    return target, trials()


class _quiet_optuna:
    """Polling the study from the test prints nothing (optuna logs each load_study at INFO)."""

    def __enter__(self):
        import optuna

        self.level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def __exit__(self, *exc):
        import optuna

        optuna.logging.set_verbosity(self.level)


# ---------------------------------------------------------------------------------------------- torchrun

# Wraps `fashionlab train` without changing what it does: says which node/rank/attempt it is, writes its pid and
# (rank 0) its count of finished steps to PROBE_DIR, slows each step by PROBE_STEP_SECONDS so a test can kill it
# mid-training, and prints where a resumed run restarted.
PROBE = """
import os, sys, time
from pathlib import Path
import fashionlab.train as t

rank, attempt = os.environ["RANK"], os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
probe_dir = Path(os.environ["PROBE_DIR"])
pause = float(os.environ.get("PROBE_STEP_SECONDS", "0"))
def say(*words):  # one write per line: the ranks share one pipe, and print() writes word by word
    sys.stdout.write(" ".join(map(str, words)) + "\\n")
    sys.stdout.flush()

say("NODE", os.environ["GROUP_RANK"], rank, os.environ["WORLD_SIZE"], attempt)
(probe_dir / f"pid.{rank}.{attempt}").write_text(str(os.getpid()))
real_step, real_resume = t.train_step, t.resume_state
done = 0

def train_step(*args, **kwargs):
    global done
    result = real_step(*args, **kwargs)
    done += 1
    if rank == "0":
        tmp = probe_dir / f"steps.{attempt}.tmp"
        tmp.write_text(str(done))
        os.replace(tmp, probe_dir / f"steps.{attempt}")
    time.sleep(pause)
    return result

def resume_state(ctx, state):
    real_resume(ctx, state)
    prog = state.prog
    say("RESTORED", rank, attempt, prog.epoch, prog.step, prog.global_step)

t.train_step, t.resume_state = train_step, resume_state
from fashionlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def probe(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    script, probe_dir = tmp_path / "probe.py", tmp_path / "probe"
    script.write_text(PROBE)
    probe_dir.mkdir(exist_ok=True)
    return script, {**env(), "PROBE_DIR": str(probe_dir)}


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def metrics_epochs(run: Path) -> list[int]:
    with open(run / "metrics.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def test_torchrun_two_nodes_on_localhost_complete_a_run(tmp_path, synthetic_env):
    script, penv = probe(tmp_path)
    run, port = tmp_path / "run", free_port()
    launch = torchrun("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                      f"127.0.0.1:{port}", "--rdzv-id", "two-nodes", str(script), "train", *SMALL, "--epochs", "1",
                      "--out", str(run))
    nodes = [subprocess.Popen(launch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=penv)
             for _ in range(2)]
    try:
        outputs = [p.communicate(timeout=300)[0] for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
    for p, out in zip(nodes, outputs):
        assert p.returncode == 0, out[-3000:]
    seen = sorted(line.split()[1:4] for out in outputs for line in out.splitlines() if line.startswith("NODE "))
    assert seen == [["0", "0", "2"], ["1", "1", "2"]], outputs  # two nodes, one rank each, one group of 2
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert metrics_epochs(run) == [1]


def test_torchrun_restarts_a_killed_worker_and_resumes_from_its_checkpoint(tmp_path, synthetic_env):
    import torch

    def progress(path: Path) -> dict:
        return torch.load(path, map_location="cpu", weights_only=True)["progress"]

    script, penv = probe(tmp_path)
    probe_dir, run, every = tmp_path / "probe", tmp_path / "run", 5
    penv["PROBE_STEP_SECONDS"] = "0.05"
    # torchrun shares its rendezvous store with the workers, and a restarted group then reads the dead group's
    # gloo addresses from it (connectFullMesh: connection refused; pytorch/pytorch#135712). Not sharing it fixes that.
    penv["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    cmd = torchrun("--standalone", "--nproc-per-node", "2", "--max-restarts", "1", str(script), "train", *SMALL,
                   "--epochs", "3", "--checkpoint-every-steps", str(every), "--out", str(run))
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=penv)
    try:
        wait_for("the first checkpoint", lambda: (run / "checkpoints" / "last.pt").exists(), 120, [launcher])
        time.sleep(0.3)  # a few steps past it
        rank0 = int((probe_dir / "pid.0.0").read_text())
        assert rank0 != launcher.pid
        os.kill(rank0, signal.SIGKILL)  # the worker that holds the run folder, not the launcher
        killed_after = int((probe_dir / "steps.0").read_text())
        saved = progress(run / "checkpoints" / "last.pt")  # no one writes it now
        output = launcher.communicate(timeout=300)[0]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, output[-3000:]
    restored = [line.split()[1:] for line in output.splitlines() if line.startswith("RESTORED ")]
    at = [str(saved["epoch"]), str(saved["step"]), str(saved["global_step"])]
    assert sorted(restored) == [["0", "1", *at], ["1", "1", *at]], output[-3000:]  # both ranks, on the restart
    # Lost work: only the steps since the last checkpoint.
    assert 0 < saved["global_step"] <= killed_after <= saved["global_step"] + every
    # The restart trained only what was left: the whole run's steps minus the checkpoint's.
    rank_n, batch = 500 // 2, 32 // 2
    per_epoch = rank_n // batch + (rank_n % batch > 1)
    assert int((probe_dir / "steps.1").read_text()) == 3 * per_epoch - saved["global_step"]
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert metrics_epochs(run) == [1, 2, 3]
    assert progress(run / "checkpoints" / "last.pt")["epoch"] == 3
