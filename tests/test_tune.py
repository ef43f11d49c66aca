"""`fashionlab tune`: workers sharing one study, pruning on validation accuracy, the best config as YAML."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest
import yaml

from conftest import blind
from fashionlab.cli import main
from fashionlab.config import FIELD_NAMES, build_config
from fashionlab.data import load_fashion_mnist
from fashionlab.tune import make_objective, write_outputs


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


@pytest.fixture
def blind_data(synthetic_data_dir):
    """Synthetic data whose test set cannot be read."""
    data = load_fashion_mnist(synthetic_data_dir, verify=False, progress=False)
    return blind(data)


def test_two_workers_share_one_sqlite_study(tmp_path, synthetic_env):
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    out = tmp_path / "tune"
    cmd = [sys.executable, "-m", "fashionlab", "tune", "--model", "cnn1", "--trials", "2", "--epochs", "2",
           "--train-subset", "100", "--storage", storage, "--study", "shared", "--out", str(out),
           "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two workers on a small machine
    workers = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    results = [w.communicate(timeout=300) for w in workers]
    for w, (_, stderr) in zip(workers, results):
        assert w.returncode == 0, stderr

    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    assert len(trials) == 4  # --trials is per worker
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    states = [t.state for t in trials]
    assert set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 2  # the median pruner waits for 3
    for name in ("best.yaml", "trials.csv", "summary.json", "history.png", "importance.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] == 4 and len(summary["workers"]) == 2

    best = yaml.safe_load((out / "best.yaml").read_text())
    assert set(best) <= FIELD_NAMES and "train_subset" not in best and "out" not in best
    assert best["lr"] == summary["best_params"]["lr"]
    run = tmp_path / "run"
    assert main(["train", "--config", str(out / "best.yaml"), "--train-subset", "100", "--quiet",
                 "--out", str(run)]) == 0
    trained = json.loads((run / "config.json").read_text())
    assert all(trained[k] == v for k, v in best.items())


def test_trials_report_each_epoch_get_pruned_and_never_read_the_test_set(tmp_path, blind_data):
    base = build_config(dict(model="cnn1", epochs=3, batch_size=32, train_subset=100, device="cpu"))
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    study.optimize(make_objective(base, blind_data, fixed={"model", "batch_size", "lr"}), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]  # stopped after its first epoch
    assert "lr" not in trial.params and "batch_size" not in trial.params  # given options are held fixed
    assert {"weight_decay", "scheduler", "augment", "label_smoothing"} <= set(trial.params)
    assert "dropout" not in trial.params  # cnn1 has no dropout
    assert trial.user_attrs["config"]["lr"] == base.lr

    assert write_outputs(study, tmp_path, 10) == 1  # nothing complete: no best.yaml, but no crash either
    assert json.loads((tmp_path / "summary.json").read_text())["trials"]["pruned"] == 1
    assert not (tmp_path / "best.yaml").exists()


def test_one_complete_trial_gives_best_yaml_without_importance(tmp_path, blind_data, capsys):
    base = build_config(dict(model="cnn2", epochs=1, batch_size=32, train_subset=100, device="cpu"))
    study = optuna.create_study(direction="maximize")
    study.optimize(make_objective(base, blind_data, fixed={"batch_size"}), n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert "dropout" in study.trials[0].params
    assert write_outputs(study, tmp_path, 10) == 0
    assert (tmp_path / "best.yaml").exists() and (tmp_path / "history.png").exists()
    assert not (tmp_path / "importance.png").exists()
    out = capsys.readouterr().out
    assert "needs at least 2 complete trials" in out
    assert f"--config {tmp_path / 'best.yaml'} --epochs 10" in out  # full length, not the trials' 1 epoch


def test_unusable_storage_is_one_line_and_hides_the_password(tmp_path, capsys):
    code = main(["tune", "--model", "cnn1", "--trials", "1", "--out", str(tmp_path / "t"),
                 "--storage", "postgresql://me:s3cret@127.0.0.1:1/db"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert "s3cret" not in err
    assert not (tmp_path / "t").exists()  # a bad URL leaves no empty study folder behind
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        assert "pip install psycopg2-binary" in err


def test_a_worker_that_loses_the_schema_race_retries_and_joins(tmp_path, monkeypatch):
    """Two workers creating one new database at once: the loser's IntegrityError is retried, not fatal."""
    from fashionlab import tune

    calls = []

    class Flaky(optuna.storages.RDBStorage):
        def __init__(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: alembic_version.version_num")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", Flaky)
    monkeypatch.setattr(tune.time, "sleep", lambda s: None)
    study = tune.open_study(f"sqlite:///{tmp_path / 'tune.db'}", "raced", "median")
    assert len(calls) == 2 and study.study_name == "raced"


def test_out_with_files_of_the_users_is_refused_before_any_work(tmp_path, capsys):
    """tune writes summary.json, best.yaml and trials.csv: a folder fashionlab did not make keeps its files."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text("my notes")
    afile = tmp_path / "afile"
    afile.write_text("mine too")
    for out in (mine, afile, afile / "under"):
        code = main(["tune", "--model", "cnn1", "--trials", "1", "--out", str(out), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in mine.iterdir()) == ["summary.json"]
    assert (mine / "summary.json").read_text() == "my notes"
    assert afile.read_text() == "mine too"


def test_a_precision_every_trial_would_fail_on_is_refused_before_the_study(tmp_path, capsys):
    code = main(["tune", "--model", "cnn1", "--trials", "1", "--device", "cpu", "--precision", "fp16",
                 "--out", str(tmp_path / "t"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: --precision fp16 is for GPUs; on a CPU use bf16 or fp32\n"
    assert not (tmp_path / "t").exists()


def test_a_trial_failing_on_bad_input_logs_one_line_not_a_traceback(tmp_path, synthetic_env):
    """In a subprocess: optuna's log handler writes to the stderr it found when it was made, which pytest's
    capture fixtures do not all see."""
    out = tmp_path / "t"
    script = ("import sys, fashionlab.train\n"
              "from fashionlab.errors import ConfigError\n"
              "def refuse(*args, **kwargs):\n"
              "    raise ConfigError('that model cannot take 28x28 inputs')\n"
              "fashionlab.train.train = refuse\n"
              "from fashionlab.cli import main\n"
              "sys.exit(main(['tune', '--model', 'cnn1', '--trials', '1', '--device', 'cpu', '--out', "
              f"{str(out)!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "Trial 0 failed" in proc.stderr  # optuna's log line stays, without the traceback
    assert proc.stderr.strip().splitlines()[-1] == "error: that model cannot take 28x28 inputs"
    # A second worker of the same study may use the folder tune made (its marker says so).
    assert (out / ".fashionlab").is_file()
