"""Models that live outside fashionlab: `file.py:Name`, `package.module:Name`, or an installed package's entry
point in the group `fashionlab.models`.

Importing a model runs its code, so this module is the only place that imports one, and it does so only when the
user named the model (on the command line or in Python) or said `--trust-model-code`. A run folder records where
its model came from and, for a file, a copy of the source and its sha256 (`model_source.py`); reading a run folder
never imports anything on its own.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from fashionlab.errors import ConfigError

ENTRY_POINT_GROUP = "fashionlab.models"
_SPEC = re.compile(r"(?P<where>.+):(?P<name>[A-Za-z_]\w*)")


def is_external(spec: str) -> bool:
    """`file.py:Name` or `package.module:Name` (a registered name never holds a colon; `object:Name` names an
    nn.Module object given in Python, not code to import)."""
    return bool(_SPEC.fullmatch(spec)) and not spec.startswith("object:")


@dataclass(frozen=True)
class Origin:
    """Where an external model came from, as saved in config.json's `model_origin`."""

    spec: str  # as the user wrote it
    kind: str  # "file" | "module" | "entry_point"
    path: str | None = None  # the file, resolved
    sha256: str | None = None  # of the file's bytes

    def as_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "path": self.path, "sha256": self.sha256}


def resolve(spec: str) -> tuple[Callable[..., nn.Module], Origin]:
    """Import the model class or factory that `spec` names (this runs the model's code)."""
    m = _SPEC.fullmatch(spec)
    if not m:
        raise ConfigError(f"--model {spec!r}: expected FILE.py:NAME or package.module:NAME")
    where, name = m["where"], m["name"]
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise ConfigError(f"--model {spec}: {path} is not a file")
        module, origin = _import_file(path), Origin(spec, "file", str(path.resolve()), sha256_of(path))
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ConfigError(f"--model {spec}: cannot import {where} ({e})") from None
        except Exception as e:  # noqa: BLE001 - the user's module failed while importing
            raise ConfigError(f"--model {spec}: importing {where} failed: {type(e).__name__}: {e}") from None
        origin = Origin(spec, "module")
    target = getattr(module, name, None)
    if target is None:
        raise ConfigError(f"--model {spec}: {where} has no {name!r}")
    if not callable(target):
        raise ConfigError(f"--model {spec}: {name} is not an nn.Module class or a function returning one")
    return target, origin


def _import_file(path: Path):
    module_name = f"fashionlab_user_model_{sha256_of(path)[:12]}"
    if module_name in sys.modules:  # the same bytes were imported before in this process
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--model: cannot import {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's file failed while importing
        del sys.modules[module_name]
        line = _user_line(e, path)
        raise ConfigError(f"--model {path}{line}: {type(e).__name__}: {e}") from None
    return module


def _user_line(e: BaseException, path: Path) -> str:
    tb, line = e.__traceback__, ""
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = f", line {tb.tb_lineno}"
        tb = tb.tb_next
    return line


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def instantiate(target: Callable[..., nn.Module], spec: str, kwargs: dict[str, Any]) -> nn.Module:
    """Call the class or factory with `kwargs`; the result must be an nn.Module."""
    try:
        signature = inspect.signature(target)
    except ValueError:
        signature = None  # no signature to check (a builtin): let the call decide
    if signature is not None:
        try:
            signature.bind(**kwargs)
        except TypeError:
            takes = ", ".join(p for p in signature.parameters if p != "self") or "no options"
            raise ConfigError(f"model {spec} does not take these options ({', '.join(kwargs) or 'none'}); "
                              f"it takes: {takes}") from None
    try:
        model = target(**kwargs)
    except Exception as e:  # noqa: BLE001 - the user's constructor failed
        raise ConfigError(f"model {spec} could not be built: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {spec} returned {type(model).__name__}, not a torch nn.Module")
    return model


def entry_point_models() -> dict[str, Any]:
    """Models that installed packages register: name -> entry point (loaded only when used)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
