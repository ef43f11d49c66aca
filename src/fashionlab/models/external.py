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

from fashionlab.errors import ConfigError, FashionlabError
from fashionlab.reading import read_bytes, shorten, show_path

ENTRY_POINT_GROUP = "fashionlab.models"
_SPEC = re.compile(r"(?P<where>.+):(?P<name>[A-Za-z_]\w*)")
MAX_SPEC_SHOWN = 200  # a spec in a message: a path may be long, a message stays one readable line


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
    shown = _shown(spec)
    if not m:
        raise ConfigError(f"--model {shorten(spec, MAX_SPEC_SHOWN)}: expected FILE.py:NAME or package.module:NAME")
    where, name = m["where"], m["name"]
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise ConfigError(f"--model {shown}: {show_path(path)} is not a file")
        source = read_bytes(path, kind="model_source")  # one read: what is hashed is what is run
        digest = hashlib.sha256(source).hexdigest()
        module, origin = _import_file(path, source, digest), Origin(spec, "file", str(path.resolve()), digest)
    else:
        if not all(part.isidentifier() for part in where.split(".")):  # "../../x", "models/net", "net.pyc"
            raise ConfigError(f"--model {shown}: {_shown(where)} is not a module name (package.module); a file "
                              f"needs FILE.py:NAME, e.g. {_shown(where.removesuffix('.py'))}.py:{name}")
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ConfigError(f"--model {shown}: cannot import {where} ({_first_line(e)})") from None
        except Exception as e:  # noqa: BLE001 - the user's module failed while importing
            raise ConfigError(f"--model {shown}: importing {where} failed: {type(e).__name__}: "
                              f"{_first_line(e)}") from None
        origin = Origin(spec, "module")
    target = getattr(module, name, None)
    if target is None:
        raise ConfigError(f"--model {shown}: {_shown(where)} has no {name!r}")
    if not callable(target):
        raise ConfigError(f"--model {shown}: {name} is not an nn.Module class or a function returning one")
    return target, origin


def _shown(text: str) -> str:
    """A spec or path as typed, unless it is long or holds control characters (then shortened)."""
    return show_path(text) if len(text) <= MAX_SPEC_SHOWN else shorten(text, MAX_SPEC_SHOWN)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _import_file(path: Path, source: bytes, digest: str):
    """Run `source` (the bytes read from `path`, whose sha256 is `digest`) as a module named after its hash."""
    module_name = f"fashionlab_user_model_{digest[:12]}"
    if module_name in sys.modules:  # the same bytes were imported before in this process
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--model: cannot import {show_path(path)} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        exec(compile(source, str(path), "exec", dont_inherit=True), module.__dict__)  # noqa: S102 - the user's model
    except Exception as e:  # noqa: BLE001 - the user's file failed while importing
        del sys.modules[module_name]
        line = _user_line(e, path)
        raise ConfigError(f"--model {show_path(path)}{line}: {type(e).__name__}: {_first_line(e)}") from None
    return module


def _user_line(e: BaseException, path: Path) -> str:
    tb, line = e.__traceback__, ""
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = f", line {tb.tb_lineno}"
        tb = tb.tb_next
    return line


def sha256_of(path: Path, error: type[FashionlabError] = ConfigError) -> str:
    """sha256 of a model source file, read through reading.read_bytes (a regular file, at most its cap)."""
    return hashlib.sha256(read_bytes(path, kind="model_source", error=error)).hexdigest()


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
