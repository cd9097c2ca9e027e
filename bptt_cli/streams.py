"""Cutting one long token stream into B parallel streams, and those into windows.

A (memory-mapped) token array is laid out in columns by ``mapped_streams``,
with strides over the array rather than a copy of it.

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


class MappedStreams:
    """Time-major (T, B) streams laid over a flat id array without copying it.

    Column b is ``ids[b * L + offset :]``, as the drawing at the top shows; the
    trainer slices it along time, and only then does a window become an int64
    tensor on the device. To the trainer it stands where a (T, B) tensor would:
    it has ``shape``, ``to(device)`` and time slicing.
    """

    def __init__(self, view: np.ndarray, device: torch.device | None = None):
        self.view = view  # (T, B) strided view of the mapped ids
        self.shape = torch.Size(view.shape)
        self.device = device or torch.device("cpu")

    def to(self, device: torch.device | str) -> "MappedStreams":
        return MappedStreams(self.view, torch.device(device))

    def __len__(self) -> int:
        return self.shape[0]

    def select_streams(self, begin: int, end: int) -> "MappedStreams":
        """Streams [begin, end) only: a distributed rank's share, still without a copy."""
        return MappedStreams(self.view[:, begin:end], self.device)

    def __getitem__(self, steps: slice) -> torch.Tensor:
        if not isinstance(steps, slice):
            raise TypeError("MappedStreams takes a slice of steps")
        window = torch.from_numpy(self.view[steps].astype(np.int64))  # (K, B): the one copy, window-sized
        return window.to(self.device, non_blocking=True)


def mapped_streams(ids: np.ndarray, batch_size: int) -> tuple[MappedStreams, MappedStreams]:
    """Inputs (rows 0 .. L-1) and targets (rows 1 .. L) over ``ids`` in B columns, with no copy of the data."""
    if batch_size < 1:
        raise BpttError(f"--batch-size must be at least 1, got {batch_size}")
    length = (len(ids) - 1) // batch_size
    if length < 1:
        raise BpttError(f"{len(ids)} tokens cannot fill {batch_size} streams; use a smaller --batch-size or more data")
    item = ids.strides[0]
    view = np.lib.stride_tricks.as_strided(ids, shape=(length + 1, batch_size), strides=(item, length * item),
                                           writeable=False)  # (L + 1, B)
    return MappedStreams(view[:-1]), MappedStreams(view[1:])


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
