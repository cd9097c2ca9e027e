"""The cell registry: every fact about a cell comes from its CellSpec."""

import dataclasses

import pytest
import torch
from torch import nn

from bptt_cli.cells import CELL_SPECS, cell_spec
from bptt_cli.errors import BpttError
from bptt_cli.models import ModelConfig, RecurrentModel, recurrent_groups


@pytest.mark.parametrize("name", CELL_SPECS)
def test_a_spec_builds_its_model_and_state(name):
    spec = CELL_SPECS[name]
    model = RecurrentModel(ModelConfig(cell=name, input_size=5, output_size=5, embed=4, hidden=6, layers=2))
    assert isinstance(model.rnn, spec.module)
    state = model.init_state(3)
    assert len(state) == len(spec.state_parts) and all(s.shape == (2, 3, 6) for s in state)
    out, end = model(torch.zeros(7, 3, dtype=torch.long), state)
    assert out.shape == (7, 3, 5) and len(end) == len(spec.state_parts)


@pytest.mark.parametrize("name", CELL_SPECS)
def test_the_fused_layer_function_equals_the_module(name):
    """Layer by layer (the dropout path) with dropout 0 gives what the stacked module gives."""
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig(cell=name, input_size=5, output_size=5, embed=4, hidden=6, layers=2))
    inputs = torch.randn(9, 2, 4)
    state = tuple(torch.randn_like(s) for s in model.init_state(2))
    fused_out, fused_end = model._fused(inputs, state)
    layered_out, layered_end = model._layer_by_layer(inputs, state)
    torch.testing.assert_close(layered_out, fused_out)
    for a, b in zip(layered_end, fused_end):
        torch.testing.assert_close(a, b)


def test_specs_are_frozen_and_an_unknown_cell_names_the_choices():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CELL_SPECS["lstm"].gates = 3
    with pytest.raises(BpttError, match="unknown model 'lsmt'; use one of lstm, gru, rnn"):
        cell_spec("lsmt")


@pytest.mark.parametrize("name", CELL_SPECS)
def test_every_weight_of_a_bidirectional_layer_is_reported_in_its_own_group(name):
    rnn = CELL_SPECS[name].module(4, 6, num_layers=2, bidirectional=True)
    groups = recurrent_groups(rnn, name)
    assert list(groups) == [f"{name} layer 1", f"{name} layer 1 (reverse)", f"{name} layer 2",
                            f"{name} layer 2 (reverse)"]
    assert all(len(params) == 4 for params in groups.values())  # weight_ih, weight_hh, bias_ih, bias_hh
    reported = {id(p) for params in groups.values() for p in params}
    assert reported == {id(p) for p in rnn.parameters()}
    reverse = {id(p) for p in groups[f"{name} layer 2 (reverse)"]}
    assert reverse == {id(getattr(rnn, f"{kind}_l1_reverse")) for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def test_a_weight_outside_the_layer_naming_is_refused_not_dropped():
    rnn = nn.LSTM(4, 6, proj_size=3)  # weight_hr_l0 still follows the naming; a foreign one must not slip by
    rnn.register_parameter("extra", nn.Parameter(torch.zeros(1)))
    with pytest.raises(ValueError, match="extra: not a per-layer weight"):
        recurrent_groups(rnn, "lstm")
