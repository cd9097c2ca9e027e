"""Scoring a text: one exact stream, or streams side by side that each read some context first."""

import numpy as np
import pytest
import torch

from bptt_cli.evaluation import token_loss
from bptt_cli.models import ModelConfig, RecurrentModel

CPU = torch.device("cpu")


@pytest.fixture
def model_and_ids():
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig("lstm", 12, 12, embed=6, hidden=10, layers=2))
    ids = np.random.default_rng(0).integers(0, 12, size=2001).astype(np.uint8)
    return model, ids


def test_each_stream_scores_its_part_after_reading_the_context_before_it(model_and_ids):
    model, ids = model_and_ids
    streams, context = 4, 100
    total, count = token_loss(model, ids, CPU, streams=streams, context=context)
    assert count == len(ids) - 1
    expected = 0.0
    for first in range(0, 2000, 500):  # 2000 predictions in 4 parts of 500
        begin = max(0, first - context)
        whole, _ = token_loss(model, ids[begin : first + 501], CPU)  # one exact stream over context + part
        lead, _ = token_loss(model, ids[begin : first + 1], CPU) if first else (0.0, 0)
        expected += whole - lead
    assert total == pytest.approx(expected, rel=1e-5)


def test_the_shares_of_the_streams_add_up_to_the_whole(model_and_ids):
    model, ids = model_and_ids
    whole = token_loss(model, ids, CPU, streams=5, context=50)
    parts = [token_loss(model, ids, CPU, streams=5, context=50, share=(k, 3)) for k in range(3)]
    assert [c for _, c in parts] == [400, 800, 800]  # streams 0 | 1, 2 | 3, 4 of 400 predictions each
    assert sum(c for _, c in parts) == whole[1] == 2000
    assert token_loss(model, ids, CPU, streams=5, context=50, share=(0, 8)) == (0.0, 0)  # more shares than streams
    assert sum(t for t, _ in parts) == pytest.approx(whole[0], rel=1e-6)


def test_side_by_side_streams_give_the_exact_figure_closely_and_never_a_negative_count(model_and_ids):
    model, ids = model_and_ids
    exact, n = token_loss(model, ids, CPU)
    near, m = token_loss(model, ids, CPU, streams=16, context=60)
    assert m == n and near / m == pytest.approx(exact / n, rel=1e-3)
    assert token_loss(model, ids[:11], CPU, streams=8)[1] == 10  # more streams than predictions per stream
    assert token_loss(model, ids[:11], CPU, streams=8, context=100)[1] == 10  # too short: one stream
