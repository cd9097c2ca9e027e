"""The run around the updates: time budgets, signals, checkpoints that resume exactly, figures of a resumed run."""

import io
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from bptt_cli import trainer as trainer_module
from bptt_cli.errors import RunFailed
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.trainer import SilentReporter, TrainConfig, Trainer, next_token_loss

VOCAB = 12


class Recorder(SilentReporter):
    """Keeps what the trainer says; ``heard`` is set by each note."""

    def __init__(self):
        self.notes, self.starts, self.heard = [], [], threading.Event()

    def start(self, plan):
        self.starts.append(plan)

    def note(self, message):
        self.notes.append(message)
        self.heard.set()


def saved(checkpoint: dict) -> dict:
    """The checkpoint as it comes back from disk (torch.save, then a weights-only load)."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def make_trainer(reporter=None, validate=None, checkpoints=None, loss_fn=None, dropout=0.1, **options):
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig(cell="lstm", input_size=VOCAB, output_size=VOCAB, embed=8, hidden=16,
                                       layers=1, dropout=dropout))
    config = TrainConfig(**{"window": 10, "batch_size": 4, "epochs": 3, "log_every": 5, "seed": 3, **options})
    config.validate()
    store = (lambda c: checkpoints.append(saved(c))) if checkpoints is not None else None
    return Trainer(model, config, torch.device("cpu"), reporter or SilentReporter(), validate, lambda record: None,
                   loss_fn, save_checkpoint=store)


def streams(steps: int = 200, batch: int = 4):
    ids = torch.randint(0, VOCAB, (steps + 1, batch), generator=torch.Generator().manual_seed(1))
    return ids[:-1], ids[1:]


def weights(trainer: Trainer) -> dict:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


# -- a. --max-time is a hard budget -------------------------------------------------------------------------------


class TickingClock:
    """``time`` for the trainer: every reading moves on a millisecond, and a validation moves it on by what it
    claims to take, so a budget test measures the trainer's decisions, not how busy the machine is."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.001
        return self.now


def test_max_time_stops_so_that_a_slow_final_validation_fits_in_the_budget(monkeypatch):
    clock = TickingClock()
    monkeypatch.setattr(trainer_module, "time", clock)

    def slow_validation(model):
        clock.now += 0.4  # the validation under test is slow on purpose
        return {"loss": 1.0}

    budget = 1.5
    trainer = make_trainer(validate=slow_validation, epochs=10_000, max_time=budget)
    inputs, targets = streams(steps=4000)
    began = clock.now
    result = trainer.fit(inputs, targets)
    wall = clock.now - began
    assert result["stop_reason"] == "max_time" and result["resumable"]
    # a run that ran its final validation after the budget would overrun by a whole one, 0.4 s; the slack is
    # 50 readings of the clock outside the updates
    assert budget - 0.4 < wall <= budget + trainer.timing.longest_update + 0.05, (wall, trainer.timing.longest_update)
    # the measuring validation and the final one, and the parts add up to this process's time
    assert result["validation_seconds"] >= 0.8 and result["training_seconds"] > 0
    parts = result["training_seconds"] + result["validation_seconds"] + result["checkpoint_seconds"]
    assert parts == pytest.approx(trainer.timing.elapsed(), abs=0.01)


def fake_clock(monkeypatch, trainer: Trainer, per_update: float) -> None:
    """The budget's clock as ``per_update`` seconds per update, nothing else: the same on any machine, however busy."""
    monkeypatch.setattr(trainer_module._Timing, "elapsed", lambda timing: trainer.position.step * per_update)
    monkeypatch.setattr(trainer_module._Timing, "busy", lambda timing: timing.elapsed())
    monkeypatch.setattr(trainer_module._Timing, "reserve", lambda timing: 0.0)


def test_cosine_under_max_time_is_fitted_to_the_budget_and_reaches_zero_there(monkeypatch):
    """With --epochs far beyond the budget, cosine would barely decay; it is fitted to what the budget holds."""
    reporter = Recorder()
    trainer = make_trainer(reporter=reporter, validate=lambda model: {"loss": 1.0}, epochs=10_000, max_time=1.0,
                           schedule="cosine")
    # 2 ms of the budget per update, on any machine however busy: the budget holds about 500
    fake_clock(monkeypatch, trainer, 0.002)
    result = trainer.fit(*streams(steps=4000))
    assert result["stop_reason"] == "max_time"
    planned, fitted = trainer.total_updates, trainer.schedule.total_steps
    assert planned == 10_000 * 400 and trainer_module.BUDGET_FIT_AFTER < fitted < planned
    assert abs(fitted - result["steps"]) <= 0.1 * result["steps"], (fitted, result["steps"])  # ends with the budget
    assert [n for n in reporter.notes if "fitted to --max-time" in n]
    assert trainer.schedule.factor(fitted) == 0.0 and trainer.schedule.factor(fitted // 2) == pytest.approx(
        0.5, abs=0.01)


def test_a_budget_fitted_cosine_resumed_without_max_time_decays_over_the_planned_run(monkeypatch):
    """The fit belongs to its budget: resumed with no --max-time, the rate must not stay at zero."""
    checkpoints = []
    trainer = make_trainer(validate=lambda model: {"loss": 1.0}, checkpoints=checkpoints, epochs=2, max_time=1.0,
                           schedule="cosine", checkpoint_every=50)
    fake_clock(monkeypatch, trainer, 0.01)
    trainer.fit(*streams(steps=4000))
    assert trainer.schedule.total_steps < trainer.total_updates  # fitted to the 1 s budget: about 100 updates
    monkeypatch.undo()
    resumed = make_trainer(validate=lambda model: {"loss": 1.0}, epochs=2, schedule="cosine", checkpoint_every=50)
    resumed.fit(*streams(steps=4000), resume=checkpoints[-1])
    assert resumed.schedule.total_steps == resumed.total_updates == 800


def test_cosine_fit_never_lengthens_the_planned_schedule():
    from bptt_cli.schedule import LearningRateSchedule

    schedule = LearningRateSchedule("cosine", total_steps=100)
    assert schedule.fit_to_budget(100, step=20, updates_left=500.0) == 100
    assert schedule.fit_to_budget(100, step=20, updates_left=30.4) == 50
    assert schedule.fit_to_budget(100, step=20, updates_left=-3.0) == 21  # no time left: ends at the next step


# -- b. signals ----------------------------------------------------------------------------------------------------


def test_the_first_signal_is_acknowledged_at_once_and_the_run_stops_after_that_update():
    reporter = Recorder()
    calls, acknowledged_during_update = [], []

    def loss(outputs, targets):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
            acknowledged_during_update.append(reporter.heard.wait(timeout=120))  # the line, while this update runs
        return next_token_loss(outputs, targets)

    trainer = make_trainer(reporter=reporter, loss_fn=loss)
    with trainer.stop_on_signals():
        result = trainer.fit(*streams())
    assert acknowledged_during_update == [True]
    assert result["stop_reason"] == "signal" and result["steps"] == 3
    (line,) = reporter.notes
    assert line.startswith("SIGINT: bptt stops after update 3 of 60, which has run ")
    assert line.endswith("then validates and saves a checkpoint; a second signal stops at once")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back after the run


SECOND_SIGNAL = r"""
import os, signal, sys, threading, torch
sys.path.insert(0, {tests!r})
from test_trainer_run import make_trainer, streams
from bptt_cli.trainer import SilentReporter, next_token_loss

class Say(SilentReporter):
    def note(self, message):
        print(message, file=sys.stderr, flush=True)

calls = []
def loss(outputs, targets):
    calls.append(1)
    if len(calls) == 5:  # after the checkpoint at update 4, the update never ends by itself
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait(600)
    return next_token_loss(outputs, targets)

checkpoints = []
trainer = make_trainer(reporter=Say(), loss_fn=loss, checkpoints=checkpoints, checkpoint_every=2)
with trainer.stop_on_signals():
    trainer.fit(*streams())
"""


def test_a_second_signal_stops_at_once_keeping_the_last_checkpoint():
    code = SECOND_SIGNAL.format(tests=os.path.dirname(__file__))
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert process.returncode == 3, process.stderr
    lines = process.stderr.splitlines()
    assert lines[0].startswith("SIGTERM: bptt stops after update 5 of 60")
    assert lines[1] == "SIGTERM again: stopping now; --resume continues from the checkpoint at update 4"


def test_an_update_longer_than_the_budget_is_announced_before_the_run(monkeypatch):
    monkeypatch.setattr(trainer_module, "SLOWEST_FLOPS_PER_SECOND", 0.0)
    monkeypatch.setattr(trainer_module, "matmul_rate", lambda device: 1e5)  # a very slow machine
    reporter = Recorder()
    make_trainer(reporter=reporter, max_steps=1, max_time=2.0).fit(*streams())
    (line,) = reporter.notes
    assert line.startswith("one update is estimated to take about ") and "longer than --max-time 2 s" in line
    monkeypatch.setattr(trainer_module, "matmul_rate", lambda device: 1e12)
    quiet = Recorder()
    make_trainer(reporter=quiet, max_steps=1).fit(*streams())
    assert quiet.notes == []


# -- c. resuming a run that has finished ----------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"max_steps": 7}])
def test_resuming_a_finished_run_trains_nothing_and_writes_nothing(options):
    checkpoints = []
    done = make_trainer(checkpoints=checkpoints, **options)
    first = done.fit(*streams())
    assert not first["already_complete"]
    reporter, again = Recorder(), []
    resumed = make_trainer(reporter=reporter, checkpoints=again, **options)
    resumed.save_best = lambda record: again.append(record)
    began = time.perf_counter()
    result = resumed.fit(*streams(), resume=checkpoints[-1])
    spent = time.perf_counter() - began  # the resumed run may add no more than its own time (a busy machine's too)
    assert result["already_complete"] and not result["resumable"] and result["stop_reason"] == "completed"
    assert result["steps"] == first["steps"] and abs(result["seconds"] - first["seconds"]) <= spent + 0.05
    assert again == [] and reporter.starts == []  # no checkpoint, no model file, no plan
    for name, tensor in weights(done).items():
        assert torch.equal(resumed.model.state_dict()[name], tensor)


# -- d. jittered windows resume exactly at an epoch end --------------------------------------------------------


def test_a_jittered_run_resumed_from_an_epoch_end_checkpoint_ends_with_the_same_weights():
    checkpoints = []
    whole = make_trainer(checkpoints=checkpoints, window_jitter=0.3)
    whole.fit(*streams())
    epoch_end = [c for c in checkpoints if c["position"]["window_index"] == 0 and c["position"]["epoch"] == 2]
    assert len(epoch_end) == 1
    resumed = make_trainer(window_jitter=0.3)
    resumed.fit(*streams(), resume=epoch_end[0])
    for name, tensor in weights(whole).items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name  # bit for bit


# -- e. never a checkpoint of weights that are not finite --------------------------------------------------------


def test_a_checkpoint_between_a_nan_and_its_detection_is_not_written():
    calls = []

    def loss(outputs, targets):
        calls.append(1)
        value = next_token_loss(outputs, targets)
        return value * math.nan if len(calls) == 6 else value

    checkpoints = []
    trainer = make_trainer(checkpoints=checkpoints, loss_fn=loss, checkpoint_every=1, log_every=1000, dropout=0.0)
    with pytest.raises(RunFailed, match="NaN or infinity at step 6: .*no checkpoint was written"):
        trainer.fit(*streams())
    assert [c["position"]["step"] for c in checkpoints] == [1, 2, 3, 4, 5]
    assert all(torch.isfinite(t).all() for c in checkpoints for t in c["weights"].values())


# -- f. the figures of a resumed run cover the whole run ----------------------------------------------------------


def test_seconds_and_tokens_per_second_of_a_resumed_run_cover_the_whole_run():
    checkpoints = []
    first = make_trainer(checkpoints=checkpoints)
    first.reporter.step = lambda step, epoch: setattr(first, "stop_requested", "signal" if step == 20 else None)
    stopped = first.fit(*streams())
    assert stopped["stop_reason"] == "signal" and stopped["steps"] == 20
    position = checkpoints[-1]["position"]
    assert 0 < position["seconds"] <= stopped["seconds"]  # stored before the checkpoint was written
    second = make_trainer()
    began = time.perf_counter()
    result = second.fit(*streams(), resume=checkpoints[-1])
    assert result["seconds"] >= position["seconds"] + (time.perf_counter() - began) * 0.5
    assert result["seconds"] > position["seconds"]
    assert result["tokens_per_second"] == pytest.approx(second.position.tokens / result["seconds"])
    assert second.position.tokens == 60 * 10 * 4
