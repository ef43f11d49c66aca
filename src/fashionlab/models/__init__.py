"""Model registry: every architecture is built by name, with its kwargs saved in the run config."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fashionlab.errors import ConfigError

MODELS: dict[str, Callable[..., nn.Module]] = {}
DESCRIPTIONS: dict[str, str] = {}


def register(name: str, description: str):
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = fn
        DESCRIPTIONS[name] = description
        return fn

    return wrap


def build_model(name: str, dropout: float | None = None, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}")
    if dropout is not None:
        kwargs["dropout"] = dropout
    try:
        return MODELS[name](**kwargs)
    except TypeError as e:
        raise ConfigError(f"model {name!r} does not take these options: {e}") from None


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_mflops(model: nn.Module) -> float:
    """Forward FLOPs per 28x28 image in millions (1 multiply-add = 2 FLOPs), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    model.train(was_training)
    return counter.get_total_flops() / 1e6


# Importing the modules fills the registry.
from fashionlab.models import cnn, resnet  # noqa: E402,F401
