"""One memory estimate for training, gradcheck and the plan, checked against what torch really keeps."""

import pytest
import torch

from bptt_cli import gradcheck, memory
from bptt_cli.cells import CELL_SPECS
from bptt_cli.errors import BpttError
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.streams import Window
from bptt_cli.trainer import SilentReporter, TrainConfig, Trainer


def saved_bytes(trainer: Trainer, inputs, targets, window: Window) -> int:
    """The bytes autograd keeps for one update's backward, weights excluded: each storage counted once."""
    weights = {p.untyped_storage().data_ptr() for p in trainer.model.parameters()}
    kept: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    state = trainer.model.init_state(inputs.shape[1])
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        trainer.backward(window, inputs, targets, state)
    return sum(kept.values())


@pytest.mark.parametrize("cell", CELL_SPECS)
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_the_activation_estimate_matches_the_tensors_autograd_saves(cell, dropout):
    torch.manual_seed(0)
    config = ModelConfig(cell=cell, input_size=30, output_size=30, embed=16, hidden=96, layers=2, dropout=dropout)
    trainer = Trainer(RecurrentModel(config), TrainConfig(window=40, batch_size=4), torch.device("cpu"),
                      SilentReporter(), None, lambda record: None)
    inputs = torch.randint(0, 30, (40, 4))
    measured = saved_bytes(trainer, inputs, inputs, Window(0, 40, 0, 40))
    estimate = memory.activation_bytes(config, 40, 4)
    assert 0.97 <= estimate / measured <= (1.05 if dropout == 0 else 1.15), (estimate, measured)


def test_the_parameter_count_follows_from_the_configuration():
    for cell in CELL_SPECS:
        for tie in (False, True):
            config = ModelConfig(cell=cell, input_size=11, output_size=11, embed=8, hidden=8, layers=3, tie_weights=tie)
            assert memory.parameter_count(config) == sum(p.numel() for p in RecurrentModel(config).parameters())
    features = ModelConfig(cell="gru", input_size=5, output_size=2, tokens=False, hidden=7, layers=2)
    assert memory.parameter_count(features) == sum(p.numel() for p in RecurrentModel(features).parameters())


def test_optimizer_state_by_kind_and_the_parts_add_up():
    config = ModelConfig(cell="lstm", input_size=10, output_size=10, embed=4, hidden=8, layers=2)
    weights = memory.parameter_count(config) * 4
    adam = memory.training_estimate(config, "adamw", 50, 3)
    sgd = memory.training_estimate(config, "sgd", 50, 3)
    assert adam.optimizer == 2 * weights and sgd.optimizer == 0 and adam.gradients == weights
    assert adam.total == 4 * weights + memory.activation_bytes(config, 50, 3)
    assert memory.activation_bytes(config, 50, 3, "bf16") * 2 == memory.activation_bytes(config, 50, 3)
    assert set(memory.OPTIMIZER_STATE) == set(__import__("bptt_cli.choices").choices.OPTIMIZERS)


def test_gradcheck_uses_the_same_estimate():
    config = ModelConfig(cell="lstm", input_size=10, output_size=10, embed=4, hidden=8, layers=2)
    # embed 4 + 2 layers * 17 (LSTM's memory factor) * 8 + 10 log-probabilities + 2 for the int64 target, float32
    assert gradcheck.activation_bytes_per_step(config) == (4 + 2 * 17 * 8 + 10 + 2) * 4
    assert gradcheck.activation_bytes_per_step(config, batch=3) == memory.activation_bytes(config, 1, 3)


def test_generation_buffers_grow_with_the_horizon():
    config = ModelConfig(cell="lstm", input_size=3, output_size=2, tokens=False, hidden=8, layers=2)
    assert memory.generation_bytes(config, 1000, 5) == 1000 * 5 * 2 * 8 + 5 * 2 * 2 * 8 * 4


def test_available_memory_comes_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    2048 kB\n")
    assert memory.available_bytes(meminfo) == 2048 * 1024
    assert memory.available_bytes(tmp_path / "missing") is None


@pytest.mark.parametrize("sizes", [{"hidden": 100_000}, {"embed": 1_000_000_000}])
def test_a_model_that_cannot_fit_is_refused_before_anything_is_allocated(sizes, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda meminfo=None: 8 * 2**30)
    config = ModelConfig(cell="lstm", input_size=65, output_size=65, **sizes)
    with pytest.raises(BpttError) as err:
        RecurrentModel(config)
    message = str(err.value)
    assert "\n" not in message and "8.0 GiB available" in message and "--force" in message
    assert f"--{next(iter(sizes))} {next(iter(sizes.values()))}" in message
    needed = memory.parameter_count(config) * 4 / 2**30
    assert f"needs about {needed:,.1f} GiB" in message


def test_force_skips_the_refusal_and_is_not_stored_in_model_files(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda meminfo=None: 1)
    config = ModelConfig(cell="gru", input_size=5, output_size=5, embed=4, hidden=4, layers=1, force=True)
    model = RecurrentModel(config)
    assert "force" not in model.config.to_dict()
    with pytest.raises(BpttError, match="needs about"):
        RecurrentModel(ModelConfig(cell="gru", input_size=5, output_size=5, embed=4, hidden=4, layers=1))


def test_training_that_cannot_fit_is_refused_before_the_first_update(monkeypatch):
    config = ModelConfig(cell="lstm", input_size=20, output_size=20, embed=8, hidden=16, layers=1)
    model = RecurrentModel(config)
    weights = memory.parameter_count(config) * 4
    monkeypatch.setattr(memory, "available_bytes", lambda meminfo=None: 2 * weights)  # the model fits, training not
    trainer = Trainer(model, TrainConfig(window=0, batch_size=2, epochs=1), torch.device("cpu"), SilentReporter(),
                      None, lambda record: None)
    before = [p.detach().clone() for p in model.parameters()]
    ids = torch.randint(0, 20, (300, 2))
    with pytest.raises(BpttError, match=r"training a model of --model lstm .* on 2 streams of 300 steps per update needs about"):
        trainer.fit(ids, ids)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_plan_figures_for_print_config():
    config = ModelConfig(cell="lstm", input_size=65, output_size=65, embed=16, hidden=32, layers=2)
    figures = memory.plan(config, "adamw", window=50, batch=8)
    assert figures["activations"] == memory.activation_bytes(config, 50, 8)
    assert figures["total"] == memory.training_estimate(config, "adamw", 50, 8).total
    assert figures["parameter_count"] == memory.parameter_count(config)
    full = memory.plan(config, "adamw", window=0, batch=8)
    assert full["activations"] is None and full["total"] is None  # full BPTT: known once the data is read
