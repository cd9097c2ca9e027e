"""Running unattended: configs, machine-readable output, exit codes, exact resume, locks, kept models."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bptt_cli.modelfile import load_model_file
from conftest import TINY, wait_until


def weights_of_checkpoint(path: Path) -> dict:
    return torch.load(path, weights_only=True)["training"]["weights"]


# -- configuration -------------------------------------------------------------------------------


def test_config_values_are_defaults_that_flags_override(tmp_path, tiny_text, run):
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {tiny_text}\nwindow: 7\nbatch-size: 3\nhidden: 12\nmodel: gru\nlr: 0.01\n")
    code, stdout, _ = run("train", "--config", config, "--hidden", "20", "--print-config")
    assert code == 0
    resolved = yaml.safe_load(stdout)
    assert resolved["window"] == 7 and resolved["batch-size"] == 3 and resolved["model"] == "gru"
    assert resolved["hidden"] == 20  # the flag wins
    assert resolved["data"] == str(tiny_text) and resolved["epochs"] == 10
    assert stdout.startswith("# bptt train --config")


def test_unknown_config_key_names_it_and_lists_the_valid_ones(tmp_path, tiny_text, run):
    config = tmp_path / "run.yaml"
    config.write_text("windw: 7\n")
    code, _, stderr = run("train", tiny_text, "--config", config)
    assert code == 2
    assert "unknown key 'windw' (did you mean 'window'?)" in stderr and "batch-size" in stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("text, needle", [("window: fifty\n", "--window"), ("model: transformer\n", "--model"),
                                          ("[1, 2]\n", "must map option names")])
def test_config_values_of_the_wrong_type_are_refused(tmp_path, tiny_text, run, text, needle):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    code, _, stderr = run("train", tiny_text, "--config", config)
    assert code == 2 and needle in stderr and "Traceback" not in stderr


def test_a_config_printed_from_a_model_file_reproduces_the_run(tmp_path, tiny_text, run):
    first = tmp_path / "first.pt"
    code, _, _ = run("train", tiny_text, "-o", first, "--max-steps", "6", "--seed", "3", *TINY)
    assert code == 0
    code, printed, _ = run("train", "--config", first, "--print-config")
    config = tmp_path / "again.yaml"
    config.write_text(printed.replace(str(first), str(tmp_path / "second.pt")))
    code, _, stderr = run("train", "--config", config)
    assert code == 0, stderr
    a, b = load_model_file(first).model.state_dict(), load_model_file(tmp_path / "second.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- machine-readable output -------------------------------------------------------------------------


def test_json_prints_one_object_and_nothing_else_on_stdout(tmp_path, tiny_text, run):
    code, stdout, _ = run("train", tiny_text, "-o", tmp_path / "m.pt", "--max-steps", "4", "--json", *TINY)
    summary = json.loads(stdout)
    assert code == 0 and summary["steps"] == 4 and summary["stop_reason"] == "max_steps"
    assert summary["model_file"].endswith("m.pt") and summary["best_val_loss"] > 0


@pytest.mark.parametrize("name", ["run.jsonl", "run.csv"])
def test_metrics_file_holds_a_record_per_interval_and_validation(tmp_path, tiny_text, run, name):
    metrics = tmp_path / name
    code, _, _ = run("train", tiny_text, "-o", tmp_path / "m.pt", "--epochs", "2", "--log-every", "50",
                     "--metrics", metrics, *TINY)
    assert code == 0
    if name.endswith(".csv"):
        with open(metrics, newline="") as f:
            records = list(csv.DictReader(f))
    else:
        records = [json.loads(line) for line in metrics.read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    validation = [r for r in records if r["kind"] == "validation"]
    assert [int(r["step"]) for r in train] == [50, 100, 143, 150, 200, 250, 286]  # epochs end at 143, 286
    assert [int(r["step"]) for r in validation] == [143, 286]
    for key in ("train_loss", "grad_norm_mean", "grad_norm_max", "clip_share", "lr", "tokens_per_second",
                "elapsed_seconds"):
        assert float(train[0][key]) >= 0
    assert float(validation[0]["val_loss"]) > 0
    layer = train[0]["grad_norm[lstm layer 1]"] if name.endswith(".csv") else train[0]["layer_grad_norms"]["lstm layer 1"]
    assert float(layer) > 0


def test_quiet_prints_only_the_final_result(tmp_path, tiny_text, run):
    code, stdout, stderr = run("train", tiny_text, "-o", tmp_path / "m.pt", "--max-steps", "4", "--quiet", *TINY)
    assert code == 0 and stdout == ""
    assert stderr.startswith("# training summary") and "step=" not in stderr


# -- divergence -------------------------------------------------------------------------------------------


def poison(monkeypatch, bad_calls):
    from bptt_cli.trainer import Trainer

    calls, loss = [], Trainer.loss

    def poisoned(self, outputs, targets):
        calls.append(1)
        value = loss(self, outputs, targets)
        return value * float("nan") if len(calls) in bad_calls else value

    monkeypatch.setattr(Trainer, "loss", poisoned)


def test_on_nan_skip_drops_the_bad_updates_and_goes_on(tmp_path, tiny_text, run, monkeypatch):
    poison(monkeypatch, {3, 7})
    code, stdout, stderr = run("train", tiny_text, "-o", tmp_path / "m.pt", "--max-steps", "20", "--on-nan", "skip",
                               "--json", *TINY)
    summary = json.loads(stdout)
    assert code == 0 and summary["skipped_updates"] == 2 and summary["steps"] == 20
    assert summary["last_train_loss"] == pytest.approx(summary["last_train_loss"])  # finite


def test_on_nan_skip_fails_after_max_skips(tmp_path, tiny_text, run, monkeypatch):
    poison(monkeypatch, set(range(2, 50)))
    code, _, stderr = run("train", tiny_text, "-o", tmp_path / "m.pt", "--max-steps", "20", "--on-nan", "skip",
                          "--max-skips", "3", *TINY)
    assert code == 1 and "more than --max-skips 3" in stderr
    assert not (tmp_path / "m.pt").exists()


# -- never clobber a good result ----------------------------------------------------------------------------


def test_a_worse_run_does_not_replace_a_better_model(tmp_path, tiny_text, run):
    out = tmp_path / "m.pt"
    code, _, _ = run("train", tiny_text, "-o", out, "--epochs", "3", *TINY)
    good = out.read_bytes()
    code, _, stderr = run("train", tiny_text, "-o", out, "--max-steps", "2", "--lr", "1e-6", *TINY)
    assert code == 0 and "kept the existing" in stderr
    assert out.read_bytes() == good


def test_a_file_that_is_not_a_model_is_never_overwritten(tmp_path, tiny_text, run):
    out = tmp_path / "notes.txt"
    out.write_text("my notes")
    code, _, stderr = run("train", tiny_text, "-o", out, "--max-steps", "2", *TINY)
    assert code == 2 and "not a bptt model file" in stderr and out.read_text() == "my notes"


# -- two jobs, one output --------------------------------------------------------------------------------------


def test_a_second_run_on_the_same_output_exits_2_naming_the_first(tmp_path, tiny_text, run):
    from bptt_cli.runfiles import RunFiles

    out = tmp_path / "m.pt"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from bptt_cli.runfiles import RunFiles\n"
         f"with RunFiles({str(out)!r}):\n    print('locked', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, stderr = run("train", tiny_text, "-o", out, "--max-steps", "2", *TINY)
        assert code == 2 and f"pid {holder.pid}" in stderr and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock is taken over
    assert (tmp_path / "m.pt.lock").exists()
    code, _, stderr = run("train", tiny_text, "-o", out, "--max-steps", "2", *TINY)
    assert code == 0, stderr
    assert not (tmp_path / "m.pt.lock").exists()
    with RunFiles(out):
        pass


# -- untrusted checkpoints ------------------------------------------------------------------------------------------


def test_a_checkpoint_carrying_code_is_refused_on_resume(tmp_path, tiny_text, run):
    out = tmp_path / "m.pt"
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    torch.save({"format": "bptt-checkpoint", "training": Payload()}, tmp_path / "m.pt.ckpt")
    code, _, stderr = run("train", tiny_text, "-o", out, "--resume", *TINY)
    assert code == 2 and "checkpoint" in stderr and not marker.exists()


def test_resume_with_other_options_is_refused(tmp_path, tiny_text, run):
    out = tmp_path / "m.pt"
    run("train", tiny_text, "-o", out, "--max-steps", "3", *TINY)
    code, _, stderr = run("train", tiny_text, "-o", out, "--max-steps", "6", "--resume", *TINY, "--lr", "0.1")
    assert code == 2 and "--resume: lr is 0.1" in stderr


def test_resume_names_every_option_that_differs_in_one_line(tmp_path, tiny_text, run):
    """Regression: only the first was named, so a user changing two defaults needed a retry per option."""
    out = tmp_path / "m.pt"
    run("train", tiny_text, "-o", out, "--max-steps", "3", *TINY)
    code, _, stderr = run("train", tiny_text, "-o", out, "--max-steps", "6", "--resume", *TINY, "--lr", "0.1",
                          "--ar", "0.5")
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "lr is 0.1 but the checkpoint was made with" in stderr and "ar is 0.5 but the checkpoint" in stderr


# -- exact resume, for every way of stopping ----------------------------------------------------------------------------

STEPS = 1500
EXACT = ["--threads", "1", "--seed", "5", "--log-every", "1000", "--dropout", "0.1", "--window-jitter", "0.3",
         "--epochs", "12", "--max-steps", str(STEPS)]


def bptt(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "bptt_cli", "train", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(path: Path, process) -> None:
    """Until ``path`` appears, however busy the machine: no clock, since the run ends by itself (--max-steps);
    it ending without the file fails the test."""
    assert wait_until(path.exists, process, every=0.02), \
        f"the run ended ({process.returncode}) with no {path.name}: {process.stderr.read()}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whole")
    text = folder / "tiny.txt"
    text.write_text((Path(__file__).parents[1] / "sample_data" / "shakespeare.txt").read_text()[:6000])
    done = bptt(text, "-o", folder / "m.pt", *TINY, *EXACT)
    assert done.wait() == 0, done.stderr.read()
    return text, weights_of_checkpoint(folder / "m.pt.ckpt")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "kill -9", "--max-time"])
def test_an_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path, uninterrupted, how):
    text, expected = uninterrupted
    out = tmp_path / "m.pt"
    if how == "--max-time":
        first = bptt(text, "-o", out, *TINY, *EXACT, "--max-time", "1s")
        assert first.wait() == 3
    else:
        first = bptt(text, "-o", out, *TINY, *EXACT, "--checkpoint-every", "7")
        wait_for(tmp_path / "m.pt.ckpt", first)
        first.send_signal({"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT, "kill -9": signal.SIGKILL}[how])
        code = first.wait()
        assert code == (-9 if how == "kill -9" else 3), first.stderr.read()
        if how != "kill -9":
            assert "resume with: bptt " in first.stderr.read()
    stopped_at = torch.load(out.with_name("m.pt.ckpt"), weights_only=True)["training"]["position"]["step"]
    assert 0 < stopped_at < STEPS
    second = bptt(text, "-o", out, *TINY, *EXACT, "--resume", *(["--checkpoint-every", "7"] if how != "--max-time" else []))
    assert second.wait() == 0, second.stderr.read()
    got = weights_of_checkpoint(out.with_name("m.pt.ckpt"))
    assert torch.load(out.with_name("m.pt.ckpt"), weights_only=True)["training"]["position"]["step"] == STEPS
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name  # bit for bit


@pytest.mark.parametrize("command, text, check", [
    ("generate", "length: 7\ntemperature: 0\nprime: 'KING'\n", lambda out: out.startswith("KING") and len(out.strip()) == 11),
    ("evaluate", "json: true\n", lambda out: "bits_per_token" in json.loads(out)),
    ("gradcheck", "json: true\nwindows: '1,5'\nsegment: 20\nhidden: 4\nwindow: 5\n",
     lambda out: [w["window"] for w in json.loads(out)["truncation"]["windows"]] == [1, 5]),
])
def test_every_command_takes_a_config(tmp_path, tiny_model, tiny_text, run, command, text, check):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    args = {"generate": [tiny_model], "evaluate": [tiny_model, tiny_text], "gradcheck": []}[command]
    code, stdout, stderr = run(command, *args, "--config", config)
    assert code == 0, stderr
    assert check(stdout), stdout


@pytest.mark.parametrize("example", sorted((Path(__file__).parents[1] / "sample_data").glob("*.yaml")))
def test_the_example_configs_are_valid(run, example, monkeypatch):
    monkeypatch.chdir(example.parents[1])  # their paths are relative to the project
    code, stdout, stderr = run("train", "--config", example, "--print-config")
    assert code == 0, stderr
    assert yaml.safe_load(stdout)["data"].startswith("sample_data/")


def test_resuming_a_finished_run_says_so_and_touches_nothing(tmp_path, tiny_text, run):
    out = tmp_path / "m.pt"
    code, _, _ = run("train", tiny_text, "-o", out, "--max-steps", "3", *TINY)
    assert code == 0
    before = {p.name: p.read_bytes() for p in tmp_path.glob("m.pt*")}
    code, stdout, stderr = run("train", tiny_text, "-o", out, "--max-steps", "3", "--resume", "--json", *TINY)
    assert code == 0 and "is already complete (update 3)" in stderr
    assert json.loads(stdout)["model_written"] is False
    assert {p.name: p.read_bytes() for p in tmp_path.glob("m.pt*")} == before


def test_print_config_shows_the_memory_plan_as_yaml_comments(run):
    code, stdout, stderr = run("train", "--print-config", "--hidden", "1024", "--layers", "1", "--window", "50")
    assert code == 0, stderr
    plan = [line for line in stdout.splitlines() if line.startswith("# memory plan")]
    assert len(plan) == 1 and "GiB available" in plan[0]
    assert "4,726,784 recurrent parameters" in plan[0]  # 4 gates x 1024 x (128 + 1024 + 2)
    assert yaml.safe_load(stdout)["hidden"] == 1024  # the comments keep it valid YAML
