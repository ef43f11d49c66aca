"""The model registry: every architecture is built by name (its kwargs saved in the run config); external
models (FILE.py:NAME, module:NAME, entry points) are resolved through models.external."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fashionlab.errors import ConfigError
from fashionlab.models import external

MODELS: dict[str, Callable[..., nn.Module]] = {}
DESCRIPTIONS: dict[str, str] = {}


def register(name: str, description: str):
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = fn
        DESCRIPTIONS[name] = description
        return fn

    return wrap


# The `model` of a run trained from an nn.Module object given to fashionlab.train(model=...): there is no code to
# rebuild it from, so whoever reads the run gives the object again (fashionlab.load_run(path).load_model(model=...)).
OBJECT_PREFIX = "object:"


def object_name(model: nn.Module) -> str:
    return OBJECT_PREFIX + type(model).__qualname__


def known_model(name: str) -> bool:
    """A registered name, an installed package's model (entry point), a FILE.py:NAME / module:NAME spec, or the
    name of an nn.Module object given in Python."""
    return (name in MODELS or name.startswith(OBJECT_PREFIX) or external.is_external(name)
            or name in external.entry_point_models())


def model_names() -> list[str]:
    return sorted(set(MODELS) | set(external.entry_point_models()))


def build_model(name: str, dropout: float | None = None, **kwargs) -> nn.Module:
    """Build a model by name; an external one (FILE.py:NAME, module:NAME, entry point) is imported here."""
    if dropout is not None:
        kwargs["dropout"] = dropout
    if name.startswith(OBJECT_PREFIX):
        raise ConfigError(f"model {name} was an nn.Module object given to fashionlab.train(); give it again: "
                          "fashionlab.load_run(RUN).load_model(model=YourNet()) or fashionlab.train(resume=RUN, "
                          "model=YourNet())")
    if name in MODELS:
        try:
            return MODELS[name](**kwargs)
        except TypeError as e:
            raise ConfigError(f"model {name!r} does not take these options: {e}") from None
    if external.is_external(name):
        target, _ = external.resolve(name)
    elif name in (eps := external.entry_point_models()):
        try:
            target = eps[name].load()
        except Exception as e:  # noqa: BLE001 - an installed plugin that fails to import
            raise ConfigError(f"model {name!r} (entry point {eps[name].value}) cannot be imported: {e}") from None
    else:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(model_names())}, or give "
                          "FILE.py:NAME or package.module:NAME")
    return external.instantiate(target, name, kwargs)
