"""Recurrent models behind one interface: ``forward(x, state) -> (y, state)``.

The cell type (LSTM, GRU, vanilla RNN) is chosen once, at construction, and
runs on torch's fused recurrent layers (oneDNN on CPU, cuDNN on CUDA). A state
is always a tuple of tensors of shape (layers, batch, hidden): ``(h,)`` for GRU
and RNN, ``(h, c)`` for LSTM, so carrying and detaching never branch on the cell.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from bptt_cli.autoregression import LinearStart
from bptt_cli.cells import CELL_SPECS, CellSpec, cell_spec
from bptt_cli.dropout import Regularisers, dropout, keep_mask
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
    bidirectional: bool = False  # each layer also reads every sequence backwards; the decoder sees both
    # per output, the input feature it continues: the model predicts the change from that input's value
    # (a zero decoder, so an untrained model is persistence); empty: the decoder's output is the prediction
    anchor: list[int] = field(default_factory=list)
    leads: int = 1  # steps ahead decoded at once from each state (a direct multi-step head), lead by lead
    # an anchored forecast's linear start (autoregression.LinearStart): weights per lead, output and lag (of
    # linear_lags, oldest first) on each lag's difference from the last value, flat; empty: none
    linear: list[float] = field(default_factory=list)
    linear_lags: int = 0
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
        if self.linear and (not self.anchor or type(self.linear_lags) is not int or self.linear_lags < 2
                            or len(self.linear) != self.output_size * self.leads * self.linear_lags
                            or not all(type(v) in (int, float) and math.isfinite(v) for v in self.linear)):
            raise BpttError(f"the linear start needs an anchor, at least 2 lags and a finite weight for each lag "
                            f"of {self.output_size * self.leads} leads and outputs")
        if not 0.0 <= self.dropout < 1.0:
            raise BpttError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.tie_weights and not self.tokens:
            raise BpttError("--tie-weights needs token inputs (text); drop it for feature data")
        if self.tie_weights and self.embed != self.hidden:
            raise BpttError(
                f"--tie-weights needs --embed equal to --hidden (got {self.embed} and {self.hidden})"
            )

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def spec(self) -> CellSpec:
        return cell_spec(self.cell)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "force"}

    def describe(self) -> str:
        """The options that size the model, for messages."""
        inputs = f"vocabulary {self.input_size}, --embed {self.embed}" if self.tokens else f"{self.input_size} features"
        both = ", --bidirectional" if self.bidirectional else ""
        return f"a model of --model {self.cell} ({inputs}, --hidden {self.hidden}, --layers {self.layers}{both})"


class RecurrentModel(nn.Module):
    """Encoder (embedding or identity) -> stacked recurrent layer -> linear decoder."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        require_fits(weights_estimate(config), config.describe(), config.force)
        self.config = config
        self.linear_start = LinearStart.of(config)  # built once: decoding reads it at every forecast
        width = config.embed if config.tokens else config.input_size
        self.embedding = nn.Embedding(config.input_size, config.embed) if config.tokens else None
        self.spec = config.spec
        self.rnn = self.spec.module(
            width,
            config.hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            bidirectional=config.bidirectional,
        )
        self.decoder = nn.Linear(config.hidden * config.directions, config.output_size * config.leads)
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight
        if config.anchor:  # an untrained model forecasts the last value at every lead
            nn.init.zeros_(self.decoder.weight)
            nn.init.zeros_(self.decoder.bias)
        self.regularisers = Regularisers()  # what training drops besides --dropout; the trainer sets it
        self._masks: dict[str, torch.Tensor] | None = None  # inside ``one_window``: its masks, drawn once

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zeros of shape (layers x directions, batch, hidden), one tensor per state part."""
        weight = self.decoder.weight
        layers = self.config.layers * self.config.directions
        zeros = torch.zeros(layers, batch_size, self.config.hidden, device=device or weight.device, dtype=weight.dtype)
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
        """Run the recurrence: x (T, B) ids or (T, B, F) features -> outputs (T, B, hidden x directions).

        Where a stream begins a new sequence (a new file or series), its state is
        zeroed: ``resets`` (T, B) marks those steps and ``cuts`` lists, from the
        host, the steps where any stream resets, so the fused kernel runs once per
        segment between cuts rather than once per step.
        """
        inputs = self._drop(self._embed(x), "embedded") if self.embedding is not None else x
        if self.config.bidirectional:
            return self._both_ways(inputs, state, resets, cuts)
        return _by_segments(self._fused, inputs, state, resets, cuts)

    @contextlib.contextmanager
    def one_window(self) -> Iterator[None]:
        """Draw each mask once for everything run inside: locked dropout, weight drop and embedding dropout
        stay the same over the window's steps (and its pieces), and change from one window to the next."""
        self._masks = {}
        try:
            yield
        finally:
            self._masks = None

    def _mask(self, name: str, shape: tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
        """The window's mask ``name``; outside ``one_window`` each call is a window of its own."""
        if self._masks is None:
            return keep_mask(shape, p, like)
        if name not in self._masks:
            self._masks[name] = keep_mask(shape, p, like)
        return self._masks[name]

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embeddings of ``x``; while training with --embed-dropout, whole rows (words) dropped."""
        p, weight = self.regularisers.embed_dropout, self.embedding.weight
        if not self.training or p == 0.0:
            return self.embedding(x)
        return F.embedding(x, weight * self._mask("embedding rows", (weight.shape[0], 1), p, weight))

    def _drop(self, x: torch.Tensor, site: str) -> torch.Tensor:
        """--dropout at ``site``: a new mask per element, or with --dropout-kind locked one (1, B, F) mask
        per window, shared by its steps."""
        p = self.config.dropout
        if not self.training or p == 0.0 or self.regularisers.dropout_kind != "locked":
            return dropout(x, p, self.training)
        return x * self._mask(site, (1, *x.shape[1:]), p, x)

    def _fused(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        own_layer = self.spec.cpu_layer(self.rnn, inputs)  # the GRU's CPU kernel (bptt_cli.gru_kernel)
        if own_layer is not None or self.training and (self.regularisers.weight_drop > 0 or self.rnn.dropout > 0 and (
                inputs.device.type == "cpu" or self.regularisers.dropout_kind == "locked")):
            return self._layer_by_layer(inputs, state, own_layer)
        out, end = self.rnn(inputs, self.spec.hx(state))
        return out, (end if isinstance(end, tuple) else (end,))

    def _layer_by_layer(self, inputs: torch.Tensor, state: State, layer_function=None) -> tuple[torch.Tensor, State]:
        """The stacked layers one fused call each, with ``dropout`` between them.

        Equal to ``self.rnn`` with its own between-layer dropout, but the mask is
        the cheap one (the fused multi-layer call draws torch's, ~10 ns per value
        on the CPU). Same weights, so model files do not change. ``layer_function``
        replaces torch's one-layer function (the cell's ``cpu_layer``).
        """
        layer_function = layer_function or self.spec.layer_function
        ends: list[State] = []
        for layer in range(self.config.layers):
            if layer:
                inputs = self._drop(inputs, f"layer {layer}")
            weights = self._layer_weights(layer)
            entering = tuple(s[layer : layer + 1] for s in state)
            inputs, *end = layer_function(inputs, self.spec.hx(entering), weights, True, 1, 0.0, True, False, False)
            ends.append(tuple(end))
        return inputs, tuple(torch.cat(parts) for parts in zip(*ends))

    def _layer_weights(self, layer: int, reverse: bool = False) -> list[torch.Tensor]:
        """One direction of one layer's weights as torch's layer function takes them, with --weight-drop:
        the hidden-to-hidden weights masked once per window (the Parameter stays whole, so the model file and
        evaluation hold the unmasked weights)."""
        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        weights = [getattr(self.rnn, kind + suffix) for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        p = self.regularisers.weight_drop
        if self.training and p > 0.0:
            weights[1] = weights[1] * self._mask(f"weight_hh{suffix}", tuple(weights[1].shape), p, weights[1])
        return weights

    def drop_output(self, hidden: torch.Tensor) -> torch.Tensor:
        """--dropout on the recurrent outputs, as the decoder reads them (activation regularisation needs them)."""
        return self._drop(hidden, "output")

    def _both_ways(self, inputs: torch.Tensor, state: State, resets: torch.Tensor | None,
                   cuts: Sequence[int]) -> tuple[torch.Tensor, State]:
        """Each layer reads every sequence forwards and backwards (one fused call per direction and segment).

        The backward direction runs forwards over the inputs with each sequence reversed in place
        (``mirrored_steps``), so resets and cuts stay where they are and its outputs are mirrored back.
        A sequence must end where the next begins or at a reset: ``pack(..., mark_padding=True)`` marks
        where a stream's padding starts. The end state is the last step's, in ``nn.LSTM``'s layout.
        """
        mirror = mirrored_steps(resets, *inputs.shape[:2], inputs.device)
        ends: list[State] = []
        for layer in range(self.config.layers):
            if layer:
                inputs = self._drop(inputs, f"layer {layer}")
            outputs = []
            for reverse in (False, True):
                run = self._one_layer(layer, reverse)
                entering = tuple(s[2 * layer + reverse : 2 * layer + reverse + 1] for s in state)
                out, end = _by_segments(run, _mirror(inputs, mirror) if reverse else inputs, entering, resets, cuts)
                outputs.append(_mirror(out, mirror) if reverse else out)
                ends.append(end)
            inputs = torch.cat(outputs, dim=-1)
        return inputs, tuple(torch.cat(parts) for parts in zip(*ends))

    def _one_layer(self, layer: int, reverse: bool):
        """One direction of one layer as a fused call: (inputs, state) -> (outputs, end state)."""
        weights = self._layer_weights(layer, reverse)

        def run(inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
            out, *end = self.spec.layer_function(inputs, self.spec.hx(state), weights, True, 1, 0.0, self.training,
                                                 False, False)
            return out, tuple(end)

        return run

    def decode(self, hidden: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs (..., hidden) -> logits or predictions (..., leads * output_size), lead-major.

        An anchored model adds the anchor inputs of the same steps (``inputs`` (..., F)) to the decoder's output.
        """
        return self.decode_dropped(self.drop_output(hidden), inputs)

    def decode_dropped(self, dropped: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """``decode`` of outputs that went through ``drop_output`` already (activation regularisation reads them)."""
        return anchored(self.decoder(dropped), inputs, self.config.anchor * self.config.leads)

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


def _by_segments(run, inputs: torch.Tensor, state: State, resets: torch.Tensor | None,
                 cuts: Sequence[int]) -> tuple[torch.Tensor, State]:
    """``run`` once per segment between ``cuts``, zeroing at each cut the state of the streams that reset there."""
    pieces, start = [], 0
    for cut in [*cuts, inputs.shape[0]]:
        if cut > start:
            out, state = run(inputs[start:cut], state)
            pieces.append(out)
        if cut < inputs.shape[0]:
            keep = (~resets[cut]).to(state[0].dtype).view(1, -1, 1)  # (1, B, 1)
            state = tuple(s * keep for s in state)
        start = cut
    return (pieces[0] if len(pieces) == 1 else torch.cat(pieces)), state


def mirrored_steps(resets: torch.Tensor | None, steps: int, batch: int, device) -> torch.Tensor:
    """(T, B) the step that mirrors each step within its sequence: a sequence over [s, e] maps t to s + e - t.

    Sequences begin at step 0 and where ``resets`` is True, and end where the next begins or at the last
    step; found with cumulative max and min on the device, without a host sync.
    """
    t = torch.arange(steps, device=device).unsqueeze(1).expand(steps, batch)
    if resets is None:
        return steps - 1 - t
    begins = resets.clone()
    begins[0] = True
    ends = torch.ones_like(begins)
    ends[:-1] = begins[1:]
    first = torch.where(begins, t, 0).cummax(0).values
    last = torch.where(ends, t, steps - 1).flip(0).cummin(0).values.flip(0)
    return first + last - t


def _mirror(values: torch.Tensor, mirror: torch.Tensor) -> torch.Tensor:
    """``values`` (T, B, F) with every sequence reversed in place (its own inverse)."""
    return values.gather(0, mirror.unsqueeze(-1).expand_as(values))


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
