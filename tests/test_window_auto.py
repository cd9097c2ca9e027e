"""--window auto (the window chosen from the data), --clip-value and --precision auto."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_audio import separable_set

import bptt_cli.device as device_module
import bptt_cli.trainer as trainer_module
from bptt_cli.errors import BpttError
from bptt_cli.gradcheck import choose_window, training_sample
from bptt_cli.losses import IGNORE_LABEL, class_loss, next_token_loss
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.series import SequenceBatches, pack
from bptt_cli.streams import Window
from bptt_cli.trainer import SilentReporter, TrainConfig, Trainer

SMALL = ["--hidden", "16", "--embed", "8", "--layers", "1", "--batch-size", "4", "--threads", "1"]


@pytest.fixture
def short_text(tiny_text):
    """1,200 characters: streams of 300 steps, so an epoch of --window auto's short windows stays quick."""
    tiny_text.write_text(tiny_text.read_text(encoding="utf-8")[:1200], encoding="utf-8")
    return tiny_text


VOCAB, LAG = 4, 40


def copy_task(lag: int, steps: int = 400, streams: int = 4, vocab: int = VOCAB):
    """Random tokens; the target at step t is the input ``lag`` steps before (0: the input at t itself)."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (steps + lag, streams), generator=generator)
    return tokens[lag:], tokens[:steps]


def delay_line(reads: int) -> RecurrentModel:
    """An RNN that holds the last LAG + 1 tokens in a shift register of slots and predicts from slot ``reads``:
    a model that has learned where the signal lies (a fresh model's gradient fades within a few steps,
    whatever the data). Small inputs keep tanh in its linear range, so the register carries the gradient."""
    model = RecurrentModel(ModelConfig("rnn", VOCAB, VOCAB, embed=VOCAB, hidden=VOCAB * (LAG + 1), layers=1))
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.embedding.weight.copy_(torch.eye(VOCAB))
        model.rnn.weight_ih_l0[:VOCAB].copy_(0.01 * torch.eye(VOCAB))  # the token enters slot 0
        model.rnn.weight_hh_l0[VOCAB:, :-VOCAB].copy_(torch.eye(VOCAB * LAG))  # slot j moves to slot j + 1
        model.decoder.weight[:, reads * VOCAB:(reads + 1) * VOCAB].copy_(100 * torch.eye(VOCAB))
    return model


def chosen(lag: int, fits=lambda window: True) -> dict:
    inputs, targets = copy_task(lag)
    return choose_window(delay_line(lag), training_sample(inputs, targets, None, next_token_loss), 0.9, fits)


def test_window_auto_takes_a_longer_window_where_the_signal_lies_further_back():
    near, far = chosen(0), chosen(LAG)
    assert near["window"] == 5 and near["cosine"] == pytest.approx(1.0, abs=1e-6)  # the shortest candidate
    assert far["window"] > LAG and far["reached"] and far["cosine"] >= 0.9
    shorter = [row["cosine"] for row in far["tried"] if row["window"] < LAG]
    assert shorter and max(shorter) < 0.5  # no window short of the lag reaches the gradient's direction
    assert far["passes"] == 1 + len(far["tried"])


def test_window_auto_stays_within_the_memory():
    choice = chosen(LAG, fits=lambda window: window <= 25)
    assert choice["window"] == 25
    assert choice["bounded_by_memory"] and not choice["reached"]


def test_window_auto_sample_is_evenly_spaced_streams_of_the_training_data():
    inputs, targets = copy_task(0, steps=500, streams=9)
    sample = training_sample(inputs, targets, None, next_token_loss)
    assert tuple(sample.inputs.shape) == (400, 4)
    torch.testing.assert_close(sample.inputs, inputs[:400, [0, 3, 5, 8]])


def test_clip_value_bounds_every_entry_and_reports_the_share_it_cut():
    torch.manual_seed(0)
    config = ModelConfig("rnn", 5, 5, embed=4, hidden=6, layers=1)
    model, twin = RecurrentModel(config), RecurrentModel(config)
    twin.load_state_dict(model.state_dict())
    inputs, targets = torch.randint(0, 5, (12, 2)), torch.randint(0, 5, (12, 2))
    limit = 0.02
    # the hand count: the same window's gradient on a copy of the model
    twin.zero_grad()
    logits, _ = twin(inputs, twin.init_state(2))
    next_token_loss(logits, targets).backward()
    grads = [p.grad for p in twin.parameters()]
    expected = sum(int((g.abs() > limit).sum()) for g in grads) / sum(g.numel() for g in grads)
    assert 0 < expected < 1

    logs = []

    class Logs(SilentReporter):
        def log(self, record):
            logs.append(record)

    trainer = Trainer(model, TrainConfig(window=12, clip=0.0, clip_value=limit, optimizer="sgd", lr=0.1,
                                         log_every=1, max_steps=1, epochs=1, batch_size=2),
                      torch.device("cpu"), Logs(), None, lambda record: None)
    trainer.update(Window(0, 12, 0, 12), inputs, targets, model.init_state(2))
    assert max(p.grad.abs().max().item() for p in model.parameters()) <= limit  # every entry within +-limit
    for p, g in zip(model.parameters(), grads):  # the entries within the limit are left alone
        inside = g.abs() <= limit
        torch.testing.assert_close(p.grad[inside], g[inside])
    assert trainer.values_clipped.item() == round(expected * sum(g.numel() for g in grads))

    model.load_state_dict(twin.state_dict())
    trainer.fit(torch.cat([inputs, inputs[:1]]), torch.cat([targets, targets[:1]]))  # 13 steps: one window of 12
    assert logs[0]["value_clip_share"] == pytest.approx(expected)


def test_clip_value_is_not_reported_when_off(short_text, tmp_path, run):
    code, _, err = run("train", short_text, "-o", tmp_path / "m.pt", "--max-steps", "2", "--log-every", "1",
                       "--window", "10", *SMALL)
    assert code == 0, err
    assert "clip_share=" in err and "value_clip_share" not in err
    code, _, err = run("train", short_text, "-o", tmp_path / "v.pt", "--max-steps", "2", "--log-every", "1",
                       "--window", "10", "--clip-value", "1e-4", *SMALL)
    assert code == 0, err
    shares = [float(part.split("=")[1]) for part in err.split() if part.startswith("value_clip_share=")]
    assert len(shares) == 2 and all(0 < share <= 1 for share in shares)


def test_precision_auto_is_bf16_only_where_the_cpu_has_it(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)
    assert device_module.resolve_precision(cpu, "auto") == "bf16"
    assert device_module.resolve_precision(cpu, "auto", "gru") == "fp32"  # its fp32 kernel beats bf16 nn.GRU
    assert device_module.resolve_precision(cpu, "bf16", "gru") == "bf16"  # asked for: given
    assert device_module.resolve_precision(cpu, "bf16") == "bf16"
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    assert device_module.resolve_precision(cpu, "auto") == "fp32"
    assert device_module.resolve_precision(cpu, "fp32") == "fp32"
    with pytest.raises(BpttError, match="no bf16 arithmetic"):
        device_module.resolve_precision(cpu, "bf16")


def test_precision_auto_trains_in_fp32_on_a_cpu_without_bf16_and_bf16_is_refused(monkeypatch, short_text, tmp_path,
                                                                                 run):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    code, _, err = run("train", short_text, "-o", tmp_path / "m.pt", "--max-steps", "1", "--precision", "bf16", *SMALL)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no bf16 arithmetic" in err
    out = tmp_path / "auto.pt"
    code, _, err = run("train", short_text, "-o", out, "--max-steps", "1", "--precision", "auto", "--window", "10",
                       "--checkpoint-every", "1", *SMALL)
    assert code == 0, err
    saved = torch.load(out.with_name(out.name + ".ckpt"), weights_only=True)
    assert saved["run"]["precision"] == "fp32"  # the checkpoint holds the precision it ran in


def test_window_auto_on_the_command_line_and_its_resume(short_text, tmp_path, run, monkeypatch):
    out, metrics = tmp_path / "m.pt", tmp_path / "m.jsonl"
    code, stdout, err = run("train", short_text, "-o", out, "--window", "auto", "--epochs", "2", "--metrics", metrics,
                            "--json", *SMALL)
    assert code == 0, err
    line = next(line for line in err.splitlines() if line.startswith("--window auto:"))
    first = json.loads(stdout)
    choice = first["window_choice"]
    assert f"--window auto: {choice['window']} steps" in line and f"cosine {choice['cosine']:.3f}" in line
    assert "activations" in line and f"{choice['passes']} forward/backward passes" in line
    records = [json.loads(r) for r in metrics.read_text().splitlines()]
    checks = [r for r in records if r["kind"] == "window"]
    assert [r["epoch"] for r in checks] == [1, 2] and all(r["window"] == choice["window"] for r in checks)
    assert all(-1 <= r["cosine"] <= 1 and r["passes"] == 2 for r in checks)
    assert sum(text.startswith(f"window {choice['window']} after epoch") for text in err.splitlines()) == 2
    assert first["window_cosine"] == checks[-1]["cosine"]
    assert torch.load(out.with_name(out.name + ".ckpt"), weights_only=True)["run"]["window"] == choice["window"]

    def never(*args, **kwargs):
        raise AssertionError("a resumed --window auto run must keep its window, not choose again")

    monkeypatch.setattr(trainer_module, "choose_window", never)
    code, stdout, err = run("train", short_text, "-o", out, "--window", "auto", "--epochs", "3", "--resume", "--json",
                            *SMALL)
    assert code == 0, err
    assert f"--window auto: {choice['window']} steps, as chosen when the run began" in err
    assert json.loads(stdout)["steps"] == first["steps"] * 3 // 2  # a third epoch of the same windows
    other = choice["window"] + 1
    code, _, err = run("train", short_text, "-o", out, "--window", str(other), "--epochs", "4", "--resume", *SMALL)
    assert code == 2 and f"window is {other}" in err


def test_window_auto_refuses_a_stride_and_is_printed_as_auto(short_text, tmp_path, run):
    code, _, err = run("train", short_text, "-o", tmp_path / "m.pt", "--window", "auto", "--stride", "5", *SMALL)
    assert code == 2 and "--stride needs a number of steps for --window, not auto" in err
    code, _, err = run("train", short_text, "--window", "soon", *SMALL)
    assert code == 2 and "neither a number of steps nor auto" in err
    code, stdout, _ = run("train", short_text, "--window", "auto", "--print-config")
    assert code == 0 and "window: auto\n" in stdout and "min-cosine: 0.9\n" in stdout


@pytest.mark.parametrize("extra", [[], ["--bidirectional"]], ids=["whole-sequence batches", "bidirectional"])
def test_window_auto_is_refused_for_sequences_trained_whole(tmp_path, run, extra):
    """Labelled sequences under full BPTT go in whole-sequence batches, and --bidirectional reads them backwards:
    no window to choose; one line, exit 2, no model file."""
    data, out = separable_set(tmp_path / "seq", count=12), tmp_path / "m.pt"
    code, _, err = run("train", data, "--labels", data / "labels.csv", "-o", out, "--window", "auto",
                       "--epochs", "1", "--hidden", "8", "--layers", "1", *extra)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "--window auto" in lines[0] and "give --window 0" in lines[0] and "Traceback" not in err
    assert not out.exists() and not out.with_name(out.name + ".ckpt").exists()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_trainer_refuses_window_auto_for_whole_sequence_batches_and_bidirectional_models(bidirectional):
    """The library guard behind the command's: a Trainer given whole sequences (or a model reading backwards)."""
    config = ModelConfig("gru", 2, 2, tokens=False, hidden=4, layers=1, bidirectional=bidirectional)
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal((6, 2)) for _ in range(4)]
    labels = [np.array([IGNORE_LABEL] * 5 + [i % 2]) for i in range(4)]
    trainer = Trainer(RecurrentModel(config), TrainConfig(window=0, auto_window=True, epochs=1, batch_size=2),
                      torch.device("cpu"), SilentReporter(), None, lambda record: None, loss_fn=class_loss)
    given = ((SequenceBatches(frames, labels, 2, 0), None) if not bidirectional
             else (pack(frames, labels, 2).inputs, pack(frames, labels, 2).targets))
    with pytest.raises(BpttError, match="--window auto chooses a window over streams.*give --window 0"):
        trainer.fit(*given)
