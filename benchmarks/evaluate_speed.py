"""``bptt evaluate`` on text: many streams side by side (the default) against one exact stream (``--exact``).

Scores the first --chars characters of DATA (all of it by default) with the
model in MODEL both ways, and the exact way a second time as the A/A control,
alternating round after round. Prints each way's time per token (best of the
rounds), its ratio to the exact stream and its bits per token's distance from
the exact figure. --ways tries other STREAMSxCONTEXT choices beside the default.
On a CPU with bf16 arithmetic each way also runs with the recurrence in bf16
(the decoder and the loss in fp32), which ``bptt evaluate`` takes there for the LSTM.

    python benchmarks/evaluate_speed.py speed.pt --data sample_data/shakespeare.txt --chars 300000
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from bptt_cli.device import cpu_has_bf16
from bptt_cli.evaluation import (
    EVALUATE_CONTEXT,
    EVALUATE_STREAMS,
    scoring_precision,
    stream_count,
    token_loss,
)
from bptt_cli.modelfile import load_model_file
from bptt_cli.text import read_text


def cpu_line() -> str:
    """The CPU's model name and the flags that decide the speed of its matmuls."""
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        info = cpuinfo.read()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name}; flags {' '.join(wanted) or 'none of avx2 fma avx512f avx512_bf16 amx_bf16'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", default="sample_data/shakespeare.txt")
    parser.add_argument("--chars", type=int, default=0, help="score only the first this many characters (0: all)")
    parser.add_argument("--tail", type=float, default=0.0, help="score only this last share of the text (0: all)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ways", default="", help="more STREAMSxCONTEXT to try, comma-separated, e.g. 32x512")
    args = parser.parse_args()
    file = load_model_file(args.model)
    text = read_text(args.data, file.tokenizer.kind)
    if args.tail:
        text = text[int(len(text) * (1 - args.tail)):]
    if args.chars:
        text = text[: args.chars]
    ids = file.tokenizer.encode(text)[0]
    model = file.model
    cpu = torch.device("cpu")
    default = f"{EVALUATE_STREAMS}x{EVALUATE_CONTEXT}"
    runs_here = scoring_precision(cpu, "auto", model.config.cell, exact=False)  # what bptt evaluate takes here
    ways = {"exact": (1, 0, "fp32"), "exact again (A/A)": (1, 0, "fp32")}
    for way in dict.fromkeys([default, *filter(None, args.ways.split(","))]):
        streams, context = map(int, way.split("x"))
        streams = stream_count(len(ids) - 1, streams, context)
        for precision in ("fp32", "bf16") if cpu_has_bf16() else ("fp32",):
            name = f"{streams} streams x {context} context {precision}"
            if way == default and precision == runs_here:
                name += " (default)"
            ways[name] = (streams, context, precision)
    seconds = {name: math.inf for name in ways}
    bits = {}
    for _ in range(args.rounds):
        for name, (streams, context, precision) in ways.items():
            start = time.perf_counter()
            total, count = token_loss(model, ids, cpu, precision, streams, context)
            seconds[name] = min(seconds[name], time.perf_counter() - start)
            bits[name] = total / count / math.log(2)
    print(f"{args.data}: {len(text):,} characters, {len(ids):,} tokens; model {file.model.config.cell} "
          f"{file.model.config.layers}x{file.model.config.hidden}; threads {torch.get_num_threads()}; "
          f"best of {args.rounds} rounds")
    print(f"CPU: {cpu_line()}")
    exact = seconds["exact"]
    for name in ways:
        print(f"{name:40s} {seconds[name] / len(ids) * 1e6:8.2f} us/token  {seconds[name]:7.2f} s  "
              f"speed {exact / seconds[name]:6.2f}x  bits/token {bits[name]:.8f}  "
              f"difference {abs(bits[name] - bits['exact']):.1e}")


if __name__ == "__main__":
    main()
