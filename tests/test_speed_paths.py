"""The fast paths compute what the plain ones do: mapped streams, the fused optimizer, and bf16's refusal."""

from unittest.mock import Mock

import numpy as np
import pytest
import torch

from bptt_cli import device as device_module
from bptt_cli.dropout import dropout, keep_threshold
from bptt_cli.errors import BpttError
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.streams import mapped_streams
from bptt_cli.trainer import TrainConfig, Trainer, make_optimizer


def trained(inputs, targets) -> dict:
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig("lstm", 20, 20, embed=8, hidden=16, layers=2))
    config = TrainConfig(window=7, batch_size=3, epochs=2, log_every=5)
    Trainer(model, config, torch.device("cpu"), Mock(), None, lambda record: None).fit(inputs, targets)
    return model.state_dict()


def test_training_on_mapped_streams_equals_training_on_tensors():
    ids = np.random.randint(0, 20, size=400).astype(np.uint8)
    length = (len(ids) - 1) // 3
    streams = torch.from_numpy(ids[: 3 * length + 1].astype(np.int64)).unfold(0, length + 1, length).t()  # (L + 1, 3)
    expected = trained(streams[:-1].contiguous(), streams[1:].contiguous())
    got = trained(*mapped_streams(ids, 3))
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["adamw", "adam"])
def test_fused_adam_takes_the_steps_of_the_per_tensor_one(name):
    torch.manual_seed(0)
    weights = [torch.randn(5, 4), torch.randn(7)]
    fast = [torch.nn.Parameter(w.clone()) for w in weights]
    slow = [torch.nn.Parameter(w.clone()) for w in weights]
    fused = make_optimizer(name, fast, 0.01, 0.1)
    plain = getattr(torch.optim, {"adamw": "AdamW", "adam": "Adam"}[name])(slow, lr=0.01, weight_decay=0.1)
    assert fused.defaults["fused"]
    for _ in range(5):
        grads = [torch.randn_like(w) for w in weights]
        for params, optimizer in ((fast, fused), (slow, plain)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    for f, s in zip(fast, slow):
        torch.testing.assert_close(f, s)


def test_bf16_is_refused_with_the_reason_on_a_cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    with pytest.raises(BpttError, match="no bf16 arithmetic.*use --precision fp32"):
        device_module.check_precision(torch.device("cpu"), "bf16")
    device_module.check_precision(torch.device("cpu"), "fp32")


def test_bf16_is_allowed_on_a_cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)
    device_module.check_precision(torch.device("cpu"), "bf16")


def test_cheap_dropout_drops_a_share_p_and_scales_the_rest():
    torch.manual_seed(0)
    x = torch.ones(1000, 1001)  # an odd count: the last 64-bit word is only partly used
    y = dropout(x, 0.2, training=True)
    assert y.shape == x.shape
    dropped = (y == 0).double().mean().item()
    assert abs(dropped - 0.2) < 0.002  # 1e6 draws: standard error 0.0004
    assert torch.allclose(y[y != 0], torch.tensor(1.25))
    assert abs(y.mean().item() - 1.0) < 0.005
    columns = (y == 0).double().view(-1)[: 4 * 250_000].view(-1, 4).mean(0)
    assert torch.allclose(columns, torch.full((4,), 0.2, dtype=torch.float64), atol=0.004)  # each 16-bit lane


def test_cheap_dropout_is_seeded_identity_in_eval_and_passes_gradient_through_the_mask():
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(3)
    first = dropout(x, 0.5, training=True)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.5, training=True), first)
    assert dropout(x, 0.5, training=False) is x
    first.sum().backward()
    assert torch.equal(x.grad, (first != 0).float() * 2.0)
    assert keep_threshold(0.2) == 13107 - 32768


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_layer_by_layer_recurrence_equals_the_stacked_fused_layer(cell):
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig(cell, 11, 11, embed=6, hidden=9, layers=3, dropout=0.3)).eval()
    inputs = torch.randn(13, 4, 6)
    state = tuple(torch.randn_like(s) for s in model.init_state(4))
    expected_out, expected_state = model._fused(inputs, state)  # eval: the stacked nn module
    out, end = model._layer_by_layer(inputs, state)  # eval: dropout is the identity
    torch.testing.assert_close(out, expected_out)
    for got, want in zip(end, expected_state):
        torch.testing.assert_close(got, want)


def test_training_with_dropout_runs_layer_by_layer_and_reaches_every_layer():
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig("lstm", 11, 11, embed=6, hidden=9, layers=2, dropout=0.3)).train()
    calls = []
    original = model._layer_by_layer
    model._layer_by_layer = lambda *a: calls.append(1) or original(*a)
    logits, _ = model(torch.randint(0, 11, (8, 3)), model.init_state(3))
    logits.sum().backward()
    assert calls == [1]
    for name, p in model.rnn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
