"""bf16 autocast against fp32 on bptt's own trainer: speed, and whether 500 updates learn the same.

For each cell (LSTM 2x256 and GRU 2x256 by default) three runs of ``--updates``
updates each, every one in a process of its own as the CLI runs (freed memory kept
for reuse): fp32 from seed 0, bf16 from seed 0, and fp32 from seed 1. The seed-1
run is the A/A control twice over: its speed against the seed-0 fp32 run is the
machine's noise, and its loss curve against seed 0 is the training's own noise
(another initialisation), which the bf16 curve's distance from fp32 is held to.

A run's speed is its median update (a burst of load from elsewhere does not move
it); the loss curve is the trainer's train loss per log interval.

    python benchmarks/precision.py                  # LSTM 2x256 and GRU 2x256, 500 updates each
    python benchmarks/precision.py --cells gru --updates 200
"""

from __future__ import annotations

import statistics

import numpy as np
import torch

from bptt_cli.allocator import keep_freed_memory
from bptt_cli.device import cpu_has_bf16, set_threads
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.streams import mapped_streams
from bptt_cli.trainer import SilentReporter, TrainConfig, Trainer

from common import char_ids, machine_line, model_arguments
from train_throughput import Clock, in_own_process

RUNS = (("fp32", 0), ("bf16", 0), ("fp32", 1))  # (precision, seed); the last is the A/A control


class _Recorder(SilentReporter):
    """Ticks the clock after every update and keeps the train loss of every log interval."""

    def __init__(self, clock: Clock):
        self.clock, self.losses = clock, []

    def step(self, step: int, epoch: int) -> None:
        self.clock.tick()

    def log(self, record: dict) -> None:
        self.losses.append(record["train_loss"])


def train(ids: np.ndarray, config: ModelConfig, precision: str, seed: int, args) -> tuple[list[float], list[float]]:
    """Update durations (after the first ``--warmup``) and the loss per log interval of one run."""
    keep_freed_memory()
    set_threads(args.threads)
    torch.manual_seed(seed)
    model = RecurrentModel(config)
    clock = Clock()
    reporter = _Recorder(clock)
    train_config = TrainConfig(window=args.window, batch_size=args.batch_size, precision=precision, seed=seed,
                               max_steps=args.updates, epochs=10**6, log_every=args.log_every)
    Trainer(model, train_config, torch.device("cpu"), reporter, None, lambda record: None).fit(
        *mapped_streams(ids, args.batch_size))
    return clock.durations[args.warmup :], reporter.losses


def main() -> None:
    parser = model_arguments(__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"], choices=["lstm", "gru", "rnn"])
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=10, help="updates left out of the speed figure")
    parser.add_argument("--log-every", type=int, default=10, help="updates per point of the loss curve")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    print(machine_line())
    if not cpu_has_bf16():
        print("this CPU has no bf16 arithmetic: bptt refuses --precision bf16 here and --precision auto is fp32; "
              "benchmarks/precision_compile.py measures the emulated speed")
        return
    tokenizer, ids = char_ids(args.data)  # numpy only: a torch op here would hang the forked children
    print(f"window {args.window}, batch {args.batch_size}, {args.updates} updates per run, loss per "
          f"{args.log_every} updates")
    for cell in args.cells:
        config = ModelConfig(cell, tokenizer.size, tokenizer.size, embed=args.embed, hidden=args.hidden,
                             layers=args.layers)
        results = {run: in_own_process(train, ids, config, *run, args) for run in RUNS}
        speed = {run: args.window * args.batch_size / statistics.median(d) for run, (d, _) in results.items()}
        fp32, bf16, other = (np.array(results[run][1]) for run in RUNS)
        last = max(1, len(fp32) // 5)  # the last fifth of the curve
        print(f"{cell} {args.layers}x{args.hidden}: fp32 {speed[RUNS[0]]:,.0f} tok/s, bf16 {speed[RUNS[1]]:,.0f} "
              f"tok/s: bf16 / fp32 {speed[RUNS[1]] / speed[RUNS[0]]:.3f} (A/A fp32 seed 1 / seed 0 "
              f"{speed[RUNS[2]] / speed[RUNS[0]]:.3f})")
        print(f"  loss curve, bf16 - fp32 (same seed): max |diff| {np.abs(bf16 - fp32).max():.4f}, mean of the "
              f"last fifth {bf16[-last:].mean() - fp32[-last:].mean():+.4f}; noise, fp32 seed 1 - seed 0: max "
              f"|diff| {np.abs(other - fp32).max():.4f}, last fifth {other[-last:].mean() - fp32[-last:].mean():+.4f}")
        print(f"  final interval loss: fp32 {fp32[-1]:.4f}, bf16 {bf16[-1]:.4f}, fp32 seed 1 {other[-1]:.4f}; "
              f"within noise: {'yes' if np.abs(bf16 - fp32).max() <= np.abs(other - fp32).max() else 'no'}")


if __name__ == "__main__":
    main()
