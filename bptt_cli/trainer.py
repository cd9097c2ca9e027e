"""The truncated-BPTT trainer: windows over parallel streams, carried state, clipping, diagnostics.

The loop never formats output and never waits on the device between log
intervals: losses and gradient norms accumulate in device tensors and are read
once per interval. It reports plain dicts to a ``Reporter`` and hands the best
model to a ``save_best`` callback; the caller decides how they look and where
they go.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from bptt_cli import distributed
from bptt_cli.choices import ON_NAN, OPTIMIZERS
from bptt_cli.device import autocast
from bptt_cli.errors import BpttError, RunFailed
from bptt_cli.memory import require_fits, training_estimate
from bptt_cli.models import RecurrentModel, State
from bptt_cli.schedule import LearningRateSchedule
from bptt_cli.streams import Window, plan_windows


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
    checkpoint_every: int | None = None  # steps between checkpoints (also at every epoch end)
    on_nan: str = "stop"  # stop: fail at the next log point; skip: drop that update (one host sync per step)
    max_skips: int = 10  # with on_nan == "skip": fail after this many dropped updates
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
            (self.checkpoint_every is None or self.checkpoint_every >= 1,
             f"--checkpoint-every must be at least 1, got {self.checkpoint_every}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}"),
            (self.window_jitter >= 0, f"--window-jitter must be 0 or more, got {self.window_jitter}"),
            (self.on_nan in ON_NAN, f"--on-nan must be {' or '.join(ON_NAN)}, got {self.on_nan!r}"),
            (self.max_skips >= 0, f"--max-skips must be 0 or more, got {self.max_skips}"),
        ]
        for ok, message in checks:
            if not ok:
                raise BpttError(message)
        if self.stride is not None and (self.window == 0 or not 1 <= self.stride <= self.window):
            raise BpttError(f"--stride must be between 1 and --window ({self.window}), got {self.stride}")


RESUMABLE = ("max_time", "signal")  # stops after which --resume continues the run


@dataclass
class Position:
    """Where a run stands: with the weights, optimizer and RNG states, all a checkpoint needs."""

    step: int = 0
    epoch: int = 1
    window_index: int = 0  # windows of this epoch already trained on
    epoch_rng: dict | None = None  # the window-jitter generator's state when this epoch was planned
    best: float = math.inf  # best validation loss so far
    stale: int = 0  # validations since the best
    tokens: int = 0
    skipped: int = 0  # updates dropped for a NaN or infinity (--on-nan skip)
    seconds: float = 0.0  # training time, over every process of the run


class Reporter(Protocol):
    """What the trainer tells the outside world; every argument is plain data."""

    def start(self, plan: dict) -> None: ...
    def step(self, step: int, epoch: int) -> None: ...
    def log(self, record: dict) -> None: ...
    def validation(self, record: dict) -> None: ...
    def note(self, message: str) -> None: ...


class SilentReporter:
    """A reporter that shows nothing: for library use, tests and benchmarks."""

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
    """The optimizer; Adam(W) runs fused (one kernel over all parameters) where torch has that kernel.

    The default per-tensor Adam(W) costs 7 ms per step for 1 M parameters on a
    CPU core, fused 0.7 ms (a one-off timing of optimizer.step on a 2-core machine).
    """
    params = list(params)
    fused = params[0].device.type in ("cpu", "cuda")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (S, B, V) against the next token ids (S, B)."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


class WindowStep(nn.Module):
    """The forward pass of one update, as a module so that DistributedDataParallel can wrap it."""

    def __init__(self, model: RecurrentModel):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, state: State, window: Window,
                resets: tuple[torch.Tensor, np.ndarray] | None = None) -> tuple[torch.Tensor, State]:
        """Decoded outputs of the scored steps [loss_from, end) and the state entering ``window.carry``.

        ``resets`` is the (T, B) new-sequence mask on the device and its per-step
        "any stream resets" flags on the host, so finding the cuts needs no device sync.
        """
        model = self.model

        def run(begin: int, end: int, state: State):
            if resets is None:
                return model.recur(inputs[begin:end], state)
            mask, any_reset = resets
            cuts = np.flatnonzero(any_reset[begin:end]).tolist()
            return model.recur(inputs[begin:end], state, mask[begin:end], cuts)

        if window.start < window.carry < window.end:  # overlapping windows: keep the state entering `carry`
            head, middle = run(window.start, window.carry, state)
            tail, _ = run(window.carry, window.end, middle)
            outputs, carried = torch.cat([head, tail]), middle
        else:
            outputs, end_state = run(window.start, window.end, state)
            carried = state if window.carry == window.start else end_state
        return model.decode(outputs[window.loss_from - window.start :]), carried


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
        loss = distributed.all_sum(self.loss.clone()) / distributed.world()  # the mean over ranks
        numbers = torch.cat([torch.stack([loss, self.norm, self.norm_max, self.clipped]), self.groups]).tolist()
        elapsed = time.perf_counter() - self.started
        return {
            "train_loss": numbers[0] / n,
            "grad_norm_mean": numbers[1] / n,
            "grad_norm_max": numbers[2],
            "clip_share": numbers[3] / n,
            "layer_grad_norms": {name: v / n for name, v in zip(self.names, numbers[4:])},
            "tokens_per_second": self.tokens * distributed.world() / elapsed if elapsed > 0 else 0.0,
            "interval_steps": self.steps,
        }


@dataclass
class _Run:
    """One ``fit`` call: the streams on the device and what the loop carries from update to update."""

    inputs: torch.Tensor
    targets: torch.Tensor
    resets: tuple[torch.Tensor, np.ndarray] | None  # (T, B) mask on the device, per-step "any reset" on the host
    steps: int  # T, steps per stream
    batch: int  # B, streams in this process
    state: State  # carried into the next window
    interval: _Interval
    started: float = field(default_factory=time.perf_counter)
    stop: str = "completed"  # why the run stops; "completed" while it goes on
    last_log: dict = field(default_factory=dict)
    interrupted_best: float = math.inf  # the validation loss at a stop inside an epoch


class Trainer:
    """Truncated BPTT over (T, B) streams of inputs and targets.

    ``config`` is validated once, by the caller at set-up (``TrainConfig.validate``), before any data is read.
    """

    def __init__(
        self,
        model: RecurrentModel,
        config: TrainConfig,
        device: torch.device,
        reporter: Reporter,
        validate: Callable[[RecurrentModel], dict] | None,
        save_best: Callable[[dict], None],
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        save_checkpoint: Callable[[dict], None] | None = None,
    ):
        if validate is None and (config.patience or config.schedule == "plateau"):
            option = "--patience" if config.patience else "--schedule plateau"
            raise BpttError(f"{option} reacts to validation loss, and this run has no validation data; "
                            "give --val FILE or a --val-fraction above 0")
        self.model, self.config, self.device = model.to(device), config, device
        self.reporter, self.validate_fn, self.save_best = reporter, validate, save_best
        self.step_module: nn.Module = WindowStep(self.model)
        if distributed.active():
            self.step_module = distributed.wrap(self.step_module, device)
        self.groups = model.param_groups()
        self.params = [p for ps in self.groups.values() for p in ps]
        self.optimizer = make_optimizer(config.optimizer, self.params, config.lr, config.weight_decay)
        self.rng = np.random.default_rng(config.seed)
        self.loss_fn = loss_fn or next_token_loss
        self.save_checkpoint = save_checkpoint
        self.stop_requested: str | None = None
        self.position = Position()
        self.schedule = LearningRateSchedule(config.schedule, config.warmup)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of decoded outputs (S, B, ...) against targets (S, B, ...)."""
        return self.loss_fn(outputs, targets)

    def backward(self, window: Window, inputs: torch.Tensor, targets: torch.Tensor, state: State,
                 resets: tuple[torch.Tensor, np.ndarray] | None = None):
        """Forward over ``window`` from ``state`` and back-propagate its loss; returns (loss, carried state).

        Gradients reach every step of the window and stop at its start, where
        ``state`` was detached; the returned state is detached for the next window.
        """
        if self.config.stateless:
            state = self.model.init_state(inputs.shape[1], self.device)
        with autocast(self.device, self.config.precision):
            outputs, carried = self.step_module(inputs, state, window, resets)
            loss = self.loss(outputs, targets[window.loss_from : window.end])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # under torch.distributed, DDP averages the gradients across ranks here
        return loss, self.model.detach_state(carried)

    def update(self, window: Window, inputs: torch.Tensor, targets: torch.Tensor, state: State, resets=None):
        """One optimizer step over ``window``; returns (loss, pre-clip norm, group norms, carried state).

        Returns None when ``on_nan == "skip"`` and the loss or gradient is not finite: no step is taken.
        """
        loss, carried = self.backward(window, inputs, targets, state, resets)
        norms = torch.stack(
            [get_total_norm([p.grad for p in ps if p.grad is not None]) for ps in self.groups.values()]
        )
        total = torch.linalg.vector_norm(norms)  # the global pre-clip norm, still on the device
        if self.config.on_nan == "skip" and not bool(torch.isfinite(total) & torch.isfinite(loss)):  # host sync
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if self.config.clip > 0:
            clip_grads_with_norm_(self.params, self.config.clip, total)
        self.optimizer.step()
        return loss, total, norms, carried

    def fit(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        resets: np.ndarray | None = None,
        resume: dict | None = None,
    ) -> dict:
        """Train on streams ``inputs``/``targets`` of shape (T, B, ...); returns the run summary.

        ``resets`` (T, B) marks the steps where a stream begins a new sequence
        (its state is zeroed there, so nothing flows from one sequence into the
        next). ``resume`` is a checkpoint from ``checkpoint()``: the run goes on
        exactly where it stopped, bit for bit on CPU.
        """
        run = self._plan(inputs, targets, resets, resume)
        self.model.train()
        while self.position.epoch <= self.config.epochs and run.stop == "completed":
            self._epoch(run)
            self._end_epoch(run)
        return self._summary(run)

    def _plan(self, inputs: torch.Tensor, targets: torch.Tensor, resets: np.ndarray | None,
              resume: dict | None) -> _Run:
        """Check the streams against the options, restore a checkpoint, and tell the reporter the plan."""
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
        total_steps = int(min(c.max_steps or math.inf, per_epoch * c.epochs))
        self.schedule = LearningRateSchedule(c.schedule, c.warmup, total_steps)
        self.position = Position()
        state = model.init_state(batch, self.device)
        if resume is not None:
            state = self._restore(resume, batch)
        plan = {
            "streams": batch * distributed.world(),
            "processes": distributed.world(),
            "steps_per_stream": steps,
            "updates_per_epoch": per_epoch,
            "total_updates": total_steps,
            "parameters": sum(p.numel() for p in model.parameters()),
            "resumed_at_step": self.position.step if resume is not None else None,
        }
        memory = training_estimate(model.config, c.optimizer, c.window or steps, batch, c.precision)
        plan["memory"] = memory.to_dict()
        if c.window == 0:
            plan["full_bptt_activation_bytes"] = memory.activations
        require_fits(memory, f"training {model.config.describe()} on {batch} streams of "
                     f"{c.window or steps} steps per update", model.config.force)
        self.reporter.start(plan)
        return _Run(inputs, targets, reset_mask, steps, batch, state, _Interval(list(self.groups), self.device))

    def _epoch(self, run: _Run) -> None:
        """The updates of one epoch, from where the position stands; sets ``run.stop`` when the run must stop."""
        c, at = self.config, self.position
        if at.window_index == 0:  # a fresh epoch: zero state, new cut points
            run.state = self.model.init_state(run.batch, self.device)
            at.epoch_rng = self.rng.bit_generator.state
        else:  # resuming mid-epoch: re-plan the same cut points
            self.rng.bit_generator.state = at.epoch_rng
        windows = plan_windows(run.steps, c.window, c.stride, c.window_jitter, self.rng)
        for index in range(at.window_index, len(windows)):
            self._train_window(run, windows[index])
            run.stop = self._should_stop(run.started)
            if distributed.active() and distributed.any_rank(run.stop != "completed"):  # all ranks stop together
                run.stop = run.stop if run.stop != "completed" else "signal"
            if run.stop != "completed":
                return
            if c.checkpoint_every and at.step % c.checkpoint_every == 0 and at.window_index < len(windows):
                self._checkpoint(run.state)

    def _train_window(self, run: _Run, window: Window) -> None:
        """One update over ``window``: learning rate, step, skipped-update bookkeeping, diagnostics."""
        c, at = self.config, self.position
        for group in self.optimizer.param_groups:
            group["lr"] = c.lr * self.schedule.factor(at.step)
        updated = self.update(window, run.inputs, run.targets, run.state, run.resets)
        at.step += 1
        at.window_index += 1
        if updated is None:  # skipped: a NaN or infinity, and the carried state may hold it too
            at.skipped += 1
            if at.skipped > c.max_skips:
                raise RunFailed(
                    f"{at.skipped} updates had a NaN or infinite loss or gradient (more than --max-skips "
                    f"{c.max_skips}); the last good model file was kept; try --clip 1.0 or a lower --lr"
                )
            run.state = self.model.init_state(run.batch, self.device)
        else:
            loss, total, norms, run.state = updated
            tokens = (window.end - window.loss_from) * run.batch
            at.tokens += tokens
            run.interval.add(loss, total, norms, c.clip, tokens)
        self.reporter.step(at.step, at.epoch)
        if at.step % c.log_every == 0:
            run.last_log = self._log(run.interval, run.started)

    def _end_epoch(self, run: _Run) -> None:
        """After an epoch, or a stop inside one: the last diagnostics, validation, patience and a checkpoint."""
        c, at = self.config, self.position
        if run.interval.steps:
            run.last_log = self._log(run.interval, run.started)
        if run.stop == "completed":  # the epoch ran to its end
            loss = self._validate(observe=True)
            at.best, at.stale = (loss, 0) if loss < at.best else (at.best, at.stale + 1)
            at.epoch, at.window_index = at.epoch + 1, 0
            if c.patience and at.stale >= c.patience and at.epoch <= c.epochs:
                run.stop = "early_stopping"
        else:  # stopped inside an epoch: keep the best model, leave the schedule and patience as they were
            run.interrupted_best = min(run.interrupted_best, self._validate(observe=False))
        self._checkpoint(run.state)

    def _summary(self, run: _Run) -> dict:
        at = self.position
        at.seconds += time.perf_counter() - run.started
        best = min(at.best, run.interrupted_best)
        return {
            "stop_reason": run.stop,
            "resumable": run.stop in RESUMABLE,
            "steps": at.step,
            "skipped_updates": at.skipped,
            "epochs": min(at.epoch, self.config.epochs),
            "best_val_loss": best if math.isfinite(best) else None,
            "last_train_loss": run.last_log.get("train_loss"),
            "seconds": at.seconds,
            "tokens_per_second": at.tokens * distributed.world() / at.seconds if at.seconds > 0 else 0.0,
        }

    def _should_stop(self, started: float) -> str:
        c = self.config
        if self.stop_requested:
            return self.stop_requested
        if c.max_steps and self.position.step >= c.max_steps:
            return "max_steps"
        if c.max_time and time.perf_counter() - started >= c.max_time:
            return "max_time"
        return "completed"

    def checkpoint(self, state: State) -> dict:
        """Everything needed to continue this run exactly: weights, optimizer, schedule, RNGs, position, state."""
        return {
            "position": asdict(self.position),
            "weights": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": asdict(self.schedule),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "carried_state": [distributed.gather_streams(s.detach()).cpu() for s in state],
        }

    def _checkpoint(self, state: State) -> None:
        if self.save_checkpoint is not None:
            self.save_checkpoint(self.checkpoint(state))

    def _restore(self, saved: dict, batch: int) -> State:
        try:
            self.model.load_state_dict(saved["weights"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.position = Position(**saved["position"])
            for name, value in saved["schedule"].items():
                setattr(self.schedule, name, value)
            state = tuple(distributed.my_streams(s).to(self.device) for s in saved["carried_state"])
            torch.set_rng_state(saved["torch_rng"])
            if saved["cuda_rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(saved["cuda_rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise BpttError(f"the checkpoint does not fit this run ({str(err).splitlines()[0][:160]}); "
                            "start afresh without --resume") from None
        if state[0].shape[1] != batch:
            raise BpttError("the checkpoint was made with another --batch-size; resume with the same options")
        return state

    def _log(self, interval: _Interval, started: float) -> dict:
        at = self.position
        record = interval.read()
        interval.reset()
        record.update(step=at.step, epoch=at.epoch, lr=self.optimizer.param_groups[0]["lr"],
                      elapsed_seconds=at.seconds + time.perf_counter() - started)
        if not (math.isfinite(record["train_loss"]) and math.isfinite(record["grad_norm_max"])):
            raise RunFailed(
                f"the loss diverged (NaN or infinite) by step {at.step} (pre-clip gradient norm "
                f"mean {record['grad_norm_mean']:.4g}, max {record['grad_norm_max']:.4g}); "
                "the last good model file was kept; try --clip 1.0 or a lower --lr"
            )
        self.reporter.log(record)
        return record

    def _validate(self, observe: bool) -> float:
        """Score the model and offer it to ``save_best``; returns the loss (lower is better).

        ``observe`` feeds the result to the schedule; validations at an
        interruption do not, so a resumed run trains exactly as an uninterrupted one.
        """
        at = self.position
        if self.validate_fn is None:  # no validation data: the latest model is the best we know
            self.save_best({"step": at.step, "epoch": at.epoch, "val_loss": None})
            return math.inf
        figures = self.validate_fn(self.model)
        loss = figures["loss"]
        if not math.isfinite(loss):
            raise RunFailed(
                f"the validation loss is {loss} at step {at.step}; the last good model file was kept; "
                "try --clip 1.0 or a lower --lr"
            )
        if observe:
            self.schedule.observe(loss)
        record = {"step": at.step, "epoch": at.epoch, **{f"val_{k}": v for k, v in figures.items()},
                  "best": loss < at.best}
        if loss < at.best:
            self.save_best(record)
        self.reporter.validation(record)
        return loss

    @contextlib.contextmanager
    def stop_on_signals(self):
        """SIGINT and SIGTERM finish the current step, then stop with a checkpoint (exit code 3)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request(signum, frame):
            self.stop_requested = "signal"

        previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
