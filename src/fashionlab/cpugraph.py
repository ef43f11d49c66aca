"""Prediction on a CPU through one frozen TorchScript graph with oneDNN Graph fusion.

Eager PyTorch runs every layer as its own kernel and writes each activation out to memory; at inference batch
norm, ReLU and pooling are memory-bound and take much of a small network's time. Here batch norm is folded into
the convolution or linear layer before it (in fp32, torch.fx's fuse), the model is traced and frozen, and oneDNN
Graph fuses convolution with what follows it. The arithmetic is the eager model's, to float rounding: measured by
benchmarks/predict_speed.py (docs/performance.md, "Predicting a folder"), where it is the `predict` path.

bf16 has no autocast here (a trace cannot hold it): the network's weights are cast to bf16 once and the input is
normalized in fp32, then cast, which is what autocast computes for these layers.

Used only where it is safe and pays (`graph_for`): on a CPU; for a Classifier or Ensemble of at most MAX_PARAMS
parameters whose every module is PyTorch's or fashionlab's own (a user's model may branch on its input, which a
trace would freeze into one branch); for at least MIN_IMAGES images, from where what the graph saves pays for
building it and for its two profiling passes (the break-even table of docs/performance.md); and for a model whose
weights are fixed, built once (CpuGraph: torch.jit keeps some memory of every trace for the life of the process,
so training's validation, whose weights change every epoch, runs eagerly). Anything else, or a model the tracer
refuses, is predicted eagerly: the same numbers, slower.
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
# Larger networks are predicted eagerly: the memory torch.jit keeps per build grows with the network (tens of MB
# for wrn16-4's 2.7M parameters, a few for CNN_2's 0.6M, in an RSS check over repeated builds), and convolution
# time, which fusion does not save, is more of a large network's cost, so the graph gains less there.
MAX_PARAMS = 5_000_000
PROFILING_RUNS = 2  # torch.jit's profiling executor runs a graph unfused this often before it optimizes it


class Bf16Net(nn.Module):
    """A Classifier as autocast(bf16) runs it: normalization in fp32, the network in bf16, logits back in fp32."""

    def __init__(self, model: Classifier):
        super().__init__()
        self.normalize = model.normalize
        self.net = model.net.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x).to(torch.bfloat16)).float()


def traceable(model: nn.Module) -> bool:
    return (isinstance(model, (Classifier, Ensemble)) and sum(p.numel() for p in model.parameters()) <= MAX_PARAMS
            and all(type(m).__module__.startswith(OWN_MODULES) for m in model.modules()))


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
            # traced with one image: the graph takes any batch, and torch.jit keeps what a trace saw for the life
            # of the process (wrn16-4, in an RSS check: about 70 MB a build traced with 128 images, 16 MB with one)
            return torch.jit.freeze(torch.jit.trace(copy_, example[:1], check_trace=False))
    except Exception:  # noqa: BLE001 - a model the tracer or fuser refuses is predicted eagerly: same numbers
        return None


class CpuGraph:
    """The fused graph of one model whose weights no longer change (an evaluated or loaded checkpoint), built on
    its first use with enough images and reused by every later prediction with it (test set, validation split,
    each corruption, each predict call), once per precision. Each build costs some memory that torch.jit never
    gives back, so a graph is built once per model, never per epoch of a training (whose weights change: its
    validation runs eagerly)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.built: dict[str, tuple[torch.jit.ScriptModule, int]] = {}
        self.builds = 0  # how many graphs were traced (tests hold it to one per precision)

    def get(self, example: torch.Tensor, precision: str, n_images: int) -> tuple[torch.jit.ScriptModule, int] | None:
        """(graph, rows): the graph for `precision` and the batch size it was optimized for (a smaller batch is
        padded to it, a larger one runs eagerly), or None: eagerly. example: a batch as the model takes it."""
        if precision in self.built:
            return self.built[precision]
        graph = graph_for(self.model, example, precision, n_images)
        if graph is None:  # too few images this time is no answer for a later, larger call
            return None
        with torch.no_grad(), onednn_fusion(True):
            for _ in range(PROFILING_RUNS):  # so that the first images are computed as the rest are
                graph(example)
        self.built[precision] = graph, len(example)
        self.builds += 1
        return self.built[precision]


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
