"""What the benchmarks share: the model and data options, the sample text as ids."""

from __future__ import annotations

import argparse

import numpy as np

from bptt_cli.text import Tokenizer, read_text


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
