"""Choosing where and how the model runs: device, threads and numeric precision."""

from __future__ import annotations

import contextlib
import re
import warnings

import torch

from bptt_cli.errors import BpttError

DEVICES = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("fp32", "bf16")


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


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch's kernels (None keeps torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise BpttError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


def autocast(device: torch.device, precision: str):
    """A context that runs the forward pass in ``precision`` (fp32 runs as is)."""
    if precision not in PRECISIONS:
        raise BpttError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cpu" and not torch.backends.mkldnn.is_available():
        warnings.warn("bf16 has no fast path on this CPU; fp32 will be faster", stacklevel=2)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
