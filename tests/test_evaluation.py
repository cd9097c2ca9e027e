"""Scoring a text: one exact stream, or streams side by side that each read some context first."""

import json

import numpy as np
import pytest
import torch
from conftest import SAMPLE_TEXT

import bptt_cli.device as device_module
from bptt_cli.errors import BpttError
from bptt_cli.evaluation import (
    EVALUATE_CONTEXT,
    EVALUATE_STREAMS,
    scoring_precision,
    summarise,
    token_loss,
)
from bptt_cli.modelfile import load_model_file
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.text import read_text

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


@pytest.fixture
def trained_text_model(tmp_path, run):
    """A small LSTM trained for 40 updates on 20k characters of the sample text, and 30k held-out characters.

    At a high rate (4.8 bits/char held out): at text's default rate and regularisers 40 updates leave it near
    uniform (5.25 bits), where bf16 streams drift 1.2e-4 bits from exact; a trained model drifts far less
    (benchmarks/evaluate_speed.py)."""
    text = SAMPLE_TEXT.read_text(encoding="utf-8")
    train, held_out = tmp_path / "train.txt", tmp_path / "held_out.txt"
    train.write_text(text[:20000], encoding="utf-8")
    held_out.write_text(text[-30000:], encoding="utf-8")
    out = tmp_path / "m.pt"
    code, _, err = run("train", train, "-o", out, "--max-steps", "40", "--hidden", "32", "--embed", "16",
                       "--layers", "2", "--batch-size", "8", "--window", "25", "--lr", "0.01")
    assert code == 0, err
    return out, held_out


def test_evaluate_in_streams_lands_within_1e4_bits_of_exact_and_says_how(trained_text_model, run):
    model, held_out = trained_text_model
    code, out, err = run("evaluate", model, held_out, "--json")
    assert code == 0, err
    fast = json.loads(out)
    code, out, err = run("evaluate", model, held_out, "--json", "--exact")
    assert code == 0, err
    exact = json.loads(out)
    assert fast["exact"] is False and fast["context"] == EVALUATE_CONTEXT
    assert fast["streams"] == min(EVALUATE_STREAMS, exact["tokens"] // (2 * EVALUATE_CONTEXT)) > 1
    assert exact["exact"] is True and exact["streams"] == 1 and exact["context"] == 0
    assert fast["tokens"] == exact["tokens"] > 29000
    assert abs(fast["bits_per_token"] - exact["bits_per_token"]) < 1e-4
    assert fast["bits_per_token"] != exact["bits_per_token"]  # really computed another way


def test_evaluate_exact_is_the_one_stream_figure_bit_for_bit(trained_text_model, run):
    model, held_out = trained_text_model
    file = load_model_file(model)
    ids, _ = file.tokenizer.encode(read_text(held_out, file.tokenizer.kind))
    expected = summarise(*token_loss(file.model, ids, CPU))  # what evaluate computed before it ran streams
    code, out, err = run("evaluate", model, held_out, "--json", "--exact")
    assert code == 0, err
    figures = json.loads(out)
    assert [figures[k] for k in ("loss", "perplexity", "bits_per_token")] == [
        expected[k] for k in ("loss", "perplexity", "bits_per_token")]


def test_evaluate_table_names_how_the_text_was_scored(trained_text_model, run):
    model, held_out = trained_text_model
    code, _, err = run("evaluate", model, held_out)
    assert code == 0 and f"after {EVALUATE_CONTEXT} tokens of context" in err and "--exact" in err
    code, _, err = run("evaluate", model, held_out, "--exact")
    assert code == 0 and "one stream, exact" in err


def test_a_text_too_short_for_two_streams_is_scored_exactly(tiny_model, tmp_path, run):
    short = tmp_path / "short.txt"
    short.write_text("ROMEO: a short line of text.\n", encoding="utf-8")
    code, out, _ = run("evaluate", tiny_model, short, "--json")
    figures = json.loads(out)
    assert code == 0 and figures["exact"] is True and figures["streams"] == 1 and figures["context"] == 0


def test_evaluate_takes_bf16_for_the_lstm_only_where_the_cpu_has_it_and_never_for_the_exact_figure(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)
    assert scoring_precision(CPU, "auto", "lstm", exact=False) == "bf16"
    assert scoring_precision(CPU, "auto", "lstm", exact=True) == "fp32"
    assert scoring_precision(CPU, "auto", "gru", exact=False) == "fp32"  # bptt's fp32 GRU kernel is faster
    assert scoring_precision(CPU, "bf16", "lstm", exact=True) == "bf16"  # asked for: as asked
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    assert scoring_precision(CPU, "auto", "lstm", exact=False) == "fp32"
    with pytest.raises(BpttError, match="no bf16 arithmetic"):
        scoring_precision(CPU, "bf16", "lstm", exact=False)


def test_bf16_scoring_runs_the_recurrence_in_bf16_and_the_decoder_in_fp32(model_and_ids, monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)  # emulated where the CPU lacks it: slow, not wrong
    model, ids = model_and_ids
    seen = {}

    def record(name, tensor):
        seen.setdefault(name, tensor.dtype)  # returns None, so the hooked module's output stays as it was

    model.rnn.register_forward_hook(lambda module, args, out: record("rnn", out[0]))
    model.decoder.register_forward_hook(lambda module, args, out: record("decoder", args[0]))
    total, n = token_loss(model, ids, CPU, "bf16", streams=4, context=50)
    exact, m = token_loss(model, ids, CPU)
    assert seen == {"rnn": torch.bfloat16, "decoder": torch.float32}
    assert n == m == 2000 and total / n != exact / m
    assert total / n == pytest.approx(exact / m, rel=1e-2)


def test_evaluate_says_when_the_recurrence_ran_in_bf16_and_stays_within_1e4_bits(trained_text_model, run,
                                                                                 monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)
    model, held_out = trained_text_model
    code, out, err = run("evaluate", model, held_out, "--json")
    assert code == 0, err
    fast = json.loads(out)
    code, out, err = run("evaluate", model, held_out, "--json", "--exact")
    exact = json.loads(out)
    assert fast["precision"] == "bf16" and exact["precision"] == "fp32"
    assert abs(fast["bits_per_token"] - exact["bits_per_token"]) < 1e-4
    code, _, err = run("evaluate", model, held_out)
    assert code == 0 and "the recurrence in bf16" in err
    code, out, err = run("evaluate", model, held_out, "--json", "--precision", "fp32")
    assert code == 0 and json.loads(out)["precision"] == "fp32"
    code, _, err = run("evaluate", model, held_out, "--exact", "--precision", "bf16")  # asked for: said so
    assert code == 0 and "one stream, exact; the recurrence in bf16" in err


def test_a_float64_model_is_scored_in_float64_throughout(model_and_ids):
    model, ids = model_and_ids
    single, n = token_loss(model, ids, CPU, streams=4, context=50)
    double, m = token_loss(model.double(), ids, CPU, streams=4, context=50)  # the decoder once got fp32 inputs
    assert n == m == 2000 and double == pytest.approx(single, rel=1e-5) and double != single
