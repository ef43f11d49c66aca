"""The training configuration: one typed dataclass, saved with every run.

Precedence, lowest first: dataclass defaults < recipe < --config FILE < command-line flags.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fashionlab.errors import ConfigError

AUGMENTATIONS = ("flip", "rotate", "crop", "erase")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "plateau", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    model: str = "cnn2"
    recipe: str | None = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9  # sgd only (nesterov)
    weight_decay: float = 0.0
    scheduler: str = "plateau"
    warmup_epochs: float = 0.0  # linear warmup before cosine (onecycle has its own)
    label_smoothing: float = 0.0
    augment: str = "flip,crop"  # comma list of AUGMENTATIONS, or "none"
    rotate_degrees: float = 10.0
    crop_pad: int = 2  # random translation of up to this many pixels
    erase_prob: float = 0.5
    dropout: float | None = None  # None: the model's own default
    val_fraction: float = 0.1
    train_subset: int | None = None
    patience: int | None = None  # early stopping on validation accuracy
    ema: float = 0.0  # decay of an exponential moving average of weights; 0 disables
    tta: bool = False  # average logits over the image and its mirror at evaluation
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 where the hardware has it, else fp32
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False
    sync_bn: bool = False  # torchrun/DDP only: batch-norm statistics over all ranks
    checkpoint_every_steps: int = 0
    on_nan: str = "stop"  # stop | skip
    data_dir: str | None = None
    out: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # model kwargs, e.g. {"width": 64}

    def validate(self) -> TrainConfig:
        from fashionlab.models import MODELS

        def bad(msg: str) -> ConfigError:
            return ConfigError(msg)

        if self.model not in MODELS:
            raise bad(f"unknown model {self.model!r}; choose from {', '.join(sorted(MODELS))}")
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.val_fraction < 1, f"--val-fraction must be in [0, 1), got {self.val_fraction}"),
            (self.train_subset is None or self.train_subset >= 10,
             f"--train-subset must be >= 10 (one per class), got {self.train_subset}"),
            (self.patience is None or self.patience >= 1, f"--patience must be >= 1, got {self.patience}"),
            (0 <= self.ema < 1, f"--ema must be in [0, 1), got {self.ema}"),
            (self.grad_clip >= 0, f"--grad-clip must be >= 0, got {self.grad_clip}"),
            (self.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {self.warmup_epochs}"),
            (0 <= self.erase_prob <= 1, f"--erase-prob must be in [0, 1], got {self.erase_prob}"),
            (self.crop_pad >= 0, f"--crop-pad must be >= 0, got {self.crop_pad}"),
            (self.dropout is None or 0 <= self.dropout < 1, f"--dropout must be in [0, 1), got {self.dropout}"),
            (self.checkpoint_every_steps >= 0, "--checkpoint-every-steps must be >= 0"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.scheduler in SCHEDULERS, f"--scheduler must be one of {', '.join(SCHEDULERS)}"),
            (self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}"),
            (self.on_nan in ("stop", "skip"), "--on-nan must be stop or skip"),
        ]
        for ok, msg in checks:
            if not ok:
                raise bad(msg)
        self.augmentations()  # validates the list
        if self.scheduler == "plateau" and self.val_fraction == 0:
            raise bad("--scheduler plateau needs a validation split (--val-fraction > 0)")
        if self.patience is not None and self.val_fraction == 0:
            raise bad("--patience needs a validation split (--val-fraction > 0)")
        return self

    def augmentations(self) -> tuple[str, ...]:
        if self.augment.strip().lower() in ("", "none"):
            return ()
        names = tuple(a.strip().lower() for a in self.augment.split(",") if a.strip())
        unknown = [a for a in names if a not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(
                f"unknown augmentation {unknown[0]!r} in --augment; use a comma list of "
                f"{','.join(AUGMENTATIONS)} or none"
            )
        return names

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_NAMES = {f.name for f in fields(TrainConfig)}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file of TrainConfig keys (dashes or underscores)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"config file {path} is not valid YAML/JSON: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return normalize_keys(data, source=str(path))


def normalize_keys(data: dict[str, Any], source: str) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in FIELD_NAMES:
            raise ConfigError(f"unknown option {key!r} in {source}")
        out[name] = value
    return out


def build_config(*layers: dict[str, Any]) -> TrainConfig:
    """Merge override layers (later wins) over the defaults, coercing types, then validate."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    types = {f.name: f.type for f in fields(TrainConfig)}
    for key, value in merged.items():
        merged[key] = _coerce(key, types[key], value)
    return TrainConfig(**merged).validate()


def _coerce(key: str, type_name: str, value: Any) -> Any:
    if value is None:
        return None
    base = str(type_name).split("|")[0].strip()
    try:
        if base == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base == "float":
            return float(value)
        if base == "bool":
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if base == "str":
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {key}: expected {base}, got {value!r}") from None
    return value
