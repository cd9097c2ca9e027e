"""Choosing where and how the model runs: device, threads and numeric precision."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
from pathlib import Path

import torch

from bptt_cli.choices import PRECISIONS
from bptt_cli.errors import BpttError

DEVICES = "auto, cpu, cuda, cuda:N or mps"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" in microseconds, or "max ..."


def resolve_device(name: str) -> torch.device:
    """Turn ``--device`` into a torch device, or say plainly why it cannot be used.

    ``auto`` prefers CUDA, then Apple's MPS, then the CPU.
    """
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise BpttError("device 'mps' is not available here (no Apple GPU); use --device cpu or auto")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise BpttError(f"unknown device {name!r}; use {DEVICES}")
    if not torch.cuda.is_available():
        raise BpttError(f"device {name!r} is not available here (no CUDA GPU found); use --device cpu or auto")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise BpttError(
            f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return torch.device("cuda", index)


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity mask (taskset, cpusets), capped by a cgroup CPU quota.

    ``os.cpu_count()`` counts the whole machine, which a container or ``taskset``
    may not give us; more threads than usable cores only queue behind each other.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_quota() -> int | None:
    """Cores allowed by a cgroup v2 ``cpu.max`` quota (rounded up), None when there is no quota."""
    try:
        limit, period = CGROUP_CPU_MAX.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    return max(1, math.ceil(int(limit) / int(period)))


def default_threads() -> int | None:
    """Threads when ``--threads`` is not given: one per usable core; None leaves a user's OMP_NUM_THREADS to torch."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return usable_cores()


def set_threads(threads: int | None) -> int:
    """Use ``threads`` CPU threads for torch's kernels (None: ``default_threads``); returns the count in use."""
    if threads is not None and threads < 1:
        raise BpttError(f"--threads must be at least 1, got {threads}")
    chosen = default_threads() if threads is None else threads
    if chosen is not None:
        torch.set_num_threads(chosen)
    return torch.get_num_threads()


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether the CPU computes in bf16 itself (AVX512-BF16 or AMX).

    Without it bf16 is emulated: 15-20x slower than fp32, and oneDNN's fused
    LSTM refuses it. Linux says so in /proc/cpuinfo; elsewhere oneDNN's own test decides.
    """
    try:
        return re.search(r"\b(avx512_bf16|amx_bf16)\b", Path("/proc/cpuinfo").read_text()) is not None
    except OSError:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse a precision the device would run slowly, with the reason, before any work starts."""
    if precision not in PRECISIONS:
        raise BpttError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision != "bf16":
        return
    if device.type == "cpu" and not cpu_has_bf16():
        raise BpttError("--precision bf16: this CPU has no bf16 arithmetic (no avx512_bf16 or amx_bf16 flag), "
                        "so bf16 would run 15-20x slower than fp32; use --precision fp32")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BpttError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16 arithmetic; "
                        "use --precision fp32")


BF16_CPU_CELLS = ("lstm",)  # cells that train faster in bf16 on a bf16 CPU (benchmarks/precision.py): oneDNN's
# fused LSTM takes bf16 (1.69x fp32 on an AMD EPYC with AVX512-BF16, 2.09x on an Intel Xeon with AMX); the
# GRU loses its fp32 kernel (0.92x and 0.85x)


def resolve_precision(device: torch.device, precision: str, cell: str = "lstm") -> str:
    """``--precision`` as it runs on ``device``: auto is bf16 where the hardware computes in bf16 and it was
    measured faster for ``cell`` (a CPU with AVX512-BF16 or AMX: the LSTM; a CUDA GPU with bf16), fp32
    elsewhere; an explicit bf16 without it is refused."""
    check_precision(device, precision)
    if precision != "auto":
        return precision
    if device.type == "cpu":
        return "bf16" if cpu_has_bf16() and cell in BF16_CPU_CELLS else "fp32"
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast(device: torch.device, precision: str):
    """A context that runs the forward pass in ``precision`` (fp32 runs as is; auto as ``resolve_precision`` says)."""
    if resolve_precision(device, precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
