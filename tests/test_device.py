"""Device and precision choice, and the mixed-precision step that GPUs take, exercised on the CPU."""

from __future__ import annotations

import pytest
import torch

from fashionlab import device as device_module
from fashionlab.config import build_config
from fashionlab.device import autocast, inference_precision, resolve_device, resolve_precision
from fashionlab.errors import ConfigError
from fashionlab.models import build_model
from fashionlab.trainsetup import train_step

CPU = torch.device("cpu")


def test_auto_precision_on_the_cpu_is_bf16_only_with_native_support():
    """Asked of oneDNN directly (not through fashionlab's own check): bf16 only where the CPU has native bf16
    (AVX512-BF16/AMX); emulated it is slower than fp32."""
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        native = False
    assert resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"  # asked for: kept, native or not


def test_fp16_on_the_cpu_is_refused():
    with pytest.raises(ConfigError, match="fp16 is for GPUs"):
        resolve_precision("fp16", CPU)


@pytest.mark.parametrize("native, recorded, expected", [
    (True, "bf16", "bf16"), (True, "fp32", "fp32"), (True, "fp16", "bf16"), (True, "auto", "bf16"),
    (False, "bf16", "fp32"), (False, "fp32", "fp32"), (False, "fp16", "fp32"), (False, "auto", "fp32")])
def test_a_run_is_predicted_in_its_own_precision_where_this_cpu_has_it(monkeypatch, native, recorded, expected):
    """A run trained elsewhere (fp16 on a GPU, bf16 on an AMX CPU) is still predicted here, never refused and never
    in emulated bf16; on either kind of CPU."""
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: native)
    assert inference_precision(recorded, CPU) == expected


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_precision_on_cuda_prefers_bf16(monkeypatch, bf16, expected):
    """The choice for either answer a GPU can give, on any machine (the test below checks this machine's GPU)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_precision("auto", torch.device("cuda")) == expected


def test_a_device_is_used_exactly_when_this_machine_has_it():
    """On this machine as it is: a device it lacks is a one-line error that names the way out; `auto` takes the
    best one it has."""
    has = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    for name, message in (("cuda", "--device cuda: no CUDA GPU is available to this PyTorch build; use --device cpu"),
                          ("mps", "--device mps: Apple's MPS backend is not available here; use --device cpu")):
        if has[name]:
            assert resolve_device(name).type == name
        else:
            with pytest.raises(ConfigError) as e:
                resolve_device(name)
            assert str(e.value) == message
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if has["cuda"] else "mps" if has["mps"] else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_precision_on_this_gpu_computes_in_bf16_where_it_can():
    gpu = torch.device("cuda")
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert resolve_precision("auto", gpu) == expected
    conv = torch.nn.Conv2d(1, 4, 3).to(gpu)
    with autocast(gpu, expected):
        out = conv(torch.randn(2, 1, 8, 8, device=gpu))
    assert out.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[expected]


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_autocast_computes_in_the_chosen_dtype(precision, dtype):
    a = torch.randn(4, 4)
    conv = torch.nn.Conv2d(1, 4, 3)  # float32 weights and input, as the models have them
    x = torch.randn(2, 1, 8, 8)
    with autocast(CPU, precision):
        assert (a @ a).dtype == dtype
        assert conv(x).dtype == dtype
    assert conv(x).dtype == torch.float32  # only inside the context


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
