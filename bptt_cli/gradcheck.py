"""Gradient diagnostics: prove the BPTT gradients right and show how they flow through time.

Four checks, each returning a plain dict (the renderer and ``--json`` show them):

1. ``check_finite_differences``: autograd against central finite differences.
2. ``check_forward_mode``: reverse mode (BPTT) against forward mode (RTRL).
3. ``check_flow``: the norm of dL/dh_t back through a window, its decay rate,
   horizon and the spectral norm of the step Jacobian dh_t/dh_{t-1}.
4. ``check_truncation``: truncated gradients for several windows against full BPTT.

Checks 1-3 run in float64 so that errors of ~1e-10 mean "right" and not "rounding".
Everything the checks differentiate comes through one seam, a ``Problem``: the
inputs, the targets and the loss. Token models get theirs from ``token_problem``;
feature models will plug in their own there.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp, vmap

from bptt_cli.errors import BpttError
from bptt_cli.losses import IGNORE_LABEL, class_total, regression_total
from bptt_cli.memory import activation_bytes
from bptt_cli.models import CELL_SPECS, ModelConfig, RecurrentModel, State

DEFAULT_WINDOWS = (1, 5, 10, 25, 50, 100, 200)
FD_STEP = 1e-5  # central differences in float64: truncation error ~h^2, rounding ~1e-16/h, both ~1e-11
GRADIENT_FLOOR = 1e-3  # relative errors divide by max(|gradient| of the tensor, this)
FORWARD_MODE_MAX_HIDDEN = 32
FORWARD_MODE_MAX_PARAMETERS = 50_000  # forward mode costs one pass per parameter
FORWARD_MODE_CHUNK_VALUES = 1 << 22  # tangent values pushed through the model at once (32 MB of float64)
STABLE_RATES = (0.9, 1 / 0.9)  # per-step gradient factor: below vanishing, above exploding
HORIZON_FRACTION = 1e-3  # the signal "has faded" below this fraction of its value at T
JACOBIAN_ALL_STEPS_UP_TO = 256  # state sizes up to this get a Jacobian at every step
JACOBIAN_SAMPLED_STEPS = 10  # larger states get it at this many evenly spaced steps

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Problem:
    """What the checks differentiate: the model's inputs, targets and loss (the seam for new data kinds)."""

    inputs: torch.Tensor  # (N, B) token ids, or (N, B, F) features
    targets: torch.Tensor  # (N, B) the token that follows each input
    loss: LossFn  # (predictions (T, B, O), targets (T, B)) -> loss summed over steps and streams
    source: str = "synthetic"  # where the inputs came from, for the report
    resets: torch.Tensor | None = None  # (N, B) steps where a stream begins a new sequence (its state is zeroed)

    @property
    def steps(self) -> int:
        return self.inputs.shape[0]

    def to(self, device: torch.device) -> "Problem":
        resets = None if self.resets is None else self.resets.to(device)
        return Problem(self.inputs.to(device), self.targets.to(device), self.loss, self.source, resets)


@dataclass
class Settings:
    """How thorough the checks are; the defaults finish in seconds for a small model on a CPU."""

    window: int = 20  # steps of checks 1-3 (the loss of check 3 sits at the last one)
    segment: int = 200  # steps of check 4, capped at the data
    windows: Sequence[int] = DEFAULT_WINDOWS  # truncation windows of check 4, capped at the segment
    tolerance: float = 1e-6  # largest relative error that passes checks 1 and 2
    min_cosine: float = 0.9  # check 4 recommends the shortest window at least this close to full BPTT
    seed: int = 0  # picks the entries that finite differences check
    max_entries: int = 20  # entries checked per parameter tensor by finite differences
    batch_size: int = 1  # streams of the training run, to scale the memory estimate

    def validate(self, steps: int) -> None:
        if self.window < 2:
            raise BpttError(f"--window must be at least 2, got {self.window}")
        if self.window > steps:
            raise BpttError(
                f"--window {self.window} is longer than the data ({steps} steps); use a shorter --window or more data"
            )
        if self.segment < 1:
            raise BpttError(f"--segment must be at least 1, got {self.segment}")
        if not self.windows or min(self.windows) < 1:
            raise BpttError(f"--windows must be positive step counts, got {','.join(map(str, self.windows))}")
        if self.tolerance <= 0:
            raise BpttError(f"--tolerance must be positive, got {self.tolerance}")
        if not 0.0 < self.min_cosine <= 1.0:
            raise BpttError(f"--min-cosine must be in (0, 1], got {self.min_cosine}")
        if self.max_entries < 1:
            raise BpttError(f"max_entries must be at least 1, got {self.max_entries}")


# ---------------------------------------------------------------- inputs


def fresh_model(
    cell: str = "lstm", vocab: int = 16, embed: int = 16, hidden: int = 16, layers: int = 1, seed: int = 0
) -> RecurrentModel:
    """A newly initialised token model, the same for the same seed."""
    if vocab < 2:
        raise BpttError(f"--vocab must be at least 2, got {vocab}")
    torch.manual_seed(seed)
    config = ModelConfig(cell=cell, input_size=vocab, output_size=vocab, embed=embed, hidden=hidden, layers=layers)
    return RecurrentModel(config).eval()


def token_problem(ids: torch.Tensor | np.ndarray, source: str = "synthetic") -> Problem:
    """One stream of token ids (N + 1,) -> inputs (N, 1) and next-token targets (N, 1), cross-entropy loss."""
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64)).reshape(-1, 1)  # (N + 1, 1)
    if ids.shape[0] < 3:
        raise BpttError(f"{source}: {ids.shape[0]} tokens are too few; gradcheck needs at least 3")

    return Problem(ids[:-1], ids[1:], class_total, source)


def synthetic_problem(model: RecurrentModel, steps: int, seed: int = 0) -> Problem:
    """Seeded uniform random tokens (or normal frames, for a feature model), for a model without data."""
    if not model.config.tokens:
        return synthetic_features(model, steps, seed)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.input_size, (steps + 1,), generator=generator)
    return token_problem(ids, "synthetic")


def text_problem(model: RecurrentModel, tokenizer, text: str | bytes, source: str) -> Problem:
    """Text encoded with the model's own tokenizer; unknown tokens are dropped, as in training."""
    _require_tokens(model)
    if tokenizer is None:
        raise BpttError(f"{source}: the model file has no tokenizer, so it cannot read text")
    ids, _unknown = tokenizer.encode(text)
    return token_problem(ids, source)


def feature_problem(inputs: np.ndarray, targets: np.ndarray, task: str, loss: str = "mse",
                    source: str = "synthetic") -> Problem:
    """One stream of feature frames (N, F) with targets: next-frame values (N, O) or class ids (N,).

    The loss is the training loss summed in float64 (training's own casts to
    float32 for mixed precision, which would blur errors of 1e-10).
    """
    x = torch.as_tensor(np.asarray(inputs, dtype=np.float64)).unsqueeze(1)  # (N, 1, F)
    if x.shape[0] < 3:
        raise BpttError(f"{source}: {x.shape[0]} frames are too few; gradcheck needs at least 3")
    if task == "forecast":
        y = torch.as_tensor(np.asarray(targets, dtype=np.float64)).unsqueeze(1)  # (N, 1, O)
        return Problem(x, y, regression_total(loss), source)
    y = torch.as_tensor(np.asarray(targets, dtype=np.int64)).reshape(-1, 1)  # (N, 1); IGNORE_LABEL carries no loss
    return Problem(x, y, class_total, source)


def synthetic_features(model: RecurrentModel, steps: int, seed: int = 0) -> Problem:
    """Seeded normal frames and next-frame targets, for a feature model without data."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(steps + 1, model.config.input_size, generator=generator, dtype=torch.float64)
    targets = torch.randn(steps, model.config.output_size, generator=generator, dtype=torch.float64)
    return feature_problem(frames[:-1].numpy(), targets.numpy(), "forecast", source="synthetic")


def _require_tokens(model: RecurrentModel) -> None:
    if not model.config.tokens:
        raise BpttError("this model reads feature frames, not text; give it its own kind of data (CSV or features)")


# ---------------------------------------------------------------- helpers


def _float64(model: RecurrentModel, device: torch.device) -> RecurrentModel:
    """The model in float64 on ``device``, in eval mode (no dropout); a copy unless it already is one.

    A model that is already float64 on the device is used as is, so hooks on its
    parameters (a test's deliberately broken gradient) stay in place.
    """
    params = list(model.parameters())
    if all(p.dtype == torch.float64 and p.device == device for p in params) and not model.training:
        return model
    return copy.deepcopy(model).to(device=device, dtype=torch.float64).eval()


def _device(device: torch.device | str | None) -> tuple[torch.device, str | None]:
    """Where float64 can run: MPS has no float64, so those checks run on the CPU."""
    device = torch.device(device or "cpu")
    if device.type == "mps":
        return torch.device("cpu"), "mps has no float64; the checks ran on the CPU"
    return device, None


def _zero_state(model: RecurrentModel, batch: int) -> State:
    weight = model.decoder.weight
    return tuple(s.to(weight) for s in model.init_state(batch, weight.device))


def _window_loss(model: RecurrentModel, problem: Problem, steps: int, params: dict | None = None) -> torch.Tensor:
    """Mean loss per prediction over the first ``steps`` steps, from a zero state."""
    inputs = problem.inputs[:steps]
    state = _zero_state(model, inputs.shape[1])
    if params is None:
        logits, _ = model(inputs, state)  # (T, B, V)
    else:
        logits, _ = functional_call(model, params, (inputs, state))
    return problem.loss(logits, problem.targets[:steps]) / problem.targets[:steps].numel()


def _errors(bptt: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Max absolute error, and the same relative to the tensor's gradient scale.

    Dividing by the largest reference entry (floored at GRADIENT_FLOOR) rather than
    entry by entry keeps near-zero gradients, whose float64 noise is ~1e-10, from
    failing a correct check.
    """
    abs_error = (bptt - reference).abs().max().item() if bptt.numel() else 0.0
    scale = max(reference.abs().max().item() if reference.numel() else 0.0, GRADIENT_FLOOR)
    return abs_error, abs_error / scale


def _named_params(model: RecurrentModel) -> dict[str, torch.nn.Parameter]:
    return dict(model.named_parameters())  # tied weights appear once


def _bptt_gradients(model: RecurrentModel, problem: Problem, steps: int) -> dict[str, torch.Tensor]:
    params = _named_params(model)
    loss = _window_loss(model, problem, steps)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(params.items(), grads)}


# ---------------------------------------------------------------- check 1


def _sample_entries(grad: torch.Tensor, count: int, rng: np.random.Generator) -> np.ndarray:
    """All entries of a small tensor; of a large one, half where the gradient is non-zero, half anywhere."""
    size = grad.numel()
    if size <= count:
        return np.arange(size)
    nonzero = np.flatnonzero(grad.detach().reshape(-1).cpu().numpy() != 0)
    picked = rng.choice(nonzero, min(len(nonzero), count // 2), replace=False) if len(nonzero) else np.empty(0, int)
    rest = np.setdiff1d(np.arange(size), picked)
    return np.sort(np.concatenate([picked, rng.choice(rest, count - len(picked), replace=False)]))


def check_finite_differences(model: RecurrentModel, problem: Problem, settings: Settings) -> dict:
    """Compare the BPTT gradient of every parameter tensor with central differences, in float64."""
    steps = settings.window
    rng = np.random.default_rng(settings.seed)
    grads = _bptt_gradients(model, problem, steps)
    tensors = []
    with torch.no_grad():
        for name, param in _named_params(model).items():
            entries = _sample_entries(grads[name], settings.max_entries, rng)
            flat = param.view(-1)  # shares storage: nudging an entry nudges the model
            numeric = torch.empty(len(entries), dtype=torch.float64)
            for n, i in enumerate(entries.tolist()):
                original = flat[i].item()
                flat[i] = original + FD_STEP
                up = _window_loss(model, problem, steps).item()
                flat[i] = original - FD_STEP
                down = _window_loss(model, problem, steps).item()
                flat[i] = original
                numeric[n] = (up - down) / (2 * FD_STEP)
            analytic = grads[name].reshape(-1)[torch.as_tensor(entries, device=param.device)].cpu()
            abs_error, rel_error = _errors(analytic, numeric)
            tensors.append(
                {
                    "name": name,
                    "shape": list(param.shape),
                    "entries": len(entries),
                    "max_abs_error": abs_error,
                    "max_rel_error": rel_error,
                    "passed": rel_error <= settings.tolerance,
                }
            )
    return {
        "passed": all(t["passed"] for t in tensors),
        "tolerance": settings.tolerance,
        "step": FD_STEP,
        "relative_floor": GRADIENT_FLOOR,
        "window": steps,
        "tensors": tensors,
    }


# ---------------------------------------------------------------- check 2


def _unit_vectors(param: torch.Tensor):
    """The unit tangents of ``param``'s entries, in chunks of (chunk, *param.shape) that fit in memory."""
    size = param.numel()
    chunk = max(1, min(size, FORWARD_MODE_CHUNK_VALUES // size))
    for start in range(0, size, chunk):
        rows = torch.arange(min(chunk, size - start), device=param.device)
        basis = torch.zeros(len(rows), size, dtype=param.dtype, device=param.device)
        basis[rows, start + rows] = 1.0
        yield basis.reshape(-1, *param.shape)


def check_forward_mode(model: RecurrentModel, problem: Problem, settings: Settings) -> dict:
    """The exact gradient a second way: forward-mode derivatives carried through time (RTRL).

    One Jacobian-vector product per parameter entry, batched with vmap; each
    pushes the tangent dh_t/dtheta forward step by step, as real-time recurrent
    learning does, so it shares no code path with backpropagation.
    """
    params = {name: p.detach() for name, p in _named_params(model).items()}
    count = sum(p.numel() for p in params.values())
    skipped = None
    if model.config.hidden > FORWARD_MODE_MAX_HIDDEN:
        skipped = f"hidden {model.config.hidden} > {FORWARD_MODE_MAX_HIDDEN}: forward mode costs one pass per parameter"
    elif count > FORWARD_MODE_MAX_PARAMETERS:
        skipped = f"{count} parameters > {FORWARD_MODE_MAX_PARAMETERS}: forward mode costs one pass per parameter"
    if skipped:
        return {"passed": None, "max_rel_error": None, "max_abs_error": None, "skipped": skipped, "tensors": []}

    steps = settings.window
    grads = _bptt_gradients(model, problem, steps)
    tensors = []

    def directional(tangents: dict[str, torch.Tensor]) -> torch.Tensor:
        return jvp(lambda p: _window_loss(model, problem, steps, p), (params,), (tangents,))[1]

    for name, param in params.items():
        columns = []
        for basis in _unit_vectors(param):  # (chunk, *shape)
            # every tangent is batched (zeros expanded for free): vmap refuses the LSTM's in-place ops otherwise
            tangents = {
                n: basis if n == name else torch.zeros_like(p).expand(len(basis), *p.shape) for n, p in params.items()
            }
            with warnings.catch_warnings():  # torch's own forward-AD decompositions use the deprecated jit.script
                warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
                columns.append(vmap(directional)(tangents))
        forward = torch.cat(columns).reshape(param.shape)
        abs_error, rel_error = _errors(grads[name], forward)
        tensors.append({"name": name, "max_abs_error": abs_error, "max_rel_error": rel_error})
    max_rel = max(t["max_rel_error"] for t in tensors)
    return {
        "passed": max_rel <= settings.tolerance,
        "tolerance": settings.tolerance,
        "max_rel_error": max_rel,
        "max_abs_error": max(t["max_abs_error"] for t in tensors),
        "skipped": None,
        "parameters": count,
        "tensors": tensors,
    }


# ---------------------------------------------------------------- check 3


def _flat_state(state: State) -> torch.Tensor:
    """A state tuple of (layers, B, hidden) parts -> (B, parts * layers * hidden)."""
    return torch.cat([s.transpose(0, 1).reshape(s.shape[1], -1) for s in state], dim=1)


def _step_jacobian(model: RecurrentModel, x: torch.Tensor, state: State) -> torch.Tensor:
    """dh_t/dh_{t-1} of the full state (every layer; h and c for LSTM), shape (D, D).

    The state is copied into D streams; stream i back-propagates the unit vector
    e_i, so its input-state gradient is row i of the Jacobian. One fused forward
    and backward per step, however large D is.
    """
    size = sum(s.shape[0] * s.shape[2] for s in state)  # D
    copies = tuple(s[:, :1].detach().expand(-1, size, -1).clone().requires_grad_(True) for s in state)
    _, new = model.recur(x[:, :1].expand(-1, size, *x.shape[2:]), copies)  # ids (1, D) or frames (1, D, F)
    unit = torch.eye(size, dtype=new[0].dtype, device=x.device)  # stream i back-propagates e_i
    rows = torch.autograd.grad(_flat_state(new), copies, grad_outputs=unit)
    return _flat_state(rows)  # (D, D): row i is d new_i / d state


def check_flow(model: RecurrentModel, problem: Problem, settings: Settings) -> dict:
    """How the gradient of the loss at the last step reaches back through the window.

    The model steps one time step at a time (length-1 slices of the fused layer,
    carrying the state) so that every step's state is a node whose gradient we can
    read; the loss decodes the top layer of the final state.
    """
    steps = settings.window
    inputs = problem.inputs[:steps, :1]  # (T, 1): the first stream
    state = _zero_state(model, 1)
    states = []  # states[t - 1] is h_t, the state after step t
    for t in range(steps):
        _, state = model.recur(inputs[t : t + 1], state)
        states.append(state)
    logits = model.decode(state[0][-1:])  # top layer h_T, (1, 1, V)
    loss = problem.loss(logits, problem.targets[steps - 1 : steps, :1])
    parts = [s for st in states for s in st]
    grads = torch.autograd.grad(loss, parts, allow_unused=True)
    per_step = len(state)
    norms = []  # t = T .. 1
    for t in reversed(range(steps)):
        step_grads = [g for g in grads[t * per_step : (t + 1) * per_step] if g is not None]
        norms.append(math.sqrt(sum(g.pow(2).sum().item() for g in step_grads)))

    back = np.arange(steps)
    logs = np.log(np.maximum(norms, 1e-300))
    rate = float(math.exp(np.polyfit(back, logs, 1)[0]))
    faded = [j for j, n in enumerate(norms) if n < HORIZON_FRACTION * norms[0]]
    horizon, estimated = (faded[0], False) if faded else (None, False)
    if horizon is None and rate < 1 - 1e-9:  # a rate of 1 up to rounding never fades
        horizon, estimated = math.ceil(math.log(HORIZON_FRACTION) / math.log(rate)), True

    size = sum(s.shape[0] * s.shape[2] for s in state)
    at = range(1, steps)
    if size > JACOBIAN_ALL_STEPS_UP_TO:  # an SVD of a large Jacobian per step adds up: sample the steps
        at = np.unique(np.linspace(1, steps - 1, JACOBIAN_SAMPLED_STEPS).astype(int)).tolist()
    spectral = [
        torch.linalg.matrix_norm(_step_jacobian(model, inputs[t : t + 1], states[t - 1]), ord=2).item() for t in at
    ]
    verdict = flow_verdict(rate, horizon, estimated)
    return {
        "verdict": verdict,
        "advice": flow_advice(verdict, model.config.cell, norms, rate, horizon, max(spectral)),
        "window": steps,
        "norms": norms,
        "rate_per_step": rate,
        "horizon_fraction": HORIZON_FRACTION,
        "horizon_steps": horizon,
        "horizon_estimated": estimated,
        "jacobian_spectral_norm": {
            "mean": float(np.mean(spectral)),
            "max": float(np.max(spectral)),
            "steps": len(spectral),
            "state": "full state: every layer, " + " and ".join(model.config.spec.state_parts),
            "size": size,
        },
    }


def flow_verdict(rate: float, horizon: int | None, estimated: bool) -> str:
    """vanishing, exploding or stable, from the measured decay of |dL/dh_t| (never from the Jacobian's bound).

    A gradient that falls below HORIZON_FRACTION inside the window has vanished,
    whatever the fitted rate; otherwise the fitted per-step rate decides.
    """
    if (horizon is not None and not estimated) or rate < STABLE_RATES[0]:
        return "vanishing"
    return "exploding" if rate > STABLE_RATES[1] else "stable"


def flow_advice(verdict: str, cell: str, norms: list[float], rate: float, horizon: int | None,
                jacobian_max: float) -> str:
    """What to do about the flow, in figures the flow table prints: the norms, the rate, the horizon, the Jacobian.

    ``norms`` run from t=T back to t=1. The spectral norm of a step Jacobian bounds
    how much that step can stretch a gradient; the measured norms say what it did.
    """
    window = len(norms)
    if verdict == "exploding":
        advice = (f"the gradient grows by {rate:.4g} per step back; clip the gradient norm (--clip 1.0) or "
                  "train with a shorter --window")
    elif verdict == "stable":
        kept = norms[-1] / norms[0] if norms[0] > 0 else math.nan
        advice = (f"the gradient carries across all {window} steps (at t=1 it is {kept:.4g} of its value at "
                  f"t={window}); a longer --window can learn longer dependences")
    else:
        reach = f"the gradient fades within about {horizon} steps" if horizon else "the gradient fades fast"
        gated = " or ".join(name for name, spec in CELL_SPECS.items() if spec.gates > 1)
        advice = (f"{reach}; a gated cell (--model {gated}) carries it further" if CELL_SPECS[cell].gates == 1 else
                  f"{reach}; a --window much longer than that adds little (training can lengthen it: "
                  "recheck trained models)")
    return f"{advice}; {_jacobian_remark(verdict, rate, jacobian_max)}"


def _jacobian_remark(verdict: str, rate: float, jacobian_max: float) -> str:
    """The spectral norm beside the verdict, worded so that the two never seem to disagree."""
    if jacobian_max <= 1:
        return (f"every step Jacobian has spectral norm at most {jacobian_max:.4g}, so no gradient through the "
                "state can grow from one step to the one before")
    if verdict == "exploding":
        return f"step Jacobians with spectral norm up to {jacobian_max:.4g} let it grow"
    change = "shrinks" if rate < 1 else "grows"
    return (f"the Jacobian's spectral norm (max {jacobian_max:.4g}) only bounds how much one step could stretch "
            f"a gradient; this one {change} by a factor {rate:.4g} per step back")


def truncation_time(rows: list[dict], best: dict | None, segment: int, full_seconds: float) -> dict:
    """How long an update of the recommended window takes against a full-BPTT update, from measured times.

    The full-BPTT reference is the table's own row for the whole segment when it
    has one, else the full gradient timed before the table.
    """
    whole = [r for r in rows if r["window"] == segment]
    reference = whole[0]["seconds_per_update"] if whole else full_seconds
    return {
        "full_update_seconds": reference,
        "full_update_from_table": bool(whole),
        "time_per_update_fraction": best["seconds_per_update"] / reference if best and reference > 0 else None,
    }


# ---------------------------------------------------------------- check 4


def segment_gradient(model: RecurrentModel, problem: Problem, segment: int, window: int) -> tuple[torch.Tensor, int]:
    """The gradient of the loss summed over ``segment`` steps, with the state detached every ``window`` steps.

    Each window is back-propagated on its own, as truncated BPTT does, so memory
    holds one window's activations. Returns the flat gradient and the update count.
    """
    params = list(_named_params(model).values())
    total = [torch.zeros_like(p) for p in params]
    state = _zero_state(model, problem.inputs.shape[1])
    updates = 0
    for start in range(0, segment, window):
        end = min(start + window, segment)
        if problem.resets is None:
            logits, state = model(problem.inputs[start:end], state)
        else:  # zero the state where a stream begins a new sequence, as training does
            mask = problem.resets[start:end]
            outputs, state = model.recur(problem.inputs[start:end], state, mask,
                                         torch.nonzero(mask.any(dim=1)).flatten().tolist())
            logits = model.decode(outputs)
        loss = problem.loss(logits, problem.targets[start:end])
        for acc, g in zip(total, torch.autograd.grad(loss, params, allow_unused=True)):
            if g is not None:
                acc += g
        state = model.detach_state(state)
        updates += 1
    return torch.cat([g.reshape(-1) for g in total]), updates


def activation_bytes_per_step(config: ModelConfig, batch: int = 1) -> int:
    """The float32 activations one training step of ``batch`` streams keeps for backward (``memory``'s estimate).

    The total for a window is this times the window length.
    """
    return activation_bytes(config, 1, batch)


def window_cosines(model: RecurrentModel, problem: Problem, segment: int, windows: Sequence[int],
                   stop_at: float | None = None, combine: Callable[[torch.Tensor], torch.Tensor] = lambda g: g,
                   ) -> tuple[list[dict], float]:
    """Each window's truncated gradient over ``segment`` steps against full BPTT's: cosine, relative norm, time.

    ``windows`` run in the order given; with ``stop_at`` the rows end at the first
    whose cosine reaches it (the shortest such window, when they ascend).
    ``combine`` sums a flat gradient over processes (a distributed run's ranks
    hold different streams, and must agree). Returns the rows and full BPTT's seconds.
    """
    started = time.perf_counter()
    full = combine(segment_gradient(model, problem, segment, segment)[0])
    full_seconds = time.perf_counter() - started
    full_norm = full.norm().item()
    rows = []
    for k in windows:
        started = time.perf_counter()
        grad, updates = segment_gradient(model, problem, segment, k)
        grad = combine(grad)
        rows.append({
            "window": k,
            "cosine": F.cosine_similarity(grad, full, dim=0, eps=1e-300).item(),
            "relative_norm": grad.norm().item() / full_norm if full_norm > 0 else float("nan"),
            "updates": updates,
            "seconds_per_update": (time.perf_counter() - started) / updates,
        })
        if stop_at is not None and rows[-1]["cosine"] >= stop_at:
            break
    return rows, full_seconds


def check_truncation(model: RecurrentModel, problem: Problem, settings: Settings) -> dict:
    """What detaching the state every k steps does to the gradient over a long segment."""
    segment = min(settings.segment, problem.steps)
    windows = sorted({min(k, segment) for k in settings.windows})
    rows, full_seconds = window_cosines(model, problem, segment, windows)
    per_step = activation_bytes_per_step(model.config, settings.batch_size)
    for row in rows:
        row["activation_bytes"] = per_step * row["window"]
    good = [r for r in rows if r["cosine"] >= settings.min_cosine]
    best = good[0] if good else None
    full_bytes = per_step * segment
    return {
        "segment": segment,
        "min_cosine": settings.min_cosine,
        "full_seconds": full_seconds,
        "full_activation_bytes": full_bytes,
        "activation_bytes_per_step": per_step,
        "batch_size": settings.batch_size,
        "windows": rows,
        "recommended_window": best["window"] if best else None,
        "memory_saved_bytes": full_bytes - best["activation_bytes"] if best else None,
        **truncation_time(rows, best, segment, full_seconds),
    }


# ---------------------------------------------------------------- the training window (--window auto)

AUTO_SEGMENT = 400  # steps of the training sample that full BPTT's gradient covers
AUTO_STREAMS = 4  # streams of the sample (per process)
AUTO_WINDOWS = DEFAULT_WINDOWS[1:]  # a window of 1 step costs a pass per step and is seldom worth training with


def summed_loss(loss_fn: LossFn) -> LossFn:
    """A training loss (a mean over the scored targets) as the sum the truncation check adds up over windows."""
    def total(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        scored = ~torch.isnan(targets) if targets.is_floating_point() else targets != IGNORE_LABEL
        return loss_fn(outputs, targets) * scored.sum()

    return total


def training_sample(inputs: torch.Tensor, targets: torch.Tensor, resets: torch.Tensor | None, loss_fn: LossFn,
                    segment: int = AUTO_SEGMENT, streams: int = AUTO_STREAMS) -> Problem:
    """The first ``segment`` steps of up to ``streams`` evenly spaced training streams, with the training loss."""
    steps = min(segment, inputs.shape[0])
    head, wanted = inputs[:steps], targets[:steps]  # time slices first: mapped token streams take only those
    picked = torch.as_tensor(np.unique(np.linspace(0, head.shape[1] - 1, min(streams, head.shape[1])).round()
                                       .astype(np.int64)), device=head.device)
    cut = None if resets is None else resets[:steps, picked]
    return Problem(head[:, picked], wanted[:, picked], summed_loss(loss_fn), "training data", cut)


@contextlib.contextmanager
def _checking(model: RecurrentModel):
    """The model without dropout for the check; cuDNN, whose RNN backward wants training mode, stays off."""
    was_training = model.training
    model.eval()
    try:
        with torch.backends.cudnn.flags(enabled=False):
            yield model
    finally:
        model.train(was_training)


def choose_window(model: RecurrentModel, sample: Problem, min_cosine: float, fits: Callable[[int], bool],
                  combine: Callable[[torch.Tensor], torch.Tensor] = lambda g: g) -> dict:
    """The shortest window whose gradient over ``sample`` reaches ``min_cosine`` against full BPTT's.

    Candidates are gradcheck's windows shorter than the sample, then the sample's
    length itself (cosine 1), as far as ``fits(window)`` (the memory) allows; the
    longest that fits is taken when none reaches ``min_cosine``. Costs one forward
    and backward pass over the sample for full BPTT and one per window tried.
    """
    started = time.perf_counter()
    candidates = [k for k in AUTO_WINDOWS if k < sample.steps] + [sample.steps]
    fitting = [k for k in candidates if fits(k)] or candidates[:1]
    with _checking(model):
        rows, _ = window_cosines(model, sample, sample.steps, [k for k in fitting if k < sample.steps],
                                 stop_at=min_cosine, combine=combine)
    reached = [r for r in rows if r["cosine"] >= min_cosine]
    if reached:
        row = reached[0]
    elif sample.steps in fitting:  # full BPTT over the sample: its own gradient
        row = {"window": sample.steps, "cosine": 1.0}
    else:  # the memory stops short of any window that reaches it: the longest that fits
        row = rows[-1]
    return {
        "window": row["window"],
        "cosine": row["cosine"],
        "min_cosine": min_cosine,
        "reached": row["cosine"] >= min_cosine,
        "bounded_by_memory": len(fitting) < len(candidates) and not reached,
        "tried": [{"window": r["window"], "cosine": r["cosine"]} for r in rows],
        **_sample_cost(sample, 1 + len(rows), started),
    }


def window_cosine(model: RecurrentModel, sample: Problem, window: int,
                  combine: Callable[[torch.Tensor], torch.Tensor] = lambda g: g) -> dict:
    """The cosine of ``window``'s truncated gradient over ``sample`` against full BPTT's (two passes)."""
    started = time.perf_counter()
    with _checking(model):
        rows, _ = window_cosines(model, sample, sample.steps, [min(window, sample.steps)], combine=combine)
    return {"window": window, "cosine": rows[0]["cosine"], **_sample_cost(sample, 2, started)}


def _sample_cost(sample: Problem, passes: int, started: float) -> dict:
    return {"sample_streams": sample.inputs.shape[1], "sample_steps": sample.steps, "passes": passes,
            "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------- all four


def _through_time(model: RecurrentModel, problem: Problem, settings: Settings) -> dict:
    """Checks 3 and 4, or why a bidirectional model skips them: a backward direction reads each sequence from
    its end, so neither a step-by-step state Jacobian nor a truncation window means anything for it."""
    if model.config.bidirectional:
        why = ("a bidirectional model reads each sequence from its end too: it trains on whole sequences "
               "(--window 0), so there is no step-to-step state to follow and no window to choose")
        return {"flow": {"skipped": why}, "truncation": {"skipped": why}}
    return {"flow": check_flow(model, problem, settings), "truncation": check_truncation(model, problem, settings)}


def run_gradcheck(
    model: RecurrentModel,
    problem: Problem,
    settings: Settings | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Run the four checks on ``model`` over ``problem``; ``passed`` is False when check 1 or 2 fails.

    The model is copied to float64 in eval mode (no dropout) unless it already is.
    """
    settings = settings or Settings()
    settings.validate(problem.steps)
    device, note = _device(device)
    model = _float64(model, device)
    problem = problem.to(device)
    results = {
        "finite_difference": check_finite_differences(model, problem, settings),
        "forward_mode": check_forward_mode(model, problem, settings),
        **_through_time(model, problem, settings),
    }
    verdicts = [results["finite_difference"]["passed"], results["forward_mode"]["passed"]]
    config = model.config
    return {
        "passed": all(v for v in verdicts if v is not None),
        "model": {
            "cell": config.cell,
            "layers": config.layers,
            "hidden": config.hidden,
            "embed": config.embed,
            "vocab": config.input_size,
            "parameters": sum(p.numel() for p in _named_params(model).values()),
            "bidirectional": config.bidirectional,
        },
        "data": {"source": problem.source, "steps": problem.steps},
        "dtype": "float64",
        "device": str(device),
        "note": note,
        "seed": settings.seed,
        **results,
    }
