"""The CPU a benchmark ran on, as its JSON records it: lscpu's model name, the CPU count and the instruction sets
that decide the fast paths here (AVX2, AVX-512, AVX-512 BF16, AMX). Each CPU kind's tables come from its own files,
so every benchmark names its machine the same way."""

from __future__ import annotations

import os
import platform
import subprocess

FLAGS = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni", "fma"}
# Environment variables that stop oneDNN, ATen's kernels and MKL from using the newer instruction sets: set to
# AVX2, a CPU with AVX-512/AMX runs the code paths an AVX2-only CPU would (an emulation of that CPU's software
# path, not of its speed). A record made so says it.
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def cpu_quota() -> tuple[float, int] | None:
    """(the CPUs' worth of time this process's cgroup may use: its CFS quota over its period, the period in
    microseconds), None when unlimited. Run inside a cgroup with a quota, a benchmark sees a slower machine (every
    step takes longer; not a slower clock, memory or cache, and threads that wait for each other by spinning use up
    the quota too, more so with a short period). A record made so says it."""
    try:
        lines = open("/proc/self/cgroup").read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        try:
            if controllers == "":  # cgroup v2: "max 100000" when unlimited
                quota, period = open("/sys/fs/cgroup" + path.rstrip("/") + "/cpu.max").read().split()
            elif "cpu" in controllers.split(","):  # cgroup v1: -1 when unlimited
                fs = "/sys/fs/cgroup/" + controllers + path.rstrip("/")
                quota = open(fs + "/cpu.cfs_quota_us").read().strip()
                period = open(fs + "/cpu.cfs_period_us").read().strip()
            else:
                continue
        except (OSError, ValueError):
            continue
        if quota not in ("max", "-1"):
            return int(quota) / int(period), int(period)
    return None


def cpu_record() -> dict:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):  # no lscpu: what Python knows
        return {"model_name": platform.processor() or platform.machine(), "cpus": str(os.cpu_count() or ""),
                "flags": []}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    caps = {k: os.environ[k] for k in ISA_CAPS if os.environ.get(k)}
    quota = cpu_quota()
    return {"model_name": fields.get("Model name", "").strip(), "cpus": fields.get("CPU(s)", "").strip(),
            "flags": sorted(flags & FLAGS), **({"isa_caps": caps} if caps else {}),
            **({"cpu_quota": round(quota[0], 3), "cpu_quota_period_us": quota[1]} if quota is not None else {})}
