"""Device and precision choice, and the mixed-precision step that GPUs take, exercised on the CPU."""

from __future__ import annotations

import pytest
import torch

from fashionlab.config import build_config
from fashionlab.device import autocast, cpu_has_bf16, resolve_device, resolve_precision
from fashionlab.errors import ConfigError
from fashionlab.models import build_model
from fashionlab.trainsetup import train_step

CPU = torch.device("cpu")


def test_auto_precision_on_the_cpu_is_bf16_only_with_native_support():
    assert resolve_precision("auto", CPU) == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("fp32", CPU) == "fp32"


def test_fp16_on_the_cpu_is_refused():
    with pytest.raises(ConfigError, match="fp16 is for GPUs"):
        resolve_precision("fp16", CPU)


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_precision_on_cuda_prefers_bf16(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_precision("auto", torch.device("cuda")) == expected


def test_a_missing_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("cpu") == CPU


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_autocast_computes_in_the_chosen_dtype(precision, dtype):
    a = torch.randn(4, 4)
    with autocast(CPU, precision):
        assert (a @ a).dtype == dtype


@pytest.mark.parametrize("grad_clip", [0.0, 1.0])
def test_the_fp16_step_with_loss_scaling_updates_the_model(grad_clip):
    """The CUDA path (fp16 autocast + GradScaler + unscale before clipping), run on the CPU."""
    torch.manual_seed(0)
    model = build_model("cnn1", width=8).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0**10)
    x = torch.randn(16, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (16,))
    before = [p.detach().clone() for p in model.parameters()]
    cfg = build_config({"model": "cnn1", "grad_clip": grad_clip})
    loss, correct = train_step(model, opt, scaler, x, y, cfg, "fp16", CPU)
    assert torch.isfinite(torch.tensor(loss)) and 0 <= correct <= 16
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert scaler.get_scale() == 2.0**10  # no overflow, so no back-off
