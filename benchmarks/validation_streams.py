"""Validation of a text model: 16 streams side by side (what training does) against one exact stream.

Scores the sample text's validation tail (its last 10 %) both ways with the
model in MODEL (e.g. the quick start's shakespeare.pt) and prints each loss,
time and the speed ratio.

    python benchmarks/validation_streams.py shakespeare.pt
"""

from __future__ import annotations

import argparse
import time

import torch

from bptt_cli.evaluation import VALIDATION_CONTEXT, VALIDATION_STREAMS, token_loss
from bptt_cli.modelfile import load_model_file
from bptt_cli.text import read_text
from bptt_cli.kinds.text import split_tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", default="sample_data/shakespeare.txt")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    file = load_model_file(args.model)
    _, tail = split_tail(file.tokenizer.encode(read_text(args.data))[0], 0.1)
    ways = {"one exact stream": (1, 0), f"{VALIDATION_STREAMS} streams, {VALIDATION_CONTEXT} context": (
        VALIDATION_STREAMS, VALIDATION_CONTEXT)}
    seconds = {name: [] for name in ways}
    losses = {}
    for _ in range(args.rounds):
        for name, (streams, context) in ways.items():
            start = time.perf_counter()
            total, count = token_loss(file.model, tail, torch.device("cpu"), "fp32", streams, context)
            seconds[name].append(time.perf_counter() - start)
            losses[name] = total / count
    print(f"{len(tail):,} tokens, threads {torch.get_num_threads()}")
    for name in ways:
        print(f"{name:28s} loss {losses[name]:.7f}  {min(seconds[name]):.2f} s (best of {args.rounds})")
    one, many = ways
    print(f"speed ratio {min(seconds[one]) / min(seconds[many]):.2f}; loss difference "
          f"{abs(losses[one] - losses[many]):.1e}")


if __name__ == "__main__":
    main()
