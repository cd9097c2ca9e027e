"""The command line end to end: train, generate, evaluate, and every kind of bad input."""

import json
import re
import subprocess
import sys

import pytest
import typer
import yaml

from bptt_cli.cli import app
from conftest import TINY


def test_train_writes_a_model_that_generates_and_evaluates(tmp_path, tiny_text, run):
    out = tmp_path / "m.pt"
    code, stdout, stderr = run("train", tiny_text, "-o", out, "--epochs", "2", "--log-every", "5", *TINY)
    assert code == 0, stderr
    assert out.is_file() and stdout == ""  # progress goes to stderr, stdout stays clean
    assert "grad_norm_mean=" in stderr and "validation after epoch 2" in stderr
    assert "\x1b[" not in stderr  # no ANSI codes without a terminal

    code, text, _ = run("generate", out, "--prime", "ROMEO:", "--length", "40", "--temperature", "0")
    assert code == 0 and text.startswith("ROMEO:") and len(text.rstrip("\n")) >= 40

    code, stdout, stderr = run("evaluate", out, tiny_text, "--json")
    figures = json.loads(stdout)
    assert code == 0
    assert set(figures) >= {"loss", "perplexity", "bits_per_token", "tokens", "unknown_tokens"}
    assert figures["tokens"] == len(tiny_text.read_text()) - 1 and figures["unknown_tokens"] == 0
    assert figures["perplexity"] == pytest.approx(2.718281828 ** figures["loss"], rel=1e-9)


def test_evaluate_skips_and_counts_unknown_characters(tmp_path, tiny_model, run):
    other = tmp_path / "other.txt"
    other.write_text("ROMEO: \u00e9\u00e9 Juliet \u20ac\n", encoding="utf-8")
    code, stdout, _ = run("evaluate", tiny_model, other, "--json")
    assert code == 0 and json.loads(stdout)["unknown_tokens"] == 3


def test_the_model_file_describes_its_run(tiny_model):
    from bptt_cli.modelfile import load_model_file

    loaded = load_model_file(tiny_model)
    assert loaded.config["window"] == 10 and loaded.config["model"] == "lstm"
    assert loaded.summary["data_file"] == "tiny.txt" and len(loaded.summary["data_sha256"]) == 64
    assert loaded.summary["best_val_loss"] > 0


@pytest.mark.parametrize("extra", [["--stride", "4"], ["--window-jitter", "0.3"], ["--stateless"],
                                   ["--window", "0"], ["--model", "gru", "--schedule", "cosine", "--warmup", "2"],
                                   ["--model", "rnn", "--optimizer", "sgd", "--lr", "0.5", "--schedule", "plateau"],
                                   ["--tokenizer", "word"], ["--tokenizer", "byte"],
                                   ["--embed", "16", "--tie-weights", "--dropout", "0.2", "--layers", "2"]])
def test_train_options_run(tmp_path, tiny_text, run, extra):
    out = tmp_path / "m.pt"
    code, _, stderr = run("train", tiny_text, "-o", out, "--max-steps", "3", *TINY, *extra)
    assert code == 0, stderr
    assert out.is_file()


def test_full_bptt_says_what_memory_it_needs(tmp_path, tiny_text, run):
    code, _, stderr = run("train", tiny_text, "-o", tmp_path / "m.pt", "--max-steps", "1", *TINY, "--window", "0")
    assert code == 0 and "full BPTT" in stderr and "of activations per update" in stderr


def test_max_time_stops_cleanly_and_keeps_the_best_model(tmp_path, tiny_text, run):
    out = tmp_path / "m.pt"
    code, _, stderr = run("train", tiny_text, "-o", out, "--epochs", "1000", "--max-time", "2s", *TINY)
    assert code == 3 and out.is_file()  # 3: stopped with a resumable checkpoint
    assert "--max-time reached" in stderr and "resume with: bptt " in stderr
    assert (tmp_path / "m.pt.ckpt").is_file()


def test_patience_stops_when_validation_stops_improving(tmp_path, tiny_text, run):
    out = tmp_path / "m.pt"
    code, _, stderr = run("train", tiny_text, "-o", out, "--epochs", "200", "--patience", "1", "--lr", "0.05", *TINY)
    assert code == 0 and "early stopping" in stderr


def test_divergence_exits_1_and_keeps_the_last_good_model(tmp_path, tiny_text, run, monkeypatch):
    from bptt_cli.trainer import Trainer

    out = tmp_path / "m.pt"
    calls = []
    loss = Trainer.loss

    def poisoned(self, outputs, targets):  # finite for the first epoch, then NaN
        calls.append(1)
        value = loss(self, outputs, targets)
        return value * float("nan") if len(calls) > 200 else value  # 143 updates per epoch

    monkeypatch.setattr(Trainer, "loss", poisoned)
    code, _, stderr = run("train", tiny_text, "-o", out, "--epochs", "5", "--log-every", "1000", *TINY)
    assert code == 1
    assert "diverged" in stderr and "--clip" in stderr and "Traceback" not in stderr
    assert "validation after epoch 1" in stderr and out.is_file()  # epoch 1's model is kept
    from bptt_cli.modelfile import load_model_file

    assert load_model_file(out).summary["best_epoch"] == 1


def test_an_unexpected_error_is_one_line_too(tmp_path, tiny_text, run, monkeypatch):
    from bptt_cli.trainer import Trainer

    def broken(self, *args):
        raise RuntimeError("value cannot be converted to type float without overflow")

    monkeypatch.setattr(Trainer, "update", broken)
    code, _, stderr = run("train", tiny_text, "-o", tmp_path / "m.pt", *TINY)
    assert code == 1 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "error: unexpected RuntimeError: value cannot be converted to type float without overflow "
        "(set BPTT_DEBUG=1 to see where)"
    )



def test_version_and_help_do_not_import_torch():
    probe = ("import sys; from typer.testing import CliRunner; from bptt_cli.cli import app; "
             "r = CliRunner().invoke(app, ['train', '--help']); "
             "assert r.exit_code == 0 and 'Example' in r.stdout; "
             "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", probe], check=True)


def test_python_dash_m_runs_the_same_app():
    result = subprocess.run([sys.executable, "-m", "bptt_cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("bptt ")


@pytest.mark.parametrize("command", ["train", "evaluate", "generate", "gradcheck"])
def test_every_command_has_help_with_an_example(run, command):
    code, stdout, _ = run(command, "--help")
    assert code == 0 and "Example" in stdout


# --- help that reads like a well-kept Click tool's (issue 17) ----------------------------------------

COMMANDS = ["train", "evaluate", "generate", "gradcheck", "plot", "predict", "export"]
USAGE = {"train": "[DATA]", "evaluate": "MODEL DATA", "generate": "MODEL", "gradcheck": "[MODEL] [DATA]",
         "plot": "FILE...", "predict": "MODEL [FRAMES]", "export": "MODEL"}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_values_not_python_types(run, command):
    code, stdout, _ = run(command, "--help")
    assert code == 0
    assert f"Usage: bptt {command} [OPTIONS] {USAGE[command]}" in stdout
    for placeholder in ("<bool>", "<list", " range>", "{data}", "{MODEL}", "{"):
        assert placeholder not in stdout, placeholder
    assert re.search(r"--help\s+-h\s+Show this message", stdout)  # a flag takes no value


def test_root_help_shows_no_placeholders_either(run):
    code, stdout, _ = run("--help")
    assert code == 0 and "Usage: bptt [OPTIONS] COMMAND [ARGS]..." in stdout
    assert "<bool>" not in stdout and re.search(r"--version\s+Print the version", stdout)


def test_repeatable_and_bounded_options_show_one_value(run):
    _, stdout, _ = run("train", "--help")
    assert re.search(r"--target\s+<str>\s+CSV column to predict", stdout)
    assert re.search(r"--threads\s+<int> \[x>=1\]", stdout)
    assert re.search(r"--resume\s+Continue exactly", stdout)


def test_help_shows_the_defaults_a_data_kind_gives(run):
    """A CSV series trains a 1x64 model and text takes dropout 0.2: --help says so beside the option's own
    default, read from the tables the kinds apply (regression: it showed 256 and 0.0 only)."""
    from bptt_cli.choices import LABELLED_WAV_DEFAULTS, SERIES_DEFAULTS, TEXT_DEFAULTS

    _, stdout, _ = run("train", "--help")
    flat = " ".join(stdout.replace("│", " ").split())
    assert f"Hidden state width (CSV series: {SERIES_DEFAULTS['hidden']} unless given). [default: 256]" in flat
    assert f"(text: {TEXT_DEFAULTS['dropout']} unless given). [default: 0.0]" in flat
    assert f"(CSV series: {SERIES_DEFAULTS['average']}; WAV files with --labels: " in flat
    assert f"(WAV files with --labels: {LABELLED_WAV_DEFAULTS['trim_db']} unless given)" in flat
    assert "(WAV files with --labels: on unless given)" in flat  # a flag's default as the command line says it


def test_every_parameter_of_every_command_has_help():
    from typer.main import get_command

    group = get_command(app)
    assert sorted(group.commands) == sorted(COMMANDS)
    for name, command in [("bptt", group), *group.commands.items()]:
        params = command.get_params(typer.Context(command, info_name=name))
        missing = [param.name for param in params if not (param.help or "").strip()]
        assert not missing, f"{name}: {missing} have no help"


def test_bare_bptt_prints_the_help_and_succeeds(run):
    code, stdout, stderr = run()
    assert code == 0 and stderr == ""
    assert "Usage: bptt [OPTIONS] COMMAND [ARGS]..." in stdout and "gradcheck" in stdout


def test_bare_python_dash_m_exits_0_without_an_error_line():
    result = subprocess.run([sys.executable, "-m", "bptt_cli"], capture_output=True, text=True)
    assert result.returncode == 0 and "Usage: bptt" in result.stdout and "error" not in result.stderr


def test_train_without_data_names_the_missing_argument(run):
    code, stdout, stderr = run("train")
    assert code == 2 and stdout == ""
    assert stderr == ("error: missing argument DATA: give the training data file, or a --config that names it "
                      "(see 'bptt train --help')\n")


def test_print_config_needs_no_data(tmp_path, run):
    config = tmp_path / "run.yaml"
    config.write_text("window: 7\nhidden: 12\n")  # no data: key
    code, stdout, stderr = run("train", "--config", config, "--print-config")
    assert code == 0, stderr
    resolved = yaml.safe_load(stdout)
    assert resolved["window"] == 7 and resolved["hidden"] == 12 and resolved["data"] is None
    code, _, stderr = run("train", "--config", config)  # training still needs it
    assert code == 2 and "missing argument DATA" in stderr


def test_print_config_without_any_config_prints_the_defaults(run):
    code, stdout, _ = run("train", "--print-config")
    assert code == 0 and yaml.safe_load(stdout)["window"] == 50
