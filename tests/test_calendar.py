"""Calendar inputs: hour of day, day of week and day of year as sin/cos pairs, read from the time column,
chosen from the data's step, stored in the model file and continued into the future by generate and predict."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bptt_cli import forecast
from bptt_cli.cli import app
from bptt_cli.modelfile import load_model_file, save_model_file
from bptt_cli.series import Normaliser, SeriesSpec, calendar_values, load_series

TINY = ["--hidden", "8", "--layers", "1", "--batch-size", "2", "--window", "8", "--max-steps", "3", "--quiet"]


def invoke(*args, text: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], input=text)
    return result.exit_code, result.stdout, result.stderr


def series_csv(path: Path, start: str, periods: int, freq: str, extra: dict | None = None) -> Path:
    """A series with a cycle, at ``freq`` from ``start``."""
    t = np.arange(periods)
    rng = np.random.default_rng(0)
    pd.DataFrame({"time": pd.date_range(start, periods=periods, freq=freq).astype(str),
                  "load": 10 + 3 * np.sin(2 * np.pi * t / 48) + 0.1 * rng.standard_normal(periods),
                  **(extra or {})}).to_csv(path, index=False)
    return path


def phases(*pairs: float) -> list[float]:
    """sin and cos of each phase (a fraction of its cycle), in that order."""
    return [f(2 * math.pi * p) for p in pairs for f in (math.sin, math.cos)]


def test_half_hourly_phases_continue_across_a_year_end(tmp_path):
    # 2014-12-31 is a Wednesday (day 2 of the week, day 365 of a 365-day year); 2015-01-01 a Thursday
    path = series_csv(tmp_path / "s.csv", "2014-12-31 23:00", 4, "30min")
    found = load_series(path, SeriesSpec(calendar="hour,week,year"))
    assert found.columns == ["load", "hour_sin", "hour_cos", "week_sin", "week_cos", "year_sin", "year_cos"]
    assert found.targets == ["load"] and found.features == found.columns
    expected = [phases(23 / 24, (2 + 23 / 24) / 7, (364 + 23 / 24) / 365),
                phases(23.5 / 24, (2 + 23.5 / 24) / 7, (364 + 23.5 / 24) / 365),
                phases(0.0, 3 / 7, 0.0),
                phases(0.5 / 24, (3 + 0.5 / 24) / 7, (0.5 / 24) / 365)]
    np.testing.assert_allclose(found.values[0][:, 1:], expected, atol=1e-12)


def test_half_hourly_phases_continue_across_a_leap_month_end(tmp_path):
    # 2024-02-29 is a Thursday, day 60 of a 366-day year; 2024-03-01 a Friday
    path = series_csv(tmp_path / "s.csv", "2024-02-29 23:30", 2, "30min")
    found = load_series(path, SeriesSpec(calendar="hour,week,year"))
    np.testing.assert_allclose(found.values[0][:, 1:], [phases(23.5 / 24, (3 + 23.5 / 24) / 7, (59 + 23.5 / 24) / 366),
                                                         phases(0.0, 4 / 7, 60 / 366)], atol=1e-12)


def test_daily_phases_continue_across_month_and_year_ends(tmp_path):
    path = series_csv(tmp_path / "d.csv", "2015-11-30", 33, "D")  # Monday 30 November 2015 .. 1 January 2016
    found = load_series(path, SeriesSpec(calendar="week,year"))
    cal = found.values[0][:, 1:]
    np.testing.assert_allclose(cal[0], phases(0 / 7, 333 / 365), atol=1e-12)  # 30 Nov: Monday, day 334
    np.testing.assert_allclose(cal[1], phases(1 / 7, 334 / 365), atol=1e-12)  # 1 Dec: Tuesday
    np.testing.assert_allclose(cal[31], phases(3 / 7, 364 / 365), atol=1e-12)  # 31 Dec: Thursday
    np.testing.assert_allclose(cal[32], phases(4 / 7, 0.0), atol=1e-12)  # 1 Jan 2016: Friday, day 1


@pytest.mark.parametrize(("freq", "periods", "parts"), [
    ("30min", 48 * 20, ["hour", "week"]),  # 20 days: no year
    ("30min", 48, []),  # one day: not a single cycle seen twice
    ("h", 24 * 5, ["hour"]),  # five days: the week is seen once
    ("D", 3 * 366, ["week", "year"]),  # daily: no hour of day
    ("D", 200, ["week"]),
    ("MS", 36, ["year"]),  # monthly over three years
])
def test_auto_picks_the_parts_the_step_and_span_allow(tmp_path, freq, periods, parts):
    found = load_series(series_csv(tmp_path / "s.csv", "2020-01-01", periods, freq), SeriesSpec(calendar="auto"))
    assert found.calendar == parts


def test_a_model_stores_its_calendar_and_rebuilds_the_inputs_for_evaluate_generate_and_predict(tmp_path):
    data = series_csv(tmp_path / "s.csv", "2024-01-01", 48 * 15, "30min", {"temp": np.linspace(0, 5, 48 * 15)})
    model = tmp_path / "m.pt"
    code, _, err = invoke("train", data, "--target", "load", "-o", model, *TINY)
    assert code == 0, err
    file = load_model_file(model)
    assert file.data["columns"] == ["load", "temp", "hour_sin", "hour_cos", "week_sin", "week_cos"]
    assert file.data["settings"]["calendar"] == "hour,week" and file.model.config.input_size == 6
    assert file.data["settings"]["features"] == ["load", "temp"]  # the file is read for these, the rest computed
    code, out, err = invoke("evaluate", model, data, "--horizon", "4", "--json")
    assert code == 0, err
    # predict reads rows without calendar columns and computes them from each row's time; its one-step
    # forecast equals generate's from the same rows read as a --context file
    lines = data.read_text().splitlines()
    context = tmp_path / "context.csv"
    context.write_text("\n".join(lines[:101]) + "\n")
    code, out, err = invoke("predict", model, text="\n".join(lines[:101]) + "\n")
    assert code == 0, err
    last = out.strip().splitlines()[-1].split(",")
    code, generated, err = invoke("generate", model, "--context", context, "--horizon", "1")
    assert code == 0, err
    row = generated.strip().splitlines()[-1].split(",")
    assert last[0] == row[0] == "2024-01-03 02:00:00"
    assert float(last[1]) == pytest.approx(float(row[1]), abs=1e-4)


def test_generate_computes_the_future_calendar_at_the_true_future_times(tmp_path, monkeypatch):
    horizon, rows = 10, 48 * 4
    whole = series_csv(tmp_path / "whole.csv", "2024-12-30 20:00", rows + horizon, "30min")  # across a year end
    lines = whole.read_text().splitlines()
    data = tmp_path / "s.csv"
    data.write_text("\n".join(lines[: rows + 1]) + "\n")
    model = tmp_path / "m.pt"
    assert invoke("train", data, "-o", model, "--calendar", "hour,week,year", *TINY)[0] == 0
    seen = {}
    real_rollout = forecast.rollout

    def spy(model, state, first, known, feed, horizon, *rest, **named):
        seen["known"] = known.cpu().numpy()
        return real_rollout(model, state, first, known, feed, horizon, *rest, **named)

    monkeypatch.setattr(forecast, "rollout", spy)
    code, out, err = invoke("generate", model, "--horizon", horizon)
    assert code == 0, err
    stored = load_model_file(model).data
    norm = Normaliser.from_dict(stored["norm"])
    truth = load_series(whole, SeriesSpec(calendar="hour,week,year")).values[0][rows: rows + horizon - 1]  # leads 1..H-1
    expected = norm.apply(truth)[:, 1:]  # the calendar columns, normalised as the model reads them
    np.testing.assert_allclose(seen["known"][0][:, 1:], expected, atol=1e-6)
    times = [line.split(",")[0] for line in out.strip().splitlines()[1:]]
    assert times[0] == "2025-01-03 20:00:00" and len(times) == horizon


def test_calendar_none_reads_no_calendar(tmp_path):
    data = series_csv(tmp_path / "s.csv", "2024-01-01", 48 * 6, "30min")
    model = tmp_path / "m.pt"
    assert invoke("train", data, "-o", model, "--calendar", "none", *TINY)[0] == 0
    file = load_model_file(model)
    assert file.data["columns"] == ["load"] and file.data["settings"]["calendar"] == "none"


def test_a_model_file_from_before_calendar_inputs_still_loads_and_forecasts(tmp_path):
    data = series_csv(tmp_path / "s.csv", "2024-01-01", 48 * 6, "30min")
    model = tmp_path / "m.pt"
    assert invoke("train", data, "-o", model, "--calendar", "none", *TINY)[0] == 0
    file = load_model_file(model)
    del file.data["settings"]["calendar"]  # as written by bptt before calendar inputs
    save_model_file(model, file)
    code, out, err = invoke("evaluate", model, data, "--json")
    assert code == 0, err
    code, out, err = invoke("generate", model, "--horizon", "3")
    assert code == 0 and len(out.strip().splitlines()) == 4, err
    lines = data.read_text().splitlines()
    code, out, err = invoke("predict", model, text="\n".join(lines[:5]) + "\n")
    assert code == 0 and len(out.strip().splitlines()) == 5, err


@pytest.mark.parametrize(("setup", "args", "message"), [
    ("no time", ["--calendar", "hour,week"], "--calendar hour,week: the data has no time column"),
    ("daily", ["--calendar", "hour"], "--calendar hour: the time step is 1 days"),
    ("half-hourly", ["--calendar", "hours"], "--calendar: unknown part 'hours'"),
    ("clash", [], "column 'hour_sin' has the name of a calendar input"),
])
def test_bad_calendar_requests_are_one_line_exit_2_and_nothing_written(tmp_path, setup, args, message):
    data = tmp_path / "s.csv"
    if setup == "no time":
        pd.DataFrame({"load": np.sin(np.arange(100) / 5)}).to_csv(data, index=False)
    else:
        series_csv(data, "2024-01-01", 100, "D" if setup == "daily" else "30min",
                   {"hour_sin": np.cos(np.arange(100))} if setup == "clash" else None)
    model = tmp_path / "m.pt"
    code, _, err = invoke("train", data, "-o", model, *args, *TINY)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not model.exists()


def test_calendar_is_refused_for_text_data(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 50)
    code, _, err = invoke("train", text, "--calendar", "hour", *TINY)
    assert code == 2 and "--calendar is for CSV data" in err


def test_calendar_values_accept_times_with_a_zone():
    times = pd.to_datetime(["2024-06-01 12:00+02:00", "2024-06-01 18:00+02:00"])
    np.testing.assert_allclose(calendar_values(times, ["hour"]), [phases(0.5), phases(0.75)], atol=1e-12)
