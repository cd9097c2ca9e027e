"""Is there a faster GRU than torch's builtin nn.GRU on this CPU? Forward + backward of one training window.

nn.GRU has no oneDNN fused training kernel on CPU (nn.LSTM has), so the
candidates are the ones the issue names:

- projected: one large input projection for the whole window (one matmul of
  (K*B, in) x (in, 3H)), then per step only the recurrent product and the gates;
- projected + torch.compile: the same step function compiled by inductor, so
  the gate arithmetic fuses into one kernel per step;
- whole window compiled: the whole projected window, unrolled and compiled.

Each is timed against nn.GRU in the same run, alternating, and checked to
compute the same outputs. bptt would switch only if one wins.

    python benchmarks/gru_paths.py --hidden 256 --layers 2
    python benchmarks/gru_paths.py --hidden 1024 --layers 1
"""

from __future__ import annotations

import time
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from common import model_arguments


def gru_step(gx: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """One GRU step from the precomputed input gates gx (B, 3H); the same equations as nn.GRU."""
    gh = F.linear(h, w_hh, b_hh)  # (B, 3H): the only product left per step
    xr, xz, xn = gx.chunk(3, 1)
    hr, hz, hn = gh.chunk(3, 1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return n + z * (h - n)


def projected_gru(gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor, step=gru_step) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.GRU's computation with the input projection done once per layer for the whole window."""
    finals = []
    for layer in range(gru.num_layers):
        w_ih, w_hh = getattr(gru, f"weight_ih_l{layer}"), getattr(gru, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(gru, f"bias_ih_l{layer}"), getattr(gru, f"bias_hh_l{layer}")
        gates = F.linear(x, w_ih, b_ih)  # (K, B, 3H): one matmul for every step
        h, outputs = h0[layer], []
        for t in range(x.shape[0]):
            h = step(gates[t], h, w_hh, b_hh)
            outputs.append(h)
        x = torch.stack(outputs)
        finals.append(h)
    return x, torch.stack(finals)


def time_window(run, x: torch.Tensor, h0: torch.Tensor, repeats: int) -> float:
    """Seconds per forward + backward of one window (best of ``repeats``)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out, h = run(x, h0)
        (out.square().mean() + h.mean()).backward()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = model_arguments(__doc__.splitlines()[0], cells=("gru",))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    gru = nn.GRU(args.embed, args.hidden, args.layers)
    x = torch.randn(args.window, args.batch_size, args.embed)
    h0 = torch.zeros(args.layers, args.batch_size, args.hidden)
    compiled_step = torch.compile(gru_step, dynamic=False)
    paths = {
        "nn.GRU": lambda x, h: gru(x, h),
        "projected": lambda x, h: projected_gru(gru, x, h),
        "projected + compile": lambda x, h: projected_gru(gru, x, h, compiled_step),
        "whole window compiled": torch.compile(lambda x, h: projected_gru(gru, x, h), dynamic=False),
    }
    with torch.no_grad():
        reference, _ = gru(x, h0)
        for name, run in paths.items():
            try:
                out, _ = run(x, h0)
                print(f"{name}: max |difference| from nn.GRU {float((out - reference).abs().max()):.2e}")
            except Exception as err:  # torch.compile needs a working C++ toolchain
                warnings.warn(f"{name} does not run here: {str(err).splitlines()[0][:120]}")
                del paths[name]
                break
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, run in paths.items():
            time_window(run, x, h0, 2)  # warm-up (and compilation)
            seconds[name].append(time_window(run, x, h0, args.repeats))
    base = min(seconds["nn.GRU"])
    tokens = args.window * args.batch_size
    print(f"GRU {args.layers}x{args.hidden}, embed {args.embed}, window {args.window}, batch {args.batch_size}, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    for name, values in seconds.items():
        print(f"{name:22s} {tokens / min(values):10,.0f} tokens/s  speed vs nn.GRU {base / min(values):.3f}")


if __name__ == "__main__":
    main()
