"""A model that lives in a cron job: --init-from starts from a stored model, and the model at -o is
replaced only by a model that is better on the same validation points (--replace)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import torch

from bptt_cli import kinds
from bptt_cli.kinds.text import TextOptions
from bptt_cli.modelfile import load_model_file
from bptt_cli.models import ModelConfig
from bptt_cli.trainer import SilentReporter, TrainConfig
from conftest import SAMPLE_TEXT, TINY
from test_series import seasonal_csv

@pytest.fixture
def text(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(SAMPLE_TEXT.read_text(encoding="utf-8")[:8000], encoding="utf-8")
    return path


def train(run, data, out, *extra, steps=3):
    code, stdout, stderr = run("train", data, "-o", out, "--max-steps", str(steps), *TINY, *extra)
    assert code == 0, stderr
    return stderr


def test_a_warm_start_begins_at_exactly_the_stored_weights(tmp_path, run, text):
    stored = tmp_path / "m.pt"
    train(run, text, stored)
    file = load_model_file(stored)
    setup = kinds.RunSetup(ModelConfig(), TrainConfig(window=10, batch_size=4), torch.device("cpu"),
                           SilentReporter(), init_from=load_model_file(stored))
    with kinds.KINDS["text"].prepare(text, TextOptions(), setup) as prepared:
        for name, value in file.model.state_dict().items():
            assert torch.equal(prepared.model.state_dict()[name], value), name
        # before any update its validation figure is the stored model's on the same points
        assert prepared.validate(prepared.model)["loss"] == prepared.score_other(file)[0]


def test_a_warm_start_keeps_the_vocabulary_and_skips_new_tokens(tmp_path, run, text):
    stored = tmp_path / "m.pt"
    train(run, text, stored)
    vocab = load_model_file(stored).tokenizer.vocab
    newer = tmp_path / "newer.txt"
    newer.write_text(text.read_text() + "\n§§ ¶¶ new marks ¶\n" * 20, encoding="utf-8")
    err = train(run, newer, tmp_path / "warm.pt", "--init-from", stored)
    assert load_model_file(tmp_path / "warm.pt").tokenizer.vocab == vocab
    assert re.search(r"[0-9,]+ token\(s\) outside the --init-from model's vocabulary are skipped", err)


def test_a_warm_start_keeps_the_series_normalisation(tmp_path, run):
    data = seasonal_csv(tmp_path / "s.csv")
    stored = tmp_path / "m.pt"
    train(run, data, stored)
    shifted = pd.read_csv(data)
    shifted["load"] = shifted["load"] * 3 + 100
    moved = tmp_path / "moved.csv"
    shifted.to_csv(moved, index=False)
    train(run, moved, tmp_path / "warm.pt", "--init-from", stored)
    assert load_model_file(tmp_path / "warm.pt").data["norm"] == load_model_file(stored).data["norm"]


@pytest.mark.parametrize("option", [["--hidden", "32"], ["--model", "gru"], ["--tokenizer", "word"]])
def test_options_that_change_the_shape_are_refused_by_name(tmp_path, run, text, option):
    stored = tmp_path / "m.pt"
    train(run, text, stored)
    before = stored.read_bytes()
    code, stdout, stderr = run("train", text, "-o", stored, "--init-from", stored, *TINY, *option)
    assert code == 2 and stderr.startswith(f"error: {option[0]} ") and "--init-from keeps its shape" in stderr
    assert stored.read_bytes() == before


def test_training_options_are_free_and_the_same_file_may_be_both(tmp_path, run, text):
    stored = tmp_path / "m.pt"
    train(run, text, stored)
    err = train(run, text, stored, "--init-from", stored, "--lr", "0.01", "--window", "5")
    assert f"{stored}" in err and ("replaced" in err or "kept the existing" in err)


def figures(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"(?:scores|model|one) ([0-9][0-9.]*(?:e[+-]?[0-9]+)?)", line)]


def test_the_replacement_is_decided_on_the_same_points_in_both_directions(tmp_path, run, text):
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    train(run, text, good, "--lr", "0.01", steps=40)
    train(run, text, bad, "--lr", "1e-6", steps=1)
    good_bytes = good.read_bytes()
    err = train(run, text, good, "--lr", "1e-6", steps=1)  # a worse run keeps the good model
    line = next(ln for ln in err.splitlines() if ln.startswith("kept the existing"))
    old, new = figures(line)
    assert old < new and good.read_bytes() == good_bytes
    err = train(run, text, bad, "--lr", "0.01", steps=40)  # a better run replaces the bad one
    line = next(ln for ln in err.splitlines() if ln.startswith("replaced"))
    new, old = figures(line)
    assert new < old and load_model_file(bad).summary["best_val_loss"] == pytest.approx(new, rel=1e-3)


@pytest.mark.parametrize("rule,replaced", [("never", False), ("always", True)])
def test_replace_never_and_always(tmp_path, run, text, rule, replaced):
    out = tmp_path / "m.pt"
    train(run, text, out, "--lr", "1e-6", steps=1)
    before = out.read_bytes()
    train(run, text, out, "--lr", "0.01", "--replace", rule, steps=20)
    assert (out.read_bytes() != before) == replaced


def test_a_model_of_other_data_is_never_overwritten_without_replace_always(tmp_path, run, text):
    out = tmp_path / "m.pt"
    train(run, seasonal_csv(tmp_path / "s.csv"), out)
    before = out.read_bytes()
    err = train(run, text, out)
    assert "cannot be scored on this run's validation data" in err and out.read_bytes() == before
    train(run, text, out, "--replace", "always")
    assert load_model_file(out).data["kind"] == "text"


# -- what the epoch lines and the checkpoint say when the model at -o is kept (issue 17, point 8) ------------


def epoch_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("validation after epoch")]


def test_a_kept_model_is_named_in_the_epoch_line_with_the_score_the_closing_line_gives(tmp_path, run, text):
    good = tmp_path / "good.pt"
    train(run, text, good, "--lr", "0.01", steps=40)
    err = train(run, text, good, "--lr", "1e-6", steps=1)
    closing = next(ln for ln in err.splitlines() if ln.startswith("kept the existing"))
    old, _ = figures(closing)
    (line,) = epoch_lines(err)
    assert f"(best of this run; kept the existing {good}, which scores {old:.4g} here);" in line
    assert "saved" not in line


def test_a_saved_best_says_so_and_the_checkpoint_is_then_this_runs(tmp_path, run, text):
    out = tmp_path / "m.pt"
    train(run, text, out, "--lr", "1e-6", steps=1)
    err = train(run, text, out, "--lr", "0.01", steps=20)
    (line,) = epoch_lines(err)
    assert "(best of this run, saved);" in line
    assert torch.load(out.with_name("m.pt.ckpt"), weights_only=True)["run"]["lr"] == 0.01


def test_a_run_that_keeps_the_model_keeps_its_checkpoint_too(tmp_path, run, text):
    good = tmp_path / "good.pt"
    checkpoint = tmp_path / "good.pt.ckpt"
    first = ["--lr", "0.01"]
    train(run, text, good, *first, steps=40)
    before = checkpoint.read_bytes()
    err = train(run, text, good, "--lr", "1e-6", steps=1)
    assert checkpoint.read_bytes() == before
    assert f"kept {checkpoint} too: it is the checkpoint of the run that made {good}, and this run wrote none" in err
    code, _, err = run("train", text, "-o", good, "--max-steps", "40", *TINY, *first, "--resume")
    assert code == 0 and "is already complete (update 40)" in err  # the first run's resume point still holds


def test_a_run_that_keeps_the_model_and_is_stopped_is_not_announced_as_resumable(tmp_path, run, text):
    good = tmp_path / "good.pt"
    train(run, text, good, "--lr", "0.01", steps=40)
    before = (tmp_path / "good.pt.ckpt").read_bytes()
    code, stdout, err = run("train", text, "-o", good, *TINY, "--lr", "1e-6", "--max-time", "0.001", "--json")
    assert code == 0 and json.loads(stdout)["resumable"] is False and "resume with" not in err
    assert "this run cannot be resumed: train into another -o to stop and resume it" in err
    assert (tmp_path / "good.pt.ckpt").read_bytes() == before


def test_the_validation_record_says_what_was_kept_and_still_plots(tmp_path, run, text):
    good, metrics = tmp_path / "good.pt", tmp_path / "run.jsonl"
    train(run, text, good, "--lr", "0.01", steps=40)
    err = train(run, text, good, "--lr", "1e-6", "--metrics", metrics, steps=1)
    old, _ = figures(next(ln for ln in err.splitlines() if ln.startswith("kept the existing")))
    (record,) = [r for r in map(json.loads, metrics.read_text().splitlines()) if r["kind"] == "validation"]
    assert record["best"] and not record["saved"] and record["kept_model"] == str(good)
    assert record["kept_val_loss"] == pytest.approx(old, rel=1e-3)
    code, _, stderr = run("plot", metrics, "-o", tmp_path / "run.png")
    assert code == 0, stderr
