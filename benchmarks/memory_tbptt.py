"""Peak memory of truncated BPTT does not grow with the length of the stream; full BPTT grows linearly.

Each run is its own process training one epoch with bptt's Trainer over the
token-cache streams (uint8 ids, mapped, windows made one at a time), with
freed memory kept for reuse as the ``bptt`` command keeps it:

- truncated: window 50 over a stream of 10^4 and of 10^6 steps (batch 1); the
  ratio of their peak RSS should be within 1.1;
- full BPTT (window 0) over growing streams: the growth of peak RSS against
  the estimate bptt prints before it starts (``full_bptt_activation_bytes``).

    python benchmarks/memory_tbptt.py
"""

from __future__ import annotations

import argparse
import sys

from memory_large_text import peak_memory

RUN = """
import sys
import numpy as np
import torch
from bptt_cli.allocator import keep_freed_memory
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.streams import mapped_streams
from bptt_cli.trainer import SilentReporter, TrainConfig, Trainer
steps, batch, window, hidden = map(int, sys.argv[1:5])
keep_freed_memory()  # as the bptt command does
ids = np.random.default_rng(0).integers(0, 64, steps * batch + 1).astype(np.uint8)
model = RecurrentModel(ModelConfig("lstm", 64, 64, hidden=hidden, layers=2))
class Estimate(SilentReporter):  # says only bptt's own activation estimate
    def start(self, plan): print(plan.get("full_bptt_activation_bytes", 0))
config = TrainConfig(window=window, batch_size=batch, epochs=1, log_every=1000)
Trainer(model, config, torch.device("cpu"), Estimate(), None, lambda record: None).fit(*mapped_streams(ids, batch))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=10**4)
    parser.add_argument("--long", type=int, default=10**6)
    parser.add_argument("--tbptt-hidden", type=int, default=64)
    parser.add_argument("--full-steps", default="1000,2000,4000,8000")
    parser.add_argument("--full-batch", type=int, default=4)
    parser.add_argument("--full-hidden", type=int, default=256)
    args = parser.parse_args()
    mb = 1 << 20

    def run(steps: int, batch: int, window: int, hidden: int):
        seconds, rss, _ = peak_memory([sys.executable, "-c", RUN, str(steps), str(batch), str(window), str(hidden)])
        return seconds, rss

    print(f"truncated BPTT, window 50, batch 1, LSTM 2x{args.tbptt_hidden}, one epoch:")
    short, long = run(args.short, 1, 50, args.tbptt_hidden), run(args.long, 1, 50, args.tbptt_hidden)
    for steps, (seconds, rss) in ((args.short, short), (args.long, long)):
        print(f"  {steps:>9,} steps: peak RSS {rss / mb:7,.1f} MiB ({seconds:.1f} s)")
    print(f"  ratio of peak RSS, {args.long:,} / {args.short:,} steps: {long[1] / short[1]:.3f}")

    print(f"full BPTT (--window 0), batch {args.full_batch}, LSTM 2x{args.full_hidden}:")
    from bptt_cli.models import ModelConfig, RecurrentModel
    from bptt_cli.memory import activation_bytes

    model = RecurrentModel(ModelConfig("lstm", 64, 64, hidden=args.full_hidden, layers=2))
    base = run(args.short, 1, 50, args.full_hidden)[1]  # the same model, truncated: what is not activations
    for steps in map(int, args.full_steps.split(",")):
        _, rss = run(steps, args.full_batch, 0, args.full_hidden)
        estimate = activation_bytes(model.config, steps, args.full_batch)
        print(f"  {steps:>6,} steps: peak RSS {rss / mb:7,.0f} MiB, above truncated {(rss - base) / mb:7,.0f} MiB, "
              f"bptt's estimate {estimate / mb:7,.0f} MiB, measured / estimate {(rss - base) / estimate:.2f}")


if __name__ == "__main__":
    main()
