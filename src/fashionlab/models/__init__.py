"""Models: the registry (models.registry), the architectures (cnn, resnet), the wrapper every model is trained and
exported in (`Classifier` = `Normalize` + architecture), ensembles, and model-level utilities.

A leaf layer: nothing here imports data, config or run-folder code; callers hand in tensors and plain values."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from fashionlab.errors import ConfigError
from fashionlab.models import cnn, resnet  # noqa: F401 - importing them fills the registry
from fashionlab.models.registry import (  # noqa: F401 - the registry's names, re-exported
    DESCRIPTIONS,
    MODELS,
    OBJECT_PREFIX,
    SIZE_NOTES,
    build_model,
    known_model,
    model_names,
    object_name,
    register,
)


def check_io(model: nn.Module, name: str, size: int | None = None, *, shape: tuple[int, int, int] = (1, 28, 28),
             num_classes: int = 10) -> None:
    """Every model maps (N, C, H, W) images (`shape` = (C, H, W) of the data; Fashion-MNIST's by default) to
    (N, num_classes) logits; checked before any training (also at `size` x `size`, for progressive resizing)."""
    channels, height, width = shape
    if size is not None:
        height = width = size
    shape_in = (2, channels, height, width)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape_in))
    except Exception as e:  # noqa: BLE001 - a model that cannot take the input is the user's to fix
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"model {name} cannot take a {shape_in} batch: {type(e).__name__}: {first}") from None
    finally:
        model.train(was_training)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != (2, num_classes):
        raise ConfigError(f"model {name} maps {shape_in} to {got}; fashionlab needs (N, {num_classes}) logits")


Stats = float | Sequence[float] | torch.Tensor


def _stat(value: Stats) -> torch.Tensor:
    """One normalization statistic as a buffer: a single value has shape () (every checkpoint before own data
    holds that), C > 1 values have shape (C, 1, 1), one per channel of [N, C, H, W] images."""
    t = torch.as_tensor(value, dtype=torch.float32).detach().clone().flatten()
    if t.numel() == 0:
        raise ValueError("normalization needs at least one value")
    return t.reshape(()) if t.numel() == 1 else t.reshape(-1, 1, 1)


class Normalize(nn.Module):
    """The one definition of input normalization: (x - mean) / std, with the training split's pixel statistics
    kept as buffers, so every checkpoint and export carries them. `mean`/`std`: a float (buffers of shape (), as
    every Fashion-MNIST checkpoint holds) or one value per channel (buffers of shape (C, 1, 1); a single value in
    a sequence is kept as shape ())."""

    def __init__(self, mean: Stats = 0.0, std: Stats = 1.0):
        super().__init__()
        self.register_buffer("mean", _stat(mean))
        self.register_buffer("std", _stat(std))

    def set(self, mean: Stats, std: Stats) -> None:
        """Take new statistics; their number of values must match the buffers' (1, or one per channel)."""
        with torch.no_grad():
            for buffer, value in ((self.mean, mean), (self.std, std)):
                new = _stat(value)
                if new.shape != buffer.shape:
                    raise ValueError(f"normalization of shape {tuple(buffer.shape)} cannot take {new.numel()} "
                                     "values")
                buffer.copy_(new)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """What fashionlab trains, saves, evaluates and exports: Normalize, then the architecture.

    Input: float32 [N, C, H, W] pixels / 255 (`data.as_input`; Fashion-MNIST: [N, 1, 28, 28]); output:
    [N, num_classes] logits. `mean`/`std`: a float, or one value per channel (see Normalize)."""

    def __init__(self, net: nn.Module, mean: Stats = 0.0, std: Stats = 1.0):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    @classmethod
    def for_channels(cls, net: nn.Module, channels: int) -> Classifier:
        """Identity normalization with the buffer shapes a checkpoint of `channels`-channel images holds (shape ()
        for one channel, (C, 1, 1) for more), ready for `load_weights` / `load_state_dict`."""
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        return cls(net) if channels == 1 else cls(net, [0.0] * channels, [1.0] * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def load_weights(self, state: dict[str, torch.Tensor], normalize: dict[str, Stats]) -> None:
        """Load a checkpoint's weights; those saved before the model held its normalization (keys without
        `net.`) take the statistics from the checkpoint's `normalize` entry."""
        if any(k.startswith("net.") for k in state):
            self.load_state_dict(state)
        else:
            self.net.load_state_dict(state)
            self.normalize.set(normalize["mean"], normalize["std"])


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


def forward_mflops(model: nn.Module, shape: tuple[int, int, int] = (1, 28, 28)) -> float:
    """Forward FLOPs per image of `shape` (C, H, W; Fashion-MNIST's by default) in millions (1 multiply-add =
    2 FLOPs), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    model.train(was_training)
    return counter.get_total_flops() / 1e6

