"""Shared fixtures: every test is seeded, and the data is made here or read from sample_data/."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from bptt_cli.cli import app, quiet_openmp_wait  # imports no torch

# as bptt does for its users, before torch starts: with two test workers on two cores, OpenMP threads that
# spin 3 ms at every wait slowed a tiny evaluation 300x on a Xeon with AMX (0.34 s alone, 117 s beside the other)
quiet_openmp_wait()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_TEXT = ROOT / "sample_data" / "shakespeare.txt"


@pytest.fixture(autouse=True)
def seeded():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def isolated_token_cache(tmp_path_factory, monkeypatch):
    """Token caches go to a folder of this test's own, never to the user's cache or beside the data."""
    monkeypatch.setenv("BPTT_CACHE_DIR", str(tmp_path_factory.mktemp("bptt-cache", numbered=True)))


@pytest.fixture
def tiny_text(tmp_path: Path) -> Path:
    """A few kilobytes of real text, enough to fill small streams."""
    path = tmp_path / "tiny.txt"
    path.write_text(SAMPLE_TEXT.read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return path


@pytest.fixture
def run():
    """Run the app in-process; returns (exit code, stdout, stderr)."""
    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, [str(a) for a in args])
        return result.exit_code, result.stdout, result.stderr

    return invoke


TINY = ["--hidden", "16", "--embed", "8", "--layers", "1", "--batch-size", "4", "--window", "10"]


def wait_until(happened, process: subprocess.Popen, every: float = 0.005) -> bool:
    """Wait for the event ``happened()`` with no deadline (a busy machine makes it wait longer, never fail); between
    checks wait on ``process`` itself, so its end is seen at once. False if the process ended first."""
    while not happened():
        try:
            process.wait(timeout=every)
        except subprocess.TimeoutExpired:
            continue
        return happened()
    return True


@pytest.fixture
def tiny_model(tmp_path: Path, tiny_text: Path, run) -> Path:
    """A model file trained for a few steps on tiny_text."""
    out = tmp_path / "tiny.pt"
    code, _, err = run("train", tiny_text, "-o", out, "--max-steps", "5", *TINY)
    assert code == 0, err
    return out
