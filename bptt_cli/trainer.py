"""The truncated-BPTT trainer: windows over parallel streams, carried state, clipping, diagnostics.

The loop never formats output and never waits on the device between log
intervals: losses and gradient norms accumulate in device tensors and are read
once per interval. It reports plain dicts to a ``Reporter`` and hands the best
model to a ``save_best`` callback; the caller decides how they look and where
they go.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Callable, Protocol

import numpy as np
import torch
from torch.nn import functional as F
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from bptt_cli.device import autocast
from bptt_cli.errors import BpttError, RunFailed
from bptt_cli.models import RecurrentModel, State
from bptt_cli.schedule import LearningRateSchedule
from bptt_cli.streams import Window, plan_windows

OPTIMIZERS = ("adamw", "adam", "sgd")


@dataclass
class TrainConfig:
    """How to train; every field is a ``bptt train`` option of the same name."""

    window: int = 50  # K: steps back-propagated per update; 0 = full BPTT over each stream
    stride: int | None = None  # new steps per update (default K); < K overlaps windows
    window_jitter: float = 0.0  # spread of each update's length, as a fraction of the stride
    stateless: bool = False  # start every window from zeros instead of the carried state
    batch_size: int = 32  # B parallel streams
    epochs: int = 10
    max_steps: int | None = None
    max_time: float | None = None  # seconds of wall clock
    patience: int | None = None  # validations without improvement before stopping
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: int = 0
    clip: float = 1.0  # global gradient-norm limit; 0 turns clipping off
    log_every: int = 100  # steps between diagnostics (the only host syncs)
    precision: str = "fp32"
    seed: int = 0

    def validate(self) -> None:
        checks = [
            (self.window >= 0, f"--window must be 0 (full BPTT) or more, got {self.window}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}"),
            (self.clip >= 0, f"--clip must be 0 (off) or positive, got {self.clip}"),
            (self.log_every >= 1, f"--log-every must be at least 1, got {self.log_every}"),
            (self.max_steps is None or self.max_steps >= 1, f"--max-steps must be at least 1, got {self.max_steps}"),
            (self.patience is None or self.patience >= 1, f"--patience must be at least 1, got {self.patience}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}"),
            (self.window_jitter >= 0, f"--window-jitter must be 0 or more, got {self.window_jitter}"),
        ]
        for ok, message in checks:
            if not ok:
                raise BpttError(message)
        if self.stride is not None and (self.window == 0 or not 1 <= self.stride <= self.window):
            raise BpttError(f"--stride must be between 1 and --window ({self.window}), got {self.stride}")

    def to_dict(self) -> dict:
        return asdict(self)


class Reporter(Protocol):
    """What the trainer tells the outside world; every argument is plain data."""

    def start(self, plan: dict) -> None: ...
    def step(self, step: int, epoch: int) -> None: ...
    def log(self, record: dict) -> None: ...
    def validation(self, record: dict) -> None: ...
    def note(self, message: str) -> None: ...


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


def activation_bytes(model: RecurrentModel, steps: int, batch: int) -> int:
    """Rough memory autograd keeps for back-propagating ``steps`` steps of ``batch`` streams (fp32)."""
    c = model.config
    per_layer = {"lstm": 6, "gru": 5, "rnn": 2}[c.cell] * c.hidden  # gates and states kept per step
    width = (c.embed if c.tokens else c.input_size) + c.layers * per_layer + 2 * c.output_size
    return 4 * steps * batch * width


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (S, B, V) against the next token ids (S, B)."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


class _Interval:
    """Diagnostics summed on the device between two log points (no host sync until ``read``)."""

    def __init__(self, groups: list[str], device: torch.device):
        self.names = groups
        self.device = device
        self.reset()

    def reset(self) -> None:
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=self.device)  # noqa: E731
        self.loss, self.norm, self.norm_max, self.clipped = zeros(()), zeros(()), zeros(()), zeros(())
        self.groups = zeros(len(self.names))
        self.steps = 0
        self.tokens = 0
        self.started = time.perf_counter()

    def add(self, loss: torch.Tensor, total: torch.Tensor, groups: torch.Tensor, clip: float, tokens: int) -> None:
        self.loss += loss.detach()
        self.norm += total
        self.norm_max = torch.maximum(self.norm_max, total.double())
        if clip > 0:
            self.clipped += (total > clip).double()
        self.groups += groups
        self.steps += 1
        self.tokens += tokens

    def read(self) -> dict:
        """The interval's means; this is the one host sync per interval."""
        n = max(1, self.steps)
        numbers = torch.cat([torch.stack([self.loss, self.norm, self.norm_max, self.clipped]), self.groups]).tolist()
        elapsed = time.perf_counter() - self.started
        return {
            "train_loss": numbers[0] / n,
            "grad_norm_mean": numbers[1] / n,
            "grad_norm_max": numbers[2],
            "clip_share": numbers[3] / n,
            "layer_grad_norms": {name: v / n for name, v in zip(self.names, numbers[4:])},
            "tokens_per_second": self.tokens / elapsed if elapsed > 0 else 0.0,
            "interval_steps": self.steps,
        }


class Trainer:
    """Truncated BPTT over (T, B) streams of inputs and targets."""

    def __init__(
        self,
        model: RecurrentModel,
        config: TrainConfig,
        device: torch.device,
        reporter: Reporter,
        validate: Callable[[RecurrentModel], dict] | None,
        save_best: Callable[[dict], None],
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ):
        config.validate()
        self.model, self.config, self.device = model.to(device), config, device
        self.reporter, self.validate_fn, self.save_best = reporter, validate, save_best
        self.groups = model.param_groups()
        self.params = [p for ps in self.groups.values() for p in ps]
        self.optimizer = make_optimizer(config.optimizer, self.params, config.lr, config.weight_decay)
        self.rng = np.random.default_rng(config.seed)
        self.loss_fn = loss_fn or next_token_loss

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of decoded outputs (S, B, ...) against targets (S, B, ...)."""
        return self.loss_fn(outputs, targets)

    def backward(self, window: Window, inputs: torch.Tensor, targets: torch.Tensor, state: State,
                 resets: tuple[torch.Tensor, np.ndarray] | None = None):
        """Forward over ``window`` from ``state`` and back-propagate its loss; returns (loss, carried state).

        Gradients reach every step of the window and stop at its start, where
        ``state`` was detached; the returned state is detached for the next window.
        ``resets`` is the (T, B) new-sequence mask on the device and its per-step
        "any stream resets" flags on the host.
        """
        model, c = self.model, self.config
        x = inputs[window.start : window.end]  # (K, B) ids or (K, B, F) features
        y = targets[window.loss_from : window.end]  # (S, B, ...) what the last S steps predict
        if c.stateless:
            state = model.init_state(x.shape[1], self.device)

        def run(begin: int, end: int, state: State):
            if resets is None:
                return model.recur(inputs[begin:end], state)
            mask, any_reset = resets
            cuts = np.flatnonzero(any_reset[begin:end]).tolist()  # host-side: no device sync
            return model.recur(inputs[begin:end], state, mask[begin:end], cuts)

        with autocast(self.device, c.precision):
            if window.start < window.carry < window.end:  # overlapping windows: keep the state entering `carry`
                head, middle = run(window.start, window.carry, state)
                tail, _ = run(window.carry, window.end, middle)
                outputs, carried = torch.cat([head, tail]), middle
            else:
                outputs, end_state = run(window.start, window.end, state)
                carried = state if window.carry == window.start else end_state
            loss = self.loss(model.decode(outputs[window.loss_from - window.start :]), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss, model.detach_state(carried)

    def update(self, window: Window, inputs: torch.Tensor, targets: torch.Tensor, state: State, resets=None):
        """One optimizer step over ``window``; returns (loss, pre-clip norm, group norms, carried state)."""
        loss, carried = self.backward(window, inputs, targets, state, resets)
        norms = torch.stack(
            [get_total_norm([p.grad for p in ps if p.grad is not None]) for ps in self.groups.values()]
        )
        total = torch.linalg.vector_norm(norms)  # the global pre-clip norm, still on the device
        if self.config.clip > 0:
            clip_grads_with_norm_(self.params, self.config.clip, total)
        self.optimizer.step()
        return loss, total, norms, carried

    def fit(self, inputs: torch.Tensor, targets: torch.Tensor, resets: np.ndarray | None = None) -> dict:
        """Train on streams ``inputs``/``targets`` of shape (T, B, ...); returns the run summary.

        ``resets`` (T, B) marks the steps where a stream begins a new sequence
        (its state is zeroed there, so nothing flows from one sequence into the next).
        """
        c, model = self.config, self.model
        inputs, targets = inputs.to(self.device), targets.to(self.device)
        reset_mask = None
        if resets is not None:
            reset_mask = (torch.as_tensor(resets, dtype=torch.bool, device=self.device), resets.any(axis=1))
        steps, batch = inputs.shape[0], inputs.shape[1]
        if c.window > steps:
            raise BpttError(
                f"--window {c.window} is longer than each of the {batch} streams ({steps} steps); "
                "use a smaller --window or --batch-size"
            )
        per_epoch = len(plan_windows(steps, c.window, c.stride))
        total_steps = min(c.max_steps or math.inf, per_epoch * c.epochs)
        schedule = LearningRateSchedule(c.schedule, c.warmup, int(total_steps))
        plan = {
            "streams": batch,
            "steps_per_stream": steps,
            "updates_per_epoch": per_epoch,
            "total_updates": int(total_steps),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        if c.window == 0:
            plan["full_bptt_activation_bytes"] = activation_bytes(model, steps, batch)
        self.reporter.start(plan)

        interval = _Interval(list(self.groups), self.device)
        step, started, best, stale, tokens = 0, time.perf_counter(), math.inf, 0, 0
        stop = "completed"
        last_log: dict = {}
        validated_at = -1
        model.train()
        for epoch in range(1, c.epochs + 1):
            state = model.init_state(batch, self.device)  # reset at each epoch start
            for window in plan_windows(steps, c.window, c.stride, c.window_jitter, self.rng):
                for group in self.optimizer.param_groups:
                    group["lr"] = c.lr * schedule.factor(step)
                loss, total, norms, state = self.update(window, inputs, targets, state, reset_mask)
                step += 1
                tokens += (window.end - window.loss_from) * batch
                interval.add(loss, total, norms, c.clip, (window.end - window.loss_from) * batch)
                self.reporter.step(step, epoch)
                if step % c.log_every == 0:
                    last_log = self._log(interval, step, epoch, started)
                if c.max_steps and step >= c.max_steps:
                    stop = "max_steps"
                elif c.max_time and time.perf_counter() - started >= c.max_time:
                    stop = "max_time"
                if stop != "completed":
                    break
            if interval.steps:
                last_log = self._log(interval, step, epoch, started)
            result = self._validate(step, epoch, best, schedule)
            validated_at = step
            if result < best:
                best, stale = result, 0
            else:
                stale += 1
            if stop == "completed" and c.patience and stale >= c.patience:
                stop = "early_stopping"
            if stop != "completed":
                break
        elapsed = time.perf_counter() - started
        return {
            "stop_reason": stop,
            "steps": step,
            "epochs": epoch,
            "best_val_loss": best if math.isfinite(best) else None,
            "last_train_loss": last_log.get("train_loss"),
            "seconds": elapsed,
            "tokens_per_second": tokens / elapsed if elapsed > 0 else 0.0,
            "validated_at_step": validated_at,
        }

    def _log(self, interval: _Interval, step: int, epoch: int, started: float) -> dict:
        record = interval.read()
        interval.reset()
        record.update(step=step, epoch=epoch, lr=self.optimizer.param_groups[0]["lr"],
                      elapsed_seconds=time.perf_counter() - started)
        if not (math.isfinite(record["train_loss"]) and math.isfinite(record["grad_norm_max"])):
            raise RunFailed(
                f"the loss diverged (NaN or infinite) by step {step} (pre-clip gradient norm "
                f"mean {record['grad_norm_mean']:.4g}, max {record['grad_norm_max']:.4g}); "
                "the last good model file was kept; try --clip 1.0 or a lower --lr"
            )
        self.reporter.log(record)
        return record

    def _validate(self, step: int, epoch: int, best: float, schedule: LearningRateSchedule) -> float:
        """Score the model, save it if it is the best so far; returns the score (lower is better)."""
        if self.validate_fn is None:  # no validation data: the latest model is the best we know
            self.save_best({"step": step, "epoch": epoch})
            return -float(step)
        figures = self.validate_fn(self.model)
        loss = figures["loss"]
        if not math.isfinite(loss):
            raise RunFailed(
                f"the validation loss is {loss} at step {step}; the last good model file was kept; "
                "try --clip 1.0 or a lower --lr"
            )
        improved = loss < best
        schedule.observe(loss)
        record = {"step": step, "epoch": epoch, **{f"val_{k}": v for k, v in figures.items()}, "best": improved}
        if improved:
            self.save_best(record)
        self.reporter.validation(record)
        return loss
