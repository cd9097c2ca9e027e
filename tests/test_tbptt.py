"""The invariants of truncated BPTT, checked on the trainer's own code path."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.streams import Window, plan_windows
from bptt_cli.trainer import SilentReporter, TrainConfig, Trainer

CELLS = ["lstm", "gru", "rnn"]


def feature_model(cell: str, layers: int = 2) -> RecurrentModel:
    """Float inputs, so gradients with respect to every input step can be read."""
    config = ModelConfig(cell=cell, input_size=3, output_size=5, tokens=False, hidden=8, layers=layers)
    return RecurrentModel(config).double()


def trainer_for(model: RecurrentModel, **overrides) -> Trainer:
    config = TrainConfig(**{"clip": 0.0, "optimizer": "sgd", "lr": 0.1, **overrides})
    return Trainer(model, config, torch.device("cpu"), SilentReporter(), None, lambda record: None)


def data(steps: int = 12, batch: int = 2):
    inputs = torch.randn(steps, batch, 3, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 5, (steps, batch))
    return inputs, targets


@pytest.mark.parametrize("cell", CELLS)
def test_windowed_stateful_forward_equals_one_full_forward(cell):
    model = feature_model(cell).eval()
    inputs, _ = data(steps=30)
    full, _ = model(inputs, model.init_state(2))
    state, pieces = model.init_state(2), []
    for w in plan_windows(30, 7):
        out, state = model(inputs[w.start : w.end], state)
        state = model.detach_state(state)
        pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_no_gradient_crosses_a_window_boundary_but_reaches_every_step_inside(cell):
    model = feature_model(cell)
    trainer = trainer_for(model, window=4)
    inputs, targets = data()
    _, state = trainer.backward(Window(0, 4, 0, 4), inputs, targets, model.init_state(2))
    inputs.grad = None
    trainer.backward(Window(4, 8, 4, 8), inputs, targets, state)
    per_step = inputs.grad.abs().sum(dim=(1, 2))
    assert torch.all(per_step[:4] == 0)  # window 1 gets nothing from window 2's loss
    assert torch.all(per_step[4:8] > 0)  # every step of window 2 gets a gradient
    assert torch.all(per_step[8:] == 0)


@pytest.mark.parametrize("cell", CELLS)
def test_strided_windows_back_propagate_through_all_k_steps(cell):
    model = feature_model(cell)
    trainer = trainer_for(model, window=5, stride=2)
    inputs, targets = data()
    windows = plan_windows(12, 5, stride=2)
    state = model.init_state(2)
    for w in windows[:3]:
        inputs.grad = None
        _, state = trainer.backward(w, inputs, targets, state)
    w = windows[2]
    assert (w.start, w.loss_from, w.end) == (1, 4, 6)
    per_step = inputs.grad.abs().sum(dim=(1, 2))
    assert torch.all(per_step[w.start : w.end] > 0)  # K = 5 steps back
    assert torch.all(per_step[: w.start] == 0) and torch.all(per_step[w.end :] == 0)


@pytest.mark.parametrize("cell", CELLS)
def test_strided_window_gradient_matches_a_hand_built_reference(cell):
    model = feature_model(cell)
    trainer = trainer_for(model, window=5, stride=2)
    inputs, targets = data()
    windows = plan_windows(12, 5, stride=2)
    state = model.init_state(2)
    for w in windows[:4]:
        _, state_next = trainer.backward(w, inputs, targets, state)
        got = [p.grad.clone() for p in model.parameters()]
        # reference: run from the state entering w.start, score only the new steps
        model.zero_grad()
        with torch.no_grad():
            _, start_state = model(inputs[: w.start], model.init_state(2)) if w.start else (None, model.init_state(2))
        out, _ = model(inputs[w.start : w.end], start_state)
        loss = F.cross_entropy(out[w.loss_from - w.start :].flatten(0, 1).float(), targets[w.loss_from : w.end].flatten())
        loss.backward()
        for g, p in zip(got, model.parameters()):
            torch.testing.assert_close(g, p.grad, atol=1e-6, rtol=1e-5)
        state = state_next


@pytest.mark.parametrize("cell", CELLS)
def test_a_window_as_long_as_the_data_gives_the_full_bptt_gradient(cell):
    model = feature_model(cell)
    inputs, targets = data(steps=20)
    truncated = trainer_for(model, window=20)
    truncated.backward(plan_windows(20, 20)[0], inputs, targets, model.init_state(2))
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out, _ = model(inputs, model.init_state(2))
    F.cross_entropy(out.flatten(0, 1).float(), targets.flatten()).backward()
    for g, p in zip(got, model.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-10, rtol=1e-8)
    # and a shorter window gives a different (truncated) gradient
    shorter = trainer_for(model, window=5)
    shorter.backward(plan_windows(20, 5)[-1], inputs, targets, model.init_state(2))
    assert any(not torch.allclose(g, p.grad) for g, p in zip(got, model.parameters()))


def test_stateless_windows_start_from_zeros():
    model = feature_model("gru")
    inputs, targets = data()
    stateful = trainer_for(model, window=4)
    stateless = trainer_for(model, window=4, stateless=True)
    w = Window(4, 8, 4, 8)
    warm = (torch.ones(2, 2, 8, dtype=torch.float64),)
    loss_carried, _ = stateful.backward(w, inputs, targets, warm)
    loss_zero, _ = stateless.backward(w, inputs, targets, warm)
    loss_reference, _ = stateful.backward(w, inputs, targets, model.init_state(2))
    assert loss_zero.item() == pytest.approx(loss_reference.item(), abs=1e-12)
    assert loss_carried.item() != pytest.approx(loss_zero.item(), abs=1e-6)


def test_clipping_bounds_the_applied_gradient_and_reports_the_pre_clip_norm():
    model = feature_model("rnn")
    inputs, targets = data()
    trainer = trainer_for(model, window=12, clip=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    _, total, norms, _ = trainer.update(Window(0, 12, 0, 12), inputs, targets, model.init_state(2))
    assert total.item() > 1e-3  # the recorded norm is the one before clipping
    torch.testing.assert_close(total, torch.linalg.vector_norm(norms))
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert step.item() == pytest.approx(0.1 * 1e-3, rel=1e-4)  # lr * clip


@pytest.mark.parametrize("cell", CELLS)
def test_a_reset_cuts_the_state_of_its_stream_only(cell):
    model = feature_model(cell).eval()
    inputs, _ = data(steps=12)
    resets = torch.zeros(12, 2, dtype=torch.bool)
    resets[5, 0] = True  # stream 0 begins a new sequence at step 5
    out, _ = model.recur(inputs, model.init_state(2), resets, [5])
    fresh, _ = model.recur(inputs[5:, :1], model.init_state(1))
    torch.testing.assert_close(out[5:, :1], fresh)  # as if stream 0 started at step 5
    whole, _ = model.recur(inputs, model.init_state(2))
    torch.testing.assert_close(out[:, 1], whole[:, 1])  # stream 1 is untouched
    torch.testing.assert_close(out[:5], whole[:5])


def test_no_gradient_flows_across_a_reset_inside_a_window():
    model = feature_model("lstm")
    trainer = trainer_for(model, window=12)
    inputs, targets = data(steps=12)
    resets = np.zeros((12, 2), dtype=bool)
    resets[6] = True
    mask = (torch.as_tensor(resets), resets.any(axis=1))
    trainer.backward(Window(0, 12, 6, 12), inputs, targets, model.init_state(2), mask)  # loss after the reset
    per_step = inputs.grad.abs().sum(dim=(1, 2))
    assert torch.all(per_step[:6] == 0) and torch.all(per_step[6:] > 0)
