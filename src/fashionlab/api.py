"""The Python API: what the command line does, as functions that take and return Python objects (docs/api.md).

    import fashionlab
    run = fashionlab.train(model="cnn1", epochs=3)       # options as `fashionlab train` takes them
    run.test_metrics["accuracy"], run.plot_curves()
    fashionlab.compare([run, fashionlab.train(model="cnn2")])
    fashionlab.predict(run, ["photo.jpg"])
    fashionlab.audit_labels(data="my.npz", model="cnn1", out="audit")  # likely label errors (cleanlab)

Options are resolved exactly as on the command line (defaults < recipe < config file < options), every bad input
is a one-line `FashionlabError`, and a run made here is an ordinary run folder that every command can read.
`fashionlab/__init__.py` loads this module on first use, so `import fashionlab` stays free of torch.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fashionlab.errors import ConfigError, RunError
from fashionlab.runfolder import RunFolder
from fashionlab.runformat import CHECKPOINTS

__all__ = ["Run", "audit_labels", "compare", "load_run", "predict", "train"]



# ---------------------------------------------------------------------------------------------- train


def resolve_training(options: dict[str, Any], config_file: str | os.PathLike | None = None,
                     resume: str | os.PathLike | None = None, trust_model_code: bool = False, *,
                     budget: str | None = None, log=print):
    """(config, resume, trust_model_code) for a training: the one resolution `fashionlab train` and
    `fashionlab.train()` share.

    budget ("5m"): the most accurate measured recipe that fits, timed on this machine. A new run: defaults < recipe
    < config file < options. A resumed run keeps its saved options; a config file given with it is read like more
    flags (the options win over it), and neither may change an option that changes results (--epochs and
    --patience aside), which is a one-line error. A torchrun restart of the same command resumes the run it
    started. trust_model_code: also when the resumed run's own model is given again.
    """
    from fashionlab.config import read_config_file, resolve
    from fashionlab.runstart import elastic_restart, resume_config

    if budget is not None:
        from fashionlab.budget import pick_recipe

        options = options | {"recipe": pick_recipe(budget, options, config_file, resume=resume, log=log)}
    if resume:
        overrides = (read_config_file(config_file) if config_file else {}) | options
        cfg = resume_config(Path(resume), overrides)
        return cfg, True, bool(trust_model_code or overrides.get("model") == cfg.model)
    cfg = resolve(options, config_file)
    if (restarted := elastic_restart(cfg)) is not None:
        return restarted, True, bool(trust_model_code)
    return cfg, False, bool(trust_model_code)


def train(*, config: str | os.PathLike | None = None, model_args: dict[str, Any] | None = None,
          resume: str | os.PathLike | Run | None = None, trust_model_code: bool = False, verbose: bool = True,
          data=None, budget: str | None = None, **options: Any) -> Run:
    """Train a model into a run folder, evaluate its best checkpoint on the test set, and return the `Run`.

    options: `fashionlab train`'s options by their names (`model="cnn2", epochs=5, lr=3e-3, out="runs/x"`; see
    `fashionlab train --help`); `model` may also be an nn.Module object (copied, so the object itself is never
    trained; the run's model is then "object:<class name>" and reading the run needs an object again).
    config: a YAML/JSON file of options (the options given here override it). model_args: keyword arguments for
    the model, added to option `extra` (like --model-arg). resume: continue a stopped run (a path or a Run).
    data: the dataset, as --data takes it: "fashion-mnist" (the default), a folder of class folders, a CSV, an .npz
    or a folder of IDX files (with image_size="28" or "32x24", channels=1|3, skip_bad=True as needed); or an
    already loaded dataset (`fashionlab.data.load.load_dataset(...)`), to skip reading it again.
    budget: like `--budget` ("90s", "5m", "1h30m"): train the most accurate measured recipe estimated to fit
    in that time on this machine (not with model= or recipe=).
    """
    from torch import nn

    from fashionlab.config import normalize_keys
    from fashionlab.models import OBJECT_PREFIX, object_name
    from fashionlab.train import train as train_run

    options = normalize_keys(options, "fashionlab.train()")
    if isinstance(data, (str, os.PathLike)):  # a SPEC, as --data takes it; an object is a loaded dataset
        options["dataset"], data = os.fspath(data), None
    elif data is not None and not hasattr(data, "test_sha256"):
        raise ConfigError(f"fashionlab.train(): data= must be a dataset spec (a path or 'fashion-mnist') or a loaded "
                          f"dataset, got {_kind(data)}")
    command = _call_text("fashionlab.train", {**options, **({"config": config} if config else {}),
                                              **({"model_args": model_args} if model_args else {}),
                                              **({"resume": resume} if resume else {}),
                                              **({"budget": budget} if budget is not None else {})})
    architecture = None
    model = options.get("model")
    if isinstance(model, nn.Module):
        if model_args:
            raise ConfigError("fashionlab.train(): model_args= is for a model given by name; an nn.Module object "
                              "is already built")
        architecture = copy.deepcopy(model)  # the caller's object stays as it is
        options["model"] = object_name(model)
    elif isinstance(model, type):
        raise ConfigError(f"fashionlab.train(): model={model.__name__} is a class; give an object "
                          f"(model={model.__name__}()), a model name, FILE.py:NAME or module:NAME")
    if model_args is not None:
        if not isinstance(model_args, dict):
            raise ConfigError(f"fashionlab.train(): model_args must be a dict, got {type(model_args).__name__}")
        extra = options.get("extra", {})
        options["extra"] = {**extra, **model_args} if isinstance(extra, dict) else extra  # else: validation says
    cfg, resuming, trust = resolve_training(options, config, resume, trust_model_code, budget=budget,
                                            log=print if verbose else None)
    if cfg.model.startswith(OBJECT_PREFIX) and architecture is None:
        raise ConfigError(f"{resume} was trained from an nn.Module object ({cfg.model}); give one again: "
                          "fashionlab.train(resume=RUN, model=YourNet())")
    path = train_run(cfg, command=command, resume=resuming, data=data, verbose=verbose, trust_model_code=trust,
                     architecture=architecture)
    return Run(path)


def _call_text(function: str, kwargs: dict[str, Any]) -> str:
    """How the call is recorded in config.json's "command"."""
    def show(v: Any) -> str:
        if isinstance(v, Run):
            v = str(v.path)
        elif isinstance(v, os.PathLike):
            v = os.fspath(v)
        if type(v).__module__.split(".")[0] in ("builtins", "pathlib"):
            text = repr(v)
            return text if len(text) <= 200 else text[:197] + "..."
        return f"<{type(v).__name__} object>"

    return f"{function}({', '.join(f'{k}={show(v)}' for k, v in kwargs.items())})"


# ---------------------------------------------------------------------------------------------- a run folder


class Run:
    """A run folder (what `fashionlab train` and `fashionlab.train()` make), read from its files on each access.

    `Run` is path-like (os.fspath(run) is its folder), so it goes wherever a run folder path does."""

    def __init__(self, path: str | os.PathLike):
        self._folder = RunFolder(path).require()  # the one owner of the folder's files
        self.path = self._folder.path

    def __fspath__(self) -> str:
        return str(self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    def __repr__(self) -> str:
        parts = [repr(str(self.path))]
        try:  # a repr never raises, even for a damaged folder
            parts.append(f"model={self.config['model']!r}")
            history = self.history
            parts.append(f"epochs={len(history)}")
            vals = [v for r in history if isinstance(v := r.get("val_acc"), float) and v == v]  # v == v: not NaN
            if vals:
                parts.append(f"best_val_acc={max(vals):.4f}")
            metrics = self.test_metrics
            parts.append(f"test_accuracy={metrics['accuracy']:.4f}" if metrics else "not evaluated")
        except Exception:  # noqa: BLE001
            parts.append("unreadable")
        return f"Run({', '.join(parts)})"

    # -- the files

    @property
    def config(self) -> dict[str, Any]:
        """config.json: every resolved option (with the defaults of options newer than the folder), plus "data",
        "versions", "runtime", "model_origin", "command"."""
        return self._folder.config()

    @property
    def history(self) -> list[dict[str, Any]]:
        """metrics.csv, one dict per finished epoch: epoch (int), train_loss, train_acc, val_loss, val_acc, lr,
        seconds (floats)."""
        return self._folder.history()

    @property
    def test_metrics(self) -> dict[str, Any] | None:
        """test_metrics.json (accuracy, macro_f1, per_class, confusion_matrix, ...), or None if not evaluated."""
        return self._folder.test_metrics()

    CALIBRATION_KEYS = ("nll", "brier", "ece", "temperature", "ece_calibrated", "nll_calibrated", "temperature_reason")

    def calibration(self) -> dict[str, Any] | None:
        """The test set's calibration from test_metrics.json: nll, brier, ece (15 bins, top label) and, after one
        temperature fitted on the validation split, temperature, ece_calibrated, nll_calibrated (null with a
        temperature_reason without one). None if not evaluated; {} for a run evaluated before these existed."""
        metrics = self.test_metrics
        return None if metrics is None else {k: metrics[k] for k in self.CALIBRATION_KEYS if k in metrics}

    def corruptions(self) -> dict[str, Any] | None:
        """corruptions.json (`evaluate --corruptions`): accuracy per corruption and severity, plus summaries; None
        if the run was not evaluated on the corruption suite."""
        return self._folder.corruptions()

    @property
    def classification_report(self) -> str | None:
        """scikit-learn's per-class precision/recall/F1 table on the test set, or None if not evaluated."""
        from fashionlab.reading import read_text

        path = self._folder.file(self._folder.REPORT)
        return read_text(path, kind="text") if path.is_file() else None  # the one guarded way to read a file

    # -- the model

    def load_model(self, checkpoint: str = "best", model=None, trust_model_code: bool = False, device=None):
        """The trained model (a `fashionlab.models.Classifier`: its input normalization, then the architecture) in
        eval mode. It takes float [N, 1, 28, 28] pixels / 255 (`fashionlab.data.as_input`) and returns logits.

        model: an nn.Module object to load the weights into; needed for a run trained from an object.
        trust_model_code: allow importing an external model's code (FILE.py:NAME / module:NAME runs)."""
        from torch import nn

        from fashionlab.evaluate import load_run_model

        _check_checkpoint(checkpoint)
        self._check_object(model, nn)
        classifier, _ = load_run_model(self.path, checkpoint, device, trust_model_code=trust_model_code, net=model)
        return classifier

    def evaluate(self, checkpoint: str = "best", model=None, trust_model_code: bool = False,
                 verbose: bool = False, corruptions: bool = False) -> dict[str, Any]:
        """Evaluate a checkpoint on the test set again (as `fashionlab evaluate`); returns test_metrics.
        corruptions: also on the seeded corruption suite (then `corruptions()` returns its accuracies)."""
        from torch import nn

        from fashionlab.evaluate import evaluate_run

        _check_checkpoint(checkpoint)
        self._check_object(model, nn)
        return evaluate_run(self.path, checkpoint, verbose=verbose, trust_model_code=trust_model_code, net=model,
                            corruptions=corruptions)

    # -- figures and summaries

    def plot_curves(self):
        """Loss and accuracy per epoch, train vs validation: a matplotlib Figure."""
        from fashionlab.evaluate import curves_figure

        rows = self._folder.history()
        if not rows:
            raise RunError(f"{self.path} has no finished epoch yet (metrics.csv is empty or missing)")
        return curves_figure(rows, self._title())

    def plot_confusion_matrix(self):
        """The test-set confusion matrix, counts and row-normalized: a matplotlib Figure."""
        import numpy as np

        from fashionlab.evaluate import confusion_figure

        return confusion_figure(np.asarray(self._evaluated()["confusion_matrix"]), self._title())

    def most_confused(self, k: int = 5) -> list[dict[str, Any]]:
        """The k largest off-diagonal cells of the test confusion matrix, most first:
        [{"true", "predicted", "count", "rate"}], rate = count / test images of the true class."""
        from types import SimpleNamespace

        from fashionlab.report.compare import Group, top_confusions

        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"most_confused(k): k must be an integer >= 1, got {k!r}")
        metrics = self._evaluated()
        names = list(metrics["per_class"])  # the class names, in output order
        pairs = top_confusions(Group(self._title(), [SimpleNamespace(metrics=metrics)]), names, k)
        return [{**p, "count": int(p["count"])} for p in pairs]

    def _check_object(self, model, nn) -> None:
        """model= is an nn.Module object, and a run trained from an object gets one."""
        from fashionlab.models import OBJECT_PREFIX

        if model is not None and not isinstance(model, nn.Module):
            raise ConfigError(f"model= must be an nn.Module object, got {_kind(model)}")
        name = self.config["model"]
        if model is None and name.startswith(OBJECT_PREFIX):
            raise ConfigError(f"{self.path} was trained from an nn.Module object ({name}); give one of the same "
                              f"architecture again: model={name.removeprefix(OBJECT_PREFIX)}()")

    def _evaluated(self) -> dict[str, Any]:
        metrics = self.test_metrics
        if metrics is None:
            raise RunError(f"{self.path} has not been evaluated on the test set: run.evaluate() or "
                           f"`fashionlab evaluate {self.path}`")
        if "confusion_matrix" not in metrics:
            raise RunError(f"{self.path}/test_metrics.json has no confusion_matrix: evaluate it again")
        return metrics

    def _title(self) -> str:
        config = self.config
        return str(config.get("label") or config["model"])


def load_run(path: str | os.PathLike) -> Run:
    """The run folder at `path` (a one-line RunError if it is not one)."""
    if isinstance(path, Run):
        return path
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"load_run() takes a run folder path, got {_kind(path)}")
    return Run(path)


def _check_checkpoint(checkpoint: str) -> None:
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{text if len(text) <= 60 else text[:57] + '...'} ({type(value).__name__})"


# ---------------------------------------------------------------------------------------------- compare


def compare(runs: Sequence[Run | str | os.PathLike], out: str | os.PathLike | None = None, *,
            family: str | None = None) -> dict[str, Any]:
    """Compare evaluated runs as `fashionlab compare` does: writes report.html, summary.md and summary.json into
    `out` (default reports/compare-<timestamp>) and returns the summary (summary.json's numbers: per-model
    accuracy with confidence intervals, pairwise significance tests) with "report": the report.html path.
    family: "base" (each run against the first), "all-pairs", or None: base when later runs carry a label
    (a variant study), else all pairs (as `compare --family`)."""
    from fashionlab.report import compare_runs, default_report_dir

    if isinstance(runs, (str, os.PathLike)) or not isinstance(runs, Sequence):
        raise ConfigError(f"compare() takes a list of runs or run folders, got {_kind(runs)}")
    for r in runs:
        if not isinstance(r, (str, os.PathLike)):
            raise ConfigError(f"compare(): each run must be a Run or a run folder path, got {_kind(r)}")
    folder = Path(out) if out is not None else default_report_dir()
    summary = compare_runs([Path(r) for r in runs], folder, family=family)
    return {**summary, "report": str(folder / "report.html")}


# ---------------------------------------------------------------------------------------------- predict


def predict(run_or_onnx: Run | str | os.PathLike, images, top_k: int = 3, trust_model_code: bool = False, *,
            checkpoint: str = "best", preprocess: bool = True, device: str = "cpu", model=None,
            calibrate: bool = True, explain: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Top-k classes for each image, as `fashionlab predict --json` prints them: [{"file", "top": [{"label",
    "index", "prob"}, ...]}] (plus "warnings" for a tiny or blank image), or {"file", "error"} for a file that
    cannot be read. Photos are preprocessed the way Fashion-MNIST was made (trim, fit, centre, invert).

    run_or_onnx: a Run, a run folder, or an .onnx file from `fashionlab export`.
    images: one image or a list; each a file path (folders are walked), a PIL image, or a uint8 numpy array
    HxW or HxWxC (C = 1, 3 or 4). In-memory images are named "<image N>" (N: their place in the list).
    model: an nn.Module object, for a run trained from one.
    calibrate: probabilities softmax(logits / T), T the temperature fitted on the run's validation split (an export
    carries it), when there is one; False: the plain softmax. The ranking is the same either way.
    explain: a folder for a Grad-CAM heatmap of each image's top-1 class (`--explain`; a run, not an .onnx file;
    needs captum), as NNNNN-<name>-gradcam.png, each row's "explanation". Checked before any work; it never
    overwrites a file, and a heatmap that cannot be written raises RunError."""
    import fashionlab.predict as predicting

    _check_checkpoint(checkpoint)
    items = predicting.collect_images(images)
    source = run_or_onnx.path if isinstance(run_or_onnx, Run) else run_or_onnx
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"predict() takes a Run, a run folder or an .onnx file, got {_kind(run_or_onnx)}")
    source = Path(source)
    if explain is not None and not isinstance(explain, (str, os.PathLike)):
        raise ConfigError(f"predict(): explain must be a folder path, got {_kind(explain)}")
    explain_to = Path(explain) if explain is not None else None
    if explain_to is not None:  # before the model is loaded
        predicting.check_explain_model(source)
        predicting.check_output_folder(explain_to, predicting.EXPLAIN, source)
        predicting.check_save_names(explain_to, items, predicting.EXPLAIN)
    if model is None and RunFolder(source).exists():
        Run(source)._check_object(None, None)  # a run trained from an object needs one
    if model is None:
        loaded = predicting.load_model(source, checkpoint, device, trust_model_code)
    else:
        from torch import nn

        Run(source)._check_object(model, nn)
        loaded = predicting.TorchModel(source, checkpoint, device, net=model)
    results = predicting.predict_items(loaded, items, top_k, preprocess, calibrate, explain=explain_to is not None)
    if explain_to is not None and (error := predicting.save_explanations(results, explain_to)):
        raise RunError(error)
    return [r.as_json() for r in results]


# ---------------------------------------------------------------------------------------------- audit labels


def audit_labels(*, out: str | os.PathLike, folds: int = 3, data=None, config: str | os.PathLike | None = None,
                 model_args: dict[str, Any] | None = None, verbose: bool = True, **options: Any) -> dict[str, Any]:
    """Find likely label errors among the training items, as `fashionlab audit-labels` does: `folds` trainings,
    each without one fold of the items, predict the items they never saw; cleanlab's find_label_issues ranks the
    suspicious labels from those probabilities. Writes label_issues.csv, summary.json, label_issues.html and
    pred_probs.npy into `out` (the same call again continues an interrupted audit) and returns summary.json's
    content with "issues": [{"index", "given", "suggested", "score"}], most suspicious first (index: the item's
    place among the dataset's training items in file order, what train(exclude=...) takes), and "out".

    data: the dataset, as train() takes it (a spec, or an already loaded dataset); options, config and
    model_args: the fold runs' training options, as for train(). verbose: one line per fold."""
    from fashionlab.audit import audit_labels as run_audit
    from fashionlab.audit import check_folds, require
    from fashionlab.config import normalize_keys, resolve

    require()
    check_folds(folds)
    options = normalize_keys(options, "fashionlab.audit_labels()")
    if isinstance(data, (str, os.PathLike)):
        options["dataset"], data = os.fspath(data), None
    elif data is not None and not hasattr(data, "test_sha256"):
        raise ConfigError(f"fashionlab.audit_labels(): data= must be a dataset spec (a path or 'fashion-mnist') or "
                          f"a loaded dataset, got {_kind(data)}")
    if "out" in options:
        raise ConfigError("fashionlab.audit_labels(): give the audit's folder as out=, once")
    if model_args is not None:
        if not isinstance(model_args, dict):
            raise ConfigError(f"fashionlab.audit_labels(): model_args must be a dict, got {type(model_args).__name__}")
        options["extra"] = {**options.get("extra", {}), **model_args}
    if not isinstance(out, (str, os.PathLike)):
        raise ConfigError(f"fashionlab.audit_labels(): out= must be a folder path, got {_kind(out)}")
    cfg = resolve(options, config)
    command = _call_text("fashionlab.audit_labels", {"out": out, "folds": folds, **options,
                                                     **({"config": config} if config else {})})
    done = run_audit(cfg, Path(out), folds, command=command, data=data, verbose=False,
                     log=print if verbose else None)
    return {**done.summary, "issues": done.issues, "out": str(done.out)}
