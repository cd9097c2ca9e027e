"""Export a model file to ONNX or ``torch.export`` (.pt2) with the recurrent state as explicit inputs and outputs.

The exported program is ``(x, *state) -> (y, *new state)``: a caller carries the
state from one call to the next, a step or a window at a time. A JSON sidecar
beside it says what the program reads and returns (names, shapes, dtypes, the
state layout) and how to turn data into its inputs (the tokenizer, or the
normalisation and columns). After writing, the exported file is run against
bptt's own model on a seeded two-window sequence with the state carried across
the boundary, the check that catches stateful-export bugs (pytorch#16025).

torch's fused LSTM/GRU/RNN cannot be exported with a dynamic time axis: under
``torch.export`` they decompose into a loop unrolled over the example's steps,
so the dynamo ONNX exporter bakes the example length into a Reshape and the
legacy TorchScript exporter, which keeps ONNX's LSTM op, is deprecated. So the
exported recurrence is the same cell equations, written with torch's ``scan``
(an ONNX Scan), on the model's own weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bptt_cli import __version__, kinds
from bptt_cli.atomic import atomic_write, write_bytes
from bptt_cli.autoregression import LinearStart
from bptt_cli.errors import BpttError, RunFailed
from bptt_cli.modelfile import ModelFile, load_model_file
from bptt_cli.output_paths import check_output as check_path
from bptt_cli.models import RecurrentModel, anchored
from bptt_cli.series import stored_calendar

FORMATS = {".onnx": "onnx", ".pt2": "pt2"}
SIDECAR_FORMAT = "bptt-export"
SIDECAR_VERSION = 1
OPSET = 18
TOLERANCE = 1e-5  # the largest difference from bptt's own model that passes the parity check
PARITY_WINDOWS = (7, 5)  # steps of the two windows of the parity check, the state carried between them
PARITY_BATCH = 3
EXAMPLE_SHAPE = (4, 2)  # (steps, batch) traced; the parity check runs other sizes, so both axes must be dynamic
EXTRA = "pip install 'bptt[export]'"


# ---------------------------------------------------------------- the exported module


def _lstm_step(w_hh: torch.Tensor, b_hh: torch.Tensor) -> Callable:
    def step(carry, projected):  # projected: (B, 4H) = x W_ih^T + b_ih, gates i, f, g, o as torch orders them
        h, c = carry
        i, f, g, o = (projected + h @ w_hh.T + b_hh).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h, c), h.clone()  # scan's per-step output may not alias its carry

    return step


def _gru_step(w_hh: torch.Tensor, b_hh: torch.Tensor) -> Callable:
    def step(carry, projected):  # gates r, z, n; the reset gate scales the recurrent part of n only
        (h,) = carry
        r_x, z_x, n_x = projected.chunk(3, -1)
        r_h, z_h, n_h = (h @ w_hh.T + b_hh).chunk(3, -1)
        r, z = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
        h = (1 - z) * torch.tanh(n_x + r * n_h) + z * h
        return (h,), h.clone()

    return step


def _rnn_step(w_hh: torch.Tensor, b_hh: torch.Tensor) -> Callable:
    def step(carry, projected):
        (h,) = carry
        h = torch.tanh(projected + h @ w_hh.T + b_hh)
        return (h,), h.clone()

    return step


CELL_STEPS = {"lstm": _lstm_step, "gru": _gru_step, "rnn": _rnn_step}


class StatefulStep(nn.Module):
    """``forward(x, *state) -> (y, *new state)``: the model with its state as explicit inputs and outputs.

    x is (T, B) token ids or (T, B, F) features, each state part (layers, B, hidden),
    y (T, B, outputs). Equal to ``RecurrentModel.forward`` in eval mode, and for a model with a linear start
    (``--anchor linear``) its offsets added, the last values it reads carried as one more state part
    ``recent`` (B, lags, O), NaN where there were none yet.
    """

    def __init__(self, model: RecurrentModel):
        super().__init__()
        self.model = model
        start = model.linear_start
        self.register_buffer("linear", None if start is None else torch.from_numpy(start.weights).float(),
                             persistent=False)

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from torch._higher_order_ops.scan import scan

        model = self.model
        inputs = model.embedding(x) if model.embedding is not None else x  # (T, B, width)
        recurrent = state[: len(state_names(model.config.cell))]
        ends = []
        for layer in range(model.config.layers):
            w_ih, w_hh, b_ih, b_hh = (getattr(model.rnn, f"{name}_l{layer}")
                                      for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            step = CELL_STEPS[model.config.cell](w_hh, b_hh)
            carry, inputs = scan(step, tuple(s[layer] for s in recurrent), inputs @ w_ih.T + b_ih)  # (T, B, hidden)
            ends.append(carry)
        y = anchored(model.decoder(inputs), x, model.config.anchor * model.config.leads)
        carried = [torch.stack(parts) for parts in zip(*ends)]
        if self.linear is None:
            return (y, *carried)
        offsets, recent = self._linear_start(x, state[-1])
        return (y + offsets, *carried, recent)

    def _linear_start(self, x: torch.Tensor, recent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The offsets (T, B, leads * O) at every step of x, and the last values after it, from ``recent``, the
        values before x; a NaN (no value yet) reads as the step's own value, as ``autoregression.windows``."""
        lags = recent.shape[1]
        values = torch.cat([recent.transpose(0, 1), x[..., self.model.config.anchor]])  # (lags + T, B, O)
        rows = torch.arange(x.shape[0]).unsqueeze(1) + torch.arange(1, lags + 1).unsqueeze(0)  # (T, lags)
        window = values[rows]  # (T, lags, B, O), the step's own value last
        last = window[:, -1:]
        moved = torch.where(window.isnan(), last, window) - last
        offsets = torch.einsum("tlbo,kol->tbko", moved, self.linear).flatten(2)
        return offsets, values[-lags:].transpose(0, 1)


def initial_state(model: RecurrentModel, batch: int) -> list[torch.Tensor]:
    """The state an export starts from: zeros, and NaN for a linear start's last values (none yet)."""
    state = list(model.init_state(batch))
    if model.config.linear:
        state.append(torch.full((batch, model.config.linear_lags, model.config.output_size), float("nan")))
    return state


# ---------------------------------------------------------------- names, shapes and the sidecar


def state_names(cell: str) -> list[str]:
    return ["h", "c"] if cell == "lstm" else ["h"]


def signature(model: RecurrentModel) -> dict:
    """The exported program's inputs, outputs and state layout, with symbolic ``time`` and ``batch`` axes."""
    config = model.config
    x = (["time", "batch"], "int64") if config.tokens else (["time", "batch", config.input_size], "float32")
    state_shape = [config.layers, "batch", config.hidden]
    parts = state_names(config.cell)
    recent = [{"name": "recent", "shape": ["batch", config.linear_lags, config.output_size], "dtype": "float32"}
              ] if config.linear else []
    carried = [*parts, *(r["name"] for r in recent)]
    return {
        "inputs": [{"name": "x", "shape": x[0], "dtype": x[1]},
                   *({"name": p, "shape": state_shape, "dtype": "float32"} for p in parts), *recent],
        "outputs": [{"name": "y", "shape": ["time", "batch", config.output_size * config.leads], "dtype": "float32"},
                    *({"name": f"{p}_next", "shape": state_shape, "dtype": "float32"} for p in parts),
                    *({**r, "name": "recent_next"} for r in recent)],
        "state": {
            "parts": parts, "shape": state_shape, "initial": "zeros",
            "carry": ", ".join(f"{p}_next -> {p}" for p in carried) + " on the next call",
            **({"recent": {"shape": recent[0]["shape"], "initial": "NaN (no values yet)",
                           "holds": "the last normalised target values, oldest first, that y's linear start reads"}}
               if recent else {}),
        },
        "model": {k: getattr(config, k) for k in ("cell", "layers", "hidden", "input_size", "output_size", "tokens")},
    }


def data_description(file: ModelFile) -> dict:
    """How data becomes ``x`` and what ``y`` means: the tokenizer, or the normalisation and columns."""
    if file.tokenizer is not None:
        return {"x": "token ids", "y": "next-token logits", "tokenizer": file.tokenizer.to_dict()}
    data = file.data
    columns = data["columns"]
    forecast = data["task"] == "forecast"
    y = "class logits, one per entry of classes"
    if forecast:
        y = {"gaussian": "blocks of len(target_columns): the normalised mean, then s with std = softplus(s) + 0.001 "
                         "(normalised units; times std[target_columns] for the data's)",
             "quantile": "one block of len(target_columns) per entry of quantiles, each normalised (sort the blocks "
                         "for ordered levels)"}.get(data.get("loss"),
                                                    "next-step targets, normalised: y * std[target_columns] + mean[target_columns]")
    return {
        "task": data["task"],
        "x": "(row[feature_columns] - mean[feature_columns]) / std[feature_columns]",
        "y": y,
        "loss": data.get("loss"),
        "quantiles": data.get("quantiles") or None,
        "normalisation": {"columns": columns, **data["norm"]},
        "feature_columns": [columns[i] for i in data["features"]],
        "target_columns": [columns[i] for i in data["targets"]],
        "classes": data.get("classes"),
        **({"calendar": calendar_description(data)} if stored_calendar(data) else {}),
    }


def calendar_description(data: dict) -> dict:
    """How the calendar feature columns are computed from the time column (they are not in the CSV)."""
    phase = {"hour": "(seconds since midnight) / 86400",
             "week": "(day of week, Monday = 0, + fraction of the day) / 7",
             "year": "(day of year - 1 + fraction of the day) / (366 in leap years, else 365)"}
    return {"time_column": data.get("time_column"),
            **{f"{part}_{wave}": f"{wave}(2 * pi * {phase[part]})" for part in stored_calendar(data)
               for wave in ("sin", "cos")}}


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _is_export(path: Path) -> bool:
    """True when ``path`` is a sidecar this command wrote (so the export beside it may be replaced)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == SIDECAR_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_output(output: Path, model_path: Path) -> str:
    """The export format of ``-o``; refuse, before any work, a path that would lose a file or cannot be written."""
    fmt = FORMATS.get(output.suffix.lower())
    if output.is_dir():
        raise BpttError(f"{output}: is a directory; give a file name, e.g. -o {output / 'model.onnx'}")
    if fmt is None:
        raise BpttError(f"{output}: -o must end in .onnx (ONNX) or .pt2 (torch.export), got {output.suffix or 'no suffix'!r}")
    if model_path.exists() and output.exists() and output.samefile(model_path):
        raise BpttError(f"{output}: is MODEL itself; choose another -o, e.g. -o {output.with_suffix('.onnx').name}")
    sidecar = sidecar_path(output)
    for path in (output, sidecar):
        if path.exists() and not _is_export(sidecar):
            raise BpttError(f"{path}: exists and is not a bptt export (no {sidecar.name} from 'bptt export'); "
                            "remove it or choose another -o")
    # a directory, a missing folder, a link or a device (what is already there was checked just above)
    check_path(output, "model", "-o", force=True)
    return fmt


def require_extra(fmt: str) -> None:
    """ONNX needs the optional packages; say how to get them rather than fail on an import."""
    if fmt != "onnx":
        return
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise BpttError(f"ONNX export needs the export extra ({err.name or 'onnx'} is missing): {EXTRA}") from None


# ---------------------------------------------------------------- writing and checking


def _example(model: RecurrentModel, steps: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    config = model.config
    if config.tokens:
        return torch.randint(0, config.input_size, (steps, batch), generator=generator)
    return torch.randn(steps, batch, config.input_size, generator=generator)


def trace(model: RecurrentModel) -> torch.export.ExportedProgram:
    """``torch.export`` of the stateful step, with the time and batch axes dynamic."""
    from torch.export import Dim

    time, batch = Dim("time"), Dim("batch")
    x = _example(model, *EXAMPLE_SHAPE, torch.Generator().manual_seed(0))
    state = initial_state(model, EXAMPLE_SHAPE[1])
    batch_axes = [1] * len(model.init_state(1)) + [0] * (len(state) - len(model.init_state(1)))  # recent: (B, ...)
    shapes = {"x": {0: time, 1: batch}, "state": tuple({axis: batch} for axis in batch_axes)}
    with torch.no_grad():
        return torch.export.export(StatefulStep(model).eval(), (x, *state), dynamic_shapes=shapes)


def _write_onnx(program: torch.export.ExportedProgram, model: RecurrentModel, path: Path) -> None:
    import logging
    import warnings

    names = signature(model)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    with warnings.catch_warnings():  # the exporter's notes on torch internals (no torchvision ...) are not about this model
        warnings.simplefilter("ignore")
        exporter_log.setLevel(logging.ERROR)
        try:
            onnx_program = torch.onnx.export(
                program, dynamo=True, opset_version=OPSET, verbose=False,
                input_names=[i["name"] for i in names["inputs"]], output_names=[o["name"] for o in names["outputs"]],
            )
        finally:
            exporter_log.setLevel(level)
    proto = onnx_program.model_proto
    _name_axes(proto)
    write_bytes(path, proto.SerializeToString())


def _name_axes(proto) -> None:
    """Call the exporter's symbols (``s77``) by what they are: x's first axis is time, its second batch."""
    x = proto.graph.input[0].type.tensor_type.shape.dim
    rename = {x[0].dim_param: "time", x[1].dim_param: "batch"}
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]


def _runner(path: Path, fmt: str, model: RecurrentModel) -> Callable[..., list]:
    """The exported file, loaded back from disk, as ``(x, *state) -> [y, *state]`` on numpy arrays."""
    if fmt == "pt2":
        program = torch.export.load(str(path)).module()

        def run_pt2(*arrays):
            with torch.no_grad():
                return [t.numpy() for t in program(*(torch.from_numpy(a) for a in arrays))]

        return run_pt2
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i["name"] for i in signature(model)["inputs"]]
    return lambda *arrays: session.run(None, dict(zip(names, arrays)))


def parity(path: Path, fmt: str, model: RecurrentModel, seed: int = 0) -> float:
    """Largest absolute difference between the exported file and bptt's model over two windows, state carried
    (a linear start's offsets computed by ``autoregression`` on everything read so far)."""
    generator = torch.Generator().manual_seed(seed)
    x = _example(model, sum(PARITY_WINDOWS), PARITY_BATCH, generator)
    run = _runner(path, fmt, model)
    start = model.linear_start
    ours, theirs = model.init_state(PARITY_BATCH), [s.numpy() for s in initial_state(model, PARITY_BATCH)]
    worst, begin = 0.0, 0
    for steps in PARITY_WINDOWS:
        window = x[begin:begin + steps]
        with torch.no_grad():
            y, ours = model(window, ours)
        expected = [y, *ours]
        if start is not None:
            expected[0] = y + _offsets(start, x[: begin + steps, :, model.config.anchor], begin)
            expected.append(_recent(x[: begin + steps, :, model.config.anchor], start.lags))
        begin += steps
        y_exported, *theirs = run(window.numpy(), *theirs)
        for want, got in zip(expected, (y_exported, *theirs)):
            worst = max(worst, _gap(want, torch.from_numpy(got)))
    return worst


def _offsets(start: LinearStart, seen: torch.Tensor, begin: int) -> torch.Tensor:
    """bptt's linear start offsets (steps, B, leads * O) at rows ``begin``.. of ``seen`` (rows, B, O)."""
    origins = torch.arange(begin, len(seen)).numpy()
    return torch.stack([torch.from_numpy(start.offsets(start.trail(seen[:, b].double().numpy(), origins))).float()
                        for b in range(seen.shape[1])], dim=1)


def _recent(seen: torch.Tensor, lags: int) -> torch.Tensor:
    """The last ``lags`` rows of ``seen`` (rows, B, O) as (B, lags, O), NaN before the first."""
    padded = torch.cat([torch.full((lags, *seen.shape[1:]), float("nan")), seen])
    return padded[-lags:].transpose(0, 1)


def _gap(want: torch.Tensor, got: torch.Tensor) -> float:
    """The largest absolute difference; infinite where only one of the two is NaN."""
    if not torch.equal(want.isnan(), got.isnan()):
        return float("inf")
    return float((want - got).nan_to_num().abs().max())


@dataclass
class Export:
    """What ``export_model`` wrote and how close the exported program is to bptt's model."""

    path: Path
    sidecar: Path
    format: str
    max_abs_diff: float

    def parity(self) -> dict:
        return {"max_abs_diff": self.max_abs_diff, "tolerance": TOLERANCE, "windows": list(PARITY_WINDOWS),
                "batch": PARITY_BATCH, "passed": self.max_abs_diff <= TOLERANCE}

    def to_dict(self) -> dict:
        return {"output": str(self.path), "sidecar": str(self.sidecar), "format": self.format, **self.parity()}


def export_model(model_path: str | Path, output: str | Path) -> Export:
    """Write MODEL as ONNX or .pt2 with its sidecar, then prove it equals bptt's model (else nothing is written)."""
    model_path, output = Path(model_path), Path(output)
    fmt = check_output(output, model_path)
    require_extra(fmt)
    file = load_model_file(model_path)
    if file.model.config.bidirectional:
        raise BpttError(f"{model_path}: a bidirectional model reads each sequence from its end, which an export "
                        "that carries the state step by step cannot; export a model trained without --bidirectional")
    kind = kinds.of_model(file).name
    model = file.model.float().eval()
    program = trace(model)
    staged = output.with_name(f".{output.name}.staged{output.suffix}")  # checked before it replaces anything at -o
    try:
        if fmt == "pt2":
            atomic_write(staged, lambda out: torch.export.save(program, out))
        else:
            _write_onnx(program, model, staged)
        worst = parity(staged, fmt, model)
        if not worst <= TOLERANCE:
            raise RunFailed(f"{output}: the exported model differs from bptt's by {worst:.3g} (more than "
                            f"{TOLERANCE:g}) over two windows with the state carried; nothing was written")
        result = Export(output, sidecar_path(output), fmt, worst)
        sidecar: dict[str, Any] = {
            "format": SIDECAR_FORMAT, "format_version": SIDECAR_VERSION, "bptt_version": __version__,
            "torch_version": torch.__version__, "file": output.name, "export_format": fmt,
            "opset": OPSET if fmt == "onnx" else None, "model_file": model_path.name, "kind": kind,
            **signature(model), "data": data_description(file), "parity": result.parity(),
        }
        os.replace(staged, output)
    finally:
        staged.unlink(missing_ok=True)
    write_bytes(result.sidecar, (json.dumps(sidecar, indent=2) + "\n").encode())
    return result
