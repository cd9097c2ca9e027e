"""torch.distributed on this machine: 2 CPU processes (gloo) train as one process with all the streams."""

import json
import subprocess
import sys

import pytest
import torch

from bptt_cli import distributed
from bptt_cli.modelfile import load_model_file
from bptt_cli.series import IGNORE_LABEL, Streams
from bptt_cli.scoring import columns_of_this_rank, scored_figures, scored_sums
from conftest import TINY
from test_series import seasonal_csv

# torchrun jobs run one at a time, in one worker: two of them side by side (the text and the series run) made a
# rank abort at exit ("terminate called without an active exception", exit -6) in about 1 run in 4 on a 2-core
# Intel VM, before and after the linear start; one at a time beside other tests, or beside busy cores, it did not
pytestmark = pytest.mark.xdist_group("torchrun")


# dropout off (text's default is 0.2): each rank draws its own masks, so ranks match one process only without it
def train(tmp_path, text, name, *extra, options=(*TINY, "--no-cache", "--dropout", "0")):
    out = tmp_path / f"{name}.pt"
    metrics = tmp_path / f"{name}.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "bptt_cli", "train", str(text), "-o", str(out), *options, "--max-steps", "12",
         "--log-every", "1", "--threads", "1", "--metrics", str(metrics), *extra],
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


@pytest.mark.parametrize("classifies", [False, True])
def test_series_validation_sums_over_the_ranks_shares_give_the_whole_figures(monkeypatch, classifies):
    torch.manual_seed(0)
    steps, streams, width = 9, 6, 3
    if classifies:
        targets = torch.randint(0, width, (steps, streams))
        targets[torch.rand(steps, streams) < 0.3] = IGNORE_LABEL
    else:
        targets = torch.randn(steps, streams, width)
        targets[torch.rand(steps, streams, width) < 0.3] = float("nan")
    whole = Streams(torch.randn(steps, streams, 2), targets, torch.zeros(steps, streams, dtype=torch.bool),
                    [(i, 0, steps) for i in range(streams)])
    outputs = torch.randn(steps, streams, width)
    seq = type("Seq", (), {"classifies": classifies})()
    expected = scored_figures(seq, scored_sums(seq, outputs, whole, "mse"))
    total = torch.zeros(3, dtype=torch.float64)
    for begin, end in [(0, 2), (2, 6)]:  # two ranks of unequal shares
        monkeypatch.setattr(distributed, "shard_range", lambda n, b=begin, e=end: (b, e))
        mine = columns_of_this_rank(whole)
        assert [w[0] for w in mine.where] == list(range(end - begin))  # numbered within the share
        total += scored_sums(seq, outputs[:, begin:end], mine, "mse")
    got = scored_figures(seq, total)
    assert set(got) == ({"loss", "accuracy"} if classifies else {"loss"})
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-6)  # float32 sums in another order


@pytest.mark.slow
def test_two_ranks_train_a_series_as_one_process_with_validation_shared_out(tmp_path):
    data = seasonal_csv(tmp_path / "sites.csv", rows=160, groups=4)
    options = ["--group-column", "site", "--target", "load", "--hidden", "8", "--layers", "1", "--batch-size", "4",
               "--window", "8"]
    single, one_train, one_val = train(tmp_path, data, "single", options=options)
    double, two_train, two_val = train(tmp_path, data, "double", "--nproc", "2", options=options)
    assert len(two_train) == 12 and len(two_val) == len(one_val) >= 1
    for a, b in zip(one_train, two_train):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5, abs=1e-6)
    for a, b in zip(one_val, two_val):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
    a, b = load_model_file(single), load_model_file(double)
    for x, y in zip(a.data["tail"]["state"], b.data["tail"]["state"]):  # computed anew with two ranks
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-4)
    forecast = subprocess.run([sys.executable, "-m", "bptt_cli", "generate", str(double), "--horizon", "3",
                               "--assume-seasonal"],
                              capture_output=True, text=True, timeout=120)
    assert forecast.returncode == 0, forecast.stderr
    assert len(forecast.stdout.strip().splitlines()) == 1 + 4 * 3
