"""What bptt's diagnostics cost: the trainer with its per-layer gradient norms against the same trainer without.

- with: ``Trainer`` as ``bptt train`` runs it: every update takes the norm of
  each layer's gradient and the global pre-clip norm from them, sums them with
  the loss and the clip share on the device, and reads the sums every
  ``--log-every`` updates (the one host sync of an interval).
- without: the same trainer whose update takes only the global norm
  (``clip_grad_norm_``, as the textbook loop does) and never reads anything back.
- with again: the A/A control, the first variant once more.

Each variant runs in a process of its own (freed memory kept for reuse, as the
CLI does), alternating round after round; a round's figure is its median update.

    python benchmarks/diagnostics_cost.py --rounds 8
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
from torch.nn.utils import clip_grad_norm_

from bptt_cli.allocator import keep_freed_memory
from bptt_cli.device import set_threads
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.streams import mapped_streams
from bptt_cli.trainer import TrainConfig, Trainer

from common import char_ids, machine_line, model_arguments
from train_throughput import Clock, _Ticking, in_own_process


class WithoutDiagnostics(Trainer):
    """The trainer's update with one global norm for clipping and no per-layer norms."""

    def update(self, window, inputs, targets, state, resets=None):
        loss, carried = self.backward(window, inputs, targets, state, resets)
        total = clip_grad_norm_(self.params, self.config.clip)
        self.optimizer.step()
        return loss, total, self.no_groups, carried


def run(ids: np.ndarray, config: ModelConfig, variant: str, args) -> list[float]:
    """Update durations of one variant, after the first ``--warmup`` updates."""
    keep_freed_memory()
    set_threads(args.threads)
    torch.manual_seed(0)
    clock = Clock()
    plain = variant == "without"
    train_config = TrainConfig(window=args.window, batch_size=args.batch_size, max_steps=args.warmup + args.steps,
                               epochs=10**6, log_every=10**9 if plain else args.log_every)
    trainer = (WithoutDiagnostics if plain else Trainer)(RecurrentModel(config), train_config, torch.device("cpu"),
                                                         _Ticking(clock.tick), None, lambda record: None)
    trainer.no_groups = torch.zeros(len(trainer.groups), dtype=torch.float64)
    trainer.fit(*mapped_streams(ids, args.batch_size))
    return clock.durations[args.warmup :]


def main() -> None:
    parser = model_arguments(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed updates per variant and round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--log-every", type=int, default=100, help="bptt train's default")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    tokenizer, ids = char_ids(args.data)  # numpy only: a torch op here would hang the forked children
    config = ModelConfig(args.model, tokenizer.size, tokenizer.size, embed=args.embed, hidden=args.hidden,
                         layers=args.layers)
    variants = ("with", "without", "with again")
    medians: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            medians[variant].append(statistics.median(in_own_process(run, ids, config, variant, args)))
    print(machine_line())
    print(f"model {args.model} {args.layers}x{args.hidden}, window {args.window}, batch {args.batch_size}, "
          f"log every {args.log_every}; {args.rounds} rounds of {args.steps} updates per variant")
    for variant in variants:
        print(f"  {variant:11s} median update {statistics.median(medians[variant]) * 1e3:7.1f} ms")

    def ratio(a: str, b: str) -> str:
        rounds = [x / y for x, y in zip(medians[a], medians[b])]
        return f"{statistics.median(rounds):.3f} (rounds {min(rounds):.3f}-{max(rounds):.3f})"

    print(f"update time with / without diagnostics: {ratio('with', 'without')}")
    print(f"A/A, with again / with:                 {ratio('with again', 'with')}")


if __name__ == "__main__":
    main()
