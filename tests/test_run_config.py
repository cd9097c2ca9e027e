"""YAML configurations are read strictly: every key once, numbers as numbers, no alias bombs."""

from __future__ import annotations

import pytest
import typer

from bptt_cli.cli import app
from bptt_cli.errors import BpttError
from bptt_cli.run_config import param_kinds, read_config

TRAIN = typer.main.get_command(app).commands["train"]
KEYS = {**{p.name: p.name for p in TRAIN.params},
        **{o[2:]: p.name for p in TRAIN.params for o in p.opts if o.startswith("--")}}
KINDS = param_kinds(TRAIN.params)


def config(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_a_good_config_reads_by_parameter_name(tmp_path):
    values = read_config(config(tmp_path, "hidden: 64\nbatch-size: 8\ntie-weights: true\nlr: 0.001\n"), KEYS, KINDS)
    assert values == {"hidden": 64, "batch_size": 8, "tie_weights": True, "lr": 1e-3}


def test_the_train_command_has_the_kinds_a_config_is_checked_against():
    assert KINDS["hidden"] == KINDS["lr"] == KINDS["batch_size"] == "number"
    assert KINDS["tie_weights"] == KINDS["stateless"] == "flag" and KINDS["data"] == "other"


@pytest.mark.parametrize("text, needle", [
    ("hidden: 64\nwindow: 5\nhidden: 128\n", "key 'hidden' is set twice (line 3); keep one"),
    ("batch-size: 8\nbatch_size: 16\n", "'batch_size' sets batch-size again (also spelt 'batch-size'); keep one"),
    ("hidden: true\n", "'hidden' takes a number, got true; write a number"),
    ("lr: false\n", "'lr' takes a number, got false"),
    ("tie-weights: 1\n", "'tie-weights' is a switch, got 1; write true or false"),
])
def test_duplicates_and_booleans_are_errors_naming_the_key(tmp_path, text, needle):
    path = config(tmp_path, text)
    with pytest.raises(BpttError) as err:
        read_config(path, KEYS, KINDS)
    assert str(err.value).startswith(f"--config {path}: ") and needle in str(err.value), str(err.value)


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]  # 9**9 values expanded
    path = config(tmp_path, "\n".join(lines) + "\nprime: *a8\n")
    with pytest.raises(BpttError, match="its aliases expand to more than 10,000 values"):
        read_config(path, KEYS, KINDS)


def test_a_huge_file_is_not_a_config(tmp_path):
    path = config(tmp_path, "# padding\n" * 200_000)
    with pytest.raises(BpttError, match="too large for a configuration"):
        read_config(path, KEYS, KINDS)


def test_a_fifo_as_config_does_not_hang(tmp_path):
    import os

    os.mkfifo(tmp_path / "c.yaml")
    with pytest.raises(BpttError, match="--config .*: is a FIFO"):
        read_config(tmp_path / "c.yaml", KEYS, KINDS)


def test_a_duplicate_key_stops_the_command_line_too(tmp_path, tiny_text, run):
    path = config(tmp_path, "hidden: 16\nhidden: 32\n")
    code, _, stderr = run("train", tiny_text, "--config", path, "-o", tmp_path / "m.pt")
    assert code == 2 and "key 'hidden' is set twice" in stderr and not (tmp_path / "m.pt").exists()


def test_hidden_true_stops_the_command_line(tmp_path, tiny_text, run):
    path = config(tmp_path, "hidden: true\n")
    code, _, stderr = run("train", tiny_text, "--config", path, "-o", tmp_path / "m.pt", "--max-steps", "1")
    assert code == 2 and "'hidden' takes a number, got true" in stderr
