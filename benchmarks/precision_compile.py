"""bf16 autocast and torch.compile against fp32 eager, on the training loop of train_throughput.py.

Each variant trains the same model on the same data; they alternate round
after round. bf16 is measured here even where ``bptt train --precision bf16``
refuses it (a CPU without bf16 arithmetic), to show why it refuses.

    python benchmarks/precision_compile.py --model lstm --hidden 256 --layers 2
"""

from __future__ import annotations

import time

import torch
from torch import nn

from bptt_cli.models import ModelConfig, RecurrentModel

from common import batchify, char_ids, model_arguments
from train_throughput import plain_loop


class Autocast(nn.Module):
    """The model with its forward pass under bf16 autocast."""

    def __init__(self, model: RecurrentModel):
        super().__init__()
        self.model = model
        self.init_state = model.init_state

    def forward(self, x, state):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, state = self.model(x, state)
        return logits.float(), tuple(s.float() for s in state)


def main() -> None:
    parser = model_arguments(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--bf16-steps", type=int, default=3, help="bf16 is slow where emulated: fewer updates")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tokenizer, ids = char_ids(args.data)
    streams = batchify(ids, args.batch_size)
    config = ModelConfig(args.model, tokenizer.size, tokenizer.size, embed=args.embed, hidden=args.hidden,
                         layers=args.layers)

    def fresh() -> RecurrentModel:
        torch.manual_seed(0)
        return RecurrentModel(config)

    variants = {
        "fp32 eager": (fresh, args.steps),
        "bf16 autocast": (lambda: Autocast(fresh()), args.bf16_steps),
        "fp32 torch.compile": (lambda: torch.compile(fresh()), args.steps),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (make, steps) in variants.items():
            model = make()
            try:
                plain_loop(model, streams, args.window, 3)  # warm-up (and compilation)
            except Exception as err:  # e.g. oneDNN's LSTM refusing bf16 on this CPU
                print(f"{name}: fails here: {str(err).splitlines()[0][:160]}")
                rates[name].append(0.0)
                continue
            start = time.perf_counter()
            plain_loop(model, streams, args.window, steps)
            rates[name].append(steps * args.window * args.batch_size / (time.perf_counter() - start))
    base = max(rates["fp32 eager"])
    print(f"model {args.model} {args.layers}x{args.hidden}, window {args.window}, batch {args.batch_size}, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    for name, values in rates.items():
        print(f"{name:20s} {max(values):10,.0f} tokens/s  speed vs fp32 eager {max(values) / base:.3f}")


if __name__ == "__main__":
    main()
