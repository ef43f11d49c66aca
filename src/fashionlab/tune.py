"""`fashionlab tune`: an Optuna search over the training hyperparameters, maximizing validation accuracy.

Each trial trains on the training split and is scored on the validation split after every epoch; the
pruner stops trials that fall behind. The test set is never read by a trial: tuning on it would make the
final test accuracy optimistic. Several `fashionlab tune` processes (on one machine or many) that share
--storage and --study work on one study; each runs --trials trials.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import inspect
import io
import logging
import os
import re
import socket
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from fashionlab.config import MAX_LABEL, PATHS, SCHEDULERS, TrainConfig, build_config, given, resolve
from fashionlab.config import add_arguments as add_train_arguments
from fashionlab.errors import ConfigError, FashionlabError, RunError
from fashionlab.files import MARKER, check_new_folder, check_outside, make_folder, undo_folder
from fashionlab.reading import shorten
from fashionlab.redact import redact_text, redact_url

AUGMENT_CHOICES = ("none", "flip", "flip,crop", "flip,crop,erase", "flip,rotate,crop,erase")
# Left out of best.yaml: where the data and the run live, and the subset that only made tuning cheap.
NOT_IN_BEST = PATHS | {"train_subset"}
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)  # the base configuration; options given here are held fixed, not searched
    parser.add_argument("--trials", type=int, required=True, help="trials this worker runs")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL shared by all workers, e.g. sqlite:///tune.db or "
                             "postgresql://user:password@host/db (default: sqlite in --out)")
    parser.add_argument("--study", default=None,
                        help=f"study name, at most {MAX_LABEL} characters (default tune-<model>)")
    parser.add_argument("--timeout", type=float, default=None, help="start no new trial after S seconds")
    parser.add_argument("--pruner", choices=("median", "halving", "none"), default="median",
                        help="stop unpromising trials on their per-epoch validation accuracy (default median)")
    parser.add_argument("--heartbeat", type=int, default=60, metavar="S",
                        help="each running trial records a heartbeat every S seconds; a trial silent for 3*S "
                             "(its worker died) is marked failed and retried once (default 60)")
    parser.add_argument("--quiet", action="store_true", help="only the final summary")


def run(args: argparse.Namespace) -> int:
    import optuna

    from fashionlab.data.load import load_for
    from fashionlab.device import resolve_device, resolve_precision

    if args.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {args.trials}")
    if args.heartbeat < 1:
        raise ConfigError(f"--heartbeat must be >= 1 second, got {args.heartbeat}")
    check_study_name(args.study)
    base = resolve(given(args), args.config_file)
    if base.val_fraction == 0:
        raise ConfigError("tune scores trials on the validation split: --val-fraction must be > 0")
    resolve_precision(base.precision, resolve_device(base.device))  # what every trial would fail on, checked once
    check_model(base)  # a model every trial would fail on gets train's one-line error, before any storage exists
    fixed = set(given(args))
    study_name = args.study or default_study_name(base.model)
    out = Path(base.out or f"runs/{study_name}")
    # New, empty, or made by fashionlab (workers sharing a study share it): never a folder of the user's, whose
    # summary.json or best.yaml the results would replace.
    check_outside(out, base.data_folder(), "--out")
    check_new_folder(out, "--out")
    optuna.logging.set_verbosity(optuna.logging.WARNING if args.quiet else optuna.logging.INFO)
    storage = args.storage or f"sqlite:///{(out / 'tune.db').resolve()}"
    secrets = [storage, with_driver(storage)]  # what every message, log line and output must never show whole
    log_filter = LogFilter(secrets)
    for handler in optuna.logging.get_logger("optuna").handlers:  # a logger's own filters miss its children's records
        handler.addFilter(log_filter)
    fresh = [n for n in (MARKER, "tune.db") if not (out / n).exists()]
    created = make_folder(out)  # the default storage lives in it
    with secrets_hidden(secrets):
        try:
            study = open_study(storage, study_name, args.pruner, heartbeat=args.heartbeat)
            ds = load_for(base, progress=not args.quiet)
        except BaseException:
            undo_folder(out, created, fresh)  # a bad URL, study or dataset leaves nothing behind
            raise
        study.optimize(make_objective(base, ds, fixed), n_trials=args.trials, timeout=args.timeout,
                       gc_after_trial=True)
        return write_outputs(study, out, full_epochs(base))


def default_study_name(model: str) -> str:
    """tune-<model>; for an own model (FILE.py:NAME, module:NAME) tune-<file or module>-<NAME>, so the default
    --out (runs/<study>) is one folder, not a path rebuilt from the model file's."""
    from fashionlab.models.external import is_external

    if is_external(model):
        where, name = model.rsplit(":", 1)
        stem = Path(where).stem if where.endswith(".py") else where
        model = f"{re.sub(r'[^A-Za-z0-9._-]+', '_', stem)[:60]}-{name[:60]}"
    return f"tune-{model}"


def check_study_name(name: str | None) -> None:
    """--study: a name shown in every output and stored in the database; a stated length, printable."""
    if name is None:
        return
    if not name.strip():
        raise ConfigError("--study must not be empty")
    if len(name) > MAX_LABEL:
        raise ConfigError(f"--study is {len(name):,} characters long; the limit is {MAX_LABEL} "
                          f"(got {shorten(name, 40)})")
    if not name.isprintable():
        raise ConfigError(f"--study must be printable text, got {shorten(name, 40)}")


def check_model(base: TrainConfig) -> None:
    """What train checks of a model before its first step (trainsetup.make_model): it builds, with its options, and
    maps (N, 1, 28, 28) images to (N, 10) logits. Done once here, before the storage is created, so a model every
    trial would fail on gets that one-line error and leaves nothing behind."""
    import warnings as _warnings

    from fashionlab.models import build_model, check_io

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        net = build_model(base.model, dropout=base.dropout, **base.extra)
    check_io(net, base.model)
    if base.low_res_epochs and base.low_res < 28:
        check_io(net, base.model, base.low_res)


def takes_dropout(model: str) -> bool:
    """Whether the model's class or factory has a `dropout` parameter (so tune may search it): a registered model,
    an own one (FILE.py:NAME or module:NAME, already imported when the configuration was resolved) or a package's."""
    from fashionlab.models import MODELS
    from fashionlab.models.external import entry_point_models, is_external
    from fashionlab.models.external import resolve as resolve_external

    if model in MODELS:
        target = MODELS[model]
    elif is_external(model):
        target, _ = resolve_external(model)
    elif model in (eps := entry_point_models()):
        target = eps[model].load()
    else:
        return False
    try:
        return "dropout" in inspect.signature(target).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): do not search dropout
        return False


class LogFilter(logging.Filter):
    """On optuna's log handlers. Optuna logs a failed trial with its traceback; for fashionlab's own errors (bad
    input, which the CLI then prints on one line) the traceback is noise, so the log line keeps only the message.
    Every line, and any traceback kept, has the storage URL's secrets hidden (redact.redact_text)."""

    def __init__(self, urls: list[str]):
        super().__init__()
        self.urls = urls

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], FashionlabError):
            record.exc_info = None
        if record.exc_info:  # formatted here, redacted, and kept in exc_text, which the formatter then uses
            record.exc_text = hide_secrets(logging.Formatter().formatException(record.exc_info), self.urls)
        record.msg, record.args = hide_secrets(record.getMessage(), self.urls), ()
        return True


def one_line_for_our_errors(record: logging.LogRecord) -> bool:
    """LogFilter without URLs to hide (kept for callers of the earlier function)."""
    return LogFilter([]).filter(record)


LEAK_HIDDEN = ("(the database library's message is not shown: it quotes part of the password; write an '@', ':' or "
               "'/' in a password as %40, %3A, %2F)")


def hide_secrets(text: str, urls: list[str]) -> str:
    """`text` with the URLs' secrets hidden (redact.redact_text). A library that split a malformed URL its own way
    (an unencoded '@' in the password: SQLAlchemy takes its first '@', so the rest of the password becomes "the
    host") may quote a piece of the password that no redaction can tell from a host name: if any piece is still
    there, the whole text is withheld instead."""
    text = redact_text(text, urls)
    probe = text.replace(LEAK_HIDDEN, "")
    for piece in {p for url in urls for p in _secret_pieces(url)}:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(piece)}(?![A-Za-z0-9])", probe):
            return LEAK_HIDDEN
    return text


def storage_shown(url: str) -> str:
    """A storage URL as tune shows it: redact.redact_url, and no fragment (a database URL has no use for one, so
    it can only be a stray secret; redact_url keeps it when the text has no scheme)."""
    head, hash_, _ = redact_url(url).partition("#")
    return head + ("#***" if hash_ else "")


def _secret_pieces(url: str) -> list[str]:
    """The password of `url` (everything between the first ':' of the userinfo and its last '@'), its pieces
    between the separators a library may split it at, and the fragment."""
    scheme = re.match(r"\s*[A-Za-z][A-Za-z0-9+.\-]*://", url)
    userinfo = url[scheme.end() if scheme else 0:].rpartition("@")[0]
    password = userinfo.partition(":")[2]
    fragment = url.partition("#")[2] if "#" in url else ""
    return [p for p in {password, *re.split(r"[@:/?#]", password), fragment} if p and p != "***"]


@contextlib.contextmanager
def secrets_hidden(urls: list[str]):
    """Whatever escapes (our errors, optuna's, SQLAlchemy's, whose messages may quote the URL) is shown with the
    storage URL's secrets hidden: fashionlab's errors keep their type, a database error becomes a one-line
    RunError, anything else keeps its name in a RuntimeError (FASHIONLAB_DEBUG=1 re-raises it as it was)."""
    try:
        yield
    except FashionlabError as e:
        text = redact_text(str(e), urls)  # our own messages show the URL through storage_shown already
        if text != str(e):
            e.args = (text,)
        raise
    except Exception as e:
        first = hide_secrets((str(e).strip().splitlines() or [""])[0][:300], urls)
        if type(e).__module__.split(".")[0] in ("sqlalchemy", "psycopg2", "psycopg", "sqlite3", "pymysql"):
            raise RunError(f"--storage {storage_shown(urls[0])} failed: {type(e).__name__}: {first}") from None
        if os.environ.get("FASHIONLAB_DEBUG"):
            raise
        raise RuntimeError(f"{type(e).__name__}: {first}") from None


def full_epochs(base: TrainConfig) -> int:
    """Epochs to suggest for the final training: the model's recipe length, at least the trials' own."""
    from fashionlab.recipes import recipe_for

    return max(base.epochs, recipe_for(base.recipe, base.model).get("epochs", base.epochs))


def open_study(storage: str, name: str, pruner: str, heartbeat: int = 60):
    """Create the study, or join it when another worker already has (the scale-out path).

    Every running trial records a heartbeat every `heartbeat` seconds. When a worker next starts a trial, any
    trial silent for 3 * `heartbeat` (its worker was killed) is marked FAIL and queued once more with the same
    parameters, so no trial stays "running" forever and no sampled point is lost."""
    import optuna
    import sqlalchemy.exc

    pruners = {
        # Median: prune a trial whose accuracy at epoch t is below the median of earlier trials at epoch t,
        # once 3 trials have finished. Neither pruner judges epoch 1: there a warm-up (onecycle) or a still
        # high LR makes a trial look worse than it ends up.
        "median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
        "halving": optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3),
        "none": optuna.pruners.NopPruner(),
    }
    kwargs: dict[str, Any] = {}
    # optuna >= 4.9 renamed the callback (the old names warn); older versions only have the old ones.
    new_api = hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback" if new_api else "RetryFailedTrialCallback")
    callback_arg = "heartbeat_stale_trial_callback" if new_api else "failed_trial_callback"
    if storage.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}  # workers write the same file: wait for the lock
    secrets = [storage, with_driver(storage)]
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # SQLAlchemy's warnings about a URL (e.g. query arguments a driver ignores) would be lines of their
                # own beside our one-line messages.
                warnings.simplefilter("ignore", sqlalchemy.exc.SAWarning)
                rdb = optuna.storages.RDBStorage(with_driver(storage), engine_kwargs=kwargs,
                                                 heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                                                 **{callback_arg: retry(max_retry=1)})
            break
        except ImportError as e:
            reason = hide_secrets((str(e).strip().splitlines() or [type(e).__name__])[0][:200], secrets)
            raise ConfigError(f"--storage {storage_shown(storage)} needs a database driver ({reason}); for PostgreSQL: "
                              "pip install psycopg2-binary") from None
        except Exception as e:  # noqa: BLE001 - bad URL, unreachable server, permissions: the user's to fix
            # SQLAlchemy quotes the URL (or parts of it: a malformed one, a password it took for a host) in its
            # messages: every secret of the URL is hidden wherever it appears, before the message is shown.
            first = hide_secrets((str(e).strip().splitlines() or [type(e).__name__])[0][:300], secrets)
            # Workers starting together race to create the tables: the loser retries and finds them.
            race = ("already exists", "duplicate", "unique constraint", "integrityerror")
            if attempt < 4 and any(word in first.lower() for word in race):
                time.sleep(0.5 + attempt)
                continue
            raise ConfigError(f"cannot open --storage {storage_shown(storage)}: {first}") from None
    return optuna.create_study(storage=rdb, study_name=name, direction="maximize", pruner=pruners[pruner],
                               load_if_exists=True)


def with_driver(url: str) -> str:
    """SQLAlchemy >= 2.1 reads a plain postgresql:// URL with psycopg 3; the tune extra installs psycopg2.
    Use whichever of the two is installed (a URL naming its driver, postgresql+DRIVER://, is kept)."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def sample(trial, base: TrainConfig, fixed: set[str], dropout: bool | None = None) -> dict[str, Any]:
    """One point of the search space. Options given on the command line are held fixed, not searched.
    dropout: whether the model takes a `dropout` (takes_dropout(base.model) when not given)."""
    p: dict[str, Any] = {}
    if "lr" not in fixed:
        # A decade either side of the base LR: sensible for SGD recipes (0.1) and Adam ones (1e-3) alike.
        p["lr"] = trial.suggest_float("lr", base.lr / 10, base.lr * 10, log=True)
    if "weight_decay" not in fixed:
        p["weight_decay"] = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    if "batch_size" not in fixed:
        p["batch_size"] = trial.suggest_categorical("batch_size", [64, 128, 256])
    if "dropout" not in fixed and (takes_dropout(base.model) if dropout is None else dropout):
        p["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
    if "label_smoothing" not in fixed:
        p["label_smoothing"] = trial.suggest_float("label_smoothing", 0.0, 0.2)
    if "scheduler" not in fixed:
        p["scheduler"] = trial.suggest_categorical("scheduler", SCHEDULERS)
    if "augment" not in fixed:
        p["augment"] = trial.suggest_categorical("augment", AUGMENT_CHOICES)
    # Strengths only for the augmentations in use (conditional parameters).
    chosen = TrainConfig(augment=p.get("augment", base.augment)).augmentations()
    if "crop" in chosen and "crop_pad" not in fixed:
        p["crop_pad"] = trial.suggest_int("crop_pad", 1, 4)
    if "erase" in chosen and "erase_prob" not in fixed:
        p["erase_prob"] = trial.suggest_float("erase_prob", 0.1, 0.7)
    if "rotate" in chosen and "rotate_degrees" not in fixed:
        p["rotate_degrees"] = trial.suggest_float("rotate_degrees", 5.0, 20.0)
    return p


def make_objective(base: TrainConfig, ds, fixed: set[str]) -> Callable:
    import optuna

    from fashionlab.runstart import Interrupted, TrainingDiverged
    from fashionlab.train import train

    dropout = takes_dropout(base.model)  # once: an own model's code is not inspected again every trial

    def objective(trial: optuna.Trial) -> float:
        cfg = build_config(base.to_dict(), sample(trial, base, fixed, dropout), {"out": None})
        trial.set_user_attr("worker", WORKER)
        trial.set_user_attr("config", cfg.to_dict())
        val_accs: list[float] = []

        def report(row: dict[str, float]) -> None:
            val_accs.append(row["val_acc"])
            trial.report(row["val_acc"], row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation accuracy {row['val_acc']:.4f} at epoch {row['epoch']}")

        t0 = time.perf_counter()
        # A throwaway run folder: trials are compared by validation accuracy only, and the winner is
        # retrained from best.yaml. evaluate_test=False: no trial ever sees the test set.
        with tempfile.TemporaryDirectory(prefix="fashionlab-trial-") as tmp:
            try:
                train(replace(cfg, out=tmp), data=ds, verbose=False, on_epoch=report, evaluate_test=False)
            except TrainingDiverged as e:
                # A diverging LR is an answer, not an error: pruned trials still teach the sampler.
                raise optuna.TrialPruned(str(e)) from None
            except Interrupted:
                raise KeyboardInterrupt from None  # its "resume with" hint would name the deleted folder
            finally:
                trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
        return max(val_accs)

    return objective

# ---------------------------------------------------------------------------------------------- outputs


def write_outputs(study, out: Path, epochs: int) -> int:
    """best.yaml, trials.csv, summary.json and the plots, from every worker's trials so far. Each worker
    rewrites them when it finishes (atomically), so the last one to finish leaves the complete picture."""
    import optuna

    from fashionlab.files import atomic_write_json, atomic_write_text

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    atomic_write_text(out / "trials.csv", trials_csv(trials))
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    summary: dict[str, Any] = {"study": study.study_name, "trials": states,
                               "workers": sorted({t.user_attrs.get("worker", "?") for t in trials})}
    if not complete:
        atomic_write_json(out / "summary.json", summary)
        print(f"no trial of study {study.study_name!r} completed yet ({states}); see {out / 'trials.csv'}")
        return 1
    best = study.best_trial
    summary |= {"best_trial": best.number, "best_val_acc": best.value, "best_params": best.params}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "best.yaml", best_yaml(best))
    notes = write_plots(study, out, len(complete))
    print(f"study {study.study_name!r}: {len(trials)} trials ({states['complete']} complete, "
          f"{states['pruned']} pruned, {states['fail']} failed) from {len(summary['workers'])} worker(s)")
    print(f"best: trial {best.number}, validation accuracy {best.value:.4f}")
    for k, v in best.params.items():
        print(f"  {k} = {v:.4g}" if isinstance(v, float) else f"  {k} = {v}")
    for note in notes:
        print(note)
    trial_epochs = best.user_attrs["config"]["epochs"]
    print(f"train it (trials ran {trial_epochs} epochs; a full-length run scores higher): "
          f"fashionlab train --config {out / 'best.yaml'} --epochs {epochs}")
    return 0


def best_yaml(trial) -> str:
    import yaml

    config = {k: v for k, v in trial.user_attrs["config"].items() if k not in NOT_IN_BEST}
    c = trial.user_attrs["config"]
    subset = f" --train-subset {c['train_subset']}" if c.get("train_subset") else ""
    header = (f"# fashionlab tune: best of study trial {trial.number}, validation accuracy {trial.value:.4f}\n"
              f"# found with {c['epochs']} epochs{subset}; reproduce the trial with: "
              f"fashionlab train --config best.yaml{subset}\n")
    return header + yaml.safe_dump(config, sort_keys=False)


def trials_csv(trials) -> str:
    params = sorted({k for t in trials for k in t.params})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number", "state", "val_acc", "epochs", "seconds", "worker", *params])
    for t in trials:
        value = "" if t.value is None else f"{t.value:.6g}"
        w.writerow([t.number, t.state.name.lower(), value, len(t.intermediate_values),
                    t.user_attrs.get("seconds", ""), t.user_attrs.get("worker", ""),
                    *(t.params.get(k, "") for k in params)])
    return buf.getvalue()


def write_plots(study, out: Path, n_complete: int) -> list[str]:
    """history.png, intermediate.png (per-epoch validation accuracy: what the pruner saw) and importance.png,
    which needs two complete trials. Returns notes for what could not be drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    from fashionlab.files import atomic_save_figure

    plots = {"history.png": ovm.plot_optimization_history, "intermediate.png": ovm.plot_intermediate_values}
    if n_complete >= 2:
        plots["importance.png"] = ovm.plot_param_importances
    notes = [] if n_complete >= 2 else ["importance.png: needs at least 2 complete trials; skipped"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # "few trials per regime": true of any small study
        for name, plot in plots.items():
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as e:  # e.g. no variance in the values yet
                notes.append(f"{name}: skipped ({e})")
                continue
            fig = ax.figure
            fig.set_size_inches(8, 5)
            atomic_save_figure(out / name, fig)
            plt.close(fig)
    return notes
