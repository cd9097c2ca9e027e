"""Issue 15: a language model's defaults regularise it (dropout, AR/TAR, AdamW's weight decay, the rate halved
at every validation without a better loss), at an Adam rate of 3e-3 and with a 5 % validation tail (README,
"Learning quality", for the held-out figures). A flag given wins, and SGD-family optimizers keep their own
constant rate."""

from __future__ import annotations

import inspect
import json

import pytest

from bptt_cli.commands.train import train
from bptt_cli.kinds.corpus import CorpusKind
from bptt_cli.kinds.text import TEXT_DEFAULTS, TextKind
from bptt_cli.modelfile import load_model_file

TRAIN_OPTIONS = frozenset(inspect.signature(train).parameters) - {"ctx"}  # what bptt train reads
QUICK = ["--hidden", "8", "--embed", "4", "--layers", "1", "--threads", "1", "--window", "10", "--batch-size", "4"]


def plan_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("training "))


def test_every_option_the_text_kinds_default_is_one_train_reads():
    assert set(TEXT_DEFAULTS) <= TRAIN_OPTIONS
    untouched = set(TRAIN_OPTIONS)
    assert TextKind().defaults({}, untouched) == CorpusKind().defaults({}, untouched) == TEXT_DEFAULTS
    assert set(TEXT_DEFAULTS) == {"dropout", "schedule", "ar", "tar", "weight_decay", "lr", "val_fraction"}
    # SGD keeps its own rate and a constant one, and weight decay is AdamW's only (with Adam and SGD an L2 term
    # of another scale)
    assert TextKind().defaults({"optimizer": "sgd"}, untouched) == {
        "dropout": 0.2, "ar": TEXT_DEFAULTS["ar"], "tar": TEXT_DEFAULTS["tar"], "val_fraction": 0.05}
    assert "weight_decay" not in TextKind().defaults({"optimizer": "adam"}, untouched)
    assert TextKind().defaults({}, {"hidden"}) == {}  # nothing defaulted that the user gave
    assert "lr" not in TextKind().defaults({}, untouched - {"lr"})


@pytest.mark.parametrize("extra, lines", [
    ([], ["dropout: 0.2", "schedule: plateau", f"ar: {TEXT_DEFAULTS['ar']}", f"tar: {TEXT_DEFAULTS['tar']}",
          f"weight-decay: {TEXT_DEFAULTS['weight_decay']}", f"lr: {TEXT_DEFAULTS['lr']}",
          "val-fraction: 0.05"]),
    (["--dropout", "0", "--schedule", "constant", "--ar", "0", "--tar", "0", "--weight-decay", "0"],
     ["dropout: 0.0", "schedule: constant", "ar: 0.0", "tar: 0.0", "weight-decay: 0.0"]),
    (["--optimizer", "nt-asgd", "--lr", "20"], ["dropout: 0.2", "schedule: constant", f"ar: {TEXT_DEFAULTS['ar']}",
                                                "weight-decay: 0.0", "lr: 20.0"]),
    (["--optimizer", "sgd"], ["schedule: constant", "weight-decay: 0.0", "lr: 0.002"]),
    (["--val-fraction", "0.2"], ["val-fraction: 0.2"]),
])
def test_print_config_shows_the_text_defaults_and_the_flags_that_win(tmp_path, run, extra, lines):
    (tmp_path / "t.txt").write_text("hello world\n" * 20)
    code, out, err = run("train", tmp_path / "t.txt", "--print-config", *extra)
    assert code == 0, err
    for line in lines:
        assert line in out.splitlines()


def test_a_text_run_trains_with_the_text_defaults_and_halves_its_rate_on_a_plateau(tmp_path, run):
    text = tmp_path / "t.txt"
    text.write_text("hello world, a small text to train on.\n" * 40)
    out = tmp_path / "m.pt"
    code, _, err = run("train", text, "-o", out, *QUICK, "--max-steps", "2")
    assert code == 0, err
    assert ("windows of 10 steps, the learning rate halved after 1 validation(s) in a row without a better loss"
            in plan_line(err))
    config = load_model_file(out).config
    assert (config["dropout"], config["schedule"]) == (0.2, "plateau")
    assert (config["ar"], config["tar"], config["weight_decay"]) == tuple(TEXT_DEFAULTS[k] for k in ("ar", "tar",
                                                                                                     "weight_decay"))
    assert min(TEXT_DEFAULTS[k] for k in ("ar", "tar", "weight_decay")) > 0
    assert config["lr"] == TEXT_DEFAULTS["lr"] != 2e-3  # not the option's own default
    assert config["val_fraction"] == TEXT_DEFAULTS["val_fraction"] == 0.05
    summary = load_model_file(out).summary  # the tail held out is 5 % of the text, not the option's own 10 %
    assert summary["val_tokens"] == pytest.approx(0.05 * (summary["train_tokens"] + summary["val_tokens"]), abs=1)


def test_a_kind_default_of_any_option_reaches_the_run(tmp_path, run, monkeypatch):
    """Regression: the command once took only thirteen named options from the kind's defaults; the others were
    shown by --print-config and stored, but the run used the option's own default."""
    text = tmp_path / "t.txt"
    text.write_text("hello world, a small text to train on.\n" * 40)
    monkeypatch.setattr(TextKind, "defaults", lambda self, values, untouched: {"max_steps": 3, "clip": 0.5})
    code, out, err = run("train", text, "-o", tmp_path / "m.pt", *QUICK, "--json")
    assert code == 0, err
    assert json.loads(out)["steps"] == 3  # not a whole epoch of updates
    assert load_model_file(tmp_path / "m.pt").config["clip"] == 0.5


def test_text_given_a_constant_rate_keeps_it(tmp_path, run):
    text = tmp_path / "t.txt"
    text.write_text("hello world, a small text to train on.\n" * 40)
    code, _, err = run("train", text, "-o", tmp_path / "m.pt", *QUICK, "--max-steps", "2", "--schedule", "constant")
    assert code == 0, err
    assert "windows of 10 steps, a constant learning rate" in plan_line(err)
