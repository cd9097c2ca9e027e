"""Two costs inside a training update on the CPU: page faults of freed buffers, and dropout's mask.

- Page faults: the plain textbook loop (LSTM, AdamW) in two forked processes, one with glibc's
  defaults and one with freed memory kept for reuse as ``bptt`` keeps it
  (``bptt_cli.allocator``); minor page faults and the median time per update.
- Dropout: torch's ``F.dropout`` against ``bptt_cli.dropout.dropout`` on the three activations
  an update of this model drops out (embeddings, between the layers, before the decoder).

    python benchmarks/update_costs.py --model lstm --hidden 256 --layers 2
"""

from __future__ import annotations

import resource
import statistics
import time

import torch
from torch.nn import functional as F

from bptt_cli.allocator import keep_freed_memory
from bptt_cli.dropout import dropout
from bptt_cli.models import ModelConfig, RecurrentModel

from common import batchify, char_ids, model_arguments
from train_throughput import Clock, in_own_process, plain_loop

WARMUP = 5  # untimed updates first


def main() -> None:
    parser = model_arguments(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tokenizer, ids = char_ids(args.data)  # numpy only before forking
    config = ModelConfig(args.model, tokenizer.size, tokenizer.size, embed=args.embed, hidden=args.hidden,
                         layers=args.layers)

    def updates(keep: bool) -> tuple[float, float]:
        if keep:
            keep_freed_memory()
        torch.manual_seed(0)
        model, streams = RecurrentModel(config), batchify(ids, args.batch_size)
        clock, faults = Clock(), []

        def tick():  # one run, as train_throughput times it: glibc's state carries from update to update
            clock.tick()
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)

        plain_loop(model, streams, args.window, WARMUP + args.steps, tick)
        return (faults[-1] - faults[WARMUP - 1]) / args.steps, statistics.median(clock.durations[WARMUP:])

    def dropouts() -> dict[str, float]:
        torch.manual_seed(0)
        shapes = [(args.window, args.batch_size, args.embed)] + [(args.window, args.batch_size, args.hidden)] * args.layers
        xs = [torch.randn(shape) for shape in shapes]
        best = {}
        for name, drop in (("torch", lambda x: F.dropout(x, 0.2, True)), ("bptt", lambda x: dropout(x, 0.2, True))):
            times = []
            for _ in range(20):
                start = time.perf_counter()
                for x in xs:
                    drop(x)
                times.append(time.perf_counter() - start)
            best[name] = min(times)
        return best

    results = {"glibc defaults": [], "freed memory kept": []}
    drops = []
    for _ in range(args.rounds):
        for name in results:
            results[name].append(in_own_process(updates, name != "glibc defaults"))
        drops.append(in_own_process(dropouts))
    print(f"{args.model} {args.layers}x{args.hidden}, window {args.window}, batch {args.batch_size}, plain loop, "
          f"{args.rounds} rounds of {args.steps} updates")
    for name, values in results.items():
        faults = statistics.median(v[0] for v in values)
        seconds = statistics.median(v[1] for v in values)
        print(f"  {name:18s} {faults:9,.0f} minor page faults per update, median update {seconds * 1e3:6.1f} ms")
    base, kept = (statistics.median(v[1] for v in results[k]) for k in results)
    print(f"  update time, defaults / kept: {base / kept:.3f}")
    torch_ms = min(d["torch"] for d in drops) * 1e3
    bptt_ms = min(d["bptt"] for d in drops) * 1e3
    print(f"dropout 0.2 on the {args.layers + 1} activations of an update: torch {torch_ms:.2f} ms, "
          f"bptt {bptt_ms:.2f} ms ({torch_ms / bptt_ms:.1f}x); torch's is {torch_ms / (kept * 1e3):.1%} of a kept update")


if __name__ == "__main__":
    main()
