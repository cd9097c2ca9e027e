"""Dropout with a mask that is cheap to draw on the CPU.

torch's CPU dropout draws one Mersenne-Twister number per element through
``bernoulli_``: for the three activations of an LSTM 2x256 update 9.3 ms, 14 %
of the update. Drawing 64-bit words and reading each as four 16-bit uniforms
takes 2.1 ms (``benchmarks/update_costs.py``). The
keep probability is therefore a multiple of 1/65536 (p = 0.2 drops 13107/65536
= 0.199997 of the elements). The draws come from torch's default generator, so
``torch.manual_seed`` and checkpointed RNG state reproduce them. Other devices
keep torch's own fused dropout.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

_LEVELS = 1 << 16


def keep_threshold(p: float) -> int:
    """The smallest signed 16-bit draw that keeps an element: a share ``p`` of draws fall below it."""
    return round(p * _LEVELS) - _LEVELS // 2


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p), when training."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    count = x.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)
    draws = words.view(torch.int16)[:count].view(x.shape)
    scale = (draws >= keep_threshold(p)).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * scale
