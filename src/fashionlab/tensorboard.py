"""`fashionlab train --tensorboard`: the run's curves, hyperparameters and test results as TensorBoard events.

Everything goes to RUN_DIR/tensorboard/ (one TensorBoard run per run folder, so `tensorboard --logdir runs`
compares them all):

- per epoch (step = epoch number): `loss/train`, `loss/val`, `accuracy/train`, `accuracy/val`, `lr`,
  `time/epoch_seconds` -- the metrics.csv row, written and flushed as each epoch ends;
- hyperparameters (the hparams dashboard): a session-start record with the run's options when the log opens,
  and at the end the final metrics `hparam/test_accuracy`, `hparam/test_macro_f1`, `hparam/test_loss`,
  `hparam/best_val_accuracy` plus a session-end record. No Experiment record is written: TensorBoard then
  builds the table from every run's session records, so runs with different options line up in one table
  (torch's `SummaryWriter.add_hparams` writes an Experiment of its own into a new timestamped subfolder
  instead, one per call);
- the test confusion matrix as an image (`test/confusion_matrix`).

Resuming: a resumed run opens a new event file in the same folder and writes the whole history so far again,
from epoch 1, before continuing; each event file starts with a restart marker at step 1 (SummaryWriter's
purge_step), so TensorBoard drops what the earlier files logged and the curves show each epoch exactly once, as
metrics.csv has it, also when the run was killed after logging an epoch it had not checkpointed.

tensorboard is an optional dependency: `pip install 'fashionlab[tensorboard]'`; `require()` checks for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fashionlab.config import NOT_RESULTS, PATHS, PROVENANCE_KEYS
from fashionlab.errors import require_package

INSTALL = "pip install 'fashionlab[tensorboard]'"
SUBDIR = "tensorboard"

# metrics.csv column -> scalar tag
EPOCH_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "lr": "lr",
    "seconds": "time/epoch_seconds",
}
# test_metrics.json key -> hparams metric tag
FINAL_TAGS = {"accuracy": "hparam/test_accuracy", "macro_f1": "hparam/test_macro_f1", "test_loss": "hparam/test_loss"}
BEST_VAL_TAG = "hparam/best_val_accuracy"
CONFUSION_TAG = "test/confusion_matrix"
# Keys of a config (TrainConfig.to_dict() or config.json) that are not hyperparameters: paths, provenance, and
# options that do not change what is trained (device, compile, ...) except the label, which names the run.
NOT_HPARAMS = PATHS | frozenset(PROVENANCE_KEYS) | (NOT_RESULTS - {"label"})


def require() -> None:
    """Raise a one-line ConfigError unless tensorboard (and torch's writer for it) can be imported."""
    require_package("--tensorboard", "tensorboard", ("tensorboard", "torch.utils.tensorboard:SummaryWriter"), INSTALL)


def hparams_of(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """The hyperparameters to show: every scalar option that changes results, and the label; `extra` as extra.NAME.

    Unset options (None) are left out: TensorBoard shows them blank rather than mixing types in a column."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        if key in NOT_HPARAMS or value is None:
            continue
        if key == "extra" and isinstance(value, dict):
            for name, v in value.items():
                if isinstance(v, (bool, int, float, str)):
                    out[f"extra.{name}"] = v
                elif v is not None:
                    out[f"extra.{name}"] = str(v)
        elif isinstance(value, (bool, int, float, str)):
            out[key] = value
    return out


class TensorBoardLog:
    """The TensorBoard events of one run folder. Use as a context manager, or call close().

    history: the epoch rows the run already has (a resumed run's Progress.rows); they are written again.
    Nothing is created on disk until the first epoch() or finish(): in train() that is after the epoch's
    last.pt, so a fresh start that fails before its first checkpoint still leaves no files behind.
    """

    def __init__(self, run_dir: Path | str, config: dict[str, Any], history: Iterable[dict[str, Any]] = ()):
        require()
        self.log_dir = Path(run_dir) / SUBDIR
        self.hparams = hparams_of(config)
        self.history = [dict(r) for r in history]
        self.rows: list[dict[str, Any]] = []  # every epoch written, history included
        self.writer = None
        self.closed = False

    def _open(self):
        if self.closed:
            raise ValueError(f"{self.log_dir}: the TensorBoard log is closed")
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            if self.log_dir.is_dir():
                _after_last_file(sorted(self.log_dir.glob("events.out.tfevents.*")))
            # Every file starts with a session-start event at step 1. TensorBoard's Python loader takes the
            # first as the start and each later one as a restart, dropping what earlier files logged from epoch
            # 1 on (its Rust loader drops a series' later steps whenever a lower step arrives, which the
            # rewritten history does too).
            self.writer = SummaryWriter(str(self.log_dir), purge_step=1)
            self._session_start(self.hparams)
            for row in self.history:
                self._scalars(row)
        return self.writer

    # ------------------------------------------------------------------------------------------ per epoch

    def epoch(self, row: dict[str, Any]) -> None:
        """One metrics.csv row: its scalars at step = row["epoch"]. Non-finite values (no validation split)
        are skipped. Flushed at once, so a killed run keeps every epoch it logged."""
        self._open()
        self._scalars(row)
        self.writer.flush()

    def _scalars(self, row: dict[str, Any]) -> None:
        step = int(row["epoch"])
        for key, tag in EPOCH_TAGS.items():
            value = _finite(row.get(key))
            if value is not None:
                self.writer.add_scalar(tag, value, step)
        self.rows.append(dict(row))

    # ------------------------------------------------------------------------------------------ at the end

    def finish(self, test_metrics: dict[str, Any] | None = None) -> None:
        """The final metrics for the hparams table and the confusion-matrix image, at the last epoch's step.

        test_metrics: what evaluate_run returns (test_metrics.json); None when the test set was not evaluated
        (then only the best validation accuracy is recorded)."""
        self._open()
        step = int(self.rows[-1]["epoch"]) if self.rows else 0
        vals = [v for v in (_finite(r.get("val_acc")) for r in self.rows) if v is not None]
        if vals:
            self.writer.add_scalar(BEST_VAL_TAG, max(vals), step)
        if test_metrics is not None:
            for key, tag in FINAL_TAGS.items():
                value = _finite(test_metrics.get(key))
                if value is not None:
                    self.writer.add_scalar(tag, value, step)
            cm = test_metrics.get("confusion_matrix")
            if cm is not None:
                title = (f"{test_metrics.get('model', '')} test set ({test_metrics.get('checkpoint', 'best')} "
                         f"checkpoint, epoch {test_metrics.get('best_epoch', '?')})")
                self.writer.add_image(CONFUSION_TAG, confusion_image(np.asarray(cm), title), step,
                                      dataformats="HWC")
        self._session_end()
        self.writer.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.writer is not None:
                self.writer.close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ hparams records

    def _session_start(self, hparams: dict[str, bool | int | float | str]) -> None:
        from tensorboard.plugins.hparams import plugin_data_pb2

        info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
        for name, value in hparams.items():
            # bool before int: a bool is an int in Python (torch's add_hparams logs True as 1.0).
            if isinstance(value, bool):
                info.hparams[name].bool_value = value
            elif isinstance(value, (int, float)):
                info.hparams[name].number_value = float(value)
            else:
                info.hparams[name].string_value = str(value)
        self._hparams_record("session_start_info", plugin_data_pb2.HParamsPluginData(session_start_info=info))

    def _session_end(self) -> None:
        from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

        info = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
        self._hparams_record("session_end_info", plugin_data_pb2.HParamsPluginData(session_end_info=info))

    def _hparams_record(self, which: str, data) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import metadata

        tag = {"session_start_info": metadata.SESSION_START_INFO_TAG,
               "session_end_info": metadata.SESSION_END_INFO_TAG}[which]
        summary = Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data),
                                               tensor=metadata.NULL_TENSOR)])
        self.writer._get_file_writer().add_summary(summary, 0)


def _after_last_file(files: list[Path]) -> None:
    """Readers take a folder's event files in name order, and the name starts with the creation time in whole
    seconds (then host, pid, a counter): a file opened in the same second as the latest one could sort before it,
    so wait (under a second) until the clock is past it."""
    stamps = []
    for p in files:
        parts = p.name.split(".")
        if len(parts) > 3 and parts[3].isdigit():
            stamps.append(int(parts[3]))
    if stamps:
        wait = max(stamps) + 1 - time.time()
        if 0 < wait <= 1:
            time.sleep(wait)


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def confusion_image(cm: np.ndarray, title: str) -> np.ndarray:
    """The confusion matrix (rows = true class) as an RGB uint8 array [H, W, 3]: colour is the row-normalized
    rate (recall on the diagonal), the text the count. Rendered with matplotlib's Agg canvas, no pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from fashionlab.about import CLASSES

    n = cm.shape[0]
    names = list(CLASSES) if n == len(CLASSES) else [str(i) for i in range(n)]
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig = Figure(figsize=(7.5, 6.5), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="row-normalized (recall)")
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
