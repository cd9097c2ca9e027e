"""Training across processes with torch.distributed: gloo on CPU, nccl on CUDA.

Launched by ``torchrun`` (or ``bptt train --nproc N``), which sets RANK and
WORLD_SIZE. Each rank trains its own share of the B streams and carries their
state; DistributedDataParallel averages the gradients, so every rank holds the
same gradients and the same global norm; validation sums are all-reduced; only
rank 0 prints and writes files.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from bptt_cli.errors import BpttError


def launch(nproc: int, args: list[str]) -> int:
    """Run ``bptt <args>`` again under torchrun in ``nproc`` processes; returns their exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "bptt_cli", *_without_nproc(args)]
    return subprocess.call(command)


def _without_nproc(args: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def launched() -> bool:
    """True when this process was started by torchrun as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


_device = torch.device("cpu")  # where collectives put their tensors (nccl needs CUDA ones)


def start(device: torch.device) -> torch.device:
    """Join the process group torchrun set up; on CUDA each rank takes the GPU of its local rank."""
    global _device
    if not launched() or active():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    _device = device
    return device


def finish() -> None:
    """Wait until every rank is done: rank 0 may still be writing the model file when the others end."""
    if active():
        dist.barrier()


def stop() -> None:
    if active():
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


def check_split(batch_size: int, processes: int) -> None:
    if batch_size % processes:
        raise BpttError(f"--batch-size {batch_size} does not split evenly over {processes} processes; "
                        f"use a multiple of {processes}")


def shard_streams(streams: torch.Tensor) -> torch.Tensor:
    """This rank's share of the B parallel streams (columns) of ``streams`` (T, B, ...)."""
    if not active():
        return streams
    total = streams.shape[1]
    check_split(total, world())
    share = total // world()
    begin, end = rank() * share, (rank() + 1) * share
    if hasattr(streams, "select_streams"):  # the token cache's mapped streams
        return streams.select_streams(begin, end)
    return streams[:, begin:end]


def gather_streams(values: torch.Tensor) -> torch.Tensor:
    """Every rank's share of a (layers, B / world, hidden) state, joined back into (layers, B, hidden)."""
    if not active():
        return values
    parts = [torch.empty_like(values) for _ in range(world())]
    dist.all_gather(parts, values.contiguous())
    return torch.cat(parts, dim=1)


def my_streams(values: torch.Tensor) -> torch.Tensor:
    """This rank's share of a gathered (layers, B, hidden) state."""
    if not active():
        return values
    share = values.shape[1] // world()
    return values[:, rank() * share : (rank() + 1) * share]


def shard_range(length: int) -> tuple[int, int]:
    """This rank's contiguous part [begin, end) of ``length`` items (for validation)."""
    begin = length * rank() // world()
    return begin, length * (rank() + 1) // world()


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (identity in a single process); works on the device collectives need (nccl: CUDA)."""
    if not active():
        return values
    moved = values.to(_device)
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    return moved.to(values.device)


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on any, so that all ranks stop at the same step."""
    if not active():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
