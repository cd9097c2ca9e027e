"""Where the time of one bptt training update goes (LSTM 2x256 by default), by the operators torch's profiler sees.

Runs ``Trainer.fit`` as ``bptt train`` runs it (diagnostics on, fused AdamW, freed
memory kept for reuse) under ``torch.profiler`` for ``--steps`` updates after
``--warmup``, and sums each operator's own CPU time (``self_cpu_time_total``)
into the parts of an update: the fused recurrent kernels (oneDNN's LSTM forward
and backward), the decoder's matmuls, the softmax cross-entropy, the embedding
and its backward, dropout, clipping and the diagnostics' norms, the optimizer,
and every other operator. What the profiler does not see (Python between the
operators, autograd's bookkeeping) is the wall time of the updates less that sum.
The profiler's own overhead inflates the small operators, so the shares are a
map of the update, not a speed figure: speeds come from the benchmarks with an
A/A control.

    python benchmarks/update_profile.py
    python benchmarks/update_profile.py --model gru
"""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from bptt_cli.allocator import keep_freed_memory
from bptt_cli.device import set_threads
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.streams import mapped_streams
from bptt_cli.trainer import SilentReporter, TrainConfig, Trainer

from common import char_ids, machine_line, model_arguments

PARTS = (  # (part, substrings of operator names), first match wins
    ("recurrent kernels (forward + backward)", ("mkldnn_rnn", "_gruwindow", "gru_cell", "lstm_cell", "rnn_tanh")),
    ("softmax cross-entropy", ("log_softmax", "nll_loss", "cross_entropy")),
    ("embedding (+ backward)", ("embedding",)),
    ("dropout", ("dropout", "bernoulli")),
    ("optimizer (fused AdamW)", ("adam",)),
    ("clipping and gradient norms", ("norm", "clip", "_foreach", "stack")),
    ("decoder and other matmuls", ("addmm", "aten::mm", "matmul", "linear", "aten::bmm")),
    ("copies, views and fills", ("copy_", "contiguous", "zero_", "fill_", "clone", "view", "reshape", "transpose",
                                 "permute", "select", "slice", "cat", "to", "empty", "detach", "as_strided")),
)
OTHER, UNSEEN = "other operators (elementwise, sums, ...)", "not in any operator (Python, autograd, gaps)"


class _Timed(SilentReporter):
    """Notes the wall-clock moment of each update's end."""

    def __init__(self):
        self.moments: list[float] = []

    def step(self, step: int, epoch: int) -> None:
        self.moments.append(time.perf_counter())


def part_of(name: str) -> str:
    lowered = name.lower()
    return next((part for part, keys in PARTS if any(key in lowered for key in keys)), OTHER)


def main() -> None:
    parser = model_arguments(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    keep_freed_memory()
    set_threads(args.threads)
    tokenizer, ids = char_ids(args.data)
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig(args.model, tokenizer.size, tokenizer.size, embed=args.embed,
                                       hidden=args.hidden, layers=args.layers))
    inputs, targets = mapped_streams(ids, args.batch_size)
    warm = TrainConfig(window=args.window, batch_size=args.batch_size, max_steps=args.warmup, epochs=10**6)
    Trainer(model, warm, torch.device("cpu"), SilentReporter(), None, lambda record: None).fit(inputs, targets)
    timed = _Timed()
    config = TrainConfig(window=args.window, batch_size=args.batch_size, max_steps=args.steps, epochs=10**6)
    trainer = Trainer(model, config, torch.device("cpu"), timed, None, lambda record: None)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        began = time.perf_counter()
        trainer.fit(inputs, targets)
    wall_us = (timed.moments[-1] - began) * 1e6
    parts: dict[str, float] = {}
    for event in prof.key_averages():
        parts[part_of(event.key)] = parts.get(part_of(event.key), 0.0) + event.self_cpu_time_total
    seen = sum(parts.values())  # self time on the calling thread: an op's intra-op threads are not added up
    parts[UNSEEN] = max(0.0, wall_us - seen)
    print(machine_line())
    print(f"{args.model} {args.layers}x{args.hidden}, embed {args.embed}, window {args.window}, batch "
          f"{args.batch_size}; {args.steps} profiled updates after {args.warmup}; wall "
          f"{wall_us / args.steps / 1e3:.1f} ms per update under the profiler")
    total = max(wall_us, seen)
    for part, spent in sorted(parts.items(), key=lambda item: -item[1]):
        print(f"  {part:45s} {spent / args.steps / 1e3:7.2f} ms  {100 * spent / total:5.1f} %")
    print("\nlargest operators outside the recurrent kernels:")
    others = [e for e in prof.key_averages() if part_of(e.key) != PARTS[0][0]]
    for event in sorted(others, key=lambda e: -e.self_cpu_time_total)[:10]:
        print(f"  {event.key:45s} {event.self_cpu_time_total / args.steps / 1e3:7.2f} ms  x{event.count // args.steps}")


if __name__ == "__main__":
    main()
