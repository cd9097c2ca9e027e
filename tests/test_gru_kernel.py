"""The GRU's CPU kernel (bptt_cli.gru_kernel): nn.GRU's values and gradients, its weights and model files, its fallbacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import jvp

from bptt_cli import gradcheck, gru_kernel
from bptt_cli.modelfile import ModelFile, load_model_file, save_model_file
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.streams import mapped_streams
from bptt_cli.text import Tokenizer
from bptt_cli.trainer import SilentReporter, TrainConfig, Trainer

TOLERANCE = {torch.float64: {"rtol": 1e-10, "atol": 1e-10}, torch.float32: {"rtol": 1e-5, "atol": 1e-5}}


@pytest.fixture
def kernel_calls(monkeypatch):
    """Count the layer-windows the kernel runs, so a test knows which path it measured."""
    calls = []
    original = gru_kernel.gru_layer

    def counted(*args):
        calls.append(args[0].shape[0])
        return original(*args)

    monkeypatch.setattr(gru_kernel, "gru_layer", counted)
    return calls


def feature_gru(layers: int, dtype: torch.dtype, dropout: float = 0.0) -> RecurrentModel:
    torch.manual_seed(0)
    config = ModelConfig(cell="gru", input_size=5, output_size=3, tokens=False, hidden=7, layers=layers, dropout=dropout)
    return RecurrentModel(config).to(dtype)


def without_kernel(monkeypatch) -> None:
    """From here on the model runs nn.GRU, as it did before the kernel."""
    monkeypatch.setattr(gru_kernel, "cpu_layer", lambda rnn, inputs: None)


def recur_with_gradients(model: RecurrentModel, x, h0, resets=None, cuts=()) -> tuple[torch.Tensor, ...]:
    """Outputs, end state and d(a fixed random projection of both) / d(x, h0, every weight and bias)."""
    x, h0 = x.clone().requires_grad_(), h0.clone().requires_grad_()
    out, (end,) = model.recur(x, (h0,), resets, cuts)
    generator = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, generator=generator, dtype=out.dtype)).sum()
    loss = loss + (end * torch.randn(end.shape, generator=generator, dtype=end.dtype)).sum()
    grads = torch.autograd.grad(loss, [x, h0, *model.rnn.parameters()])
    return (out.detach(), end.detach(), *grads)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("steps, batch", [(1, 3), (2, 1), (17, 3), (40, 1)])
def test_outputs_and_every_gradient_equal_nn_gru(dtype, layers, steps, batch, kernel_calls, monkeypatch):
    model = feature_gru(layers, dtype)
    generator = torch.Generator().manual_seed(steps)
    x = torch.randn(steps, batch, 5, generator=generator, dtype=dtype)
    h0 = torch.randn(layers, batch, 7, generator=generator, dtype=dtype)
    got = recur_with_gradients(model, x, h0)
    assert kernel_calls == [steps] * layers
    without_kernel(monkeypatch)
    want = recur_with_gradients(model, x, h0)
    assert len(got) == 2 + 2 + 4 * layers  # outputs, end state, x, h0, four weights and biases per layer
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_resets_zero_the_state_inside_the_window_as_nn_gru_does(dtype, kernel_calls, monkeypatch):
    model = feature_gru(2, dtype)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(12, 4, 5, generator=generator, dtype=dtype)
    h0 = torch.randn(2, 4, 7, generator=generator, dtype=dtype)
    resets = torch.zeros(12, 4, dtype=torch.bool)
    resets[1, 0] = resets[5, 2] = resets[5, 3] = resets[11, 1] = True
    got = recur_with_gradients(model, x, h0, resets, (1, 5, 11))
    assert kernel_calls == [1, 1, 4, 4, 6, 6, 1, 1]  # segments between cuts, each layer
    without_kernel(monkeypatch)
    for a, b in zip(got, recur_with_gradients(model, x, h0, resets, (1, 5, 11))):
        torch.testing.assert_close(a, b, **TOLERANCE[dtype])


def test_evaluation_without_gradients_gives_nn_gru_outputs(kernel_calls, monkeypatch):
    model = feature_gru(2, torch.float32).eval()
    x = torch.randn(9, 2, 5)
    with torch.no_grad():
        got, (end,) = model(x, model.init_state(2))
        assert kernel_calls == [9, 9]
        without_kernel(monkeypatch)
        want, (want_end,) = model(x, model.init_state(2))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(end, want_end, rtol=1e-5, atol=1e-6)


def test_training_with_dropout_runs_the_kernel_per_layer_and_reaches_every_weight(kernel_calls):
    model = feature_gru(3, torch.float32, dropout=0.3).train()
    out, _ = model(torch.randn(8, 2, 5), model.init_state(2))
    out.square().sum().backward()
    assert kernel_calls == [8, 8, 8]
    for name, p in model.rnn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gradcheck_of_a_gru_proves_the_hand_written_backward(kernel_calls):
    model = gradcheck.fresh_model("gru", vocab=8, embed=8, hidden=8, layers=2, seed=0)
    settings = gradcheck.Settings(window=6, segment=30, windows=(1, 5, 30))
    result = gradcheck.run_gradcheck(model, gradcheck.synthetic_problem(model, 30), settings)
    assert kernel_calls and 6 in kernel_calls  # the checked gradients came through the kernel
    fd, fm = result["finite_difference"], result["forward_mode"]
    assert result["passed"] and fd["passed"] and fm["passed"]
    assert max(t["max_rel_error"] for t in fd["tensors"]) < 1e-7
    assert fm["max_rel_error"] < 1e-12  # the kernel's backward against nn.GRU's forward mode


def test_torch_func_transforms_and_bf16_autocast_fall_back_to_nn_gru(kernel_calls):
    model = feature_gru(1, torch.float64)
    x, h0 = torch.randn(4, 2, 5, dtype=torch.float64), torch.zeros(1, 2, 7, dtype=torch.float64)
    tangent = torch.randn_like(x)
    _, derivative = jvp(lambda inputs: model.recur(inputs, (h0,))[0], (x,), (tangent,))
    assert kernel_calls == []  # forward mode ran nn.GRU
    _, reference = jvp(lambda inputs: model.rnn(inputs, h0)[0], (x,), (tangent,))
    torch.testing.assert_close(derivative, reference)
    model = model.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gru_kernel.cpu_layer(model.rnn, x.float()) is None
        out, _ = model(x.float(), model.init_state(2))
    assert kernel_calls == [] and out.shape == (4, 2, 3)
    assert gru_kernel.cpu_layer(model.rnn, x.half()) is None
    assert gru_kernel.cpu_layer(nn.GRU(5, 7, bidirectional=True), x.float()) is None
    assert gru_kernel.cpu_layer(model.rnn, x.float()) is gru_kernel.gru_layer


def test_a_model_file_trained_through_the_kernel_loads_into_nn_gru_with_the_same_outputs(tmp_path, kernel_calls):
    text = "the quick brown fox jumps over the lazy dog\n" * 20
    tokenizer = Tokenizer.fit("char", text)
    ids = tokenizer.encode(text)[0]
    torch.manual_seed(0)
    config = ModelConfig(cell="gru", input_size=tokenizer.size, output_size=tokenizer.size, embed=6, hidden=10, layers=2)
    model = RecurrentModel(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, TrainConfig(window=10, batch_size=4, max_steps=5, lr=1e-2), torch.device("cpu"),
                      SilentReporter(), None, lambda record: None)
    trainer.fit(*mapped_streams(ids, 4))
    assert kernel_calls and set(before) == set(model.state_dict())  # trained through the kernel, same names
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    path = tmp_path / "gru.pt"
    save_model_file(path, ModelFile(model, tokenizer, {"batch_size": 4}, {}))
    loaded = load_model_file(path).model.eval()
    plain = nn.GRU(6, 10, 2)
    plain.load_state_dict({k.removeprefix("rnn."): v for k, v in loaded.state_dict().items() if k.startswith("rnn.")})
    x = torch.randint(0, tokenizer.size, (15, 3))
    with torch.no_grad():
        hidden, (end,) = loaded.recur(x, loaded.init_state(3))
        want, want_end = plain(loaded.embedding(x), torch.zeros(2, 3, 10))
    torch.testing.assert_close(hidden, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(end, want_end, rtol=1e-5, atol=1e-6)
