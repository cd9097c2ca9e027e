"""The recurrent cells bptt knows: one ``CellSpec`` each, and nothing about a cell anywhere else.

Adding a cell means adding one entry to ``CELL_SPECS``. The registry is torch-free
(the torch module and fused function are named, and looked up when a model is
built) so the CLI lists the cells without importing torch; ``models`` re-exports it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from bptt_cli.errors import BpttError


@dataclass(frozen=True)
class CellSpec:
    """What the model, the trainer, gradcheck and the memory estimate need to know about a cell."""

    name: str  # the --model choice, and the prefix of the parameter groups
    module_name: str  # the stacked layer in torch.nn (nn.LSTM)
    layer_function_name: str  # the fused one-layer function in torch (torch.lstm), for layer-by-layer dropout
    state_parts: tuple[str, ...]  # the tensors of the state, each (layers, batch, hidden)
    gates: int  # weight blocks per layer (4 H x input for LSTM): the parameter count follows from it
    # float32 values autograd keeps per hidden unit, step, stream and layer for backward: gates, states and
    # oneDNN's workspace, counted with torch.autograd.graph.saved_tensors_hooks (tests/test_memory.py) on the CPU, where
    # the GRU runs bptt_cli.gru_kernel (nn.GRU kept 8)
    memory_factor: float
    # values per hidden unit and layer that dropout adds: its mask, and the dropped input the layer after keeps
    # (the LSTM's and the GRU's layer functions keep it apart; torch.rnn_tanh within its own)
    dropout_memory_factor: float = 2.0
    carries_state: bool = True  # its end state can start the next window (truncated BPTT carries it)
    # a module of bptt's own whose cpu_layer(rnn, inputs) returns a faster one-layer function than torch's, or None
    cpu_kernel: str | None = None

    @property
    def module(self) -> type:
        from torch import nn

        return getattr(nn, self.module_name)

    @property
    def layer_function(self) -> Callable:
        import torch

        return getattr(torch, self.layer_function_name)

    def cpu_layer(self, rnn, inputs) -> Callable | None:
        """bptt's own layer function for ``rnn`` on ``inputs`` where it beats torch's (the GRU on the CPU), else None.

        It is called as ``layer_function`` is, and computes the same values from the same weights.
        """
        return importlib.import_module(self.cpu_kernel).cpu_layer(rnn, inputs) if self.cpu_kernel else None

    def hx(self, state: tuple):
        """The state as torch's layer takes it: the tuple (h, c) for two parts, the bare tensor h for one."""
        return state if len(self.state_parts) > 1 else state[0]


CELL_SPECS: dict[str, CellSpec] = {
    spec.name: spec
    for spec in (
        CellSpec("lstm", "LSTM", "lstm", ("h", "c"), gates=4, memory_factor=17),
        CellSpec("gru", "GRU", "gru", ("h",), gates=3, memory_factor=5, cpu_kernel="bptt_cli.gru_kernel"),
        CellSpec("rnn", "RNN", "rnn_tanh", ("h",), gates=1, memory_factor=2, dropout_memory_factor=1.0),
    )
}


def cell_spec(name: str) -> CellSpec:
    """The spec of cell ``name``, or one line naming the choices."""
    if name not in CELL_SPECS:
        raise BpttError(f"unknown model {name!r}; use one of {', '.join(CELL_SPECS)}")
    return CELL_SPECS[name]
