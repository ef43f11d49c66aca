"""Device and numeric precision selection."""

from __future__ import annotations

import contextlib

import torch

from fashionlab.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available to this PyTorch build; use --device cpu")
    if name == "mps" and not has_mps:
        raise ConfigError("--device mps: Apple's MPS backend is not available here; use --device cpu")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    # Without native bf16 (AVX512-BF16/AMX) oneDNN emulates it, slower than fp32.
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"
    if name == "fp16" and device.type == "cpu":
        raise ConfigError("--precision fp16 is for GPUs; on a CPU use bf16 or fp32")
    return name


def inference_precision(recorded: str, device: torch.device) -> str:
    """The precision to predict in with a model trained at `recorded` (a run's config): the run's own where this
    device has it natively, else what `auto` picks here. A run trained in fp16 on a GPU, or in bf16 on a CPU with
    native bf16, is still predicted on any machine: fp16 does not exist on a CPU, and emulated bf16 is slower than
    fp32 (cpu_has_bf16)."""
    if device.type == "cpu" and (recorded == "fp16" or (recorded == "bf16" and not cpu_has_bf16())):
        return resolve_precision("auto", device)
    return resolve_precision(recorded, device)


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
