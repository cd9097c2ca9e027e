"""The fast paths compute what the plain ones do: mapped streams, the fused optimizer, and bf16's refusal."""

from unittest.mock import Mock

import numpy as np
import pytest
import torch

from bptt_cli import device as device_module
from bptt_cli.errors import BpttError
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.streams import batchify
from bptt_cli.token_cache import mapped_streams
from bptt_cli.trainer import TrainConfig, Trainer, make_optimizer


def trained(inputs, targets) -> dict:
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig("lstm", 20, 20, embed=8, hidden=16, layers=2))
    config = TrainConfig(window=7, batch_size=3, epochs=2, log_every=5)
    Trainer(model, config, torch.device("cpu"), Mock(), None, lambda record: None).fit(inputs, targets)
    return model.state_dict()


def test_training_on_mapped_streams_equals_training_on_batchified_tensors():
    ids = np.random.randint(0, 20, size=400).astype(np.uint8)
    streams = batchify(ids, 3)
    expected = trained(streams[:-1], streams[1:])
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
