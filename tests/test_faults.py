"""A training process killed (kill -9) at 8 random moments, some during a checkpoint write: after every
kill the model file and the checkpoint load or are absent, no temporary file outlives the next run, and the
run resumed after the last kill ends with the weights of a run that was never killed, bit for bit."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from bptt_cli.modelfile import load_model_file
from conftest import TINY, wait_until
from test_scripts import EXACT, STEPS, bptt, weights_of_checkpoint

KILLS = 8  # each kill costs a process start (torch's import): 20 took CI past 15 minutes on Zen 3


def checkpoint_step(path: Path) -> int:
    return torch.load(path, weights_only=True)["training"]["position"]["step"] if path.exists() else 0


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def kill_at_a_moment(process, folder: Path, ckpt: Path, after: int, during_write: bool, pause: float) -> bool:
    """Wait for an event (a checkpoint past ``after``; then a temporary being written, or a short random pause),
    then kill -9. False if the run ended by itself first."""
    if not wait_until(lambda: checkpoint_step(ckpt) > after, process):
        return False
    if during_write:  # the next checkpoint (or model file) is being written right now
        if not wait_until(lambda: bool(temporaries(folder)), process, every=0.0005):
            return False
    else:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=pause)  # a random moment between two checkpoints (or the run's end), not a deadline
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


@pytest.mark.slow
def test_repeated_kills_leave_no_damage_and_the_resumed_run_is_bit_identical(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text((Path(__file__).parents[1] / "sample_data" / "shakespeare.txt").read_text()[:6000])
    whole = tmp_path / "whole"
    whole.mkdir()
    done = bptt(text, "-o", whole / "m.pt", *TINY, *EXACT)
    assert done.wait() == 0, done.stderr.read()
    expected = weights_of_checkpoint(whole / "m.pt.ckpt")

    folder = tmp_path / "killed"
    folder.mkdir()
    out, ckpt = folder / "m.pt", folder / "m.pt.ckpt"
    rng = random.Random(7)
    kills, during_writes = 0, 0
    while kills < KILLS:
        left_before = set(temporaries(folder))
        process = bptt(text, "-o", out, *TINY, *EXACT, "--checkpoint-every", "7", *(["--resume"] if ckpt.exists() else []))
        during = rng.random() < 0.5
        if not kill_at_a_moment(process, folder, ckpt, checkpoint_step(ckpt), during, rng.uniform(0, 0.05)):
            break  # the run finished before this kill: there is nothing left to interrupt
        kills, during_writes = kills + 1, during_writes + during
        assert not (left_before & set(temporaries(folder))), "a temporary outlived the next run"
        if out.exists():
            load_model_file(out)  # loads (a damaged file would raise)
        assert checkpoint_step(ckpt) > 0  # the checkpoint loads, and it holds progress
    assert kills == KILLS and during_writes >= 2, (kills, during_writes)
    last = bptt(text, "-o", out, *TINY, *EXACT, "--checkpoint-every", "7", "--resume")
    assert last.wait() == 0, last.stderr.read()
    assert temporaries(folder) == [] and checkpoint_step(ckpt) == STEPS
    got = weights_of_checkpoint(ckpt)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name  # bit for bit, after every kill
    assert os.path.getsize(out) > 0 and load_model_file(out).summary["best_step"] > 0
