"""Threads on a shared CPU: the default count follows the cores this process may use, and OpenMP
is told to sleep, not spin, before torch starts its thread pool."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from bptt_cli import device


@pytest.fixture
def no_quota(monkeypatch, tmp_path):
    monkeypatch.setattr(device, "CGROUP_CPU_MAX", tmp_path / "absent")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_usable_cores_follow_the_affinity_mask(monkeypatch, no_quota):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
    assert device.usable_cores() == 3 and device.default_threads() == 3


@pytest.mark.parametrize("cpu_max, cores", [("150000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", 4)])
def test_a_cgroup_quota_caps_the_cores(monkeypatch, tmp_path, cpu_max, cores):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    quota = tmp_path / "cpu.max"
    quota.write_text(cpu_max)
    monkeypatch.setattr(device, "CGROUP_CPU_MAX", quota)
    assert device.usable_cores() == cores


def test_set_threads_uses_the_usable_cores_unless_told(monkeypatch, no_quota):
    chosen = []
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    device.set_threads(None)
    device.set_threads(2)
    assert chosen == [1, 2]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own choice stays torch's to apply
    device.set_threads(None)
    assert chosen == [1, 2] and device.default_threads() is None


# What the process saw: the wait policy and spin count when ``import torch`` began, and torch's threads at exit.
PROBE = """
import atexit, os, sys
seen = {}

class WatchTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and "policy" not in seen:
            seen["policy"] = os.environ.get("OMP_WAIT_POLICY")
            seen["spin"] = os.environ.get("GOMP_SPINCOUNT")
        return None

sys.meta_path.insert(0, WatchTorch())
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # this process may use one core

@atexit.register
def report():
    import torch
    sys.stderr.write(f"PROBE policy={seen.get('policy')} spin={seen.get('spin')} threads={torch.get_num_threads()}\\n")

from bptt_cli.cli import main
sys.argv = ["bptt", *sys.argv[1:]]
main()
"""


def probe(*args, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    result = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True,
                            env={**clean, **env}, check=False)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("PROBE")][-1]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux affinity")
def test_openmp_spins_briefly_then_sleeps_and_threads_follow_affinity_before_torch_starts(tiny_model):
    assert probe("generate", tiny_model, "--length", "3") == "PROBE policy=PASSIVE spin=3000 threads=1"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux affinity")
def test_a_users_own_wait_policy_and_thread_count_are_kept(tiny_model):
    line = probe("generate", tiny_model, "--length", "3", "--threads", "2", OMP_WAIT_POLICY="ACTIVE")
    assert line == "PROBE policy=ACTIVE spin=None threads=2"
    line = probe("generate", tiny_model, "--length", "3", GOMP_SPINCOUNT="0")  # the user's spin count: no policy set
    assert line == "PROBE policy=None spin=0 threads=1"


@pytest.mark.parametrize("command", [["generate", "MODEL"], ["evaluate", "MODEL", "DATA"], ["gradcheck"], ["train", "DATA"]])
def test_every_command_that_runs_a_model_takes_threads(run, tiny_model, tiny_text, command, monkeypatch):
    used = []
    monkeypatch.setattr(device, "set_threads", lambda threads: used.append(threads) or 1)
    args = [{"MODEL": tiny_model, "DATA": tiny_text}.get(a, a) for a in command]
    extra = {"gradcheck": ["--window", "4", "--segment", "8", "--windows", "1,4", "--hidden", "4"],
             "train": ["--max-steps", "1", "-o", tiny_model.with_name("again.pt"), "--hidden", "8", "--layers", "1"],
             "generate": ["--length", "2"], "evaluate": []}[command[0]]
    code, _, stderr = run(*args, *extra, "--threads", "1")
    assert code == 0, stderr
    assert used == [1]
