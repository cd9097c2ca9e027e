"""torch.distributed on this machine: 2 CPU processes (gloo) train as one process with all the streams."""

import json
import subprocess
import sys

import pytest
import torch

from bptt_cli.modelfile import load_model_file
from conftest import TINY


def train(tmp_path, text, name, *extra):
    out = tmp_path / f"{name}.pt"
    metrics = tmp_path / f"{name}.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "bptt_cli", "train", str(text), "-o", str(out), *TINY, "--max-steps", "12",
         "--log-every", "1", "--threads", "1", "--no-cache", "--metrics", str(metrics), *extra],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return out, [r for r in records if r["kind"] == "train"], [r for r in records if r["kind"] == "validation"]


@pytest.mark.slow
def test_two_ranks_with_half_the_streams_each_match_one_process(tmp_path, tiny_text):
    single, one_train, one_val = train(tmp_path, tiny_text, "single")
    double, two_train, two_val = train(tmp_path, tiny_text, "double", "--nproc", "2")
    assert [r["step"] for r in two_train] == list(range(1, 13))
    for a, b in zip(one_train, two_train):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5, abs=1e-6)
        assert b["grad_norm_mean"] == pytest.approx(a["grad_norm_mean"], rel=1e-4)  # the global norm
    assert two_val[0]["val_loss"] == pytest.approx(one_val[0]["val_loss"], rel=1e-3)  # all-reduced over ranks
    a, b = load_model_file(single), load_model_file(double)
    assert a.model.config == b.model.config and a.tokenizer == b.tokenizer
    assert set(a.summary) == set(b.summary)
    generated = subprocess.run([sys.executable, "-m", "bptt_cli", "generate", str(double), "--length", "20"],
                               capture_output=True, text=True, timeout=120)
    assert generated.returncode == 0 and len(generated.stdout.strip()) >= 15


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path, tiny_text):
    result = subprocess.run(
        [sys.executable, "-m", "bptt_cli", "train", str(tiny_text), "-o", str(tmp_path / "m.pt"), *TINY,
         "--batch-size", "3", "--nproc", "2", "--max-steps", "2", "--no-cache"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --batch-size 3 does not split evenly over 2 processes; use a multiple of 2"
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.slow
def test_a_distributed_run_resumes_exactly_from_its_checkpoint(tmp_path, tiny_text):
    """The checkpoint gathers every rank's carried state; resuming splits it again."""

    def run(out, steps, *extra):
        result = subprocess.run(
            [sys.executable, "-m", "bptt_cli", "train", str(tiny_text), "-o", str(out), *TINY, "--threads", "1",
             "--no-cache", "--nproc", "2", "--max-steps", str(steps), "--window-jitter", "0.3", *extra],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return torch.load(out.with_name(out.name + ".ckpt"), weights_only=True)["training"]

    whole = run(tmp_path / "whole.pt", 30)
    run(tmp_path / "split.pt", 15)
    resumed = run(tmp_path / "split.pt", 30, "--resume")
    assert resumed["position"]["step"] == 30
    assert all(torch.equal(resumed["weights"][k], v) for k, v in whole["weights"].items())
    assert all(torch.equal(a, b) for a, b in zip(resumed["carried_state"], whole["carried_state"]))
