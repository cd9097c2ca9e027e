"""bptt's trainer against the plain textbook PyTorch TBPTT loop: same model, data, window, batch, threads.

Prints tokens/s of each and their ratio (bptt / plain). The plain loop is the
one every tutorial writes: forward, reshape, cross-entropy, backward, clip,
step, detach. bptt runs with all of its diagnostics on (pre-clip norms per
layer, clip share, loss accumulation), reading them once per log interval.

    python benchmarks/train_throughput.py --model lstm --hidden 256 --layers 2 --steps 200
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.streams import batchify
from bptt_cli.text import Tokenizer, read_text
from bptt_cli.trainer import TrainConfig, Trainer


class Quiet:
    def start(self, plan): ...
    def step(self, step, epoch): ...
    def log(self, record): ...
    def validation(self, record): ...
    def note(self, message): ...


def plain_loop(model: RecurrentModel, streams: torch.Tensor, window: int, steps: int, clip: float) -> float:
    """The textbook loop; returns seconds for ``steps`` updates."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    criterion = nn.CrossEntropyLoss()
    state = model.init_state(streams.shape[1])
    start = time.perf_counter()
    position = 0
    for _ in range(steps):
        if position + window + 1 > streams.shape[0]:
            position, state = 0, model.init_state(streams.shape[1])
        x, y = streams[position : position + window], streams[position + 1 : position + window + 1]
        position += window
        state = tuple(s.detach() for s in state)
        optimizer.zero_grad()
        logits, state = model(x, state)
        loss = criterion(logits.view(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
    return time.perf_counter() - start


def bptt_loop(model: RecurrentModel, streams: torch.Tensor, window: int, steps: int, clip: float) -> float:
    """bptt's own training loop (Trainer.fit) for ``steps`` updates, diagnostics read every 100."""
    config = TrainConfig(window=window, clip=clip, lr=2e-3, log_every=100, max_steps=steps, epochs=10**6)
    trainer = Trainer(model, config, torch.device("cpu"), Quiet(), None, lambda record: None)
    start = time.perf_counter()
    trainer.fit(streams[:-1], streams[1:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sample_data/shakespeare.txt")
    parser.add_argument("--model", default="lstm", choices=["lstm", "gru", "rnn"])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=3, help="alternate the two loops this many times")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    text = read_text(args.data)
    tokenizer = Tokenizer.fit("char", text)
    streams = batchify(tokenizer.encode(text)[0], args.batch_size)
    config = ModelConfig(args.model, tokenizer.size, tokenizer.size, embed=args.embed, hidden=args.hidden,
                         layers=args.layers)
    tokens = args.steps * args.window * args.batch_size
    rates = {"plain": [], "bptt": []}
    for _ in range(args.rounds):  # alternate, so drift in the machine's speed hits both alike
        for name, loop in (("plain", plain_loop), ("bptt", bptt_loop)):
            torch.manual_seed(0)
            model = RecurrentModel(config)
            loop(model, streams, args.window, 10, 1.0)  # warm-up: allocator, oneDNN primitives
            rates[name].append(tokens / loop(model, streams, args.window, args.steps, 1.0))
    best = {name: max(values) for name, values in rates.items()}
    ratios = [b / p for b, p in zip(rates["bptt"], rates["plain"])]
    print(f"model {args.model} {args.layers}x{args.hidden}, embed {args.embed}, window {args.window}, "
          f"batch {args.batch_size}, threads {args.threads}, torch {torch.__version__}")
    print(f"plain textbook loop: {best['plain']:,.0f} tokens/s (best of {args.rounds})")
    print(f"bptt trainer:        {best['bptt']:,.0f} tokens/s (best of {args.rounds})")
    print(f"ratio bptt/plain:    {best['bptt'] / best['plain']:.3f} (per round: {', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    np.random.seed(0)
    main()
