"""The training configuration: one typed dataclass, saved with every run.

Precedence, lowest first: dataclass defaults < recipe < --config FILE < command-line flags.

Every option is checked in one place, `TrainConfig.validate`, from a table kept beside each field: its
type (the annotation) and, in the field's metadata, its range or choices. Values coming from YAML/JSON or
the command line are coerced strictly: booleans are not numbers, numbers are not booleans, numbers must
be finite, and strings only become numbers/booleans when they spell one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fashionlab.errors import ConfigError
from fashionlab.reading import load_config_file, shorten, show_path

FASHION_MNIST = "fashion-mnist"  # the default --data
MIN_SIDE, MAX_SIDE = 4, 1024  # --image-size: a side below 4 pixels holds no shape; above 1024 a CPU cannot train
AUGMENTATIONS = ("flip", "rotate", "crop", "erase")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "plateau", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ON_NAN = ("stop", "skip")
DATA_LOADINGS = ("auto", "memory", "stream")  # --data-loading: see data.own.read_dataset

MAX_ENSEMBLE = 16  # members of an --ensemble; a checkpoint claiming more is damaged (evaluate.load_run_model)
# The largest seed every random generator a run seeds accepts: numpy's legacy seeding takes [0, 2**32 - 1],
# torch's take up to 2**64 - 1 (and train.py derives seed + 1 + 1000 * rank from it).
SEED_MAX = 2**32 - 1
TRUE_STRINGS = ("1", "true", "yes", "on")
FALSE_STRINGS = ("0", "false", "no", "off")
MAX_MODEL_PARAMS = 1_000_000_000  # a model larger than this is a typo in `extra`, not an experiment on a CPU
# The longest a string option may be: a label names a group in tables, plot legends and summary.md (a 5 MB one made
# `compare` take minutes); any other string is a path, a model spec or a short list, and PATH_MAX is 4096.
MAX_LABEL = 100
MAX_TEXT = 4096



def check_data_options(dataset: str, *, data_dir: str | None, image_size: str | None, channels: int | None,
                       loading: str) -> None:
    """The options that only one kind of dataset takes (a one-line ConfigError otherwise): checked here for a
    configuration and again by load_dataset, which the API may call without one."""
    if dataset == FASHION_MNIST:
        if image_size is not None or channels is not None:
            raise ConfigError("--image-size and --channels are for your own data (--data); Fashion-MNIST is 1x28x28")
        if loading == "stream":
            raise ConfigError("--data-loading stream reads image files while training; Fashion-MNIST is arrays, "
                              "loaded in memory")
    elif data_dir is not None:
        raise ConfigError("--data-dir names Fashion-MNIST's IDX folder; give your own dataset with --data")

@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric option: lo..hi, each end open or closed; `why` is added to the message."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    why: str = ""

    def __contains__(self, v: float) -> bool:
        if not isinstance(v, int) and not math.isfinite(v):  # an int is finite (and may be too large for a float)
            return False
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below

    def describe(self) -> str:
        return f"{'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"


def _num(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def opt(default: Any = None, *, help: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
        hi_open: bool = False, choices: tuple[str, ...] | None = None, why: str = "", factory=None,
        results: bool = True, resumable: bool = False, cli: bool = True, max_len: int = MAX_TEXT,
        flag: str | None = None):
    """A training option: its default, help, validation rule and role, all in one place.

    results: whether the option changes what is trained (False: where/how fast it runs, or a name). Runs that
    differ only in such options are replicates in a comparison, and --resume may change them.
    resumable: changes results, yet --resume may still change it (training longer, stopping earlier).
    cli: whether it is a command-line flag (else config files only).
    max_len: the longest a string value may be.
    flag: the command-line flag, when it is not --NAME (the field `dataset` is --data: config.json's `data` key
    already holds the data's provenance record).
    """
    meta: dict[str, Any] = {"help": help, "results": results, "resumable": resumable, "cli": cli, "max_len": max_len,
                            "flag": flag}
    if lo is not None:
        meta["range"] = Range(lo, hi if hi is not None else math.inf, lo_open, hi_open, why)
    if choices is not None:
        meta["choices"] = choices
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every training option. The command-line flags, their help, the validation, and the lists of options that
    --resume may change, that a comparison ignores and that tuning writes out are all derived from these fields."""

    model: str = opt("cnn2", help="architecture: a name from `fashionlab models`, FILE.py:NAME or module:NAME")
    recipe: str | None = opt(None, help="named recipe (see `fashionlab recipes`); flags override its values")
    label: str | None = opt(None, results=False, max_len=MAX_LABEL,
                            help=f"name of this configuration, used as its group in comparison reports (at most "
                                 f"{MAX_LABEL} characters)")
    epochs: int = opt(10, lo=1, hi=100_000, resumable=True, help="number of epochs")
    batch_size: int = opt(128, lo=1, hi=2**20, help="images per optimizer step")
    lr: float = opt(1e-3, lo=0, lo_open=True, help="(peak) learning rate")
    optimizer: str = opt("adam", choices=OPTIMIZERS, help="optimizer")
    momentum: float = opt(0.9, lo=0, hi=1, hi_open=True, help="SGD momentum (Nesterov)")
    weight_decay: float = opt(0.0, lo=0, help="decoupled for adamw, L2 for adam/sgd; never on biases/norms")
    scheduler: str = opt("plateau", choices=SCHEDULERS, help="LR schedule (plateau: on validation accuracy)")
    warmup_epochs: float = opt(0.0, lo=0, hi=100_000, help="linear warmup before cosine decay (onecycle has its own)")
    label_smoothing: float = opt(0.0, lo=0, hi=1, hi_open=True, help="cross-entropy label smoothing")
    augment: str = opt("flip,crop", help=f"comma list of {','.join(AUGMENTATIONS)}, or none (on a dataset other than "
                                          "Fashion-MNIST, flip is left out unless given here: a flipped digit or "
                                          "letter is another class)")
    rotate_degrees: float = opt(10.0, lo=0, hi=180, help="max rotation for `rotate`")
    crop_pad: int = opt(2, lo=0, hi=14, why="half the 28-pixel image", help="max translation in pixels for `crop`")
    erase_prob: float = opt(0.5, lo=0, hi=1, help="probability of random erasing per image")
    low_res: int = opt(28, lo=8, hi=28, why="up to the full 28-pixel image",
                       help="progressive resizing: image size of the first --low-res-epochs epochs (a model that "
                            "takes any size, e.g. fastnet)")
    low_res_epochs: int = opt(0, lo=0, hi=100_000, help="epochs trained at --low-res before the full 28x28 images")
    dropout: float | None = opt(None, lo=0, hi=1, hi_open=True, help="dropout rate (model default if unset)")
    val_fraction: float = opt(0.1, lo=0, hi=1, hi_open=True,
                              help="stratified validation fraction of the training images (a dataset with its own "
                                   "validation split uses that instead)")
    train_subset: int | None = opt(None, lo=2, hi=2**31 - 1, why="at least one per class",
                                   help="train on a stratified subset of N images")
    val_subset: int | None = opt(None, lo=2, hi=2**31 - 1, why="at least one per class",
                                 help="validate (and fit the calibration temperature) on a stratified subset of N "
                                      "images of the validation split; the test set stays whole")
    exclude: str | None = opt(None, help="train without the training items listed in FILE, a CSV with an index column "
                                         "(e.g. audit-labels' label_issues.csv); indices count the dataset's training "
                                         "items in file order from 0. The validation split stays as without it")
    patience: int | None = opt(None, lo=1, hi=100_000, resumable=True,
                               help="early stopping after N epochs without validation improvement")
    ema: float = opt(0.0, lo=0, hi=1, hi_open=True, help="EMA decay of weights for evaluation (0 disables)")
    lookahead: int = opt(0, lo=0, hi=100_000, why="any number of steps",
                         help="Lookahead: every K optimizer steps the slow weights move halfway to the trained ones, "
                              "which restart from there (0 disables)")
    whiten: bool = opt(False, help="initialise the first convolution from the training images' patch whitening "
                                   "(eigenvectors of the patch covariance, +/- pairs)")
    bn_momentum: float | None = opt(None, lo=0, hi=1, lo_open=True,
                                    help="BatchNorm running-statistics momentum (torch's 0.1 if unset)")
    tta: bool = opt(False, help="flip test-time augmentation at evaluation")
    grad_clip: float = opt(0.0, lo=0, help="max gradient norm (0 disables)")
    seed: int = opt(0, lo=0, hi=SEED_MAX, why="2**32 - 1: what numpy and torch generators accept",
                    help="random seed (split, init, order, augmentation)")
    split_seed: int | None = opt(None, lo=0, hi=SEED_MAX, why="as --seed",
                                 help="seed of the train/validation split and --train-subset alone (--seed if unset): "
                                      "runs that differ only in initialisation and order, e.g. an ensemble's members")
    ensemble: int = opt(1, lo=1, hi=MAX_ENSEMBLE, why="each member is a whole training run",
                        help="train N members one after another (seeds --seed, --seed+1, ...; one split) and predict "
                             "with the mean of their softmax")
    device: str = opt("auto", choices=DEVICES, results=False, help="where to train")
    precision: str = opt("auto", choices=PRECISIONS, help="auto: bf16 where the hardware has it, else fp32")
    channels_last: bool = opt(True, help="channels-last memory format")
    compile: bool = opt(False, results=False, help="torch.compile the model")
    tensorboard: bool = opt(False, results=False,
                            help="also log for TensorBoard under RUN_DIR/tensorboard: curves, hyperparameters with "
                                 "final metrics, test confusion matrix (pip install 'fashionlab[tensorboard]')")
    deterministic: bool = opt(False, results=False, help="deterministic algorithms (also sets the CUDA flags)")
    sync_bn: bool = opt(False, help="synchronized batch norm under torchrun")
    checkpoint_every_steps: int = opt(0, lo=0, hi=2**31 - 1, results=False,
                                      help="also save last.pt every N steps (0: each epoch only)")
    on_nan: str = opt("stop", choices=ON_NAN, results=False, help="what a non-finite loss does")
    dataset: str = opt(FASHION_MNIST, flag="--data",
                       help="the data: fashion-mnist, a folder of class folders (DIR/train/<class>, DIR/test/<class>, "
                            "optional DIR/val/<class>; or DIR/<class> alone, with a 20%% stratified test holdout), a "
                            "CSV of path,label[,split], an .npz (x_train, y_train, x_test, y_test[, classes]) or a "
                            "folder of MNIST-format IDX files")
    image_size: str | None = opt(None, max_len=20,
                                 help="resize every image to N or HxW pixels (own data; without it all images must "
                                      "share one size)")
    channels: int | None = opt(None, lo=1, hi=3, help="1 or 3 input channels (own data; default: 1 when every image "
                                                      "is grayscale, else 3)")
    skip_bad: bool = opt(False, help="leave out unreadable image files (listed in the run folder) instead of stopping")
    data_loading: str = opt("auto", choices=DATA_LOADINGS, results=False,
                            help="own image files: memory decodes them once (cached) and trains from memory, stream "
                                 "decodes each batch in worker processes while training; auto: memory when the "
                                 "decoded images fit a quarter of RAM. Same results either way")
    data_workers: int | None = opt(None, lo=0, hi=64, results=False,
                                   help="processes decoding own image files (default: one per core, at most 8, for "
                                        "2,000 files or more; stream: 2); 0: in the training process")
    data_dir: str | None = opt(None, results=False, help="folder with the four Fashion-MNIST IDX files")
    out: str | None = opt(None, results=False, help="run folder (default runs/<model>-<timestamp>)")
    extra: dict[str, Any] = opt(factory=dict, cli=False, help="model keyword arguments, e.g. {width: 64}")

    def validate(self) -> TrainConfig:
        """Check (and coerce) every field against its type and rule; raise a one-line ConfigError."""
        for f in fields(self):
            value = _coerce(f.name, f.type, getattr(self, f.name))
            setattr(self, f.name, value)
            if value is not None:
                _check_rule(f, value)
        from fashionlab.models import known_model, model_names

        if not known_model(self.model):
            raise ConfigError(f"unknown model {shorten(self.model, 100)}; choose from {', '.join(model_names())}, "
                              "or give FILE.py:NAME or package.module:NAME")
        self.augmentations()  # validates the list
        if self.channels == 2:
            raise ConfigError("--channels must be 1 or 3, got 2")
        check_data_options(self.dataset, data_dir=self.data_dir, image_size=self.image_size, channels=self.channels,
                           loading=self.data_loading)
        if self.dataset == FASHION_MNIST and self.train_subset is not None and not 10 <= self.train_subset <= 60_000:
            # known before reading a file: 60,000 training images, 10 classes (own data is checked once read)
            raise ConfigError(f"--train-subset must be in 10..60000 for Fashion-MNIST (one per class up to all "
                              f"training images), got {self.train_subset}")
        if self.dataset == FASHION_MNIST and self.val_subset is not None and self.val_subset < 10:
            raise ConfigError(f"--val-subset must be at least 10 for Fashion-MNIST (one per class), got "
                              f"{self.val_subset}")
        if self.val_subset is not None and self.val_fraction == 0:
            raise ConfigError("--val-subset needs a validation split (--val-fraction > 0)")
        if self.image_size is not None:
            parse_image_size(self.image_size)
        if self.scheduler == "plateau" and self.val_fraction == 0:
            raise ConfigError("--scheduler plateau needs a validation split (--val-fraction > 0)")
        if self.patience is not None and self.val_fraction == 0:
            raise ConfigError("--patience needs a validation split (--val-fraction > 0)")
        if self.seed + self.ensemble - 1 > SEED_MAX:
            raise ConfigError(f"--seed {self.seed} with --ensemble {self.ensemble}: member seeds would pass {SEED_MAX}")
        self._check_model_builds()
        return self

    def _check_model_builds(self, external: bool = False) -> None:
        """Build the model on the meta device (no memory, milliseconds): bad `extra`/`dropout` fail here,
        before any run folder exists, instead of in the middle of training.

        An external model (FILE.py:NAME) is built only with `external`, i.e. when the user named it: validating a
        run folder's saved config must never import code."""
        import warnings

        import torch

        from fashionlab.models import build_model
        from fashionlab.models.external import is_external

        if (is_external(self.model) and not external) or self.model.startswith("object:"):
            return

        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                model = build_model(self.model, dropout=self.dropout, **self.extra)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure to build is a bad option value
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ConfigError(f"model {self.model!r} cannot be built with extra={shorten(self.extra, 80)}: "
                              f"{first}") from None
        if self.low_res_epochs and self.low_res < 28:
            try:
                with torch.device("meta"):
                    model.eval()(torch.zeros(2, 1, self.low_res, self.low_res))
            except Exception as e:  # noqa: BLE001 - e.g. a fully connected layer sized for 28x28
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
                raise ConfigError(f"model {self.model!r} cannot train on {self.low_res}x{self.low_res} images "
                                  f"(--low-res); use a model that takes any size, e.g. fastnet: {first}") from None
        n = sum(p.numel() for p in model.parameters())
        if n > MAX_MODEL_PARAMS:
            raise ConfigError(f"model {self.model!r} with extra={shorten(self.extra, 80)} would have {n:,} parameters "
                              f"(more than {MAX_MODEL_PARAMS:,}); check option 'extra'")

    def data_folder(self) -> Path | None:
        return data_folder(self.dataset)

    def data_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    def augmentations(self) -> tuple[str, ...]:
        if not isinstance(self.augment, str):
            raise ConfigError(f"--augment must be a string, got {_show(self.augment)}")
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
FIELDS = {f.name: f for f in fields(TrainConfig)}
# Derived from the fields' metadata, never listed by hand:
NOT_RESULTS = frozenset(f.name for f in fields(TrainConfig) if not f.metadata["results"])
RESUME_MAY_CHANGE = frozenset(f.name for f in fields(TrainConfig)
                              if not f.metadata["results"] or f.metadata["resumable"])
PATHS = frozenset({"out", "data_dir"})  # where a run reads and writes: never part of a shareable config
# What config.json holds besides the options: written by the run, never read back as options.
PROVENANCE_KEYS = ("data", "versions", "runtime", "model_origin", "command")


def flag(name: str) -> str:
    """How the message names an option: its command-line flag, or its config-file key if it has no flag."""
    if name == "extra":
        return f"option {name!r}"
    field_ = FIELDS.get(name)
    return (field_ and field_.metadata.get("flag")) or "--" + name.replace("_", "-")


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """--image-size: "28" -> (28, 28), "32x24" -> (32, 24) as height x width; None stays None."""
    if text is None:
        return None
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        hw = tuple(int(p.strip()) for p in parts)
    except ValueError:
        hw = ()
    if len(hw) == 1:
        hw = (hw[0], hw[0])
    if len(hw) != 2 or not all(MIN_SIDE <= v <= MAX_SIDE for v in hw):
        raise ConfigError(f"--image-size must be N or HxW with {MIN_SIDE}..{MAX_SIDE}, got {shorten(text, 40)}")
    return hw


def own_data_augment(cfg: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """On a dataset other than Fashion-MNIST, augmentations that can change a label are off unless the user asked
    for them: no flip (a flipped 2 or b is another class) and no flip TTA. The defaults and the recipes were
    chosen on Fashion-MNIST, whose classes are mirror-symmetric."""
    if cfg.dataset == FASHION_MNIST:
        return cfg
    if "augment" not in given:
        kept = [a for a in cfg.augmentations() if a != "flip"]
        cfg.augment = ",".join(kept) if kept else "none"  # the default flip,crop becomes crop: translation only
    if "tta" not in given:
        cfg.tta = False
    return cfg


def _show(value: Any) -> str:
    """A value for an error message: short, on one line, with its type when that is the problem."""
    text = shorten(value, 60)  # built from the part shown: a huge value (an alias bomb) is never rendered whole
    kind = {bool: "a boolean", type(None): "null", dict: "a mapping", list: "a list", str: "a string"}.get(
        type(value), type(value).__name__)
    return f"{text} ({kind})"


def _parse_type(type_name: Any) -> tuple[str, bool]:
    """'float | None' -> ('float', True); 'dict[str, Any]' -> ('dict', False)."""
    parts = [p.strip() for p in str(type_name).split("|")]
    optional = "None" in parts
    base = next(p for p in parts if p != "None").split("[")[0]
    return base, optional


def _what(base: str) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "dict": "a mapping of name: value"}.get(base, base)


def _coerce(key: str, type_name: Any, value: Any) -> Any:
    """`value` as the field's type, strictly; ConfigError names the option, the value and what was expected."""
    base, optional = _parse_type(type_name)
    what = _what(base)

    def bad(extra: str = "") -> ConfigError:
        return ConfigError(f"{flag(key)} must be {what}, got {_show(value)}{extra}")

    if value is None:
        if optional:
            return None
        raise bad()
    if base == "int":
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real):
            if math.isfinite(value) and float(value).is_integer():
                return int(value)
            raise bad()
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad() from None
        raise bad()
    if base == "float":
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, numbers.Real):
            try:
                return float(value)
            except OverflowError:
                raise bad(" (too large)") from None
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise bad() from None
        raise bad()
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            word = value.strip().lower()
            if word in TRUE_STRINGS:
                return True
            if word in FALSE_STRINGS:
                return False
            raise bad(f"; use one of {'/'.join(TRUE_STRINGS + FALSE_STRINGS)}")
        raise bad()
    if base == "str":
        if not isinstance(value, str):
            raise bad()
        if "\x00" in value:
            raise ConfigError(f"{flag(key)} must not contain a NUL character")
        return value
    if base == "dict":
        if not isinstance(value, dict):
            raise bad()
        for k in value:
            if not isinstance(k, str) or not k.isidentifier():
                raise ConfigError(f"{flag(key)} keys must be option names (identifiers), got {_show(k)}")
        return dict(value)
    return value


def _check_rule(f: dataclasses.Field, value: Any) -> None:
    limit = f.metadata.get("max_len", MAX_TEXT)
    if isinstance(value, str) and len(value) > limit:
        raise ConfigError(f"{flag(f.name)} is {len(value):,} characters long; the limit is {limit:,} "
                          f"(got {shorten(value, 40)})")
    rule = f.metadata.get("range")
    if rule is not None and value not in rule:
        why = f" ({rule.why})" if rule.why else ""
        if isinstance(value, int):  # integers: ">= 1 and <= 100000"
            lo = f"> {_num(rule.lo)}" if rule.lo_open else f">= {_num(rule.lo)}"
            hi = f"< {_num(rule.hi)}" if rule.hi_open else f"<= {_num(rule.hi)}"
            raise ConfigError(f"{flag(f.name)} must be {lo} and {hi}{why}, got {shorten(value, 40)}")
        if rule.hi == math.inf:  # floats with only a lower bound: "a finite number > 0"
            lo = f"> {_num(rule.lo)}" if rule.lo_open else f">= {_num(rule.lo)}"
            raise ConfigError(f"{flag(f.name)} must be a finite number {lo}{why}, got {value!r}")
        finite = "" if math.isfinite(value) else "a finite number "
        raise ConfigError(f"{flag(f.name)} must be {finite}in {rule.describe()}{why}, got {value!r}")
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{flag(f.name)} must be one of {', '.join(choices)}, got {shorten(value, 40)}")


def check_option(name: str, value: Any) -> Any:
    """One TrainConfig field's value, coerced and checked by the field's own rule: for commands that take a
    training option without building a whole configuration (`fashionlab data --data-workers`)."""
    f = FIELDS[name]
    value = _coerce(name, f.type, value)
    if value is not None:
        _check_rule(f, value)
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file of TrainConfig keys (dashes or underscores): through reading.load_config_file, so a
    FIFO or device is refused unopened, the size is capped and YAML aliases cannot expand without bound."""
    data = load_config_file(path)  # ConfigError, one line, naming the file
    shown = show_path(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {shown} must hold a mapping of option: value, not {_show(data)}")
    # Types now (ranges once the layers are merged), so `model`/`recipe` are strings when they are looked up.
    return {k: _coerce(k, FIELDS[k].type, v) for k, v in normalize_keys(data, source=shown).items()}


def normalize_keys(data: dict[str, Any], source: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping of option: value, not {_show(data)}")
    out = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"option names in {source} must be strings, got {_show(key)}")
        name = key.replace("-", "_")
        if name not in FIELD_NAMES:
            raise ConfigError(f"unknown option {shorten(key, 60)} in {source}")
        out[name] = value
    return out


# What `data` and `run` take of the options
DATA_OPTIONS = ("dataset", "image_size", "channels", "skip_bad", "data_loading", "data_workers")


def add_arguments(parser, only: tuple[str, ...] | None = None) -> None:
    """One command-line flag per option, derived from the fields: name, type, help, choices. only: just these
    options (e.g. DATA_OPTIONS), without --model-arg and --config."""
    import argparse

    for f in fields(TrainConfig):
        if not f.metadata["cli"] or (only is not None and f.name not in only):
            continue
        base, _ = _parse_type(f.type)
        choices = f.metadata.get("choices")
        help_ = f.metadata["help"] + (f": {' | '.join(choices)}" if choices else "")
        if base == "bool":
            parser.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_)
        else:
            parser.add_argument(flag(f.name), dest=f.name, type={"int": int, "float": float}.get(base, str),
                                default=argparse.SUPPRESS, help=help_)
    if only is not None:
        return
    parser.add_argument("--model-arg", dest="model_args", action="append", default=[], metavar="KEY=VALUE",
                        help="keyword argument for the model (repeatable; JSON values), added to option 'extra'")
    parser.add_argument("--config", dest="config_file", default=None, help="YAML or JSON file of these options")


def given(args) -> dict[str, Any]:
    """The options given on a command line parsed with add_arguments (unset flags are absent)."""
    options = {k: v for k, v in vars(args).items() if k in FIELD_NAMES}
    if getattr(args, "model_args", None):
        options["extra"] = dict(parse_model_arg(a) for a in args.model_args)
    return options


def parse_model_arg(text: str, what: str = "--model-arg") -> tuple[str, Any]:
    """'width=64' -> ('width', 64): the value as JSON when it parses, else the string. The one KEY=VALUE parser
    (--model-arg, and each pair of a --variant)."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key.isidentifier():
        raise ConfigError(f"{what} {text!r}: expected KEY=VALUE with KEY a Python name")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def resolve(options: dict[str, Any], config_file: str | Path | None = None) -> TrainConfig:
    """The configuration a user asked for: defaults < recipe (explicit, or the model's own) < config file < options."""
    from fashionlab.recipes import recipe_for

    options = normalize_keys(options, "the options")
    file_layer = read_config_file(config_file) if config_file else {}
    recipe = options.get("recipe") or file_layer.get("recipe")
    model = options.get("model") or file_layer.get("model")
    cfg = own_data_augment(build_config(recipe_for(recipe, model), file_layer, options), file_layer | options)
    cfg._check_model_builds(external=True)  # the user named this model: importing it now is what they asked
    return cfg


def build_config(*layers: dict[str, Any]) -> TrainConfig:
    """Merge override layers (later wins) over the defaults, then validate (which coerces types)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        layer = normalize_keys(layer, "the configuration")
        if isinstance(merged.get("extra"), dict) and isinstance(layer.get("extra"), dict):
            layer = layer | {"extra": merged["extra"] | layer["extra"]}  # model kwargs add up across layers
        merged.update(layer)
    return TrainConfig(**merged).validate()


def data_folder(spec: str) -> Path | None:
    """The folder a --data SPEC names (class folders or IDX files), where no output may go; None for
    Fashion-MNIST and for a file (CSV, npz), whose neighbours are not part of the dataset."""
    if spec == FASHION_MNIST:
        return None
    try:
        return Path(spec) if Path(spec).is_dir() else None
    except (OSError, ValueError):
        return None


def check_saved_types(saved: dict[str, Any], source: str) -> None:
    """Types only, strictly as JSON writes them (no strings for numbers or booleans; no ranges, which may have
    changed since the run was made): for a run folder's config.json."""
    for name, value in saved.items():
        if name not in FIELDS:
            continue
        base, _ = _parse_type(FIELDS[name].type)
        if isinstance(value, str) and base != "str":
            raise ConfigError(f"{source}: {name} must be {_what(base)}, got {_show(value)}")
        checked = _coerce(name, FIELDS[name].type, value)
        if isinstance(checked, float) and not math.isfinite(checked):
            raise ConfigError(f"{source}: {name} must be a finite number, got {value!r}")
