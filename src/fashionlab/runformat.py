"""The run-file formats: metrics.csv's columns, last.pt's training progress, and the checks that a loaded
checkpoint or config.json has the shapes and types the code reading it expects. (Which file is where in a run
folder is runfolder.py's business; this module knows what is inside them.)"""

from __future__ import annotations

import dataclasses
import io
import math
import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fashionlab.config import check_saved_types
from fashionlab.errors import ConfigError, RunError
from fashionlab.reading import load_json, read_bytes, show_path

if TYPE_CHECKING:  # torch is imported where tensors are read, so importing this module stays light
    import torch

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")  # metrics.csv
CHECKPOINTS = ("best", "last")  # checkpoints/<name>.pt: what evaluate, predict and export may read


@dataclasses.dataclass
class Progress:
    """Where training stands: last.pt's "progress", so a resumed run continues mid-epoch exactly.
    Defined here, beside the checks of last.pt, because it is part of the run-file format; training fills it in."""

    epoch: int = 0  # epochs completed
    step: int = 0  # steps done in the current epoch
    global_step: int = 0
    perm: torch.Tensor | None = None  # this epoch's data order
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    epoch_seconds: float = 0.0
    best_val_acc: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    nan_skipped: int = 0
    lr: float = 0.0  # the LR of the latest optimizer step (what the epoch row reports)
    rows: list[dict[str, float]] = dataclasses.field(default_factory=list)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load with weights_only=True: a checkpoint can hold tensors and plain data, never code. The bytes are read
    through reading.read_bytes (a regular file, at most CAPS["checkpoint"]), so a FIFO or /dev/zero cannot hang or
    fill memory, and torch parses exactly the bytes that were checked."""
    import pickle

    import torch

    path = Path(path)
    data = read_bytes(path, kind="checkpoint", error=RunError)  # "checkpoint PATH not found", a FIFO, too large
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0][:200]
        raise RunError(f"refusing to load {path}: it is not a plain-weights checkpoint ({first})") from None
    except Exception as e:  # noqa: BLE001 - RuntimeError, EOFError, BadZipFile, KeyError...: a damaged file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise RunError(f"checkpoint {path} is corrupt or unreadable: {first}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_name" not in ckpt:
        raise RunError(f"checkpoint {path} is not a fashionlab checkpoint (no model weights/name)")
    problem = checkpoint_problem(ckpt, resume_state=path.name == "last.pt" or "optimizer" in ckpt)
    if problem:
        raise RunError(f"checkpoint {path} is not a valid fashionlab checkpoint: {problem}")
    return ckpt


def is_real(v: Any) -> bool:
    """A finite number read from a file (JSON or a checkpoint), and not a bool, which Python counts as an int."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


MAX_TENSOR_ELEMENTS = 1_000_000_000  # no model here has a tensor near this; a larger one is damage or a trap


def checkpoint_problem(ckpt: dict[str, Any], resume_state: bool = False) -> str | None:
    """What is wrong with a loaded checkpoint's contents (keys, types, finiteness, sizes), or None.

    Everything evaluate/predict/export read is checked; with resume_state (last.pt) also what resume reads.
    """
    import torch

    def show(v: Any) -> str:
        text = repr(v)
        return (text[:57] + "...") if len(text) > 60 else text

    if not all(isinstance(k, str) for k in ckpt):
        return "its keys are not all strings"
    state = ckpt["model"]
    if not isinstance(ckpt["model_name"], str):
        return f"model_name is {type(ckpt['model_name']).__name__}, not a string"
    if not isinstance(state, dict) or not state:
        return "model is not a non-empty mapping of parameter name to tensor"
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            return f"model entry {show(k)} is {type(v).__name__}, not a tensor under a string name"
    if "normalize.std" in state and not bool((state["normalize.std"] > 0).all()):
        return "the model's normalize.std must be > 0"
    norm = ckpt.get("normalize")
    if not isinstance(norm, dict) or "mean" not in norm or "std" not in norm:
        return "normalize must be a mapping with mean and std"
    # One channel: a number; several (own RGB data): one number per channel.
    means = norm["mean"] if isinstance(norm["mean"], list) and 1 <= len(norm["mean"]) <= 4 else [norm["mean"]]
    stds = norm["std"] if isinstance(norm["std"], list) and len(norm["std"]) == len(means) else [norm["std"]]
    if not all(is_real(m) for m in means):
        return f"normalize mean must be a finite number (or one per channel), got {show(norm['mean'])}"
    if not all(is_real(v) and v > 0 for v in stds) or len(stds) != len(means):
        return f"normalize std must be a finite number > 0 (or one per channel), got {show(norm['std'])}"
    shape = ckpt.get("input_shape", [1, 28, 28])
    if not (isinstance(shape, list) and len(shape) == 3 and all(is_int(v) and 1 <= v <= 4096 for v in shape)
            and shape[0] in (1, 3)):
        return f"input_shape must be [channels (1 or 3), height, width], got {show(shape)}"
    classes = ckpt.get("classes")
    if classes is not None and not (isinstance(classes, list) and 2 <= len(classes) <= 100_000
                                    and all(isinstance(c, str) and len(c) <= 1000 for c in classes)):
        return f"classes must be a list of at least 2 class names, got {show(classes)}"
    config = ckpt.get("config", {})
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        return "config is not a mapping of option names"
    try:
        check_saved_types(config, "config")
    except ConfigError as e:
        return str(e)
    if "epoch" in ckpt and (not isinstance(ckpt["epoch"], int) or isinstance(ckpt["epoch"], bool)
                            or ckpt["epoch"] < 0):
        return f"epoch must be an integer >= 0, got {show(ckpt['epoch'])}"
    no_val = isinstance(ckpt.get("val_acc"), float) and math.isnan(ckpt["val_acc"])  # a run without a val split
    if "val_acc" in ckpt and not (is_real(ckpt["val_acc"]) or no_val):
        return f"val_acc must be a finite number (or NaN without a validation split), got {show(ckpt['val_acc'])}"
    if resume_state:
        problem = _resume_state_problem(ckpt, show)
        if problem:
            return problem
    for where, t in _tensors(ckpt, ""):
        if t.numel() > MAX_TENSOR_ELEMENTS:
            return f"{where} has {t.numel():,} elements (more than {MAX_TENSOR_ELEMENTS:,})"
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            return f"{where} holds NaN or infinite values"
    return None


def _tensors(obj: Any, where: str):
    """(dotted location, tensor) for every tensor in nested dicts/lists/tuples."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield where or "value", obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{where}[{i}]")


def _resume_state_problem(ckpt: dict[str, Any], show) -> str | None:
    """The parts of last.pt that `train --resume` restores: present, and of the types that
    TrainState.load_state_dict expects."""
    import torch

    missing = [k for k in ("optimizer", "scheduler", "ema", "scaler", "progress", "rng") if k not in ckpt]
    if missing:
        return f"it lacks the resume state ({', '.join(missing)})"
    for key, optional in (("optimizer", False), ("scheduler", True), ("ema", True), ("scaler", False)):
        if not isinstance(ckpt[key], dict) and not (optional and ckpt[key] is None):
            return f"{key} must be a mapping{' or null' if optional else ''}, got {type(ckpt[key]).__name__}"
    look = ckpt.get("lookahead")  # optional: last.pt files from before --lookahead lack it
    if look is not None and not (isinstance(look, dict) and isinstance(look.get("slow"), list)
                                 and all(isinstance(t, torch.Tensor) for t in look["slow"])):
        return "lookahead must be null or a mapping with slow: a list of tensors"
    prog = ckpt["progress"]
    types = {f.name: str(f.type) for f in dataclasses.fields(Progress)}
    if not isinstance(prog, dict) or not set(prog) <= set(types):
        return f"progress must be a mapping of {', '.join(sorted(types))}"
    for k, v in prog.items():
        if types[k] in ("int", "float") and not (isinstance(v, (int, float)) and not isinstance(v, bool)):
            return f"progress {k} must be a number, got {type(v).__name__}"
        if types[k].startswith("torch.Tensor") and not (v is None or isinstance(v, torch.Tensor)):
            return f"progress {k} must be a tensor, got {type(v).__name__}"
    rng = ckpt["rng"]
    if not isinstance(rng, dict) or any(k not in rng for k in ("torch", "order", "aug", "cuda", "python", "numpy")):
        return "rng must be a mapping with torch, order, aug, cuda, python and numpy states"
    for k in ("torch", "order", "aug"):
        if not isinstance(rng[k], torch.Tensor) or rng[k].dtype != torch.uint8:
            return f"rng {k} must be a uint8 tensor"
    if not isinstance(rng["cuda"], list):
        return "rng cuda must be a list"
    py = rng["python"]
    if not (isinstance(py, list) and len(py) == 625 and all(is_int(x) and 0 <= x <= 2**32 for x in py)):
        return "rng python must be 625 integers (a Mersenne Twister state)"
    np_state = rng["numpy"]
    if not (isinstance(np_state, list) and len(np_state) == 4 and isinstance(np_state[0], list)
            and len(np_state[0]) == 624 and all(is_int(x) and 0 <= x < 2**32 for x in np_state[0])
            and is_int(np_state[1]) and 0 <= np_state[1] <= 624 and is_int(np_state[2])
            and isinstance(np_state[3], (int, float))):
        return "rng numpy must be [624 keys, pos, has_gauss, cached] (a Mersenne Twister state)"
    return None


def read_json(path: Path) -> dict[str, Any]:
    """A run folder's JSON file, which must hold a mapping; a config.json must also have the types a run
    writes (every TrainConfig option, `model`, `data.source`), so callers can index it without surprises.
    Read through reading.load_json: a regular file of at most CAPS["json"] bytes, else a one-line RunError. NaN is
    accepted: files written before outputs were strict JSON hold it (a run without a validation split)."""
    data = load_json(path, kind="json", error=RunError)
    shown = show_path(path)
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise RunError(f"{shown} must hold a JSON object (a mapping), not {type(data).__name__}; is the run folder "
                       "damaged?")
    if Path(path).name == "config.json":
        problem = run_config_problem(data)
        if problem:
            raise RunError(f"{shown} is damaged: {problem}")
    return data



def run_config_problem(config: dict[str, Any]) -> str | None:
    """What is wrong with the types of a run folder's config.json, or None (ranges are build_config's job)."""
    if not isinstance(config.get("model"), str):
        return "model must be a string"
    try:
        check_saved_types(config, "config")
    except ConfigError as e:
        return str(e)
    data = config.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("source"), str):
        return "data must be a mapping with a source folder"
    if config.get("dataset", "fashion-mnist") != "fashion-mnist":  # own data: what load_for_run checks it by
        for key, kind in (("path", str), ("fingerprint", str), ("classes", list), ("channels", int)):
            if not isinstance(data.get(key), kind):
                return f"data.{key} must be {'a list' if kind is list else 'an integer' if kind is int else 'text'}"
    if "normalize" in data and not isinstance(data["normalize"], dict):
        return "data.normalize must be a mapping"
    for key in ("versions",):
        if key in config and not isinstance(config[key], dict):
            return f"{key} must be a mapping"
    if "command" in config and not isinstance(config["command"], str):
        return "command must be a string"
    return None
