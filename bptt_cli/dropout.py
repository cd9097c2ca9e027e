"""Dropout with a mask that is cheap to draw on the CPU.

torch's CPU dropout draws one Mersenne-Twister number per element through
``bernoulli_``: for the three activations of an LSTM 2x256 update 9.3 ms, 14 %
of the update. Drawing 64-bit words and reading each as four 16-bit uniforms
takes 2.1 ms (``benchmarks/update_costs.py``). The
keep probability is therefore a multiple of 1/65536 (p = 0.2 drops 13107/65536
= 0.199997 of the elements). The draws come from torch's default generator, so
``torch.manual_seed`` and checkpointed RNG state reproduce them. Other devices
keep torch's own fused dropout.

The AWD-LSTM regularisers build on the same mask: a locked (variational) mask
of shape (1, B, F) drawn once per window and shared by its steps, a mask on
the hidden-to-hidden weights (weight drop), and one per embedding row (whole
words dropped). ``Regularisers`` says which a model applies while training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from bptt_cli.choices import DROPOUT_KINDS
from bptt_cli.errors import BpttError

_LEVELS = 1 << 16


def keep_threshold(p: float) -> int:
    """The smallest signed 16-bit draw that keeps an element: a share ``p`` of draws fall below it."""
    return round(p * _LEVELS) - _LEVELS // 2


@dataclass(frozen=True)
class Regularisers:
    """How a model drops while training (run options, not its shape: a model file does not store them)."""

    dropout_kind: str = "standard"  # one of DROPOUT_KINDS, for the model's --dropout
    weight_drop: float = 0.0  # DropConnect on each layer's hidden-to-hidden weights, one mask per window
    embed_dropout: float = 0.0  # whole embedding rows (words) dropped, one mask per window

    def validate(self) -> None:
        if self.dropout_kind not in DROPOUT_KINDS:
            raise BpttError(f"--dropout-kind is one of {', '.join(DROPOUT_KINDS)}, got {self.dropout_kind!r}")
        for name in ("weight_drop", "embed_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise BpttError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")


def keep_mask(shape: tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    """A mask of ``shape`` in ``like``'s dtype and device: 0 with probability ``p``, 1 / (1 - p) elsewhere."""
    if like.device.type != "cpu":
        return F.dropout(torch.ones(shape, dtype=like.dtype, device=like.device), p, training=True)
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)
    draws = words.view(torch.int16)[:count].view(shape)
    return (draws >= keep_threshold(p)).to(like.dtype).mul_(1.0 / (1.0 - p))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p), when training."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    return x * keep_mask(tuple(x.shape), p, x)
