"""Known-future inputs: ``train --future COL`` marks them, ``generate --future FILE`` supplies them, and
without them ``generate`` refuses instead of silently reusing last season's values (``--assume-seasonal``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bptt_cli.cli import app

TINY = ["--hidden", "8", "--layers", "1", "--batch-size", "2", "--window", "8", "--max-steps", "5", "--quiet"]
ROWS, HORIZON = 48 * 15, 6


def invoke(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def demand_frame(rows: int) -> pd.DataFrame:
    """Half-hourly load that rises on holidays, a holiday flag and a temperature."""
    t = np.arange(rows)
    holiday = ((t // 48) % 7 == 6).astype(float)
    rng = np.random.default_rng(0)
    return pd.DataFrame({"time": pd.date_range("2024-01-01", periods=rows, freq="30min").astype(str),
                         "load": 10 + 3 * np.sin(2 * np.pi * t / 48) + 2 * holiday + 0.1 * rng.standard_normal(rows),
                         "holiday": holiday, "temp": 20 + np.cos(2 * np.pi * t / 48)})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A one-step model of load, rolled out, that reads the holiday flag (known ahead) and the temperature
    (not); by default such a model decodes a season at once (see the test of the default below)."""
    root = tmp_path_factory.mktemp("future")
    frame = demand_frame(ROWS + HORIZON)
    data = root / "demand.csv"
    frame.iloc[:ROWS].to_csv(data, index=False)
    model = root / "m.pt"
    code, _, err = invoke("train", data, "--target", "load", "--future", "holiday", "--leads", "1", "-o", model,
                          *TINY)
    assert code == 0, err
    return model, frame.iloc[ROWS:]


def future_file(path: Path, rows: pd.DataFrame, columns: list[str]) -> Path:
    rows[columns].to_csv(path, index=False)
    return path


def test_the_forecast_reads_the_future_file(trained, tmp_path):
    model, after = trained
    plain = future_file(tmp_path / "f.csv", after, ["time", "holiday", "temp"])
    code, first, err = invoke("generate", model, "--horizon", HORIZON, "--future", plain)
    assert code == 0, err
    changed = after.assign(holiday=1.0 - after["holiday"], temp=after["temp"] + 5)
    code, second, err = invoke("generate", model, "--horizon", HORIZON, "--future", future_file(
        tmp_path / "g.csv", changed, ["time", "holiday", "temp"]))
    assert code == 0, err
    one, two = (pd.read_csv(pd.io.common.StringIO(o)) for o in (first, second))
    assert list(one["time"]) == list(after["time"].str.replace("T", " ")) == list(two["time"])
    assert one["load"].iloc[0] == two["load"].iloc[0]  # the first step reads only the rows already there
    assert not np.allclose(one["load"].iloc[1:], two["load"].iloc[1:])  # later steps read the file's values


def test_without_future_values_generate_refuses_and_names_the_fix(trained, tmp_path):
    model, _ = trained
    out = tmp_path / "forecast.csv"
    code, _, err = invoke("generate", model, "--horizon", HORIZON, "-o", out)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "inputs holiday, temp are not forecast" in err and "--future FILE" in err and "--assume-seasonal" in err
    assert not out.exists()


def test_assume_seasonal_reuses_last_season_and_says_so(trained):
    model, _ = trained
    code, out, err = invoke("generate", model, "--horizon", HORIZON, "--assume-seasonal")
    assert code == 0, err
    assert len(out.strip().splitlines()) == HORIZON + 1
    assert "--assume-seasonal: inputs holiday, temp are not forecast; the future uses their values one season" in err


def test_a_file_with_some_inputs_leaves_the_others_to_assume_seasonal(trained, tmp_path):
    model, after = trained
    holidays = future_file(tmp_path / "f.csv", after, ["time", "holiday"])
    code, _, err = invoke("generate", model, "--horizon", HORIZON, "--future", holidays)
    assert code == 2 and "inputs temp are not forecast" in err
    code, _, err = invoke("generate", model, "--horizon", HORIZON, "--future", holidays, "--assume-seasonal")
    assert code == 0 and "--assume-seasonal: inputs temp are not forecast" in err, err


def test_one_step_needs_no_future_values(trained):
    model, _ = trained
    code, out, err = invoke("generate", model, "--horizon", "1")
    assert code == 0 and len(out.strip().splitlines()) == 2, err


@pytest.mark.parametrize(("columns", "rows", "message"), [
    (["time", "temp"], HORIZON, "lacks column(s) holiday, whose future values the forecast needs"),
    (["time", "holiday", "temp"], HORIZON - 2, "has no row for 2024-01-16 02:00:00 (the forecast needs the 6 times"),
    (["holiday", "temp"], HORIZON, "has no time column 'time'"),
])
def test_a_bad_future_file_is_one_line_exit_2_and_nothing_written(trained, tmp_path, columns, rows, message):
    model, after = trained
    bad = future_file(tmp_path / "f.csv", after.iloc[:rows], columns)
    out = tmp_path / "forecast.csv"
    code, _, err = invoke("generate", model, "--horizon", HORIZON, "--future", bad, "-o", out)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not out.exists()


def test_a_future_file_whose_times_miss_the_horizon_is_refused(trained, tmp_path):
    model, after = trained
    shifted = after.assign(time=pd.to_datetime(after["time"]) + pd.Timedelta("15min"))
    code, _, err = invoke("generate", model, "--horizon", HORIZON, "--future",
                          future_file(tmp_path / "f.csv", shifted, ["time", "holiday", "temp"]))
    assert code == 2 and "has no row for 2024-01-16 00:00:00" in err, err


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "load", "--future", "load"], "--future 'load' is a target"),
    (["--target", "load", "--future", "wind"], "--future 'wind' is not an input column; the inputs are: load, holiday, temp"),
    (["--target", "load", "--features", "load", "--features", "temp", "--future", "holiday"],
     "--future 'holiday' is not an input column"),
])
def test_bad_future_columns_are_refused_at_training(tmp_path, args, message):
    data = tmp_path / "d.csv"
    demand_frame(200).to_csv(data, index=False)
    model = tmp_path / "m.pt"
    code, _, err = invoke("train", data, *args, "-o", model, *TINY)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not model.exists()


def test_evaluate_scores_a_model_with_future_inputs_on_the_real_values(trained, tmp_path):
    model, _ = trained
    data = tmp_path / "d.csv"
    demand_frame(ROWS + 200).iloc[ROWS - 100:].to_csv(data, index=False)
    code, _, err = invoke("evaluate", model, data, "--horizon", HORIZON, "--json")
    assert code == 0, err


def test_evaluate_never_reads_the_real_future_of_inputs_not_marked_future(tmp_path):
    """Regression: a rollout read every input's real future, so a leading indicator nobody knows ahead made a
    model look perfect at every lead; unmarked inputs now get what generate --assume-seasonal gives them."""
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.standard_normal(3001))
    data = tmp_path / "lead.csv"
    pd.DataFrame({"y": walk[:-1], "ahead": walk[1:]}).to_csv(data, index=False)  # ahead[t] = y[t + 1]
    scores, errs = {}, {}
    for name, extra in (("marked", ["--future", "ahead"]), ("unmarked", [])):
        model = tmp_path / f"{name}.pt"
        code, _, err = invoke("train", data, "--target", "y", "-o", model, "--hidden", "16", "--layers", "1",
                              "--window", "20", "--max-steps", "600", "--seed", "0", "--leads", "1", "--quiet", *extra)
        assert code == 0, err
        code, out, errs[name] = invoke("evaluate", model, data, "--horizon", "8", "--json")
        assert code == 0, errs[name]
        found = json.loads(out)["horizons"]["8"]
        scores[name], persistence = found["model"]["mase"], found["persistence"]["mase"]
    assert scores["marked"] < 0.6 * persistence  # it reads y's real future through the marked input
    assert scores["unmarked"] > 1.5 * scores["marked"]  # it knows one step ahead, not eight
    assert "inputs ahead are not marked --future" in errs["unmarked"]
    assert "not marked --future" not in errs["marked"]
