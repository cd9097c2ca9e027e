"""Issue 12: series defaults that converge without tuning: a window tied to the season when one is known (an
explicit --window wins), and --schedule plateau tied to --patience (not the default: it did not help on the real
series); both shown in the plan line, and a resumed plateau run stays bit-identical."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bptt_cli.kinds.series import MAX_SEASON_WINDOW, SERIES_DEFAULTS, season_window
from bptt_cli.modelfile import load_model_file
from bptt_cli.schedule import PLATEAU_FLOOR, LearningRateSchedule, plateau_wait

QUICK = ["--hidden", "8", "--threads", "1", "--max-steps", "2"]


def cycle_csv(path: Path, rows: int, freq: str | None = "30min", seed: int = 0) -> Path:
    """A daily cycle plus seeded noise, with a time column at ``freq`` (none when None)."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    frame = pd.DataFrame({"load": 10 + 3 * np.sin(2 * np.pi * t / 48) + 0.5 * rng.standard_normal(rows)})
    if freq:
        frame.insert(0, "time", pd.date_range("2024-01-01", periods=rows, freq=freq).astype(str))
    frame.to_csv(path, index=False)
    return path


def plan_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("training "))


# -- the window tied to the season ----------------------------------------------------------------


def test_the_season_window_is_two_seasons_never_below_the_default_and_capped():
    base = SERIES_DEFAULTS["window"]
    assert season_window(48, 10_000) == 96  # half-hourly: two days
    assert season_window(96, 10_000) == 192  # 15-minute data
    assert season_window(12, 10_000) == base  # a short season keeps the plain default
    assert season_window(336, 100_000) == MAX_SEASON_WINDOW  # a week of half-hours would be 672 steps
    assert season_window(48, 150) == 75  # half the longest training sequence
    assert season_window(48, 60) == base  # too short even for that: today's window


@pytest.mark.parametrize("freq, extra, window", [
    ("30min", [], 96),  # season 48 from the time step
    ("30min", ["--season", "36"], 72),  # an explicit season is the one the window follows
    ("30min", ["--window", "30"], 30),  # an explicit window wins
    (None, [], 48),  # no time column, no season: the plain default
    ("MS", [], 48),  # monthly data has no natural season in bptt
])
def test_the_default_window_follows_a_known_season(tmp_path, run, freq, extra, window):
    data = cycle_csv(tmp_path / "s.csv", rows=1200, freq=freq)
    out = tmp_path / "m.pt"
    code, _, err = run("train", data, "-o", out, *QUICK, *extra)
    assert code == 0, err
    assert f"windows of {window} steps" in plan_line(err)
    assert load_model_file(out).config["window"] == window  # the run config of the model file, as trained
    checkpoint = torch.load(f"{out}.ckpt", weights_only=True)
    assert checkpoint["training"]["window"] == window


def test_a_short_series_gets_a_window_it_can_fill(tmp_path, run):
    data = cycle_csv(tmp_path / "s.csv", rows=170)  # 152 training pairs: 2 seasons would not leave 2 windows
    code, _, err = run("train", data, "-o", tmp_path / "m.pt", *QUICK)
    assert code == 0, err
    assert "windows of 76 steps" in plan_line(err)


# -- the plateau schedule tied to --patience ------------------------------------------------------


def test_plateau_waits_a_quarter_of_patience_resets_on_a_better_loss_and_stops_at_the_floor():
    assert (plateau_wait(20), plateau_wait(3), plateau_wait(None)) == (5, 1, 1)
    schedule = LearningRateSchedule("plateau", wait=2)
    scales = []
    for loss in [1.0, 1.1, 1.2, 0.9, 1.0, 1.0, 1.0]:
        schedule.observe(loss)
        scales.append(schedule.factor(100))
    assert scales == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]  # 2 without a better loss, then a better one resets
    for _ in range(40):
        schedule.observe(2.0)
    assert schedule.factor(100) == PLATEAU_FLOOR
    constant = LearningRateSchedule("constant", wait=2)
    for loss in [1.0, 2.0, 2.0, 2.0]:
        constant.observe(loss)
    assert constant.factor(100) == 1.0


def test_plateau_halving_every_validation_without_patience_is_kept():
    schedule = LearningRateSchedule("plateau")
    for loss in [1.0, 2.0, 2.0]:
        schedule.observe(loss)
    assert schedule.factor(0) == 0.25


@pytest.mark.parametrize("extra, schedule, line", [
    ([], "constant", "windows of 96 steps, a constant learning rate"),
    (["--schedule", "plateau"], "plateau",
     "the learning rate halved after 5 validation(s) in a row without a better loss (to 1/64 at least)"),
    (["--schedule", "plateau", "--patience", "8"], "plateau", "the learning rate halved after 2 validation(s) in a row"),
    (["--schedule", "cosine", "--warmup", "3"], "cosine", "a cosine learning rate to 0 at the last update after 3 warm-up"),
])
def test_the_plan_line_names_the_window_and_the_schedule(tmp_path, run, extra, schedule, line):
    data = cycle_csv(tmp_path / "s.csv", rows=1200)
    out = tmp_path / "m.pt"
    code, _, err = run("train", data, "-o", out, *QUICK, *extra)
    assert code == 0, err
    assert line in plan_line(err)
    assert load_model_file(out).config["schedule"] == schedule


def test_a_plateau_run_with_a_season_window_resumes_bit_identically_after_the_rate_was_halved(tmp_path, run):
    data = cycle_csv(tmp_path / "s.csv", rows=2400, seed=3)
    common = [data, "--hidden", "8", "--threads", "1", "--lr", "0.2", "--patience", "6", "--epochs", "10",
              "--seed", "2", "--schedule", "plateau", "--average", "none"]  # a high rate, so validation stalls and plateau halves it (after 1 validation)
    whole = tmp_path / "whole.pt"
    code, stdout, err = run("train", *common, "-o", whole, "--json")
    assert code == 0, err
    total = json.loads(stdout)["steps"]
    out = tmp_path / "stopped.pt"
    code, stdout, err = run("train", *common, "-o", out, "--max-steps", str(total // 2 + 3), "--json")  # mid-epoch
    assert code == 0, err
    code, stdout, err = run("train", *common, "-o", out, "--resume", "--json")
    assert code == 0 and json.loads(stdout)["steps"] == total, err
    expected = torch.load(f"{whole}.ckpt", weights_only=True)["training"]
    got = torch.load(f"{out}.ckpt", weights_only=True)["training"]
    assert expected["window"] == got["window"] == 96  # two seasons of half-hours, tied anew on resume
    assert expected["schedule"]["wait"] == 1 and expected["schedule"]["plateau_scale"] < 1  # it did react
    same = ("wait", "plateau_scale", "best", "stale")  # total_steps is cosine's, counted from each run's --max-steps
    assert all(got["schedule"][k] == expected["schedule"][k] for k in same)
    assert all(torch.equal(expected["weights"][k], got["weights"][k]) for k in expected["weights"])
    assert math.isfinite(expected["schedule"]["best"])
