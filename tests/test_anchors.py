"""What users of char-rnn and word_language_model expect (issue 17, point 9): samples while training,
a test file scored at the end, and enough updates per epoch on a small series."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import TINY
from test_corpus import plays, write_corpus
from test_series import seasonal_csv

from bptt_cli.render.training import TrainReporter

SERIES = ["--hidden", "8", "--layers", "1", "--batch-size", "4", "--window", "24", "--max-steps", "6"]
SAMPLE_HEAD = re.compile(r"^--- sample at update (\d+) \(temperature ([0-9.]+)\) ---$", re.MULTILINE)


def samples(stderr: str) -> dict[int, str]:
    """The samples a run printed, by update: the text between a sample's head and its closing rule."""
    found = {}
    for head in SAMPLE_HEAD.finditer(stderr):
        body = stderr[head.end() + 1:]
        found[int(head.group(1))] = body[: body.index("\n---\n")]
    return found


def checkpoint_weights(path) -> dict:
    return torch.load(path, weights_only=True)["training"]["weights"]


# -- --sample-every ---------------------------------------------------------------------------------------


def test_samples_go_to_stderr_every_n_updates_at_the_asked_length(tmp_path, tiny_text, run):
    code, stdout, stderr = run("train", tiny_text, "-o", tmp_path / "m.pt", "--max-steps", "9", *TINY,
                               "--sample-every", "3", "--sample-length", "40", "--json")
    assert code == 0, stderr
    json.loads(stdout)  # stdout holds the summary and nothing else
    assert "sample at update" not in stdout
    shown = samples(stderr)
    assert sorted(shown) == [3, 6, 9] and all(len(text) == 40 for text in shown.values())  # 40 characters
    assert set(SAMPLE_HEAD.findall(stderr)) == {("3", "0.8"), ("6", "0.8"), ("9", "0.8")}


def test_samples_leave_training_exact_and_a_resumed_run_draws_the_same_ones(tmp_path, tiny_text, run):
    exact = [*TINY, "--dropout", "0.2", "--window-jitter", "0.3", "--seed", "3"]  # training draws random numbers
    plain, sampled, resumed = tmp_path / "plain.pt", tmp_path / "sampled.pt", tmp_path / "resumed.pt"
    code, _, _ = run("train", tiny_text, "-o", plain, "--max-steps", "8", *exact)
    assert code == 0
    code, _, whole = run("train", tiny_text, "-o", sampled, "--max-steps", "8", *exact, "--sample-every", "2",
                         "--sample-temperature", "1.5")
    assert code == 0
    expected = checkpoint_weights(plain.with_name("plain.pt.ckpt"))
    got = checkpoint_weights(sampled.with_name("sampled.pt.ckpt"))
    assert all(torch.equal(got[name], tensor) for name, tensor in expected.items())  # bit for bit
    code, _, first = run("train", tiny_text, "-o", resumed, "--max-steps", "4", *exact, "--sample-every", "2",
                         "--sample-temperature", "1.5")
    assert code == 0
    code, _, second = run("train", tiny_text, "-o", resumed, "--max-steps", "8", *exact, "--sample-every", "2",
                          "--sample-temperature", "1.5", "--resume")
    assert code == 0, second
    assert {**samples(first), **samples(second)} == samples(whole) and sorted(samples(second)) == [6, 8]
    got = checkpoint_weights(resumed.with_name("resumed.pt.ckpt"))
    assert all(torch.equal(got[name], tensor) for name, tensor in expected.items())


def test_a_sample_on_a_terminal_is_printed_verbatim_above_the_progress_bar(capsys, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    for module in ("bptt_cli.render.console", "bptt_cli.render.training"):
        monkeypatch.setattr(f"{module}.plain", lambda: False)  # as if stderr were a terminal
    reporter = TrainReporter(unit="char")
    reporter.start({"parameters": 10, "streams": 1, "steps_per_stream": 100, "updates_per_epoch": 10,
                    "total_updates": 10, "resumed_at_step": None})
    reporter.sample({"step": 5, "epoch": 1, "temperature": 0.8, "text": "[bold]KING[/bold] :smile:"})
    reporter.close()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--- sample at update 5 (temperature 0.8) ---" in captured.err
    assert "[bold]KING[/bold] :smile:" in captured.err  # no markup, no emoji: the model's text as it is


def test_a_corpus_model_samples_too(tmp_path, run):
    folder = write_corpus(tmp_path / "plays", plays(3))
    code, _, stderr = run("train", folder, "-o", tmp_path / "m.pt", "--max-steps", "4", *TINY, "--sample-every", "4",
                          "--sample-length", "25")
    assert code == 0, stderr
    assert list(samples(stderr)) == [4] and len(samples(stderr)[4]) == 25


def test_quiet_shows_no_sample(tmp_path, tiny_text, run):
    code, _, stderr = run("train", tiny_text, "-o", tmp_path / "m.pt", "--max-steps", "4", *TINY, "--quiet",
                          "--sample-every", "2")
    assert code == 0 and "sample at update" not in stderr


def test_samples_are_refused_for_a_series_before_anything_is_written(tmp_path, run):
    data = seasonal_csv(tmp_path / "s.csv")
    code, _, stderr = run("train", data, "-o", tmp_path / "m.pt", "--max-steps", "4", "--sample-every", "2")
    assert code == 2 and stderr.startswith("error: --sample-every is for text and corpus models;")
    assert not (tmp_path / "m.pt").exists()


# -- --test FILE ------------------------------------------------------------------------------------------


def test_a_test_file_is_scored_by_the_saved_model_as_evaluate_scores_it(tmp_path, tiny_text, run):
    test = tmp_path / "test.txt"
    test.write_text(tiny_text.read_text()[1000:2500])
    out = tmp_path / "m.pt"
    code, stdout, stderr = run("train", tiny_text, "-o", out, "--max-steps", "6", *TINY, "--test", test, "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    code, evaluated, _ = run("evaluate", out, test, "--json")
    evaluated = json.loads(evaluated)
    assert summary["test_file"] == str(test)
    assert summary["test_loss"] == evaluated["loss"] and summary["test_bits_per_token"] == evaluated["bits_per_token"]
    code, _, stderr = run("train", tiny_text, "-o", tmp_path / "again.pt", "--max-steps", "6", *TINY, "--test", test)
    assert code == 0
    rows = {line.split("  ")[0]: line.split()[-1] for line in stderr.splitlines() if line.startswith("test ")}
    assert rows["test file"] == str(test) and float(rows["test loss"]) == pytest.approx(evaluated["loss"], rel=1e-3)
    assert float(rows["test bits/char"]) == pytest.approx(evaluated["bits_per_token"], rel=1e-3)


def test_a_kept_model_is_the_one_the_test_file_scores(tmp_path, tiny_text, run):
    out = tmp_path / "m.pt"
    code, _, _ = run("train", tiny_text, "-o", out, "--max-steps", "30", "--lr", "0.01", *TINY)
    code, evaluated, _ = run("evaluate", out, tiny_text, "--json")
    code, stdout, stderr = run("train", tiny_text, "-o", out, "--max-steps", "1", "--lr", "1e-6", *TINY,
                               "--test", tiny_text, "--json")
    summary = json.loads(stdout)
    assert code == 0 and not summary["model_written"] and "kept the existing" in stderr
    assert summary["test_loss"] == json.loads(evaluated)["loss"]


def test_a_series_test_file_gets_the_forecast_errors_of_evaluate(tmp_path, run):
    data = seasonal_csv(tmp_path / "s.csv")
    out = tmp_path / "m.pt"
    code, stdout, stderr = run("train", data, "-o", out, *SERIES, "--test", data, "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    code, evaluated, _ = run("evaluate", out, data, "--json")
    one_step = json.loads(evaluated)["horizons"]["1"]["model"]
    assert {k: summary[f"test_{k}"] for k in ("mae", "rmse", "smape", "mase")} == {
        k: one_step[k] for k in ("mae", "rmse", "smape", "mase")}


def test_a_missing_test_file_fails_before_training(tmp_path, tiny_text, run):
    out = tmp_path / "m.pt"
    code, _, stderr = run("train", tiny_text, "-o", out, "--max-steps", "6", *TINY, "--test", tmp_path / "nope.txt")
    assert code == 2 and stderr == f"error: --test {tmp_path / 'nope.txt'}: no such file; give the test data to " \
                                   "score the model on\n"
    assert not out.exists() and not out.with_name("m.pt.ckpt").exists()


# -- streams from the data, when --batch-size is not given ------------------------------------------------

SMALL = ["--hidden", "8", "--layers", "1", "--max-steps", "4", "--json"]


def plan_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("training "))


def test_a_small_series_gets_fewer_streams_and_says_so(tmp_path, run):
    data = seasonal_csv(tmp_path / "s.csv", rows=2400)  # 2,159 training steps
    code, stdout, stderr = run("train", data, "-o", tmp_path / "m.pt", *SMALL, "--window", "10", "--calendar", "none")
    assert code == 0, stderr
    assert json.loads(stdout)["streams"] == 9  # 2,159 // (10 * 20) = 10 wanted, under the default 32, in 9 pieces
    assert ("9 stream(s) of 240 steps instead of --batch-size 32, so that an epoch has 24 updates, not a handful; "
            "give --batch-size to choose") in stderr.splitlines()
    assert re.match(r"training [\d,]+ parameters on 9 streams of 240 steps: 24 updates per epoch", plan_line(stderr))


def test_a_tiny_series_gets_one_stream(tmp_path, run):
    data = seasonal_csv(tmp_path / "s.csv")  # 215 training steps
    code, stdout, stderr = run("train", data, "-o", tmp_path / "m.pt", *SMALL, "--window", "24")
    assert code == 0 and json.loads(stdout)["streams"] == 1
    assert "1 stream(s) of 215 steps instead of --batch-size 32, so that an epoch has 9 updates" in stderr
    assert ": 9 updates per epoch" in plan_line(stderr)


@pytest.mark.parametrize("how", ["flag", "config"])
def test_a_given_batch_size_is_kept_as_given(tmp_path, run, how):
    data = seasonal_csv(tmp_path / "s.csv", rows=2400)
    given = ["--batch-size", "32"]
    if how == "config":
        config = tmp_path / "run.yaml"
        config.write_text("batch-size: 32\n")
        given = ["--config", config]
    code, stdout, stderr = run("train", data, "-o", tmp_path / "m.pt", *SMALL, "--window", "10", *given)
    assert code == 0, stderr
    assert json.loads(stdout)["streams"] == 31 and "instead of --batch-size" not in stderr  # 31 pieces of 32 wanted
    assert "fill 31 of the 32 streams (--batch-size)" in stderr


def test_a_large_series_keeps_the_default_batch_size(tmp_path, run):
    data = seasonal_csv(tmp_path / "s.csv", rows=8000)
    code, stdout, stderr = run("train", data, "-o", tmp_path / "m.pt", *SMALL, "--window", "10")
    assert code == 0 and json.loads(stdout)["streams"] == 31 and "instead of --batch-size" not in stderr  # 31 pieces


def test_a_run_on_streams_chosen_from_the_data_resumes_exactly(tmp_path, run):
    data = seasonal_csv(tmp_path / "s.csv", rows=2400)
    whole, parts = tmp_path / "whole.pt", tmp_path / "parts.pt"
    options = ["--hidden", "8", "--layers", "1", "--window", "10", "--dropout", "0.2", "--seed", "4"]
    assert run("train", data, "-o", whole, *options, "--max-steps", "8")[0] == 0
    assert run("train", data, "-o", parts, *options, "--max-steps", "3")[0] == 0
    code, _, stderr = run("train", data, "-o", parts, *options, "--max-steps", "8", "--resume")
    assert code == 0, stderr
    expected = checkpoint_weights(whole.with_name("whole.pt.ckpt"))
    got = checkpoint_weights(parts.with_name("parts.pt.ckpt"))
    assert all(torch.equal(got[name], tensor) for name, tensor in expected.items())
