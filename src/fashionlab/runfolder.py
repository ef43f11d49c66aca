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
import io
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import numpy as np

from fashionlab.errors import RunError
from fashionlab.files import (
    atomic_save_figure,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from fashionlab.models import external
from fashionlab.runformat import METRIC_COLUMNS, load_checkpoint, read_json


def _option_defaults() -> dict[str, Any]:
    """What a config.json written before an option existed means: the option's default."""
    from fashionlab.config import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


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
    MEMBERS = "members"
    CHECKPOINT_NAMES = ("best", "last")  # checkpoints/<name>.pt; evaluate, predict and export take either

    @classmethod
    def checkpoint_file(cls, name: str) -> str:
        return f"{cls.CHECKPOINTS}/{name}.pt"

    # What a fresh start writes before its first last.pt: a start that fails before then removes exactly these.
    STARTED_FILES = (CONFIG, SOURCE_COPY, METRICS, f"{CHECKPOINTS}/best.pt")

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

    def write_config(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.file(self.CONFIG), info)

    # ------------------------------------------------------------------ an external model's code

    def record_model_source(self, spec: str) -> dict[str, Any] | None:
        """For a model named by FILE.py:NAME or module:NAME: where it came from, for config.json, after copying a
        file's source into the run folder (so the run can be re-evaluated after the file changes or moves)."""
        if not external.is_external(spec):
            return None
        _, origin = external.resolve(spec)  # already imported by the training: cached, not run again
        if origin.kind == "file":
            atomic_write_bytes(self.file(self.SOURCE_COPY), Path(origin.path).read_bytes())
        return origin.as_dict()

    def model_spec(self, trust: bool, config: dict[str, Any] | None = None) -> str:
        """The spec to rebuild this run's model with (`config`: its saved config.json, read if not given). A
        registered model needs nothing; an external one runs code, so it needs `trust` (--trust-model-code, or the
        same --model given again), and a file-based one is imported from the run folder's copy, whose sha256 must
        match the one recorded at training."""
        config = self.saved_config() if config is None else config
        spec = str(config.get("model", ""))
        if not external.is_external(spec):
            return spec
        if not trust:
            raise RunError(f"{self.path} was trained with external model code ({spec}); fashionlab imports it only "
                           f"with --trust-model-code (or --model {spec} given again)")
        origin = config.get("model_origin") or {}
        if origin.get("kind") != "file":
            return spec
        copy = self.file(self.SOURCE_COPY)
        if not copy.is_file():
            raise RunError(f"{self.path} lacks {self.SOURCE_COPY}, the copy of its model's source; cannot rebuild "
                           f"{spec}")
        if external.sha256_of(copy) != origin.get("sha256"):
            raise RunError(f"{copy} differs from the source the run was trained with (sha256 mismatch); refusing it")
        return f"{copy}:{spec.rsplit(':', 1)[1]}"

    # ------------------------------------------------------------------ per-epoch metrics

    def history(self) -> list[dict[str, float]]:
        """metrics.csv as rows of floats (epoch as int); [] before the first epoch."""
        path = self.file(self.METRICS)
        if not path.exists():
            return []
        try:
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
            missing = [c for c in METRIC_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise RunError(f"{path}: malformed {self.METRICS} (no column {', '.join(missing)})")
            return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in rows]
        except (KeyError, TypeError, ValueError) as e:
            raise RunError(f"{path}: malformed {self.METRICS} ({type(e).__name__}: {e})") from None

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
        return read_json(self.file(self.TEST_METRICS)) if self.file(self.TEST_METRICS).is_file() else None

    def write_test_outputs(self, metrics: dict[str, Any], report: str, predictions: np.ndarray, probs: np.ndarray,
                           confusion_figure, curves_figure) -> None:
        atomic_write_json(self.file(self.TEST_METRICS), metrics)
        atomic_write_text(self.file(self.REPORT), report)
        for name, arr in ((self.PREDICTIONS, predictions.astype(np.int64)), (self.PROBS, probs.astype(np.float32))):
            buf = io.BytesIO()
            np.save(buf, arr)
            atomic_write_bytes(self.file(name), buf.getvalue())
        atomic_save_figure(self.file(self.CONFUSION), confusion_figure)
        atomic_save_figure(self.file(self.CURVES), curves_figure)

    def test_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(predictions int64 [n], probabilities float32 [n, classes]) as the last evaluation wrote them."""
        out = []
        for name in (self.PREDICTIONS, self.PROBS):
            try:
                out.append(np.load(self.file(name), allow_pickle=False))
            except (OSError, ValueError) as e:
                raise RunError(f"cannot read {self.file(name)}: {e}") from None
        return out[0].astype(np.int64, copy=False), out[1]
