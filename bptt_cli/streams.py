"""Cutting one long token stream into B parallel streams, and those into windows.

One stream of N tokens becomes B columns of L + 1 tokens, time-major, where
neighbouring columns share one token so that every target is predicted once::

    tokens:  a b c d e f g h i j k l m    (N = 13, B = 3, L = (N - 1) // B = 4)

    column:   0  1  2
    step 0    a  e  i
    step 1    b  f  j
    step 2    c  g  k       inputs  = rows 0 .. L-1
    step 3    d  h  l       targets = rows 1 .. L
    step 4    e  i  m

Each update of truncated BPTT takes the next rows of every column (a window),
starting from the state the previous window left, detached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bptt_cli.errors import BpttError


def batchify(ids: np.ndarray, batch_size: int) -> torch.Tensor:
    """Token ids (N,) -> time-major streams (L + 1, B), int64; the ragged tail is dropped."""
    if batch_size < 1:
        raise BpttError(f"--batch-size must be at least 1, got {batch_size}")
    length = (len(ids) - 1) // batch_size
    if length < 1:
        raise BpttError(
            f"{len(ids)} tokens cannot fill {batch_size} streams; use a smaller --batch-size or more data"
        )
    flat = torch.from_numpy(np.ascontiguousarray(ids[: length * batch_size + 1]).astype(np.int64))
    return flat.unfold(0, length + 1, length).t().contiguous()  # (L + 1, B)


def tail_cut(length: int, fraction: float) -> int:
    """Where the chronological validation tail of ``length`` steps begins (never shuffled)."""
    if not 0 <= fraction < 1:
        raise BpttError(f"--val-fraction must be in [0, 1), got {fraction}")
    return length - int(round(length * fraction))


@dataclass(frozen=True)
class Window:
    """One truncated-BPTT update over input steps [start, end).

    The model runs from the state carried into ``start``; the loss covers steps
    [loss_from, end); the state entering step ``carry`` is detached and starts the
    next window. Without overlap ``carry == end`` and ``loss_from == start``.
    """

    start: int
    carry: int
    loss_from: int
    end: int


def plan_windows(
    steps: int,
    window: int,
    stride: int | None = None,
    jitter: float = 0.0,
    generator: np.random.Generator | None = None,
) -> "WindowPlan":
    """The windows of one epoch over ``steps`` input steps: TBPTT(k1=stride, k2=window).

    Each update takes ``stride`` new steps (the loss covers them) and back-propagates
    through them plus the ``window - stride`` steps before them. ``window == 0``
    means full BPTT: one window over the whole stream. ``jitter`` > 0 draws each
    update's new-step count from a normal around ``stride`` (standard deviation
    ``jitter * stride``, clamped to [stride / 2, 2 * stride]) so cut points move
    between epochs.
    """
    if window == 0:
        return WindowPlan(np.array([0]), np.array([steps]), 0)
    stride = window if stride is None else stride
    if window < 1 or not 1 <= stride <= window:
        raise BpttError(f"--stride must be between 1 and --window ({window}), got {stride}")
    if jitter < 0:
        raise BpttError(f"--window-jitter must be 0 or more, got {jitter}")
    overlap = window - stride
    if jitter > 0:
        rng = generator or np.random.default_rng()
        count = math.ceil(steps / max(1, stride // 2)) + 1
        draws = rng.normal(stride, jitter * stride, size=count)
        news = np.clip(np.rint(draws), max(1, stride // 2), 2 * stride).astype(np.int64)
    else:
        news = np.full(math.ceil(steps / stride), stride, dtype=np.int64)
    ends = np.minimum(np.cumsum(news), steps)
    ends = ends[: int(np.searchsorted(ends, steps)) + 1]
    return WindowPlan(np.concatenate(([0], ends[:-1])), ends, overlap)


class WindowPlan(Sequence[Window]):
    """An epoch's windows held as two integer arrays, made into ``Window`` objects one at a time.

    A list of objects would cost ~280 bytes per update: 170 MB for a 1 GB text.
    """

    def __init__(self, loss_from: np.ndarray, ends: np.ndarray, overlap: int):
        self.loss_from, self.ends, self.overlap = loss_from, ends, overlap

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        p, e = int(self.loss_from[i]), int(self.ends[i])
        return Window(max(0, p - self.overlap), max(0, e - self.overlap), p, e)

    def __eq__(self, other) -> bool:
        return list(self) == list(other)
