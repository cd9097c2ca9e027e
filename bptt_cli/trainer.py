"""The truncated-BPTT trainer: windows over parallel streams, carried state, clipping, diagnostics.

The loop never formats output and never waits on the device between log
intervals: losses and gradient norms accumulate in device tensors and are read
once per interval. It reports plain dicts to a ``Reporter`` and hands the best
model to a ``save_best`` callback, which says whether it wrote it; the caller
decides how they look and where they go.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.utils import clip_grad_value_, clip_grads_with_norm_, get_total_norm

from bptt_cli import distributed
from bptt_cli.averaging import WeightAverage, parse_average
from bptt_cli.choices import ON_NAN, OPTIMIZERS
from bptt_cli.device import autocast
from bptt_cli.dropout import Regularisers
from bptt_cli.errors import BpttError, RunFailed
from bptt_cli.losses import next_token_loss
from bptt_cli.gradcheck import choose_window, training_sample, window_cosine
from bptt_cli.memory import available_bytes, require_fits, training_estimate, update_flops
from bptt_cli.models import RecurrentModel, State
from bptt_cli.schedule import LearningRateSchedule, plateau_wait
from bptt_cli.series import SequenceBatches
from bptt_cli.streams import Window, plan_windows


# --window auto with sequences trained whole: refused before the data is planned (kinds/sequences.py) and here
WHOLE_SEQUENCES_HAVE_NO_WINDOW = ("--window auto chooses a window over streams, and these sequences are trained whole "
                                  "(in batches, or read backwards by --bidirectional); give --window 0")


@dataclass
class TrainConfig:
    """How to train; every field is a ``bptt train`` option of the same name."""

    window: int = 50  # K: steps back-propagated per update; 0 = full BPTT over each stream
    auto_window: bool = False  # --window auto: K chosen from the data before the first update (``window`` is then 0)
    min_cosine: float = 0.9  # --window auto: the gradient cosine against full BPTT that the window must reach
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
    clip_value: float = 0.0  # each gradient entry clipped to +-this (char-rnn's 5), after the norm; 0 turns it off
    log_every: int = 100  # steps between diagnostics (the only host syncs)
    checkpoint_every: int | None = None  # steps between checkpoints (also at every epoch end)
    on_nan: str = "stop"  # stop: fail at the next log point; skip: drop that update (one host sync per step)
    max_skips: int = 10  # with on_nan == "skip": fail after this many dropped updates
    precision: str = "fp32"
    seed: int = 0
    sample_every: int | None = None  # updates between samples of the model's text (token models)
    sample_length: int = 200  # tokens per sample
    sample_temperature: float = 0.8
    # the AWD-LSTM regularisers, each off by default (the model's --dropout is in ModelConfig)
    dropout_kind: str = "standard"  # locked: one --dropout mask per window, shared by its steps
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden weights, one mask per window
    embed_dropout: float = 0.0  # whole words: embedding rows dropped, one mask per window
    ar: float = 0.0  # alpha * mean(dropped last-layer output ** 2), added to the loss that is back-propagated
    tar: float = 0.0  # beta * mean((h_t - h_{t-1}) ** 2) of the undropped last-layer output, likewise
    average: str | None = None  # ema:DECAY: validation and the model file use an EMA of the weights
    nonmono: int = 5  # --optimizer nt-asgd: validations without improvement before averaging begins

    def regularisers(self) -> Regularisers:
        return Regularisers(self.dropout_kind, self.weight_drop, self.embed_dropout)

    def validate(self) -> None:
        checks = [
            (self.window >= 0, f"--window must be 0 (full BPTT) or more, got {self.window}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}"),
            (self.clip >= 0, f"--clip must be 0 (off) or positive, got {self.clip}"),
            (self.clip_value >= 0, f"--clip-value must be 0 (off) or positive, got {self.clip_value}"),
            (0 < self.min_cosine <= 1, f"--min-cosine must be in (0, 1], got {self.min_cosine}"),
            (not (self.auto_window and self.stride is not None),
             "--stride needs a number of steps for --window, not auto; give --window K or leave out --stride"),
            (self.log_every >= 1, f"--log-every must be at least 1, got {self.log_every}"),
            (self.max_steps is None or self.max_steps >= 1, f"--max-steps must be at least 1, got {self.max_steps}"),
            (self.patience is None or self.patience >= 1, f"--patience must be at least 1, got {self.patience}"),
            (self.checkpoint_every is None or self.checkpoint_every >= 1,
             f"--checkpoint-every must be at least 1, got {self.checkpoint_every}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}"),
            (self.window_jitter >= 0, f"--window-jitter must be 0 or more, got {self.window_jitter}"),
            (self.on_nan in ON_NAN, f"--on-nan must be {' or '.join(ON_NAN)}, got {self.on_nan!r}"),
            (self.max_skips >= 0, f"--max-skips must be 0 or more, got {self.max_skips}"),
            (self.sample_every is None or self.sample_every >= 1,
             f"--sample-every must be at least 1, got {self.sample_every}"),
            (self.sample_length >= 1, f"--sample-length must be at least 1, got {self.sample_length}"),
            (self.sample_temperature >= 1e-6, f"--sample-temperature must be 1e-6 or more, got {self.sample_temperature}"),
            (self.ar >= 0 and self.tar >= 0, f"--ar and --tar must be 0 (off) or more, got {self.ar} and {self.tar}"),
            (self.nonmono >= 1, f"--nonmono must be at least 1, got {self.nonmono}"),
            (self.optimizer != "nt-asgd" or parse_average(self.average) is None,
             "--optimizer nt-asgd averages its own weights; drop --average"),
        ]
        for ok, message in checks:
            if not ok:
                raise BpttError(message)
        self.regularisers().validate()
        parse_average(self.average)  # refuses what is not ema:DECAY
        if self.stride is not None and (self.window == 0 or not 1 <= self.stride <= self.window):
            raise BpttError(f"--stride must be between 1 and --window ({self.window}), got {self.stride}")


BUDGET_WARMUP, BUDGET_FIT_AFTER = 5, 25  # under --max-time, cosine is fitted to the budget from this process's
# updates BUDGET_WARMUP..BUDGET_FIT_AFTER (the first ones set up kernels), and again at each epoch end
RESUMABLE = ("max_time", "signal")  # stops after which --resume continues the run
SIGNALS = (signal.SIGINT, signal.SIGTERM)  # stop the run: the first after this update, a second at once
LONG_UPDATE_SECONDS = 60.0  # an update longer than this (or --max-time) is announced before the run
SLOWEST_FLOPS_PER_SECOND = 1e9  # an update that a machine this slow does within the limit is not measured


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
    def sample(self, record: dict) -> None: ...
    def window_check(self, record: dict) -> None: ...
    def note(self, message: str) -> None: ...


class SilentReporter(Reporter):
    """A reporter that shows nothing (the protocol's methods do nothing): for library use, tests and benchmarks."""


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
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)  # sgd, and nt-asgd before it averages


def matmul_rate(device: torch.device) -> float:
    """Floating-point operations per second of a float32 matrix product here: the scale of an update's time."""
    size, repeats = 256, 8
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    float((a @ b)[0, 0])  # warm-up: the first product pays for kernel selection
    began = time.perf_counter()
    for _ in range(repeats):
        c = a @ b
    float(c[0, 0])  # waits for the device (one sync, before the run)
    return 2 * size**3 * repeats / max(time.perf_counter() - began, 1e-9)


class WindowStep(nn.Module):
    """The forward pass of one update, as a module so that DistributedDataParallel can wrap it."""

    def __init__(self, model: RecurrentModel, ar: float = 0.0, tar: float = 0.0):
        super().__init__()
        self.model = model
        self.ar, self.tar = ar, tar

    def forward(self, inputs: torch.Tensor, state: State, window: Window,
                resets: tuple[torch.Tensor, np.ndarray] | None = None
                ) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """Decoded outputs of the scored steps [loss_from, end), the state entering ``window.carry``, and
        the activation penalty of --ar and --tar (None when both are off).

        ``resets`` is the (T, B) new-sequence mask on the device and its per-step
        "any stream resets" flags on the host, so finding the cuts needs no device sync.
        Every mask (locked dropout, weight drop, embedding dropout) is drawn once for the window.
        """
        with self.model.one_window():
            outputs, carried = self._recur(inputs, state, window, resets)
            scored, read = outputs[window.loss_from - window.start :], inputs[window.loss_from : window.end]
            if not (self.ar or self.tar):
                return self.model.decode(scored, read), carried, None
            dropped = self.model.drop_output(scored)
            penalty = self.ar * dropped.pow(2).mean()
            if len(scored) > 1:
                penalty = penalty + self.tar * (scored[1:] - scored[:-1]).pow(2).mean()
            return self.model.decode_dropped(dropped, read), carried, penalty

    def _recur(self, inputs: torch.Tensor, state: State, window: Window,
               resets: tuple[torch.Tensor, np.ndarray] | None) -> tuple[torch.Tensor, State]:
        """Outputs of every step of ``window`` and the state entering ``window.carry``."""
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
        return outputs, carried


class _Interval:
    """Diagnostics summed on the device between two log points (no host sync until ``read``)."""

    def __init__(self, groups: list[str], device: torch.device, entries: int = 0):
        """``entries``: gradient entries per update that --clip-value looks at (0: it is off)."""
        self.names = groups
        self.device = device
        self.entries = entries
        self.reset()

    def reset(self) -> None:
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=self.device)  # noqa: E731
        self.loss, self.norm, self.norm_max, self.clipped = zeros(()), zeros(()), zeros(()), zeros(())
        self.values_clipped = zeros(())  # gradient entries --clip-value cut, summed over the interval
        self.groups = zeros(len(self.names))
        self.penalty, self.penalised = zeros(()), False  # --ar and --tar's penalty, beside the data loss
        self.steps = 0
        self.tokens = 0
        self.started = time.perf_counter()

    def add(self, loss: torch.Tensor, total: torch.Tensor, groups: torch.Tensor, clip: float, tokens: int,
            values_clipped: torch.Tensor | None = None) -> None:
        self.loss += loss.detach()
        if values_clipped is not None:
            self.values_clipped += values_clipped
        self.norm += total
        self.norm_max = torch.maximum(self.norm_max, total.double())
        if clip > 0:
            self.clipped += (total > clip).double()
        self.groups += groups
        self.steps += 1
        self.tokens += tokens

    def add_penalty(self, penalty: torch.Tensor) -> None:
        self.penalty += penalty.detach()
        self.penalised = True

    def read(self) -> dict:
        """The interval's means; this is the one host sync per interval."""
        n = max(1, self.steps)
        loss = distributed.all_sum(self.loss.clone()) / distributed.world()  # the mean over ranks
        numbers = torch.cat([torch.stack([loss, self.norm, self.norm_max, self.clipped, self.values_clipped,
                                          self.penalty]), self.groups]).tolist()
        elapsed = time.perf_counter() - self.started
        value_clip = {"value_clip_share": numbers[4] / (n * self.entries)} if self.entries else {}
        penalty = numbers[5] / n
        return {
            "train_loss": numbers[0] / n,
            "grad_norm_mean": numbers[1] / n,
            "grad_norm_max": numbers[2],
            "clip_share": numbers[3] / n,
            **value_clip,
            "layer_grad_norms": {name: v / n for name, v in zip(self.names, numbers[6:])},
            "tokens_per_second": self.tokens * distributed.world() / elapsed if elapsed > 0 else 0.0,
            "interval_steps": self.steps,
            **({"penalty": penalty} if self.penalised else {}),
        }


@dataclass
class _Timing:
    """Where this process's time goes, and what finishing after a stop costs (a hard --max-time needs both)."""

    started: float = field(default_factory=lambda: time.perf_counter())  # the module's clock when made
    before: float = 0.0  # seconds of the run before this process, from the checkpoint
    validation: float = 0.0  # spent validating, saving the best model included
    checkpoints: float = 0.0  # spent writing checkpoints
    last_validation: float = 0.0
    last_checkpoint: float = 0.0
    longest_update: float = 0.0
    update_started: float | None = None  # set while an update runs

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def run_seconds(self) -> float:
        """The whole run's time so far: the processes before this one and this one."""
        return self.before + self.elapsed()

    def busy(self) -> float:
        """This process's seconds outside validation and checkpoints: updates and what runs between them."""
        return self.elapsed() - self.validation - self.checkpoints

    def reserve(self) -> float:
        """What the next update, then the final validation and checkpoint, will take if the run goes on."""
        return self.longest_update + self.last_validation + self.last_checkpoint

    @contextlib.contextmanager
    def measure(self, part: str):
        """Time one ``update``, ``validation`` or ``checkpoint``."""
        began = time.perf_counter()
        if part == "update":
            self.update_started = began
        try:
            yield
        finally:
            spent = time.perf_counter() - began
            if part == "update":
                self.longest_update, self.update_started = max(self.longest_update, spent), None
            elif part == "validation":
                self.validation, self.last_validation = self.validation + spent, spent
            else:
                self.checkpoints, self.last_checkpoint = self.checkpoints + spent, spent


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
    stop: str = "completed"  # why the run stops; "completed" while it goes on
    already_complete: bool = False  # resumed from the checkpoint of a run that had finished: nothing to do
    last_log: dict = field(default_factory=dict)
    interrupted_best: float = math.inf  # the validation loss at a stop inside an epoch
    batches: SequenceBatches | None = None  # whole sequences, a batch of them per update, instead of windows


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
        save_best: Callable[[dict], bool | None],
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        save_checkpoint: Callable[[dict], bool | None] | None = None,
        sample: Callable[[RecurrentModel, int], str] | None = None,
    ):
        """``save_best`` and ``save_checkpoint`` return False when they refused to write (None counts as written).

        ``sample(model, seed)`` is the model's text, drawn with a generator of its own from ``seed`` (the
        training's random numbers stay untouched, so a resumed run stays exact); every ``sample_every`` updates.
        """
        if validate is None and (config.patience or config.schedule == "plateau"):
            option = "--patience" if config.patience else "--schedule plateau"
            raise BpttError(f"{option} reacts to validation loss, and this run has no validation data; "
                            "give --val FILE or a --val-fraction above 0")
        self.model, self.config, self.device = model.to(device), config, device
        self.reporter, self.validate_fn, self.save_best = reporter, validate, save_best
        self.model.regularisers = config.regularisers()
        self.step_module: nn.Module = WindowStep(self.model, config.ar, config.tar)
        if distributed.active():
            self.step_module = distributed.wrap(self.step_module, device)
        self.groups = model.param_groups()
        self.params = [p for ps in self.groups.values() for p in ps]
        self.optimizer = make_optimizer(config.optimizer, self.params, config.lr, config.weight_decay)
        averaged = config.optimizer == "nt-asgd" or parse_average(config.average) is not None
        self.average = WeightAverage(self.params, parse_average(config.average)) if averaged else None
        self.penalty: torch.Tensor | None = None  # the last update's --ar/--tar penalty, on the device
        self.rng = np.random.default_rng(config.seed)
        self.loss_fn = loss_fn or next_token_loss
        self.save_checkpoint = save_checkpoint
        self.sample = sample if config.sample_every else None
        self.stop_requested: str | None = None
        self.signals = 0  # SIGINT/SIGTERM received during fit
        self.checkpointed_step: int | None = None  # the update of the last checkpoint written
        self.checkpoint_refused = False  # the last checkpoint was not written (the file belongs to another run)
        self.values_clipped: torch.Tensor | None = None  # gradient entries --clip-value cut in the last update
        self.window_choice: dict | None = None  # --window auto: the window chosen, its cosine and memory
        self.window_sample = None  # --window auto: the training streams the cosines are measured on
        self.window_cosine: float | None = None  # --window auto: the window's cosine at the last epoch end
        self.timing = _Timing()
        self.total_updates = 0  # of this run, once planned
        self.per_epoch = 0  # updates per epoch, once planned
        self.first_step = 0  # the update this process started at (after a resume, not 0)
        self.rate_mark: tuple[int, float] | None = None  # (update, busy seconds) the budget fit measures from
        self.position = Position()
        self.schedule = LearningRateSchedule(config.schedule, config.warmup, wait=plateau_wait(config.patience))

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
            outputs, carried, self.penalty = self.step_module(inputs, state, window, resets)
            loss = self.loss(outputs, targets[window.loss_from : window.end])
        self.optimizer.zero_grad(set_to_none=True)
        # under torch.distributed, DDP averages the gradients across ranks here
        (loss if self.penalty is None else loss + self.penalty).backward()
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
        if self.config.clip_value > 0:
            self.values_clipped = self._clip_values(self.config.clip_value)
        self.optimizer.step()
        if self.average is not None:
            self.average.update()
        return loss, total, norms, carried

    def _clip_values(self, limit: float) -> torch.Tensor:
        """Clip every gradient entry to +-``limit`` (char-rnn's rule); returns how many it cut, on the device."""
        grads = [p.grad for p in self.params if p.grad is not None]
        cut = torch.stack([(g.abs() > limit).sum() for g in grads]).sum().double()
        clip_grad_value_(self.params, limit)
        return cut

    def fit(
        self,
        inputs: torch.Tensor | SequenceBatches,
        targets: torch.Tensor | None,
        resets: np.ndarray | None = None,
        resume: dict | None = None,
    ) -> dict:
        """Train on streams ``inputs``/``targets`` of shape (T, B, ...); returns the run summary.

        ``inputs`` may instead be ``SequenceBatches`` (``targets`` and ``resets`` None): every update is
        then one batch of whole sequences from zeros, and an epoch has as many updates as batches.

        ``resets`` (T, B) marks the steps where a stream begins a new sequence
        (its state is zeroed there, so nothing flows from one sequence into the
        next). ``resume`` is a checkpoint from ``checkpoint()``: the run goes on
        exactly where it stopped, bit for bit on CPU.
        """
        run = self._plan(inputs, targets, resets, resume)
        if run.already_complete:
            return self._summary(run)
        self.model.train()
        while self.position.epoch <= self.config.epochs and run.stop == "completed":
            self._epoch(run)
            self._end_epoch(run)
        return self._summary(run)

    def _plan(self, inputs: torch.Tensor, targets: torch.Tensor, resets: np.ndarray | None,
              resume: dict | None) -> _Run:
        """Check the streams against the options, restore a checkpoint, and tell the reporter the plan."""
        c, model = self.config, self.model
        batches = inputs if isinstance(inputs, SequenceBatches) else None
        if batches is not None:  # its first batch stands for the streams until an epoch takes its own
            first = batches.batch(1, 0)
            inputs, targets, resets = first.inputs, first.targets, first.resets
        inputs, targets = inputs.to(self.device), targets.to(self.device)
        reset_mask = None
        if resets is not None:
            reset_mask = (torch.as_tensor(resets, dtype=torch.bool, device=self.device), resets.any(axis=1))
        steps = batches.longest if batches is not None else inputs.shape[0]
        batch = inputs.shape[1]
        if c.auto_window:
            if batches is not None or model.config.bidirectional:
                raise BpttError(WHOLE_SEQUENCES_HAVE_NO_WINDOW)
            self._resolve_window(inputs, targets, reset_mask, batch, resume)
            c = self.config
        if c.window > steps:
            raise BpttError(
                f"--window {c.window} is longer than each of the {batch} streams ({steps} steps); "
                "use a smaller --window or --batch-size"
            )
        per_epoch = len(batches) if batches is not None else len(plan_windows(steps, c.window, c.stride))
        total_steps = int(min(c.max_steps or math.inf, per_epoch * c.epochs))
        self.schedule = LearningRateSchedule(c.schedule, c.warmup, total_steps, wait=plateau_wait(c.patience))
        self.position, self.timing, self.total_updates = Position(), _Timing(), total_steps
        self.per_epoch = per_epoch
        state = model.init_state(batch, self.device)
        if self.average is not None and c.optimizer != "nt-asgd":  # an EMA starts at the initial weights
            self.average.start()
        entries = sum(p.numel() for p in self.params) if c.clip_value > 0 else 0
        run = _Run(inputs, targets, reset_mask, steps, batch, state, _Interval(list(self.groups), self.device, entries),
                   batches=batches)
        if resume is not None:
            run.state = self._restore(resume, batch)
            self.timing.before = self.position.seconds
            self.first_step = self.position.step
            if self.schedule.kind == "cosine" and not c.max_time:  # a budget's fit ends with its budget
                self.schedule.total_steps = total_steps
            run.already_complete = self._finished()
            if run.already_complete:
                return run
        plan = {
            "streams": batch * distributed.world(),
            "processes": distributed.world(),
            "steps_per_stream": steps,
            "updates_per_epoch": per_epoch,
            "total_updates": total_steps,
            "parameters": sum(p.numel() for p in model.parameters()),
            "resumed_at_step": self.position.step if resume is not None else None,
            "window": c.window,
            "schedule": {"kind": c.schedule, "warmup": c.warmup, "wait": self.schedule.wait},
        }
        if self.window_choice is not None:
            plan["window_choice"] = self.window_choice
        memory = training_estimate(model.config, c.optimizer, c.window or steps, batch, c.precision)
        plan["memory"] = memory.to_dict()
        if c.window == 0:
            plan["full_bptt_activation_bytes"] = memory.activations
        require_fits(memory, f"training {model.config.describe()} on {batch} streams of "
                     f"{c.window or steps} steps per update", model.config.force)
        self.reporter.start(plan)
        self._warn_if_slow(c.window or steps, batch)
        if c.max_time and self.validate_fn is not None:  # what the final validation will cost, before it is due
            with self.timing.measure("validation"):
                self.validate_fn(self.model)
        return run

    def _resolve_window(self, inputs: torch.Tensor, targets: torch.Tensor, reset_mask, batch: int,
                        resume: dict | None) -> None:
        """--window auto: the shortest window whose gradient reaches --min-cosine of full BPTT's on a sample of
        the training streams, within the memory; a resumed run keeps the window its checkpoint was chosen with."""
        c, config = self.config, self.model.config
        self.window_sample = training_sample(inputs, targets, None if reset_mask is None else reset_mask[0],
                                             self.loss_fn)
        if resume is not None:
            if resume.get("window_choice") is None:
                raise BpttError(f"--resume: --window is auto but the checkpoint was made with --window "
                                f"{resume.get('window', 'K')}; resume with that --window")
            self.window_choice = {**resume["window_choice"], "resumed": True}
        else:
            available = available_bytes()

            def fits(window: int) -> bool:
                need = training_estimate(config, c.optimizer, window, batch, c.precision).total
                return config.force or available is None or need <= available

            choice = choose_window(self.model, self.window_sample, c.min_cosine, fits, distributed.all_sum)
            memory = training_estimate(config, c.optimizer, choice["window"], batch, c.precision)
            self.window_choice = {**choice, "activation_bytes": memory.activations, "memory_bytes": memory.total,
                                  "available_bytes": available, "resumed": False}
        self.config = replace(c, window=self.window_choice["window"])

    def _window_check(self) -> None:
        """--window auto, at an epoch's end: how close the window's gradient still comes to full BPTT's."""
        at, c = self.position, self.config
        check = window_cosine(self.model, self.window_sample, c.window, distributed.all_sum)
        self.window_cosine = check["cosine"]
        self.reporter.window_check({"step": at.step, "epoch": at.epoch, **check, "min_cosine": c.min_cosine,
                                    "below_min_cosine": check["cosine"] < c.min_cosine})

    def _finished(self) -> bool:
        """Whether the restored position is the end of the run: every epoch, --max-steps, or --patience reached."""
        c, at = self.config, self.position
        return at.epoch > c.epochs or bool(c.max_steps and at.step >= c.max_steps) or bool(
            c.patience and at.stale >= c.patience)

    def _warn_if_slow(self, steps: int, batch: int) -> None:
        """Say before the run when one update will take longer than --max-time or a minute: signals wait for it."""
        c = self.config
        limit = min(LONG_UPDATE_SECONDS, c.max_time or math.inf)
        flops = update_flops(self.model.config, steps, batch)  # this process's streams
        if flops < limit * SLOWEST_FLOPS_PER_SECOND:  # even a slow machine does it in time: nothing to measure
            return
        rate = matmul_rate(self.device)
        if flops / rate > limit:
            against = f"--max-time {c.max_time:g} s" if limit == c.max_time else "a minute"
            self.reporter.note(
                f"one update is estimated to take about {flops / rate:,.0f} s ({flops / 1e12:,.1f} TFLOP at the "
                f"{rate / 1e9:,.1f} GFLOP/s measured here), longer than {against}; a first signal stops the run "
                "only after the update; a shorter --window or a smaller --batch-size makes updates shorter"
            )

    def _epoch(self, run: _Run) -> None:
        """The updates of one epoch, from where the position stands; sets ``run.stop`` when the run must stop."""
        c, at = self.config, self.position
        if at.window_index == 0:  # a fresh epoch: zero state, new cut points
            run.state = self.model.init_state(run.batch, self.device)
            at.epoch_rng = self.rng.bit_generator.state
        else:  # resuming mid-epoch: re-plan the same cut points
            self.rng.bit_generator.state = at.epoch_rng
        batched = run.batches is not None
        windows = run.batches if batched else plan_windows(run.steps, c.window, c.stride, c.window_jitter, self.rng)
        for index in range(at.window_index, len(windows)):
            self._train_window(run, self._take_batch(run, index) if batched else windows[index])
            run.stop = self._should_stop()
            if distributed.active() and distributed.any_rank(run.stop != "completed"):  # all ranks stop together
                run.stop = run.stop if run.stop != "completed" else "signal"
            if run.stop != "completed":
                return
            if c.checkpoint_every and at.step % c.checkpoint_every == 0 and at.window_index < len(windows):
                self._checkpoint(run.state)

    def _take_batch(self, run: _Run, index: int) -> Window:
        """Batch ``index`` of this epoch's whole sequences into ``run``, from zeros: the window of one update."""
        streams = run.batches.batch(self.position.epoch, index)
        resets = torch.as_tensor(streams.resets, device=self.device)
        run.inputs, run.targets = streams.inputs.to(self.device), streams.targets.to(self.device)
        run.resets = (resets, streams.resets.any(axis=1))
        run.state = self.model.init_state(run.batch, self.device)
        steps = streams.inputs.shape[0]
        return Window(0, steps, 0, steps)

    def _train_window(self, run: _Run, window: Window) -> None:
        """One update over ``window``: learning rate, step, skipped-update bookkeeping, diagnostics."""
        c, at = self.config, self.position
        for group in self.optimizer.param_groups:
            group["lr"] = c.lr * self.schedule.factor(at.step)
        with self.timing.measure("update"):
            updated = self.update(window, run.inputs, run.targets, run.state, run.resets)
        at.step += 1
        at.window_index += 1
        if self.schedule.kind == "cosine" and c.max_time:
            done = at.step - self.first_step
            if done == BUDGET_WARMUP:
                self.rate_mark = (at.step, self.timing.busy())
            elif done == BUDGET_FIT_AFTER:
                self._fit_schedule_to_budget(say=True)
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
            run.interval.add(loss, total, norms, c.clip, tokens, self.values_clipped)
            if self.penalty is not None:
                run.interval.add_penalty(self.penalty)
        self.reporter.step(at.step, at.epoch)
        if at.step % c.log_every == 0:
            run.last_log = self._log(run.interval)
        if self.sample is not None and at.step % c.sample_every == 0:
            self._sample()

    def _fit_schedule_to_budget(self, say: bool) -> None:
        """Under --max-time, let cosine reach zero where this process's budget ends.

        The rate is measured over this process's updates since ``rate_mark`` (validation and checkpoints
        left out); what is left is the budget less the stop reserve and the epoch-end validations that will
        fall in it. One host sync, at the fit and at epoch ends only.
        """
        c, t = self.config, self.timing
        if self.rate_mark is None or self.position.step <= self.rate_mark[0]:
            return
        per_update = (t.busy() - self.rate_mark[1]) / (self.position.step - self.rate_mark[0])
        left = c.max_time - t.elapsed() - t.reserve()
        epochs_left = left / (per_update * self.per_epoch)
        updates_left = (left - epochs_left * t.last_validation) / per_update
        updates_left = distributed.all_sum(torch.tensor([updates_left])).item() / distributed.world()  # ranks agree
        total = self.schedule.fit_to_budget(self.total_updates, self.position.step, updates_left)
        if say:
            self.reporter.note(f"--schedule cosine fitted to --max-time {c.max_time:g} s: the rate reaches zero "
                               f"at update {total:,} (refitted at each epoch end)")

    def _sample(self) -> None:
        """Show what the model writes now; seeded by the update, so a resumed run draws the same samples."""
        at, c = self.position, self.config
        text = self.sample(self.model, c.seed + at.step)
        self.model.train()  # sampling ran it in eval mode
        self.reporter.sample({"step": at.step, "epoch": at.epoch, "temperature": c.sample_temperature, "text": text})

    def _end_epoch(self, run: _Run) -> None:
        """After an epoch, or a stop inside one: the last diagnostics, validation, patience and a checkpoint."""
        c, at = self.config, self.position
        if run.interval.steps:
            run.last_log = self._log(run.interval)
        if run.stop == "completed":  # the epoch ran to its end
            if c.auto_window:
                self._window_check()
            loss = self._validate(observe=True)
            at.best, at.stale = (loss, 0) if loss < at.best else (at.best, at.stale + 1)
            self._maybe_start_averaging()
            self._fit_schedule_to_budget(say=False)
            at.epoch, at.window_index = at.epoch + 1, 0
            if c.patience and at.stale >= c.patience and at.epoch <= c.epochs:
                run.stop = "early_stopping"
            elif c.max_time and at.epoch <= c.epochs and self._should_stop() == "max_time":
                run.stop = "max_time"  # no room for another update and validation: this one was the last
        else:  # stopped inside an epoch: keep the best model, leave the schedule and patience as they were
            run.interrupted_best = min(run.interrupted_best, self._validate(observe=False))
        self._checkpoint(run.state)

    def _maybe_start_averaging(self) -> None:
        """NT-ASGD: after --nonmono validations without improvement, average the weights from here on."""
        c, at = self.config, self.position
        if c.optimizer == "nt-asgd" and not self.average.started and at.stale >= c.nonmono:
            self.average.start()
            self.reporter.note(f"{at.stale} validations without improvement (--nonmono {c.nonmono}): from update "
                               f"{at.step:,} on, validation and the model file use the average of the weights")

    def _summary(self, run: _Run) -> dict:
        """The run's figures; ``seconds`` and ``tokens_per_second`` cover the whole run, resumes included."""
        at, timing = self.position, self.timing
        if not run.already_complete:
            at.seconds = timing.run_seconds()
        best = min(at.best, run.interrupted_best)
        elapsed = 0.0 if run.already_complete else timing.elapsed()
        return {
            "stop_reason": run.stop,
            "already_complete": run.already_complete,
            "resumable": run.stop in RESUMABLE and not self.checkpoint_refused,
            "steps": at.step,
            "skipped_updates": at.skipped,
            "epochs": min(at.epoch, self.config.epochs),
            "best_val_loss": best if math.isfinite(best) else None,
            "last_train_loss": run.last_log.get("train_loss"),
            "seconds": at.seconds,
            "tokens_per_second": at.tokens * distributed.world() / at.seconds if at.seconds > 0 else 0.0,
            # this process's time by part
            "training_seconds": max(0.0, elapsed - timing.validation - timing.checkpoints),
            "validation_seconds": timing.validation,
            "checkpoint_seconds": timing.checkpoints,
            **({"window_choice": self.window_choice, "window_cosine": self.window_cosine}
               if self.window_choice is not None else {}),
        }

    def _should_stop(self) -> str:
        """Why the run stops after this update, or "completed" to go on.

        --max-time is a hard budget: the run stops while the next update, the
        final validation and the checkpoint (each as long as measured) still fit.
        """
        c = self.config
        if self.stop_requested:
            return self.stop_requested
        if c.max_steps and self.position.step >= c.max_steps:
            return "max_steps"
        if c.max_time and self.timing.elapsed() + self.timing.reserve() >= c.max_time:
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
            "window_rng": self.rng.bit_generator.state,  # where the jittered windows of the next epoch come from
            "average": self.average.state_dict() if self.average is not None else None,  # the weights as trained
            # are "weights"; the averaged ones, which the model file holds, go on from here
            "window": self.config.window,  # as trained: --window auto's choice
            "window_choice": self.window_choice,  # --window auto: how it was chosen (None for a fixed window)
        }

    def _checkpoint(self, state: State) -> None:
        """Write a checkpoint of finite weights only: a NaN not yet detected must not become what --resume loads."""
        if self.save_checkpoint is None:
            return
        finite = torch.stack([torch.isfinite(t).all() for t in [*self.params, *state]]).all()
        if not bool(finite):  # one host sync per checkpoint
            raise RunFailed(
                f"the weights or the carried state hold a NaN or infinity at step {self.position.step}: the loss "
                "diverged; no checkpoint was written and the last good model file was kept; "
                "try --clip 1.0 or a lower --lr"
            )
        with self.timing.measure("checkpoint"):
            self.position.seconds = self.timing.run_seconds()  # the figures of a resumed run cover the whole run
            written = self.save_checkpoint(self.checkpoint(state)) is not False
        self.checkpoint_refused = not written
        if written:
            self.checkpointed_step = self.position.step

    def _restore(self, saved: dict, batch: int) -> State:
        try:
            self.model.load_state_dict(saved["weights"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.position = Position(**saved["position"])
            for name, value in saved["schedule"].items():
                setattr(self.schedule, name, value)
            state = tuple(distributed.my_streams(s).to(self.device) for s in saved["carried_state"])
            torch.set_rng_state(saved["torch_rng"])
            if "window_rng" in saved:  # older checkpoints lack it (their epoch-end resumes re-drew the windows)
                self.rng.bit_generator.state = saved["window_rng"]
            if saved["cuda_rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(saved["cuda_rng"])
            if self.average is not None:
                self.average.load_state_dict(saved["average"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise BpttError(f"the checkpoint does not fit this run ({str(err).splitlines()[0][:160]}); "
                            "start afresh without --resume") from None
        if state[0].shape[1] != batch:
            raise BpttError("the checkpoint was made with another --batch-size; resume with the same options")
        return state

    def _log(self, interval: _Interval) -> dict:
        at = self.position
        record = interval.read()
        interval.reset()
        record.update(step=at.step, epoch=at.epoch, lr=self.optimizer.param_groups[0]["lr"],
                      elapsed_seconds=self.timing.run_seconds())
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
        Timed with the model file it writes: a hard --max-time reserves that long for the last one.
        """
        at = self.position
        averaged = self.average.swapped_in() if self.average is not None else contextlib.nullcontext()
        with self.timing.measure("validation"), averaged:
            if self.validate_fn is None:  # no validation data: the latest model is the best we know
                self.save_best({"step": at.step, "epoch": at.epoch, "val_loss": None})
                return math.inf
            record = self._score(observe)
        self.reporter.validation(record)
        return record["val_loss"]

    def _score(self, observe: bool) -> dict:
        """Validate the model as it stands (the averaged weights, when there are), and save it if it is the best."""
        at = self.position
        figures = self.validate_fn(self.model)
        chooses = figures.pop("chooses", True)  # False: too few points to choose on; the latest model is kept
        loss = figures["loss"]
        if not math.isfinite(loss):
            raise RunFailed(
                f"the validation loss is {loss} at step {at.step}; the last good model file was kept; "
                "try --clip 1.0 or a lower --lr"
            )
        if observe:
            self.schedule.observe(loss)
        record = {"step": at.step, "epoch": at.epoch, **{f"val_{k}": v for k, v in figures.items()},
                  "best": loss < at.best, "saved": False}
        if not chooses:  # kept as a run without validation keeps its models: no figure to beat or store
            record["saved"] = self.save_best({**record, "val_loss": None}) is not False
        elif loss < at.best:  # the callback may add to the record what it kept instead
            record["saved"] = self.save_best(record) is not False
        if self.average is not None:
            record["averaged"] = self.average.started
        return record

    @contextlib.contextmanager
    def stop_on_signals(self):
        """The first SIGINT or SIGTERM: say at once that the run stops after this update, then stop there
        with a checkpoint (exit code 3). A second one stops at once: --resume continues from the last checkpoint.

        Python runs its signal handlers only between bytecodes, which a long
        backward pass does not reach for minutes; the wake-up fd is written by the
        C-level handler at once, and a watcher thread answers from it.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in SIGNALS}  # the watcher answers
        previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        watcher = threading.Thread(target=self._watch_signals, args=(read_end,), name="bptt-signals", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(write_end)  # the watcher reads the end of the pipe and returns
            watcher.join()
            os.close(read_end)

    def _watch_signals(self, read_end: int) -> None:
        while data := os.read(read_end, 64):  # one byte per signal: its number
            for signum in data:
                if signum in SIGNALS:
                    self._on_signal(signal.Signals(signum))

    def _on_signal(self, signum: signal.Signals) -> None:
        self.signals += 1
        if self.signals == 1:
            self.stop_requested = "signal"
            self.reporter.note(f"{signum.name}: {self._stopping_line()}; a second signal stops at once")
            return
        kept = self.checkpointed_step
        self.reporter.note(f"{signum.name} again: stopping now; " + (
            f"--resume continues from the checkpoint at update {kept:,}" if kept is not None
            else "no checkpoint was written yet"))
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(3 if kept is not None else 128 + signum)  # the files on disk are whole: every write is atomic

    def _stopping_line(self) -> str:
        """What a first signal does, with how far the running update is."""
        timing, running = self.timing, self.timing.update_started
        line = f"bptt stops after update {self.position.step + 1:,} of {self.total_updates:,}"
        if running is not None:
            line += f", which has run {time.perf_counter() - running:,.1f} s"
            if timing.longest_update:
                line += f" (the longest so far took {timing.longest_update:,.1f} s)"
        return line + ", then validates and saves a checkpoint"
