"""Averaged weights for evaluation: an exponential moving average (``--average ema:0.999``) or, for AWD's
NT-ASGD, the plain mean of the weights from the update averaging began.

The average is updated after every optimizer step with one ``torch._foreach_lerp_`` over the parameters,
on the device, with a weight the host knows (no sync). Validation, and so the model file, use the averaged
weights (``swapped_in``); training goes on from the weights as trained, and a checkpoint holds both.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from bptt_cli.errors import BpttError

EMA_WARMUP = 10  # the EMA's decay is min(decay, (1 + n) / (10 + n)) after n updates: early weights fade fast


def parse_average(text: str | None) -> float | None:
    """``ema:DECAY`` -> DECAY in (0, 1); None or ``none`` -> None (no averaging)."""
    if text is None or text == "none":
        return None
    kind, _, value = text.partition(":")
    try:
        decay = float(value)
    except ValueError:
        decay = -1.0
    if kind != "ema" or not 0.0 < decay < 1.0:
        raise BpttError(f"--average takes ema:DECAY with DECAY between 0 and 1 (e.g. ema:0.999) or none, got {text!r}")
    return decay


class WeightAverage:
    """An average of ``params``: exponential with ``decay``, or the plain mean from ``start`` with None."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float | None):
        self.params = params
        self.decay = decay
        self.count = 0  # updates averaged so far
        self.values: list[torch.Tensor] | None = None  # None until averaging starts

    @property
    def started(self) -> bool:
        return self.values is not None

    @torch.no_grad()
    def start(self) -> None:
        """Begin the average at the weights as they stand."""
        self.values, self.count = [p.detach().clone() for p in self.params], 1

    @torch.no_grad()
    def update(self) -> None:
        """Fold the weights after an optimizer step into the average, once it has begun."""
        if self.values is None:
            return
        self.count += 1
        if self.decay is None:
            weight = 1.0 / self.count
        else:
            weight = 1.0 - min(self.decay, (1 + self.count) / (EMA_WARMUP + self.count))
        torch._foreach_lerp_(self.values, [p.detach() for p in self.params], weight)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside (once averaging has begun), its own after."""
        if self.values is None:
            yield
            return
        with torch.no_grad():
            held = [p.detach().clone() for p in self.params]
            torch._foreach_copy_([p.data for p in self.params], self.values)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], held)

    def state_dict(self) -> dict:
        values = None if self.values is None else [v.detach().cpu() for v in self.values]
        return {"count": self.count, "values": values}

    def load_state_dict(self, saved: dict) -> None:
        values = saved["values"]
        if values is not None and [tuple(v.shape) for v in values] != [tuple(p.shape) for p in self.params]:
            raise ValueError("the averaged weights do not fit the model")
        self.count = saved["count"]
        self.values = None if values is None else [v.to(p.device, p.dtype) for v, p in zip(values, self.params)]
