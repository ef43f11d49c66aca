"""Training and inference throughput (images/s) per model, precision, memory format and batch size, as JSON.

    python benchmarks/throughput.py                          # cnn1, cnn2, fastnet; all variants
    python benchmarks/throughput.py --models cnn2 --batch-sizes 1024 --inference-only
    python benchmarks/throughput.py --models fastnet --compile  # torch.compile, with eager in the same run
    python benchmarks/throughput.py --models cnn2 --batch-sizes 1024 --precisions bf16,int8 --inference-only
    python benchmarks/throughput.py --threads 1,2 --backends onednn,native   # thread count, conv backend
    python benchmarks/throughput.py --quick                  # CI smoke test

The record names the CPU (lscpu's model name and the instruction sets that matter here: AVX2, AVX-512, AVX-512
BF16, AMX), so each CPU kind's table comes from its own file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import resource
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from machine import cpu_record  # benchmarks/machine.py: run as a script, this folder is on sys.path

from fashionlab.device import autocast, resolve_device, resolve_precision
from fashionlab.models import build_model, count_params, forward_mflops


def timed(fn, min_seconds: float, warmup: int = 2) -> float:
    """Calls per second of fn, after warm-up (oneDNN picks and caches kernels on the first calls)."""
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < min_seconds or n < 3:
        fn()
        n += 1
    return n / elapsed


def quantize_int8(model: torch.nn.Module, x: torch.Tensor, engine: str = "x86") -> torch.nn.Module:
    """Post-training static int8 quantization (FX graph mode, x86 backend: VNNI kernels on this CPU; "onednn":
    oneDNN's kernels alone, the engine that honours ONEDNN_MAX_CPU_ISA, where fbgemm picks its own from the CPU).
    Calibrated on the benchmark's random batch: right for speed, not for accuracy (docs/performance.md
    checks accuracy with real calibration images)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = engine
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its own deprecation
        prepared = prepare_fx(model, get_default_qconfig_mapping(engine), example_inputs=(x[:8],))
        prepared(x)
        return convert_fx(prepared)


def measure(name: str, precision: str, channels_last: bool, batch: int, device, min_seconds: float,
            train: bool, compile_: bool = False) -> tuple[float, float | None]:
    """(images/s, seconds the first call took to compile, or None without --compile)."""
    torch.manual_seed(0)
    model = build_model(name).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    if compile_:
        model = torch.compile(model)
    x = torch.randn(batch, 1, 28, 28, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    if train:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step():
            with autocast(device, precision):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    elif precision == "int8":
        model = quantize_int8(model.eval(), x)

        @torch.no_grad()
        def step():
            model(x).argmax(1)
    else:
        model.eval()

        @torch.no_grad()
        def step():
            with autocast(device, precision):
                model(x).argmax(1)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    compile_s = None
    if compile_:  # the first call compiles; timed apart so the rate below is steady state
        t0 = time.perf_counter()
        step()
        sync()
        compile_s = round(time.perf_counter() - t0, 2)
    return timed(lambda: (step(), sync()), min_seconds) * batch, compile_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="cnn1,cnn2,fastnet")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--batch-sizes", default="256,1024")
    p.add_argument("--memory-formats", default="channels_last,contiguous")
    p.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per measurement")
    p.add_argument("--inference-only", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile each model; compile seconds reported apart")
    p.add_argument("--threads", default=None, help="comma list of torch thread counts (default: torch's)")
    p.add_argument("--backends", default="onednn",
                   help="comma list of onednn (oneDNN/mkldnn convolutions, torch's default on x86) and native "
                        "(torch.backends.mkldnn disabled: ATen's own kernels)")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.models, a.batch_sizes, a.seconds = "cnn1", "64", 0.2
    device = resolve_device(a.device)
    if "int8" in a.precisions.split(",") and (a.compile or device.type != "cpu"):
        p.error("--precisions int8 is CPU post-training quantization: not with --compile or a GPU")
    rows = []
    default_threads = torch.get_num_threads()
    threads = [int(t) for t in a.threads.split(",")] if a.threads else [default_threads]
    if not set(a.backends.split(",")) <= {"onednn", "native"}:
        p.error("--backends takes onednn and/or native")
    grid = itertools.product(a.models.split(","), a.precisions.split(","), a.memory_formats.split(","),
                             [int(b) for b in a.batch_sizes.split(",")], threads, a.backends.split(","))
    for name, precision, fmt, batch, n_threads, backend in grid:
        torch.set_num_threads(n_threads)
        row = {"model": name, "precision": precision, "memory_format": fmt, "batch": batch, "threads": n_threads,
               "backend": backend}
        modes = ("inference",) if a.inference_only or precision == "int8" else ("train", "inference")
        for mode in modes:  # int8 is post-training quantization: inference only
            with torch.backends.mkldnn.flags(enabled=backend == "onednn"):
                rate, compile_s = measure(name, precision, fmt == "channels_last", batch, device, a.seconds,
                                          mode == "train", a.compile)
            row[f"{mode}_img_s"] = round(rate)
            if compile_s is not None:  # the eager rate of the same cell, in the same run: a ratio without drift
                row[f"{mode}_compile_s"] = compile_s
                eager, _ = measure(name, precision, fmt == "channels_last", batch, device, a.seconds, mode == "train")
                row[f"{mode}_eager_img_s"] = round(eager)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    models = {n: {"params": count_params(build_model(n)), "mflops": round(forward_mflops(build_model(n)), 2)}
              for n in a.models.split(",")}
    out = {"benchmark": "throughput", "command": " ".join(["python benchmarks/throughput.py", *sys.argv[1:]]),
           "device": str(device), "cpu": platform.processor() or platform.machine(),
           "cpu_kind": cpu_record(), "auto_precision": resolve_precision("auto", device),
           "threads": default_threads, "thread_counts": threads, "compile": a.compile,
           "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d"), "time_utc": time.strftime("%H:%M", time.gmtime()),
           "models": models, "results": rows,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
