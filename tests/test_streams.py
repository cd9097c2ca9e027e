"""Cutting a token stream into parallel streams and windows."""

import numpy as np
import pytest
import torch

from bptt_cli.errors import BpttError
from bptt_cli.streams import Window, mapped_streams, plan_windows


def test_columns_are_contiguous_and_share_one_token():
    """The drawing at the top of streams.py: 13 tokens in 3 columns of 4 steps."""
    inputs, targets = mapped_streams(np.arange(13), 3)
    assert inputs.shape == targets.shape == (4, 3)
    assert inputs[0:4][:, 0].tolist() == [0, 1, 2, 3] and targets[0:4][:, 0].tolist() == [1, 2, 3, 4]
    assert inputs[0:4][:, 1].tolist() == [4, 5, 6, 7]
    # every token after the first is a target exactly once
    assert targets[0:4].t().flatten().tolist() == list(range(1, 13))


def test_more_streams_than_tokens_are_refused():
    with pytest.raises(BpttError, match="cannot fill 10 streams"):
        mapped_streams(np.arange(5), 10)


def test_windows_tile_the_stream_without_overlap():
    windows = plan_windows(10, 4)
    assert windows == [Window(0, 4, 0, 4), Window(4, 8, 4, 8), Window(8, 10, 8, 10)]


def test_strided_windows_take_stride_new_steps_and_look_back_window_steps():
    windows = plan_windows(12, 5, stride=2)
    losses = [(w.loss_from, w.end) for w in windows]
    assert losses == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12)]  # every step scored once
    assert all(w.end - w.start == min(5, w.end) for w in windows)  # back-propagates K steps once possible
    for before, after in zip(windows, windows[1:]):
        assert after.start == before.carry  # the next window starts where the state was kept


def test_full_bptt_is_one_window():
    assert plan_windows(37, 0) == [Window(0, 37, 0, 37)]


def test_jitter_moves_cut_points_but_covers_every_step_once():
    a = plan_windows(1000, 20, jitter=0.3, generator=np.random.default_rng(1))
    b = plan_windows(1000, 20, jitter=0.3, generator=np.random.default_rng(2))
    for windows in (a, b):
        assert windows[0].start == 0 and windows[-1].end == 1000
        assert all(x.end == y.start for x, y in zip(windows, windows[1:]))
        assert all(10 <= w.end - w.start <= 40 for w in windows[:-1])
    assert [w.end for w in a] != [w.end for w in b]


def test_stride_longer_than_window_is_refused():
    with pytest.raises(BpttError, match="--stride"):
        plan_windows(100, 5, stride=6)


def test_windows_of_mapped_streams_are_int64():
    inputs, _ = mapped_streams(np.arange(20, dtype=np.uint8), 2)
    assert inputs[0:3].dtype == torch.int64


def test_a_long_epoch_is_planned_as_arrays_not_a_list_of_objects():
    plan = plan_windows(10_000_000, 50)
    assert len(plan) == 200_000
    assert plan[0] == Window(0, 50, 0, 50) and plan[-1] == Window(9_999_950, 10_000_000, 9_999_950, 10_000_000)
    assert plan.ends.nbytes + plan.loss_from.nbytes == 200_000 * 16  # two int64 arrays, nothing per window
