"""Prediction on a CPU through one frozen TorchScript graph with oneDNN Graph fusion.

Eager PyTorch runs every layer as its own kernel and writes each activation out to memory; at inference batch
norm, ReLU and pooling are memory-bound and take much of a small network's time. Here batch norm is folded into
the convolution or linear layer before it (in fp32, torch.fx's fuse), the model is traced and frozen, and oneDNN
Graph fuses convolution with what follows it. The arithmetic is the eager model's, to float rounding: measured by
benchmarks/predict_speed.py (docs/performance.md, "Predicting a folder"), where it is the `predict` path.

bf16 has no autocast here (a trace cannot hold it): the network's weights are cast to bf16 once and the input is
normalized in fp32, then cast, which is what autocast computes for these layers.

Used only where it is safe and pays (`graph_for`): on a CPU; for a Classifier or Ensemble whose every module is
PyTorch's or fashionlab's own (a user's model may branch on its input, which a trace would freeze into one
branch); and for at least MIN_IMAGES images, from where what the graph saves pays for building it and for its
two profiling passes (the break-even table of docs/performance.md). Anything else, or a model the tracer refuses,
is predicted eagerly: the same numbers, slower.
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import torch
from torch import nn

from fashionlab.models import Classifier, Ensemble

MIN_IMAGES = 2048  # 16 batches of 128; below this the graph's fixed cost is not won back
OWN_MODULES = ("torch.nn.", "fashionlab.models")


class Bf16Net(nn.Module):
    """A Classifier as autocast(bf16) runs it: normalization in fp32, the network in bf16, logits back in fp32."""

    def __init__(self, model: Classifier):
        super().__init__()
        self.normalize = model.normalize
        self.net = model.net.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x).to(torch.bfloat16)).float()


def traceable(model: nn.Module) -> bool:
    return isinstance(model, (Classifier, Ensemble)) and all(
        type(m).__module__.startswith(OWN_MODULES) for m in model.modules())


def folded(model: nn.Module, precision: str) -> nn.Module:
    """A copy of a Classifier or Ensemble for tracing: batch norm folded in fp32, then cast for `precision`."""
    if isinstance(model, Ensemble):
        return Ensemble([folded(member, precision) for member in model.members])
    from torch.fx.experimental.optimization import fuse

    out = Classifier(fuse(model.net), 1.0, 1.0)  # fuse copies the network
    out.normalize = copy.deepcopy(model.normalize)
    return Bf16Net(out) if precision == "bf16" else out


def graph_for(model: nn.Module, example: torch.Tensor, precision: str, n_images: int) -> torch.jit.ScriptModule | None:
    """The frozen graph of `model` (in eval mode) for inputs like `example`, or None where eager is the way (see
    the module's docstring). precision: fp32 or bf16, as device.inference_precision gave it."""
    if example.device.type != "cpu" or n_images < MIN_IMAGES or precision not in ("fp32", "bf16"):
        return None
    if not traceable(model):
        return None
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch 2.13 marks torch.jit deprecated in favour of torch.compile, whose compile time (tens of
            # seconds) a prediction does not win back (torch.fx's fuse imports a module that uses it too).
            # Where torch.jit is gone, this falls to the eager path.
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
            copy_ = folded(model, precision).eval().requires_grad_(False)
            return torch.jit.freeze(torch.jit.trace(copy_, example, check_trace=False))
    except Exception:  # noqa: BLE001 - a model the tracer or fuser refuses is predicted eagerly: same numbers
        return None


@contextlib.contextmanager
def onednn_fusion(enabled: bool):
    """oneDNN Graph fusion on for the calls inside (the graph is optimized on its first calls), then as it was:
    the switch is process-wide."""
    was = torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(enabled or was)
    try:
        yield
    finally:
        torch.jit.enable_onednn_fusion(was)
