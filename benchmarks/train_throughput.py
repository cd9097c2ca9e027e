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

Each loop runs alone in a process of its own, forked from this one for each
round, as it would run for a user: bptt's process keeps freed memory for reuse
(``bptt_cli.allocator``, which the CLI applies), the others run with glibc's
defaults. The loops alternate, round after round, so drift in the machine's
speed hits all alike; "plain again" repeats the plain loop to show the noise.
A round's figure is its median update, which a burst of load from elsewhere
does not move; the whole round's rate is printed beside it.

    python benchmarks/train_throughput.py --model lstm --hidden 256 --layers 2
    python benchmarks/train_throughput.py --model gru --hidden 1024 --layers 1
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn

from bptt_cli.allocator import keep_freed_memory
from bptt_cli.device import set_threads
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.streams import mapped_streams
from bptt_cli.trainer import SilentReporter, TrainConfig, Trainer

import word_language_model as wlm
from common import batchify, char_ids, model_arguments


def plain_loop(model: RecurrentModel, streams: torch.Tensor, window: int, steps: int, tick=lambda: None) -> None:
    """The textbook loop, ``steps`` updates, calling ``tick`` after each."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    criterion = nn.CrossEntropyLoss()
    state = model.init_state(streams.shape[1])
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
        tick()


def wlm_loop(model: wlm.RNNModel, streams: torch.Tensor, window: int, steps: int, tick) -> None:
    """pytorch/examples' word_language_model loop, calling ``tick`` after each update."""
    wlm.train_epoch(model, streams, window, streams.shape[1], lr=20.0, clip=0.25, max_updates=steps, on_update=tick)


class _Ticking(SilentReporter):
    def __init__(self, tick):
        self.tick = tick

    def step(self, step: int, epoch: int) -> None:
        self.tick()


def bptt_loop(model: RecurrentModel, ids: np.ndarray, window: int, batch: int, steps: int, optimizer: str,
              log_every: int, tick) -> None:
    """bptt's own training loop (Trainer.fit), diagnostics read every ``log_every`` updates, ``tick`` after each."""
    lr = 20.0 if optimizer == "sgd" else 2e-3
    clip = 0.25 if optimizer == "sgd" else 1.0
    config = TrainConfig(window=window, clip=clip, lr=lr, optimizer=optimizer, log_every=log_every, max_steps=steps,
                         epochs=10**6, batch_size=batch)
    trainer = Trainer(model, config, torch.device("cpu"), _Ticking(tick), None, lambda record: None)
    trainer.fit(*mapped_streams(ids, batch))


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


class Clock:
    """The duration of each update: the loop calls ``tick`` after every one."""

    def __init__(self):
        self.last = time.perf_counter()
        self.durations: list[float] = []

    def tick(self) -> None:
        now = time.perf_counter()
        self.durations.append(now - self.last)
        self.last = now


def in_own_process(work, *args):
    """``work(*args)`` in a forked process (nothing it changes stays here); returns its result."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child():
        send.send(work(*args))

    process = context.Process(target=child)
    process.start()
    result = receive.recv()
    process.join()
    return result


def main() -> None:
    parser = model_arguments(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed updates per loop and round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed updates first, in each process")
    parser.add_argument("--rounds", type=int, default=5, help="alternate the loops this many times")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--log-every", type=int, default=10, help="bptt reads its diagnostics this often")
    args = parser.parse_args()

    tokenizer, ids = char_ids(args.data)  # numpy only: a torch op here would hang the forked children
    config = ModelConfig(args.model, tokenizer.size, tokenizer.size, embed=args.embed, hidden=args.hidden,
                         layers=args.layers)
    dropped = ModelConfig(**{**config.to_dict(), "dropout": 0.2})

    def model(cfg: ModelConfig) -> RecurrentModel:
        torch.manual_seed(0)
        return RecurrentModel(cfg)

    def wlm_model() -> wlm.RNNModel:
        torch.manual_seed(0)
        return wlm.RNNModel(args.model, tokenizer.size, args.embed, args.hidden, args.layers, 0.2)

    def plain(m, n, tick):
        plain_loop(m, batchify(ids, args.batch_size), args.window, n, tick)

    def bptt(optimizer: str):
        return lambda m, n, tick: bptt_loop(m, ids, args.window, args.batch_size, n, optimizer, args.log_every, tick)

    def word_language_model(m, n, tick):
        wlm_loop(m, batchify(ids, args.batch_size), args.window, n, tick)

    runs = {  # name -> (label, bptt's process?, make a model, run n updates on it calling tick after each)
        "plain": ("plain textbook loop (AdamW)", False, lambda: model(config), plain),
        "plain again": ("plain again (the noise)", False, lambda: model(config), plain),
        "bptt": ("bptt trainer (AdamW)", True, lambda: model(config), bptt("adamw")),
        "wlm": ("word_language_model (SGD, dropout 0.2)", False, wlm_model, word_language_model),
        "bptt sgd": ("bptt trainer (SGD, dropout 0.2)", True, lambda: model(dropped), bptt("sgd")),
    }

    def timed(name: str) -> list[float]:
        _, is_bptt, make, loop = runs[name]
        if is_bptt:
            keep_freed_memory()
        set_threads(args.threads)
        clock = Clock()
        loop(make(), args.warmup + args.steps, clock.tick)
        return clock.durations[args.warmup :]

    def measured_matmul_rate() -> tuple[float, int]:
        set_threads(args.threads)
        return matmul_rate(), torch.get_num_threads()

    per_update = args.window * args.batch_size
    typical: dict[str, list[float]] = {name: [] for name in runs}  # tokens/s of the round's median update
    whole: dict[str, list[float]] = {name: [] for name in runs}  # tokens/s over the round's updates
    peaks = []
    for _ in range(args.rounds):
        rate, threads = in_own_process(measured_matmul_rate)
        peaks.append(rate)
        for name in runs:
            durations = in_own_process(timed, name)
            typical[name].append(per_update / statistics.median(durations))
            whole[name].append(per_update * len(durations) / sum(durations))
    peak = max(peaks)
    flops = 3 * forward_flops_per_token(args.model, args.embed, args.hidden, args.layers, tokenizer.size)

    print(f"model {args.model} {args.layers}x{args.hidden}, embed {args.embed}, vocab {tokenizer.size}, "
          f"window {args.window}, batch {args.batch_size}, threads {threads}, torch {torch.__version__}; "
          f"{args.rounds} rounds of {args.steps} updates per loop")
    print(f"fp32 matmul rate: {peak / 1e9:.1f} GFLOP/s (best of {args.rounds}); training counts "
          f"{flops / 1e6:.2f} MFLOP per token")
    print("tokens/s of the median update (median of rounds) | of whole rounds (best round)")
    for name, (label, *_) in runs.items():
        rate = statistics.median(typical[name])
        print(f"  {label:42s} {rate:10,.0f} {rate * flops / 1e9:6.1f} GFLOP/s = {rate * flops / peak:5.1%} of matmul"
              f" | {max(whole[name]):10,.0f}")

    def ratio(a: str, b: str) -> str:
        rounds = [x / y for x, y in zip(typical[a], typical[b])]
        return (f"{statistics.median(rounds):.3f} (rounds: {', '.join(f'{r:.3f}' for r in rounds)}); "
                f"whole rounds, best / best: {max(whole[a]) / max(whole[b]):.3f}")

    print(f"ratio plain again / plain: {ratio('plain again', 'plain')}")
    print(f"ratio bptt / plain:        {ratio('bptt', 'plain')}")
    print(f"ratio bptt / wlm:          {ratio('bptt sgd', 'wlm')}")


if __name__ == "__main__":
    np.random.seed(0)
    warnings.filterwarnings("ignore", message="dropout option adds dropout")  # wlm's model, one layer: as the example
    main()
