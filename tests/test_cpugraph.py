"""The fused CPU graph (cpugraph) predicts what the eager model predicts, for every kind of built-in model, and is
used only where it is safe: a user's module, a few images or a GPU get the eager path."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import fashionlab.cpugraph as cpugraph
from fashionlab.data import as_input
from fashionlab.evaluate import predict_logits
from fashionlab.models import Classifier, Ensemble, build_model

N = 300  # 128 + 128 + 44: the last, smaller batch is a shape the graph was not traced with


def classifier(name: str, channels: int = 1, size: int = 28, **kwargs) -> Classifier:
    torch.manual_seed(0)
    net = build_model(name, in_channels=channels, num_classes=10, image_size=(size, size), **kwargs)
    for m in net.modules():  # running statistics far from the identity, so that folding them matters
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    stats = 0.3 if channels == 1 else [0.3] * channels
    return Classifier(net, stats, 0.35 if channels == 1 else [0.35] * channels).eval()


def images(channels: int = 1, size: int = 28) -> torch.Tensor:
    seeded = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (N, channels, size, size), dtype=torch.uint8, generator=seeded)


def both_ways(monkeypatch, model, x, precision):
    """(eager logits, graph logits) from predict_logits, flip TTA on."""
    eager = predict_logits(model, x, device=torch.device("cpu"), precision=precision, tta=True)
    monkeypatch.setattr(cpugraph, "MIN_IMAGES", 100)
    cached = cpugraph.CpuGraph(model)
    graph = predict_logits(model, x, device=torch.device("cpu"), precision=precision, tta=True, graph=cached)
    assert cached.builds == 1  # the graph path is the one tested
    return eager, graph


CASES = [("cnn1", {}, 1, 28), ("cnn2", {}, 1, 28), ("cnn2", {"bn": False}, 1, 28), ("cnn2", {}, 3, 32),
         ("fastnet", {}, 1, 28), ("wrn16-4", {}, 1, 28)]


@pytest.mark.parametrize("name,kwargs,channels,size", CASES, ids=[f"{c[0]}-{c[2]}x{c[3]}" + ("-nobn" if c[1] else "")
                                                                  for c in CASES])
def test_the_graph_predicts_what_the_eager_model_does(monkeypatch, name, kwargs, channels, size):
    model, x = classifier(name, channels, size, **kwargs), images(channels, size)
    eager, graph = both_ways(monkeypatch, model, x, "fp32")
    assert torch.allclose(graph, eager, rtol=1e-4, atol=1e-4), (graph - eager).abs().max()
    # bf16 against autocast bf16: both round to bf16's 8 bits, differently, so the logits agree to that
    eager, graph = both_ways(monkeypatch, model, x, "bf16")
    scale = eager.abs().max()
    assert (graph - eager).abs().max() <= 0.03 * scale
    assert (graph.argmax(1) == eager.argmax(1)).float().mean() >= 0.97
    assert not torch.jit.onednn_fusion_enabled()  # the process-wide switch is as it was


def test_an_ensemble_runs_as_one_graph(monkeypatch):
    members = [classifier("cnn1"), classifier("cnn2")]
    for i, m in enumerate(members):
        torch.manual_seed(i)
        nn.init.normal_(list(m.parameters())[0])
    eager, graph = both_ways(monkeypatch, Ensemble(members).eval(), images(), "fp32")
    assert torch.allclose(graph, eager, rtol=1e-4, atol=1e-4)


class UsersNet(nn.Module):  # a user's model may branch on its input: a trace would keep one branch
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(784, 10), nn.Linear(784, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.a(x) if x.mean() > 0 else self.b(x)


def test_eager_where_a_graph_is_not_safe_or_does_not_pay():
    x = as_input(images()[:128]).contiguous(memory_format=torch.channels_last)
    assert cpugraph.graph_for(Classifier(UsersNet()).eval(), x, "fp32", 10_000) is None
    assert cpugraph.graph_for(classifier("cnn1").net, x, "fp32", 10_000) is None  # not a Classifier
    assert cpugraph.graph_for(classifier("cnn1"), x, "fp32", cpugraph.MIN_IMAGES - 1) is None
    assert cpugraph.graph_for(classifier("cnn1"), x, "fp16", 10_000) is None
    assert cpugraph.graph_for(classifier("wrn40-4"), x, "fp32", 10_000) is None  # 8.9M parameters
    assert cpugraph.graph_for(classifier("cnn1"), x, "fp32", 10_000) is not None


def test_without_torch_jit_the_eager_path_gives_the_same_numbers(monkeypatch):
    """torch.jit is deprecated in torch 2.13: where a later torch drops it, prediction still works, eagerly."""
    model, x = classifier("cnn2"), images()
    eager = predict_logits(model, x, device=torch.device("cpu"), precision="fp32", tta=True)
    monkeypatch.setattr(cpugraph, "MIN_IMAGES", 100)

    def gone(*args, **kwargs):
        raise AttributeError("module 'torch.jit' has no attribute 'trace'")

    monkeypatch.setattr(torch.jit, "trace", gone)
    assert cpugraph.graph_for(model, as_input(x[:128]), "fp32", N) is None
    assert torch.equal(predict_logits(model, x, device=torch.device("cpu"), precision="fp32", tta=True,
                                      graph=cpugraph.CpuGraph(model)), eager)


def test_building_the_graph_warns_nobody():
    """torch.jit's deprecation warnings (and those of the torch modules fuse imports) are not the user's business;
    a fresh process, so that the first import's warnings are seen, with every warning an error."""
    code = ("import torch, fashionlab.cpugraph as c\n"
            "from fashionlab.models import Classifier, build_model\n"
            "m = Classifier(build_model('cnn2')).eval()\n"
            "assert c.graph_for(m, torch.rand(128, 1, 28, 28), 'bf16', 10_000) is not None\n")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_model_is_traced_once_and_only_with_enough_images(monkeypatch):
    """torch.jit keeps memory of every trace: one graph per model and precision, reused; none for a small call."""
    monkeypatch.setattr(cpugraph, "MIN_IMAGES", 100)
    model, x = classifier("cnn1"), images()
    cached = cpugraph.CpuGraph(model)
    predict_logits(model, x[:50], device=torch.device("cpu"), graph=cached)
    assert cached.builds == 0
    first = predict_logits(model, x, device=torch.device("cpu"), graph=cached)
    again = predict_logits(model, x, device=torch.device("cpu"), graph=cached)
    assert cached.builds == 1 and torch.equal(first, again)  # the call before does not change a result
    # a small call after it is padded to the graph's batch: each image computed as in the large call
    assert torch.equal(predict_logits(model, x[:50], device=torch.device("cpu"), graph=cached), first[:50])
    predict_logits(model, x, device=torch.device("cpu"), precision="bf16", graph=cached)
    assert cached.builds == 2


def test_evaluate_builds_one_graph_for_test_validation_and_every_corruption(run, monkeypatch):
    from fashionlab.cli import main

    monkeypatch.setattr(cpugraph, "MIN_IMAGES", 10)
    built = []
    real = cpugraph.graph_for

    def counted(*args, **kwargs):
        graph = real(*args, **kwargs)
        built.append(graph is not None)
        return graph

    monkeypatch.setattr(cpugraph, "graph_for", counted)
    assert main(["evaluate", str(run), "--corruptions", "--device", "cpu"]) == 0
    assert built == [True]  # 1 + 1 + 61 predictions, one trace
