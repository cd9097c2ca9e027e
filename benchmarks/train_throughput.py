"""bptt's trainer against the plain textbook PyTorch TBPTT loop and against pytorch/examples' word_language_model.

Same model, data, window, batch and threads for all three. Prints tokens/s of
each, the ratios bptt / plain and bptt / word_language_model, and the training
FLOP/s of each as a share of this machine's fp32 matmul rate, measured in the
same run (training counts as 3x the forward matmul FLOPs).

- plain: the loop every tutorial writes (forward, cross-entropy, backward,
  clip_grad_norm_, AdamW step, detach), on bptt's own model.
- wlm: benchmarks/word_language_model.py, its model class (dropout 0.2 on
  embeddings and outputs), clip_grad_norm_ and the hand-written SGD update.
- bptt: Trainer.fit with every diagnostic on (pre-clip norms per layer, clip
  share, loss), read once per log interval, over the token-cache streams the
  CLI uses. Against plain it runs AdamW like plain; against wlm it runs SGD and
  the same dropout, like wlm.

The loops alternate, round after round, so drift in the machine's speed hits all alike.

    python benchmarks/train_throughput.py --model lstm --hidden 256 --layers 2
    python benchmarks/train_throughput.py --model gru --hidden 1024 --layers 1
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.streams import batchify
from bptt_cli.token_cache import mapped_streams
from bptt_cli.trainer import SilentReporter, TrainConfig, Trainer

import word_language_model as wlm
from common import char_ids, model_arguments


def plain_loop(model: RecurrentModel, streams: torch.Tensor, window: int, steps: int) -> float:
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
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return time.perf_counter() - start


def wlm_loop(model: wlm.RNNModel, streams: torch.Tensor, window: int, steps: int) -> float:
    """pytorch/examples' word_language_model loop; returns seconds for ``steps`` updates."""
    start = time.perf_counter()
    wlm.train_epoch(model, streams, window, streams.shape[1], lr=20.0, clip=0.25, max_updates=steps)
    return time.perf_counter() - start


def bptt_loop(model: RecurrentModel, ids: np.ndarray, window: int, batch: int, steps: int, optimizer: str) -> float:
    """bptt's own training loop (Trainer.fit) for ``steps`` updates, diagnostics read every 100."""
    lr = 20.0 if optimizer == "sgd" else 2e-3
    clip = 0.25 if optimizer == "sgd" else 1.0
    config = TrainConfig(window=window, clip=clip, lr=lr, optimizer=optimizer, log_every=100, max_steps=steps,
                         epochs=10**6, batch_size=batch)
    trainer = Trainer(model, config, torch.device("cpu"), SilentReporter(), None, lambda record: None)
    start = time.perf_counter()
    trainer.fit(*mapped_streams(ids, batch))
    return time.perf_counter() - start


def matmul_rate(seconds: float = 2.0, size: int = 1024) -> float:
    """This machine's fp32 matmul FLOP/s at the current thread count (best of repeated square products)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(5):
            torch.mm(a, b)
        best = max(best, 5 * 2 * size**3 / (time.perf_counter() - start))
    return best


def forward_flops_per_token(cell: str, embed: int, hidden: int, layers: int, vocab: int) -> int:
    """Matmul FLOPs of one token's forward pass: the recurrent layers' gate products and the decoder."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    width = [embed] + [hidden] * (layers - 1)
    return sum(2 * gates * hidden * (w + hidden) for w in width) + 2 * hidden * vocab


def main() -> None:
    parser = model_arguments(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=3, help="alternate the loops this many times")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer, ids = char_ids(args.data)
    streams = batchify(ids, args.batch_size)
    config = ModelConfig(args.model, tokenizer.size, tokenizer.size, embed=args.embed, hidden=args.hidden,
                         layers=args.layers)
    dropped = ModelConfig(**{**config.to_dict(), "dropout": 0.2})

    def model(cfg: ModelConfig) -> RecurrentModel:
        torch.manual_seed(0)
        return RecurrentModel(cfg)

    def wlm_model() -> wlm.RNNModel:
        torch.manual_seed(0)
        return wlm.RNNModel(args.model, tokenizer.size, args.embed, args.hidden, args.layers, 0.2)

    runs = {  # name -> (make a model, run n updates on it)
        "plain": (lambda: model(config), lambda m, n: plain_loop(m, streams, args.window, n)),
        "bptt": (lambda: model(config), lambda m, n: bptt_loop(m, ids, args.window, args.batch_size, n, "adamw")),
        "wlm": (wlm_model, lambda m, n: wlm_loop(m, streams, args.window, n)),
        "bptt sgd": (lambda: model(dropped),
                     lambda m, n: bptt_loop(m, ids, args.window, args.batch_size, n, "sgd")),
    }
    tokens = args.steps * args.window * args.batch_size
    rates: dict[str, list[float]] = {name: [] for name in runs}
    peaks = []
    for _ in range(args.rounds):
        peaks.append(matmul_rate())
        for name, (make, loop) in runs.items():
            m = make()
            loop(m, 10)  # warm-up: allocator, oneDNN primitives
            rates[name].append(tokens / loop(m, args.steps))
    peak = max(peaks)
    flops = 3 * forward_flops_per_token(args.model, args.embed, args.hidden, args.layers, tokenizer.size)
    best = {name: max(values) for name, values in rates.items()}

    def ratio(a: str, b: str) -> str:
        per_round = ", ".join(f"{x / y:.3f}" for x, y in zip(rates[a], rates[b]))
        return f"{best[a] / best[b]:.3f} (per round: {per_round})"

    print(f"model {args.model} {args.layers}x{args.hidden}, embed {args.embed}, vocab {tokenizer.size}, "
          f"window {args.window}, batch {args.batch_size}, threads {args.threads}, torch {torch.__version__}")
    print(f"fp32 matmul rate: {peak / 1e9:.1f} GFLOP/s (best of {args.rounds}); training counts "
          f"{flops / 1e6:.2f} MFLOP per token")
    labels = {"plain": "plain textbook loop (AdamW)", "bptt": "bptt trainer (AdamW)",
              "wlm": "word_language_model (SGD, dropout 0.2)", "bptt sgd": "bptt trainer (SGD, dropout 0.2)"}
    for name, label in labels.items():
        print(f"{label:42s} {best[name]:10,.0f} tokens/s  {best[name] * flops / 1e9:6.1f} GFLOP/s "
              f"= {best[name] * flops / peak:5.1%} of matmul")
    print(f"ratio bptt/plain: {ratio('bptt', 'plain')}")
    print(f"ratio bptt/wlm:   {ratio('bptt sgd', 'wlm')}")


if __name__ == "__main__":
    np.random.seed(0)
    main()
