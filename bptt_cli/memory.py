"""How much memory a run needs, estimated from the configuration before anything is allocated.

One estimate serves training (refuse what cannot fit, warn about full BPTT),
gradcheck (the activation column of its truncation table) and ``--print-config``.
Activations follow each cell's ``memory_factor``: the values autograd keeps per
hidden unit, step, stream and layer, counted with
``torch.autograd.graph.saved_tensors_hooks`` (``tests/test_memory.py`` checks the
estimate against that count). Torch-free: it needs only the configuration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bptt_cli.cells import cell_spec
from bptt_cli.errors import BpttError

if TYPE_CHECKING:
    from bptt_cli.models import ModelConfig

FLOAT32_BYTES = 4
FLOAT64_BYTES = 8  # forecasts are float64 arrays
VALUE_BYTES = {"fp32": 4, "bf16": 2}  # bytes per activation value under each --precision
OPTIMIZER_STATE = {"adamw": 2, "adam": 2, "sgd": 0, "nt-asgd": 1}  # float32 values kept per parameter (Adam: two
# moments; nt-asgd: the average of the weights)
DROPOUT_VALUES_PER_UNIT = 1.5
TARGET_VALUES = 2  # the loss keeps the int64 targets: two float32 values' worth per step and stream
MEMINFO = Path("/proc/meminfo")


def _directions(config: ModelConfig) -> int:
    return 2 if getattr(config, "bidirectional", False) else 1  # --print-config's shape lacks the field


def parameter_count(config: ModelConfig) -> int:
    """The model's parameters, from its configuration alone (tied weights counted once)."""
    spec = cell_spec(config.cell)
    width = config.embed if config.tokens else config.input_size
    count = config.input_size * config.embed if config.tokens else 0
    directions = _directions(config)
    for layer in range(config.layers):
        inputs = width if layer == 0 else config.hidden * directions
        count += directions * spec.gates * config.hidden * (inputs + config.hidden + 2)  # W_ih, W_hh, two biases
    count += config.output_size * (config.hidden * directions + 1)
    if config.tie_weights:
        count -= config.output_size * config.hidden
    return count


def activation_values_per_step(config: ModelConfig) -> float:
    """Values autograd keeps for backward per step and stream of a training window.

    The input (embedding or features), each layer's gates, states and workspace,
    the log-probabilities and targets of the loss; with dropout, its masks at the input,
    between the layers and before the decoder.
    """
    width = config.embed if config.tokens else config.input_size
    spec = cell_spec(config.cell)
    values = width + config.layers * _directions(config) * spec.memory_factor * config.hidden + config.output_size
    values += TARGET_VALUES
    if config.dropout > 0:  # a mask value per unit at the input, and the cell's share at each layer's output
        values += width + spec.dropout_memory_factor * config.layers * config.hidden
    return values


def activation_bytes(config: ModelConfig, steps: int, batch: int, precision: str = "fp32") -> int:
    """Memory autograd keeps to back-propagate ``steps`` steps of ``batch`` streams."""
    return int(activation_values_per_step(config) * steps * batch * VALUE_BYTES.get(precision, FLOAT32_BYTES))


def update_flops(config: ModelConfig, steps: int, batch: int) -> float:
    """Floating-point operations of one update: a multiply and an add per weight, step and stream in the
    forward pass and twice that in the backward pass (the embedding is a lookup and costs none)."""
    weights = parameter_count(config) - (config.input_size * config.embed if config.tokens else 0)
    if config.tie_weights:  # the shared matrix is a lookup at the input and a product at the output
        weights += config.output_size * config.hidden
    return 6.0 * weights * steps * batch


ROLLOUT_STEP_BYTES = 1024  # per step of a rollout whatever its width: a prediction tensor kept until it is stacked,
# the step's assumed inputs and its time stamp (an estimate on the generous side)


def generation_bytes(config: ModelConfig, steps: int, streams: int) -> int:
    """Buffers of a rollout: ``steps`` predictions of every output for ``streams`` origins, and their states."""
    state = len(cell_spec(config.cell).state_parts) * config.layers * config.hidden * FLOAT32_BYTES
    return steps * streams * config.output_size * FLOAT64_BYTES + streams * state


def require_rollout_fits(config: ModelConfig, steps: int, streams: int) -> None:
    """Refuse, before allocating, a forecast horizon the machine cannot hold (``--horizon 1000000000``):
    the rollout's buffers, plus per step its assumed inputs, the written values and a tensor kept until stacked."""
    per_step = ROLLOUT_STEP_BYTES + streams * (config.input_size + 2 * config.output_size) * FLOAT64_BYTES
    require_fits(MemoryEstimate(generation=generation_bytes(config, steps, streams) + steps * per_step),
                 f"a {steps:,}-step forecast of {streams} series (--horizon)", fix="give a smaller --horizon")


@dataclass
class MemoryEstimate:
    """Bytes a run needs, by what holds them."""

    parameters: int = 0
    gradients: int = 0
    optimizer: int = 0  # the optimizer's per-parameter state
    activations: int = 0  # kept for one update's backward pass
    generation: int = 0  # rollout buffers (generate, evaluate --horizon)

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.activations + self.generation

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def training_estimate(config: ModelConfig, optimizer: str, steps: int, batch: int,
                      precision: str = "fp32") -> MemoryEstimate:
    """What training needs: weights, gradients, optimizer state and one window of activations.

    ``steps`` is the window, or the whole stream for full BPTT (``--window 0``).
    """
    weights = parameter_count(config) * FLOAT32_BYTES
    return MemoryEstimate(parameters=weights, gradients=weights,
                          optimizer=OPTIMIZER_STATE.get(optimizer, 2) * weights,
                          activations=activation_bytes(config, steps, batch, precision))


def weights_estimate(config: ModelConfig) -> MemoryEstimate:
    """What building the model needs: its weights."""
    return MemoryEstimate(parameters=parameter_count(config) * FLOAT32_BYTES)


def available_bytes(meminfo: Path = MEMINFO) -> int | None:
    """The memory the machine can give without swapping (``MemAvailable``); None where it cannot say."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def require_fits(estimate: MemoryEstimate, what: str, force: bool = False, available: int | None = None,
                 fix: str = "make the model or the window smaller, or pass --force to try anyway") -> None:
    """Refuse, in one line with both figures, what needs more than the machine has available.

    ``what`` names what is being built and the options that size it; ``force``
    tries anyway. Where the available memory is unknown nothing is refused.
    """
    available = available_bytes() if available is None else available
    if force or available is None or estimate.total <= available:
        return
    parts = ", ".join(f"{name} {gib(size)}" for name, size in asdict(estimate).items() if size)
    raise BpttError(f"{what} needs about {gib(estimate.total)} ({parts}) but this machine has "
                    f"{gib(available)} available; {fix}")


def plan(model_config: ModelConfig, optimizer: str, window: int, batch: int, precision: str = "fp32",
         steps_per_stream: int | None = None) -> dict:
    """The estimate as plain data for a plan (``--print-config``): bytes by part and what is available.

    With ``--window 0`` the activations grow with the streams: without
    ``steps_per_stream`` (the data not yet read) they are left at None.
    """
    steps = window or steps_per_stream
    estimate = training_estimate(model_config, optimizer, steps or 0, batch, precision)
    figures = estimate.to_dict()
    if not steps:
        figures["activations"] = figures["total"] = None
    return {**figures, "parameter_count": parameter_count(model_config), "available": available_bytes()}
