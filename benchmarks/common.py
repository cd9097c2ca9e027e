"""What the benchmarks share: the model and data options, the sample text as ids."""

from __future__ import annotations

import argparse
import platform
import re
from pathlib import Path

import numpy as np
import torch

from bptt_cli.text import Tokenizer, read_text

_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def machine_line() -> str:
    """The CPU a figure was measured on (model, cores torch uses, the flags that change kernels): print it with every table."""
    model, flags = platform.processor() or platform.machine(), set()
    info = Path("/proc/cpuinfo")
    if info.exists():
        text = info.read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        model = found.group(1).strip() if found else model
        first = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        flags = set(first.group(1).split()) if first else set()
    have = [f for f in _FLAGS if f in flags] or ["none of " + ", ".join(_FLAGS)]
    return f"machine: {model}; torch {torch.__version__} on {torch.get_num_threads()} threads; flags: {' '.join(have)}"


def model_arguments(description: str, cells: tuple[str, ...] = ("lstm", "gru", "rnn")) -> argparse.ArgumentParser:
    """A parser with the options every training benchmark takes: data, cell, size, window, batch."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default="sample_data/shakespeare.txt")
    parser.add_argument("--model", default=cells[0], choices=cells)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    return parser


def char_ids(path: str) -> tuple[Tokenizer, np.ndarray]:
    """The text at ``path`` as character ids, and the tokenizer."""
    text = read_text(path)
    tokenizer = Tokenizer.fit("char", text)
    return tokenizer, tokenizer.encode(text)[0]


def batchify(ids: np.ndarray, batch_size: int) -> torch.Tensor:
    """Token ids (N,) -> time-major streams (L + 1, B), int64, copied: what a plain loop trains on."""
    length = (len(ids) - 1) // batch_size
    flat = torch.from_numpy(np.ascontiguousarray(ids[: length * batch_size + 1]).astype(np.int64))
    return flat.unfold(0, length + 1, length).t().contiguous()  # (L + 1, B)
