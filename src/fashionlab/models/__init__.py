"""Models: the registry (models.registry), the architectures (cnn, resnet), the wrapper every model is trained and
exported in (`Classifier` = `Normalize` + architecture), ensembles, and model-level utilities.

A leaf layer: nothing here imports data, config or run-folder code; callers hand in tensors and plain values."""

from __future__ import annotations

import math

import torch
from torch import nn

from fashionlab.errors import ConfigError
from fashionlab.models import cnn, resnet  # noqa: F401 - importing them fills the registry
from fashionlab.models.registry import (  # noqa: F401 - the registry's names, re-exported
    DESCRIPTIONS,
    MODELS,
    OBJECT_PREFIX,
    build_model,
    known_model,
    model_names,
    object_name,
    register,
)


def check_io(model: nn.Module, name: str, size: int = 28) -> None:
    """Every model maps (N, 1, 28, 28) images to (N, 10) logits; checked before any training (also at `size`,
    for progressive resizing)."""
    was_training = model.training
    model.eval()
    shape_in = (2, 1, size, size)
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape_in))
    except Exception as e:  # noqa: BLE001 - a model that cannot take the input is the user's to fix
        raise ConfigError(f"model {name} cannot take a {shape_in} batch: {type(e).__name__}: {e}") from None
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, 10):
        raise ConfigError(f"model {name} maps {shape_in} to {shape}; fashionlab needs (N, 10) logits")


class Normalize(nn.Module):
    """The one definition of input normalization: (x - mean) / std, with the training split's pixel statistics
    kept as buffers, so every checkpoint and export carries them."""

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """What fashionlab trains, saves, evaluates and exports: Normalize, then the architecture.

    Input: float32 [N, 1, 28, 28] pixels / 255 (`data.as_input`); output: [N, 10] logits."""

    def __init__(self, net: nn.Module, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def load_weights(self, state: dict[str, torch.Tensor], normalize: dict[str, float]) -> None:
        """Load a checkpoint's weights; those saved before the model held its normalization (keys without
        `net.`) take the statistics from the checkpoint's `normalize` entry."""
        if any(k.startswith("net.") for k in state):
            self.load_state_dict(state)
        else:
            self.net.load_state_dict(state)
            self.normalize.mean.fill_(normalize["mean"])
            self.normalize.std.fill_(normalize["std"])


class Ensemble(nn.Module):
    """Members of one architecture whose mean softmax is the prediction. It returns that mean's log, which is a
    valid logit vector: softmax(log p) = p, so evaluation, prediction and export treat it as any architecture."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([m(x).float().log_softmax(1) for m in self.members])
        return torch.logsumexp(logp, 0) - math.log(len(self.members))


def whiten_first_conv(model: Classifier, inputs: torch.Tensor, max_images: int = 10_000, eps: float = 1e-2) -> int:
    """Data-dependent init of the first convolution (airbench's patch whitening): its filters become the
    eigenvectors of the covariance of the training images' patches, largest variance first, each in a +/- pair
    and scaled by 1/sqrt(eigenvalue), so the first layer starts out decorrelating its input. Filters beyond
    twice the patch size keep their random init. `inputs`: the model's input, float [N, C, H, W] (the data
    layer's `as_input` of the training images). Returns how many were set (none without images: `train --budget`
    times a step on an empty split)."""
    if len(inputs) < 2:
        return 0
    conv = next((m for m in model.net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None or conv.groups != 1:
        raise ConfigError("whiten needs a model whose first layer is a plain convolution")
    kh, kw = conv.kernel_size
    dim = conv.in_channels * kh * kw
    total, outer, n = torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dim, dtype=torch.float64), 0
    with torch.no_grad():
        for chunk in inputs[:max_images].split(1_000):  # sums by chunk: all patches at once took ~0.9 GB
            x = model.normalize(chunk.to(conv.weight.device))
            patches = nn.functional.unfold(x, (kh, kw)).transpose(1, 2).reshape(-1, dim).double().cpu()
            total, outer, n = total + patches.sum(0), outer + patches.T @ patches, n + len(patches)
    mean = total / n
    eigvals, eigvecs = torch.linalg.eigh((outer - n * torch.outer(mean, mean)) / (n - 1))  # ascending
    # eps keeps the near-flat directions (pixel noise) from being amplified without bound
    filters = (eigvecs / (eigvals.clamp_min(0) + eps).sqrt()).T.flip(0)  # largest variance first
    filters = torch.cat([filters, -filters], dim=1).reshape(-1, filters.shape[1])  # +v1, -v1, +v2, -v2, ...
    n = min(conv.out_channels, filters.shape[0])
    with torch.no_grad():
        conv.weight[:n] = filters[:n].reshape(n, conv.in_channels, kh, kw).to(conv.weight.dtype)
    return n


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


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

