"""RunFolder: the one owner of a run folder's files.

A run is a folder (docs/design.md, "The run-folder contract"):

    .fashionlab          marker: fashionlab made this folder (files.make_folder)
    config.json          every option, plus provenance: data, versions, runtime, model_origin, command
    metrics.csv          one row per epoch (runformat.METRIC_COLUMNS)
    checkpoints/best.pt  the best-validation model (the last epoch's without a validation split)
    checkpoints/last.pt  everything a resume needs
    model_source.py      a copy of a FILE.py:NAME model's source
    test_metrics.json  classification_report.txt  confusion_matrix.png  curves.png
    test_predictions.npy  test_probs.npy
    members/member<k>/   an --ensemble's members: each an ordinary run folder (ensemble.py)

Only this class knows these names, reads and writes these files, decides whether a folder is a run, and fills in
what folders written by older versions lack. Writes are atomic (files).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import zipfile
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import numpy as np

from fashionlab import runformat
from fashionlab.errors import RunError
from fashionlab.files import (
    atomic_save_figure,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from fashionlab.models import external
from fashionlab.reading import GiB, read_bytes, read_csv_rows, shorten, show_path
from fashionlab.runformat import METRIC_COLUMNS, load_checkpoint, read_json

# What each metrics.csv column may hold (checked on every read): accuracies are fractions, losses, the learning
# rate and seconds are >= 0. NaN is allowed only where a run without a validation split writes it.
METRIC_RULES: dict[str, tuple[float, float]] = {
    "train_loss": (0.0, math.inf), "train_acc": (0.0, 1.0), "val_loss": (0.0, math.inf), "val_acc": (0.0, 1.0),
    "lr": (0.0, math.inf), "seconds": (0.0, math.inf),
}
NAN_ALLOWED = ("val_loss", "val_acc")
MAX_EPOCH_DIGITS = 9
TEST_ARRAYS_CAP = 1 * GiB  # test_probs.npy: 40 bytes an image, so some 25 million test images


def _option_defaults() -> dict[str, Any]:
    """What a config.json written before an option existed means: the option's default."""
    from fashionlab.config import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


# Every command that reads a run folder (evaluate, predict, export, train --resume) has --trust-model-code; only
# train --resume can also take the model given again.
TRUST_ADVICE = "give --trust-model-code (trust_model_code=True in Python)"
RESUME_TRUST_ADVICE = ("give --trust-model-code or the same --model again (trust_model_code=True or the same model= "
                       "in Python)")


class RunFolder:
    CONFIG = "config.json"
    METRICS = "metrics.csv"
    CHECKPOINTS = "checkpoints"
    SOURCE_COPY = "model_source.py"
    TEST_METRICS = "test_metrics.json"
    REPORT = "classification_report.txt"
    CONFUSION = "confusion_matrix.png"
    CURVES = "curves.png"
    PREDICTIONS = "test_predictions.npy"
    PROBS = "test_probs.npy"
    LOGITS = "test_predictions.npz"  # logits float32 [n, classes], labels, indices: every metric can be recomputed
    CORRUPTIONS = "corruptions.json"  # evaluate --corruptions: accuracy per corruption and severity
    CORRUPTION_CORRECT = "corruptions.npz"  # the same, per test image ("clean", "NAME/SEVERITY": bool [n])
    MEMBERS = "members"
    TEST_FILES = "test_files.txt"  # own data from a folder or CSV: the test images (a holdout's too), in test order
    SKIPPED_FILES = "skipped_files.txt"  # --skip-bad: the files left out and why
    CHECKPOINT_NAMES = runformat.CHECKPOINTS  # checkpoints/<name>.pt

    @classmethod
    def checkpoint_file(cls, name: str) -> str:
        return f"{cls.CHECKPOINTS}/{name}.pt"

    # What a fresh start writes before its first last.pt: a start that fails before then removes exactly these.
    STARTED_FILES = (CONFIG, SOURCE_COPY, TEST_FILES, SKIPPED_FILES, METRICS, f"{CHECKPOINTS}/best.pt")

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ identity

    def exists(self) -> bool:
        """A run folder is one with a config.json (the marker alone is a folder fashionlab made, not yet a run)."""
        return self.file(self.CONFIG).is_file()

    def require(self) -> RunFolder:
        """This folder, if it is a run; else a one-line RunError saying why not."""
        if not self.path.exists():
            raise RunError(f"{self.path} is not a run folder (no such folder)")
        if not self.path.is_dir():
            raise RunError(f"{self.path} is not a run folder (not a folder)")
        if not self.exists():
            if os.path.lexists(self.file(self.CONFIG)):  # a FIFO, a device, a folder, a broken link: say which
                read_bytes(self.file(self.CONFIG), kind="json", error=RunError)
            raise RunError(f"{self.path} is not a run folder (no {self.CONFIG})")
        return self

    def member(self, k: int) -> RunFolder:
        """Member k of an ensemble run: an ordinary run folder inside this one."""
        return RunFolder(self.path / self.MEMBERS / f"member{k}")

    def started(self) -> bool:
        """Training saved a state to resume from: this run's last.pt, or (an ensemble) a member's. A run that has
        started is resumed, never undone; an ensemble's own files are rebuilt from its members."""
        members = sorted((self.path / self.MEMBERS).glob("member*"))
        return self.has_checkpoint("last") or any(RunFolder(m).has_checkpoint("last") for m in members)

    # ------------------------------------------------------------------ config

    def saved_config(self) -> dict[str, Any]:
        """config.json exactly as written (types checked by runformat.read_json)."""
        return read_json(self.file(self.CONFIG))

    def config(self) -> dict[str, Any]:
        """config.json with the defaults of options added since the folder was written."""
        return _option_defaults() | self.saved_config()

    def write_config(self, info: dict[str, Any], test_files=(), skipped=()) -> None:
        """config.json, and the dataset's file lists when it has them: the test holdout carved from a folder or
        CSV (so anyone can see which images were held out) and the bad files --skip-bad left out."""
        for name, lines in ((self.TEST_FILES, test_files), (self.SKIPPED_FILES, skipped)):
            if lines:
                atomic_write_text(self.file(name), "".join(f"{line}\n" for line in lines))
        atomic_write_json(self.file(self.CONFIG), info)

    # ------------------------------------------------------------------ an external model's code

    def record_model_source(self, spec: str) -> dict[str, Any] | None:
        """For a model named by FILE.py:NAME or module:NAME: where it came from, for config.json, after copying a
        file's source into the run folder (so the run can be re-evaluated after the file changes or moves)."""
        if not external.is_external(spec):
            return None
        _, origin = external.resolve(spec)  # already imported by the training: cached, not run again
        if origin.kind == "file":
            source = read_bytes(origin.path, kind="model_source")
            if hashlib.sha256(source).hexdigest() != origin.sha256:
                raise RunError(f"--model {shorten(spec, 200)}: {show_path(origin.path)} changed while the run "
                               "started; start it again")
            atomic_write_bytes(self.file(self.SOURCE_COPY), source)
        return origin.as_dict()

    def model_spec(self, trust: bool, config: dict[str, Any] | None = None, *,
                   trust_advice: str = TRUST_ADVICE) -> str:
        """The spec to rebuild this run's model with (`config`: its saved config.json, read if not given). A
        registered model needs nothing; an external one runs code, so it needs `trust` (--trust-model-code, or the
        same --model given again), and a file-based one is imported from the run folder's copy, whose sha256 must
        match the one recorded at training. trust_advice: how the refusal tells the caller to give that trust (the
        default names the one option every command that reads a run has)."""
        config = self.saved_config() if config is None else config
        spec = str(config.get("model", ""))
        if not external.is_external(spec):
            return spec
        if not trust:
            raise RunError(f"{self.path} was trained with external model code ({shorten(spec, 200)[1:-1]}); "
                           f"fashionlab imports it only when you trust it: {trust_advice}")
        origin = config.get("model_origin") or {}
        if origin.get("kind") != "file":
            return spec
        copy = self.file(self.SOURCE_COPY)
        if not copy.is_file():
            raise RunError(f"{self.path} lacks {self.SOURCE_COPY}, the copy of its model's source; cannot rebuild "
                           f"{spec}")
        if external.sha256_of(copy, error=RunError) != origin.get("sha256"):
            raise RunError(f"{copy} differs from the source the run was trained with (sha256 mismatch); refusing it")
        return f"{copy}:{spec.rsplit(':', 1)[1]}"

    # ------------------------------------------------------------------ per-epoch metrics

    def history(self) -> list[dict[str, float]]:
        """metrics.csv as rows of floats (epoch as int); [] before the first epoch. Read through
        reading.read_csv_rows (a regular file, capped size and field length) and validated: every value a number
        in its column's range (METRIC_RULES), epochs positive integers, strictly increasing. A bad file is a
        one-line RunError naming the file and the row."""
        path = self.file(self.METRICS)
        if not os.path.lexists(path):
            return []
        header, rows = read_csv_rows(path, kind="metrics", error=RunError)
        shown = show_path(path)
        missing = [c for c in METRIC_COLUMNS if c not in header]
        if missing:
            raise RunError(f"{shown}: malformed {self.METRICS} (no column {', '.join(missing)})")
        at = {c: header.index(c) for c in METRIC_COLUMNS}
        out: list[dict[str, float]] = []
        for k, row in enumerate(rows, 1):
            parsed = {c: _metric_value(c, row[i]) for c, i in at.items()}
            problem = next((p for p in parsed.values() if isinstance(p, str)), None)
            if problem is None and out and parsed["epoch"] <= out[-1]["epoch"]:
                problem = f"epoch {parsed['epoch']} after epoch {out[-1]['epoch']} (epochs must increase)"
            if problem is not None:
                raise RunError(f"{shown}: malformed {self.METRICS}, row {k}: {problem}")
            out.append(parsed)
        return out

    def write_history(self, rows: list[dict[str, float]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (r[k] if k == "epoch" else f"{r[k]:.6g}") for k in METRIC_COLUMNS})
        atomic_write_text(self.file(self.METRICS), buf.getvalue())

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_path(self, name: str) -> Path:
        return self.path / self.checkpoint_file(name)

    def has_checkpoint(self, name: str) -> bool:
        return self.checkpoint_path(name).exists()

    def load_checkpoint(self, name: str) -> dict[str, Any]:
        """Validated, weights-only (runformat.load_checkpoint)."""
        return load_checkpoint(self.checkpoint_path(name))

    def save_checkpoint(self, name: str, ckpt: dict[str, Any]) -> None:
        atomic_torch_save(self.checkpoint_path(name), ckpt)

    # ------------------------------------------------------------------ test outputs

    def test_metrics(self) -> dict[str, Any] | None:
        """test_metrics.json, or None if there is none (anything else by that name, a FIFO say, is an error)."""
        path = self.file(self.TEST_METRICS)
        return read_json(path) if os.path.lexists(path) else None

    def temperature(self, checkpoint: str) -> tuple[float | None, str]:
        """(T, "") for the temperature that evaluation fitted on this run's validation split for `checkpoint`, or
        (None, why not): predict and export calibrate probabilities with it."""
        metrics = self.test_metrics() or {}
        if metrics.get("checkpoint") != checkpoint:
            return None, (f"{self.TEST_METRICS} is for checkpoint {metrics['checkpoint']}, not {checkpoint} (run "
                          f"`fashionlab evaluate {self.path} --checkpoint {checkpoint}`)" if metrics.get("checkpoint")
                          else f"the run has no {self.TEST_METRICS} (run `fashionlab evaluate {self.path}`)")
        t, reason = metrics.get("temperature"), metrics.get("temperature_reason")
        if reason or isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
            return None, f"no temperature was fitted: {reason or 'no validation split'}"
        return float(t), ""

    def write_test_outputs(self, metrics: dict[str, Any], predictions: np.ndarray, probs: np.ndarray, report: str,
                           confusion_figure, curves_figure) -> None:
        atomic_write_json(self.file(self.TEST_METRICS), metrics)
        atomic_write_text(self.file(self.REPORT), report)
        for name, arr in ((self.PREDICTIONS, predictions.astype(np.int64)), (self.PROBS, probs.astype(np.float32))):
            buf = io.BytesIO()
            np.save(buf, arr)
            atomic_write_bytes(self.file(name), buf.getvalue())
        atomic_save_figure(self.file(self.CONFUSION), confusion_figure)
        atomic_save_figure(self.file(self.CURVES), curves_figure)

    def write_test_logits(self, logits: np.ndarray, labels: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, logits=logits.astype(np.float32), labels=labels.astype(np.int64),
                            indices=np.arange(len(labels), dtype=np.int64))
        atomic_write_bytes(self.file(self.LOGITS), buf.getvalue())

    def write_corruptions(self, summary: dict[str, Any], correct: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **correct)
        atomic_write_bytes(self.file(self.CORRUPTION_CORRECT), buf.getvalue())
        atomic_write_json(self.file(self.CORRUPTIONS), summary)

    def corruptions(self) -> dict[str, Any] | None:
        return read_json(self.file(self.CORRUPTIONS)) if self.file(self.CORRUPTIONS).is_file() else None

    def test_logits(self) -> np.ndarray | None:
        """test_predictions.npz's logits (float32 [n, classes]), or None for a run evaluated before evaluation wrote
        them: the report's calibration needs them (test_probs.npy may average flipped views)."""
        arrays = self._npz(self.LOGITS)
        return None if arrays is None else np.asarray(arrays["logits"], dtype=np.float32)

    def corruption_arrays(self) -> dict[str, np.ndarray] | None:
        """corruptions.npz ("clean", "NAME/SEVERITY": bool [n], "seed"), or None without `evaluate --corruptions`."""
        return self._npz(self.CORRUPTION_CORRECT)

    def _npz(self, name: str) -> dict[str, np.ndarray] | None:
        path = self.file(name)
        if not os.path.lexists(path):
            return None
        data = read_bytes(path, kind="text", limit=TEST_ARRAYS_CAP, error=RunError)
        try:
            z = np.load(io.BytesIO(data), allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with z:
                # Sizes from the zip directory before anything is inflated: a small file cannot expand without bound.
                if sum(info.file_size for info in z.zip.infolist()) > TEST_ARRAYS_CAP:
                    raise ValueError(f"its arrays would take more than {TEST_ARRAYS_CAP // GiB} GiB")
                return {key: z[key] for key in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise RunError(f"cannot read {show_path(path)}: {first}") from None

    def test_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(predictions int64 [n], probabilities float32 [n, classes]) as the last evaluation wrote them."""
        out = []
        for name in (self.PREDICTIONS, self.PROBS):
            data = read_bytes(self.file(name), kind="text", limit=TEST_ARRAYS_CAP, error=RunError)
            try:
                out.append(np.load(io.BytesIO(data), allow_pickle=False))
            except (OSError, ValueError, EOFError) as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise RunError(f"cannot read {show_path(self.file(name))}: {first}") from None
        return out[0].astype(np.int64, copy=False), out[1]


def _metric_value(column: str, text: str) -> float | int | str:
    """One metrics.csv field as its value, or a string saying what is wrong with it."""
    if column == "epoch":
        if not re.fullmatch(rf"[0-9]{{1,{MAX_EPOCH_DIGITS}}}", text) or int(text) < 1:
            return f"epoch must be a positive integer, got {shorten(text, 30)}"
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return f"{column} must be a number, got {shorten(text, 30)}"
    lo, hi = METRIC_RULES[column]
    if math.isnan(value) and column in NAN_ALLOWED:  # no validation split
        return value
    if not math.isfinite(value) or not lo <= value <= hi:
        where = f"in [{lo:g}, {hi:g}]" if math.isfinite(hi) else f">= {lo:g}"
        return f"{column} must be a finite number {where}, got {shorten(text, 30)}"
    return value
