"""The model registry: every architecture is built by name (its kwargs saved in the run config); external
models (FILE.py:NAME, module:NAME, entry points) are resolved through models.external."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from fashionlab.errors import ConfigError
from fashionlab.models import external

MODELS: dict[str, Callable[..., nn.Module]] = {}
DESCRIPTIONS: dict[str, str] = {}
# What changes when a registered model is built for images other than 28x28 (every builder takes the geometry
# keywords below; the channels and the number of classes only change the first and the last layer).
SIZE_NOTES: dict[str, str] = {}
GEOMETRY = ("in_channels", "num_classes", "image_size")


def register(name: str, description: str, size_note: str = "any; global pool"):
    """Register a builder. It must take `in_channels: int = 1, num_classes: int = 10,
    image_size: tuple[int, int] = (28, 28)` (besides its own options) and, at those defaults, build the
    Fashion-MNIST model; `size_note` says what changes at other image sizes (`fashionlab models` shows it)."""
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = fn
        DESCRIPTIONS[name] = description
        SIZE_NOTES[name] = size_note
        return fn

    return wrap


def check_min_size(name: str, image_size: tuple[int, int], minimum: int) -> tuple[int, int]:
    """(H, W) of `image_size`, or a ValueError when a side is below what the model's downsampling needs."""
    height, width = image_size
    if min(height, width) < minimum:
        raise ValueError(f"{name} needs images of at least {minimum}x{minimum}, got {height}x{width}")
    return height, width


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


def build_model(name: str, dropout: float | None = None, *, in_channels: int | None = None,
                num_classes: int | None = None, image_size: tuple[int, int] | None = None, **kwargs) -> nn.Module:
    """Build a model by name; an external one (FILE.py:NAME, module:NAME, entry point) is imported here.

    The geometry keywords (from the data, never model options) go to a registered builder when given; an external
    model gets none of them: it must fit the data as it is (check_io says whether it does)."""
    if dropout is not None:
        kwargs["dropout"] = dropout
    if name.startswith(OBJECT_PREFIX):
        raise ConfigError(f"model {name} was an nn.Module object given to fashionlab.train(); give it again: "
                          "fashionlab.load_run(RUN).load_model(model=YourNet()) or fashionlab.train(resume=RUN, "
                          "model=YourNet())")
    if name in MODELS:
        geometry = _geometry(name, in_channels, num_classes, image_size)
        try:
            return MODELS[name](**kwargs, **geometry)
        except TypeError as e:
            raise ConfigError(f"model {name!r} does not take these options: {e}") from None
        except ValueError as e:
            raise ConfigError(f"model {name!r}: {e}") from None
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


def _geometry(name: str, in_channels: int | None, num_classes: int | None,
              image_size: tuple[int, int] | None) -> dict[str, Any]:
    """The geometry keywords that were given, checked: positive channels and classes, (H, W) of positive sides."""
    geometry: dict[str, Any] = {}
    for key, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model {name!r}: {key} must be a positive integer, got {value!r}")
            geometry[key] = value
    if image_size is not None:
        size = tuple(image_size) if isinstance(image_size, (tuple, list)) else None
        if (size is None or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)):
            raise ConfigError(f"model {name!r}: image_size must be (height, width) in pixels, got {image_size!r}")
        geometry["image_size"] = size
    return geometry
