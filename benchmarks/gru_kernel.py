"""bptt's GRU training (bptt_cli.gru_kernel on the CPU) against the textbook loop, with the textbook loop against itself.

- textbook: nn.Embedding -> nn.GRU -> nn.Linear, CrossEntropyLoss, clip_grad_norm_,
  torch.optim.AdamW, the state detached every window: the loop every tutorial writes.
- textbook again: the same loop a second time, the A/A control: its ratio to the
  first is the machine's noise in this run.
- bptt: Trainer.fit with every diagnostic on, AdamW, in a process set up as the
  ``bptt`` command sets its own; the GRU runs bptt's kernel.
- bptt, nn.GRU: the same with the kernel switched off, so the kernel's share of
  the gain is seen apart from the trainer's.

Same data (the sample text as characters), shapes, initial weights, threads.
Each loop runs alone in a forked process, the loops alternate round after round,
and a round's figure is its median update (wall clock, and the process's CPU
time beside it): a burst of load from the other jobs on a shared machine moves
the mean, not the median. Ratios are taken per round, and their median printed.

    python benchmarks/gru_kernel.py --hidden 256 --layers 2
    python benchmarks/gru_kernel.py --hidden 1024 --layers 1
"""

from __future__ import annotations

from bptt_cli.cli import quiet_openmp_wait  # imports no torch

quiet_openmp_wait()  # OpenMP waits as the bptt command sets them, before torch starts OpenMP

import os  # noqa: E402

import statistics
import time

import torch
from torch import nn

from bptt_cli import gru_kernel
from bptt_cli.allocator import keep_freed_memory
from bptt_cli.device import set_threads
from bptt_cli.models import ModelConfig, RecurrentModel

from common import batchify, char_ids, machine_line, model_arguments
from train_throughput import bptt_loop, in_own_process, plain_loop


class TextbookGRU(nn.Module):
    """The tutorial's model, with bptt's initial weights (the same seed builds the same parameters)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embedding = nn.Embedding(config.input_size, config.embed)
        self.rnn = nn.GRU(config.embed, config.hidden, config.layers)
        self.decoder = nn.Linear(config.hidden, config.output_size)
        self.layers, self.hidden = config.layers, config.hidden

    def init_state(self, batch: int) -> tuple[torch.Tensor]:
        return (torch.zeros(self.layers, batch, self.hidden),)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor]):
        out, h = self.rnn(self.embedding(x), state[0])
        return self.decoder(out), (h,)


class Clock:
    """Wall and CPU seconds of each update: the loop calls ``tick`` after every one."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.walls: list[float] = []
        self.cpus: list[float] = []

    def tick(self) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.walls.append(wall - self.wall)
        self.cpus.append(cpu - self.cpu)
        self.wall, self.cpu = wall, cpu


def main() -> None:
    parser = model_arguments(__doc__.splitlines()[0], cells=("gru",))
    parser.add_argument("--steps", type=int, default=20, help="timed updates per loop and round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed updates first, in each process")
    parser.add_argument("--rounds", type=int, default=5, help="alternate the loops this many times")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()

    tokenizer, ids = char_ids(args.data)  # numpy only: a torch op here would hang the forked children
    config = ModelConfig("gru", tokenizer.size, tokenizer.size, embed=args.embed, hidden=args.hidden, layers=args.layers)

    def textbook(clock: Clock) -> None:
        torch.manual_seed(0)
        plain_loop(TextbookGRU(config), batchify(ids, args.batch_size), args.window, args.warmup + args.steps,
                   clock.tick)

    def bptt(kernel: bool):
        def run(clock: Clock) -> None:
            keep_freed_memory()
            if not kernel:
                gru_kernel.cpu_layer = lambda rnn, inputs: None  # this forked process only
            torch.manual_seed(0)
            bptt_loop(RecurrentModel(config), ids, args.window, args.batch_size, args.warmup + args.steps, "adamw",
                      10, clock.tick)
        return run

    runs = {"textbook": textbook, "textbook again": textbook, "bptt": bptt(True), "bptt, nn.GRU": bptt(False)}

    def timed(name: str) -> tuple[float, float, str]:
        set_threads(args.threads)
        clock = Clock()
        runs[name](clock)
        return statistics.median(clock.walls[args.warmup :]), statistics.median(clock.cpus[args.warmup :]), machine_line()

    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name in runs:
            seconds, cpu_seconds, machine = in_own_process(timed, name)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)

    tokens = args.window * args.batch_size
    print(machine)  # as the loops ran: the threads are theirs
    print(f"GRU {args.layers}x{args.hidden}, embed {args.embed}, vocab {tokenizer.size}, window {args.window}, "
          f"batch {args.batch_size}; {args.rounds} rounds of {args.steps} updates per loop (after {args.warmup}); "
          f"1-minute load at the end {os.getloadavg()[0]:.1f}")
    print("median update over rounds: wall ms (tokens/s) | CPU ms; speed against textbook, median of per-round ratios")

    def ratio(times: dict[str, list[float]], name: str) -> str:
        rounds = [base / mine for base, mine in zip(times["textbook"], times[name])]
        return f"{statistics.median(rounds):.3f} (rounds {min(rounds):.3f}-{max(rounds):.3f})"

    for name in runs:
        seconds, cpu_seconds = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"  {name:15s} {seconds * 1e3:8.1f} ms ({tokens / seconds:8,.0f} tok/s) | {cpu_seconds * 1e3:8.1f} ms CPU"
              f"   wall {ratio(wall, name)}, CPU {ratio(cpu, name)}")


if __name__ == "__main__":
    main()
