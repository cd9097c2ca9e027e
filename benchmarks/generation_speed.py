"""Tokens per second of ``bptt generate`` at 1k, 10k and 100k tokens, against re-running the whole prefix per token.

bptt carries the recurrent state, so each new token costs one step and the
rate stays flat with length. The naive sampler re-reads the whole text so far
for every new token (what a stateless model must do), so its cost per token
grows with the length. It is measured at the lengths it can finish in
``--naive-budget`` seconds; longer lengths are extrapolated from its fitted
cost per step and clearly labelled so.

    python benchmarks/generation_speed.py --hidden 256 --layers 2
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bptt_cli.generation import generate, next_token
from bptt_cli.models import ModelConfig, RecurrentModel

from common import char_ids, model_arguments


@torch.no_grad()
def naive(model: RecurrentModel, prime: torch.Tensor, length: int, generator: torch.Generator) -> None:
    """Sample ``length`` tokens, each from a fresh forward pass over everything so far."""
    ids = prime.clone()
    for _ in range(length):
        logits, _ = model(ids.view(-1, 1), model.init_state(1))
        token = next_token(logits[-1, 0], 1.0, 0, 1.0, generator)
        ids = torch.cat([ids, token.view(1)])


def main() -> None:
    parser = model_arguments(__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1000,10000,100000")
    parser.add_argument("--naive-budget", type=float, default=60.0, help="seconds the naive sampler may use per length")
    args = parser.parse_args()
    tokenizer, _ = char_ids(args.data)
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig(args.model, tokenizer.size, tokenizer.size, embed=args.embed,
                                       hidden=args.hidden, layers=args.layers)).eval()
    prime = "ROMEO:"
    print(f"model {args.model} {args.layers}x{args.hidden}, vocab {tokenizer.size}, threads "
          f"{torch.get_num_threads()}, torch {torch.__version__}; prime {prime!r}")
    for _ in generate(model, tokenizer, prime, 50):  # warm-up: oneDNN primitives for both shapes
        pass
    naive_points: list[tuple[int, float]] = []  # (length, seconds)
    for length in map(int, args.lengths.split(",")):
        start = time.perf_counter()
        for _ in generate(model, tokenizer, prime, length):
            pass
        carried = length / (time.perf_counter() - start)
        # the naive run of n tokens reads about n^2 / 2 steps: try it where the fit says it finishes in budget
        if naive_points:
            per_step = naive_points[-1][1] / (naive_points[-1][0] ** 2 / 2)
            predicted = per_step * length**2 / 2
        else:
            predicted = 0.0
        if predicted <= args.naive_budget:
            prime_ids = torch.as_tensor(tokenizer.encode(prime)[0].astype(np.int64))
            start = time.perf_counter()
            naive(model, prime_ids, length, torch.Generator().manual_seed(0))
            seconds = time.perf_counter() - start
            naive_points.append((length, seconds))
            label = "measured"
        else:
            seconds, label = predicted, "EXTRAPOLATED (n^2/2 steps at the last measured cost per step)"
        print(f"length {length:>7,}: bptt (state carried) {carried:9,.0f} tokens/s; naive re-run "
              f"{length / seconds:9,.1f} tokens/s ({label}); ratio {carried * seconds / length:,.0f}x")


if __name__ == "__main__":
    main()
