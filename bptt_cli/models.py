"""Recurrent models behind one interface: ``forward(x, state) -> (y, state)``.

The cell type (LSTM, GRU, vanilla RNN) is chosen once, at construction, and
runs on torch's fused recurrent layers (oneDNN on CPU, cuDNN on CUDA). A state
is always a tuple of tensors of shape (layers, batch, hidden): ``(h,)`` for GRU
and RNN, ``(h, c)`` for LSTM, so carrying and detaching never branch on the cell.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import nn

from bptt_cli.cells import CELL_SPECS, CellSpec, cell_spec
from bptt_cli.dropout import dropout
from bptt_cli.errors import BpttError
from bptt_cli.memory import require_fits, weights_estimate

__all__ = ["CELL_SPECS", "CellSpec", "ModelConfig", "RecurrentModel", "State"]
_LAYER_WEIGHT = re.compile(r"_l(\d+)(_reverse)?$")  # weight_ih_l0, bias_hh_l1_reverse

State = tuple[torch.Tensor, ...]


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model from its weights."""

    cell: str = "lstm"  # a key of CELL_SPECS: lstm | gru | rnn
    input_size: int = 0  # vocabulary size for tokens, feature count otherwise
    output_size: int = 0  # vocabulary size for tokens, target count otherwise
    tokens: bool = True  # inputs are token ids (embedded) rather than feature vectors
    embed: int = 128  # embedding width (tokens only)
    hidden: int = 256  # recurrent state width
    layers: int = 2
    dropout: float = 0.0  # on embeddings, between layers and before the decoder
    tie_weights: bool = False  # decoder shares the embedding matrix (needs embed == hidden)
    # per output, the input feature it continues: the model predicts the change from that input's value
    # (a zero decoder, so an untrained model is persistence); empty: the decoder's output is the prediction
    anchor: list[int] = field(default_factory=list)
    leads: int = 1  # steps ahead decoded at once from each state (a direct multi-step head), lead by lead
    # build and train even when the memory estimate exceeds what the machine has available (--force);
    # a choice of this run, not a property of the model: model files do not store it
    force: bool = field(default=False, compare=False)

    def validate(self) -> None:
        cell_spec(self.cell)
        for name in ("hidden", "layers", "embed"):
            if getattr(self, name) < 1:
                raise BpttError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.leads < 1:
            raise BpttError(f"--leads must be at least 1, got {self.leads}")
        if self.anchor and (len(self.anchor) != self.output_size
                            or not all(isinstance(i, int) and 0 <= i < self.input_size for i in self.anchor)):
            raise BpttError(f"the anchor {self.anchor} does not name one input for each of {self.output_size} outputs")
        if not 0.0 <= self.dropout < 1.0:
            raise BpttError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.tie_weights and not self.tokens:
            raise BpttError("--tie-weights needs token inputs (text); drop it for feature data")
        if self.tie_weights and self.embed != self.hidden:
            raise BpttError(
                f"--tie-weights needs --embed equal to --hidden (got {self.embed} and {self.hidden})"
            )

    @property
    def spec(self) -> CellSpec:
        return cell_spec(self.cell)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "force"}

    def describe(self) -> str:
        """The options that size the model, for messages."""
        inputs = f"vocabulary {self.input_size}, --embed {self.embed}" if self.tokens else f"{self.input_size} features"
        return f"a model of --model {self.cell} ({inputs}, --hidden {self.hidden}, --layers {self.layers})"


class RecurrentModel(nn.Module):
    """Encoder (embedding or identity) -> stacked recurrent layer -> linear decoder."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        require_fits(weights_estimate(config), config.describe(), config.force)
        self.config = config
        width = config.embed if config.tokens else config.input_size
        self.embedding = nn.Embedding(config.input_size, config.embed) if config.tokens else None
        self.spec = config.spec
        self.rnn = self.spec.module(
            width,
            config.hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.decoder = nn.Linear(config.hidden, config.output_size * config.leads)
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight
        if config.anchor:  # an untrained model forecasts the last value at every lead
            nn.init.zeros_(self.decoder.weight)
            nn.init.zeros_(self.decoder.bias)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zeros of shape (layers, batch, hidden), one tensor per state part."""
        weight = self.decoder.weight
        zeros = torch.zeros(
            self.config.layers, batch_size, self.config.hidden, device=device or weight.device, dtype=weight.dtype
        )
        return tuple(zeros.clone() for _ in self.spec.state_parts)

    @staticmethod
    def detach_state(state: State) -> State:
        """Cut the graph at a window boundary: values carry over, gradients do not."""
        return tuple(s.detach() for s in state)

    def recur(
        self,
        x: torch.Tensor,
        state: State,
        resets: torch.Tensor | None = None,
        cuts: Sequence[int] = (),
    ) -> tuple[torch.Tensor, State]:
        """Run the recurrence: x (T, B) ids or (T, B, F) features -> outputs (T, B, hidden).

        Where a stream begins a new sequence (a new file or series), its state is
        zeroed: ``resets`` (T, B) marks those steps and ``cuts`` lists, from the
        host, the steps where any stream resets, so the fused kernel runs once per
        segment between cuts rather than once per step.
        """
        inputs = self._drop(self.embedding(x)) if self.embedding is not None else x
        pieces, start = [], 0
        for cut in [*cuts, x.shape[0]]:
            if cut > start:
                out, state = self._fused(inputs[start:cut], state)
                pieces.append(out)
            if cut < x.shape[0]:
                keep = (~resets[cut]).to(state[0].dtype).view(1, -1, 1)  # (1, B, 1)
                state = tuple(s * keep for s in state)
            start = cut
        return (pieces[0] if len(pieces) == 1 else torch.cat(pieces)), state

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.config.dropout, self.training)

    def _fused(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.training and self.rnn.dropout > 0 and inputs.device.type == "cpu":
            return self._layer_by_layer(inputs, state)
        out, end = self.rnn(inputs, self.spec.hx(state))
        return out, (end if isinstance(end, tuple) else (end,))

    def _layer_by_layer(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """The stacked layers one fused call each, with ``dropout`` between them.

        Equal to ``self.rnn`` with its own between-layer dropout, but the mask is
        the cheap one (the fused multi-layer call draws torch's, ~10 ns per value
        on the CPU). Same weights, so model files do not change.
        """
        layer_function = self.spec.layer_function
        ends: list[State] = []
        for layer in range(self.config.layers):
            if layer:
                inputs = self._drop(inputs)
            weights = [getattr(self.rnn, f"{kind}_l{layer}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            entering = tuple(s[layer : layer + 1] for s in state)
            inputs, *end = layer_function(inputs, self.spec.hx(entering), weights, True, 1, 0.0, True, False, False)
            ends.append(tuple(end))
        return inputs, tuple(torch.cat(parts) for parts in zip(*ends))

    def decode(self, hidden: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs (..., hidden) -> logits or predictions (..., leads * output_size), lead-major.

        An anchored model adds the anchor inputs of the same steps (``inputs`` (..., F)) to the decoder's output.
        """
        return anchored(self.decoder(self._drop(hidden)), inputs, self.config.anchor * self.config.leads)

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        out, state = self.recur(x, state)
        return self.decode(out, x), state

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by the part of the model they belong to, for per-layer gradient norms."""
        groups: dict[str, list[nn.Parameter]] = {}
        if self.embedding is not None:
            groups["embedding"] = [self.embedding.weight]
        groups.update(recurrent_groups(self.rnn, self.config.cell))
        shared = {id(p) for ps in groups.values() for p in ps}
        groups["decoder"] = [p for p in self.decoder.parameters() if id(p) not in shared]
        return groups


def anchored(change: torch.Tensor, inputs: torch.Tensor | None, anchor: list[int]) -> torch.Tensor:
    """The decoder's ``change`` added back to the anchor inputs (the last values); unchanged without an anchor."""
    if not anchor:
        return change
    return change + inputs[..., anchor].to(change.dtype)


def next_step(outputs: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """The one-step predictions (..., output_size) of decoded outputs (..., leads * output_size)."""
    return outputs[..., : config.output_size]


def recurrent_groups(rnn: nn.Module, cell: str) -> dict[str, list[nn.Parameter]]:
    """A stacked layer's weights by layer and direction: ``lstm layer 1``, ``lstm layer 1 (reverse)``.

    Every weight lands in a group (one torch names in another way fails loudly),
    so a gradient norm is never silently left out.
    """
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, param in rnn.named_parameters():
        found = _LAYER_WEIGHT.search(name)
        if found is None:
            raise ValueError(f"{name}: not a per-layer weight of {type(rnn).__name__}")
        groups.setdefault((int(found.group(1)), bool(found.group(2))), []).append(param)
    return {
        f"{cell} layer {layer + 1}" + (" (reverse)" if reverse else ""): params
        for (layer, reverse), params in sorted(groups.items())
    }
