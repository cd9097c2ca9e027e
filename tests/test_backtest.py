"""Backtests users can keep: evaluate --forecasts writes every scored forecast, --origins / --every pick
the rolling origins, and the file's rows recompute the printed figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bptt_cli import forecast
from bptt_cli.errors import BpttError
from bptt_cli.modelfile import load_model_file
from test_intervals import invoke
from test_series import seasonal_csv

SMALL = ["--max-steps", "20", "--hidden", "8", "--layers", "1", "--window", "12", "--season", "12"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A point model and a quantile model on two targets of a seasonal series, and held-out data."""
    folder = tmp_path_factory.mktemp("backtest")
    data = seasonal_csv(folder / "s.csv", rows=300)
    other = seasonal_csv(folder / "other.csv", rows=120, seed=3)
    models = {"mse": folder / "mse.pt", "quantile": folder / "q.pt"}
    for loss, path in models.items():
        code, _, err = invoke("train", data, "-o", path, "--loss", loss, *SMALL, "-q")
        assert code == 0, err
    return models, data, other


def mase_of(frame: pd.DataFrame, column: str, scale: list[float], targets: list[str]) -> float:
    """MASE recomputed from the file: per target MAE over its rows, divided by its in-sample scale, averaged."""
    per = [(frame[frame.target == t][column] - frame[frame.target == t]["actual"]).abs().mean() / s
           for t, s in zip(targets, scale)]
    return float(np.mean(per))


def test_the_backtest_has_one_row_per_origin_lead_and_target_and_recomputes_the_printed_mase(trained, tmp_path):
    models, data, other = trained
    out = tmp_path / "backtest.csv"
    code, stdout, err = invoke("evaluate", models["mse"], other, "--horizon", "6", "--forecasts", out, "--json")
    assert code == 0, err
    figures = json.loads(stdout)["horizons"]["6"]
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["origin", "time", "lead", "target", "forecast", "actual", "persistence",
                                   "seasonal_naive"]
    origins = frame.origin.unique()
    assert len(frame) == len(origins) * 6 * 2 == figures["points"] * 2  # points count (origin, lead) pairs
    assert not frame.duplicated(["origin", "lead", "target"]).any()
    assert sorted(frame.lead.unique()) == list(range(1, 7)) and sorted(frame.target.unique()) == ["load", "temp"]
    stored = load_model_file(models["mse"]).data
    targets = stored["target_names"]
    for column, name in (("forecast", "model"), ("persistence", "persistence"), ("seasonal_naive", "seasonal_naive")):
        assert mase_of(frame, column, stored["mase_scale"], targets) == pytest.approx(figures[name]["mase"], abs=1e-6)
        assert mase_of(frame, column, stored["mase_seasonal_scale"], targets) == pytest.approx(
            figures[name]["mase_seasonal"], abs=1e-6)
    truth = pd.read_csv(other)  # the actual column is the data, at the time the row names
    joined = frame.merge(truth, on="time")
    for t in targets:
        rows = joined[joined.target == t]
        np.testing.assert_allclose(rows["actual"], rows[t], rtol=1e-9)
    assert f"wrote {len(frame)} forecasts ({len(origins)} origins x 6 leads x 2 targets)" in err


def test_origins_and_every_pick_the_origins(trained, tmp_path):
    models, data, other = trained
    rows = pd.read_csv(other)
    times = list(rows["time"])
    out = tmp_path / "b.csv"
    code, _, err = invoke("evaluate", models["mse"], other, "--horizon", "6", "--origins", "5", "--forecasts", out)
    assert code == 0, err
    found = [times.index(t) for t in pd.read_csv(out).origin.unique()]
    assert found == np.linspace(11, 120 - 6 - 1, 5).round().astype(int).tolist()  # after a season, to the end
    code, _, err = invoke("evaluate", models["mse"], other, "--horizon", "6", "--every", "3", "--forecasts", out)
    assert code == 0, err
    found = [times.index(t) for t in pd.read_csv(out).origin.unique()]
    assert found == list(range(11, 120 - 6, 3))


def test_on_the_training_file_the_origins_lie_in_the_held_out_tail(trained, tmp_path):
    models, data, _ = trained
    out = tmp_path / "b.csv"
    code, _, err = invoke("evaluate", models["mse"], data, "--horizon", "3", "--origins", "4", "--forecasts", out)
    assert code == 0, err
    times = list(pd.read_csv(data)["time"])
    found = [times.index(t) for t in pd.read_csv(out).origin.unique()]
    assert found == np.linspace(270 - 1, 300 - 3 - 1, 4).round().astype(int).tolist()  # the last 10 %, read from 269


def test_a_quantile_model_backtest_has_interval_columns_for_it_and_the_baselines(trained, tmp_path):
    models, _, other = trained
    out = tmp_path / "q.csv"
    code, stdout, err = invoke("evaluate", models["quantile"], other, "--horizon", "4", "--forecasts", out, "--json")
    assert code == 0, err
    frame = pd.read_csv(out)
    for prefix in ("", "persistence_", "seasonal_naive_"):
        low, mid, high = (frame[f"{prefix}p{q}"] for q in (10, 50, 90))
        assert (low <= mid).all() and (mid <= high).all()
    figures = json.loads(stdout)["horizons"]["4"]
    inside = ((frame.p10 <= frame.actual) & (frame.actual <= frame.p90)).mean()
    assert inside == pytest.approx(figures["model"]["coverage"][0], abs=1e-9)
    assert "the baselines' intervals come from their errors on DATA itself" in err  # other.csv has no training part


def test_origin_plans_unit():
    assert forecast.origins_for(20, 3, None).tolist() == [0, 3, 6, 9, 12, 15]
    assert forecast.origins_for(20, 3, None, plan=forecast.OriginPlan(every=5)).tolist() == [0, 5, 10, 15]
    assert forecast.origins_for(20, 3, 4, plan=forecast.OriginPlan(count=3)).tolist() == [3, 10, 16]
    assert forecast.origins_for(20, 3, None, plan=forecast.OriginPlan(count=17)).tolist() == list(range(17))
    with pytest.raises(BpttError, match="only 17 origin"):
        forecast.origins_for(20, 3, None, plan=forecast.OriginPlan(count=18))
    with pytest.raises(BpttError, match="give one of them"):
        forecast.OriginPlan(count=2, every=3)


@pytest.mark.parametrize("args,needle", [
    (["--origins", "3", "--every", "2"], "give one of them"),
    (["--origins", "1000"], "--origins 1000: only"),
    (["--origins", "0"], "--origins"),
    (["--every", "0"], "--every"),
    (["--forecasts", "{model}"], "--forecasts"),
    (["--forecasts", "{data}"], "is the input"),
    (["--forecasts", "{missing}/b.csv"], "does not exist"),
])
def test_bad_backtest_options_are_one_line_exit_2_and_nothing_written(trained, tmp_path, args, needle):
    models, _, other = trained
    model = tmp_path / "m.pt"
    model.write_bytes(models["mse"].read_bytes())
    data = tmp_path / "other.csv"
    data.write_bytes(other.read_bytes())
    names = {"model": model, "data": data, "missing": tmp_path / "nowhere"}
    args = [a.format(**names) for a in args]
    if "--forecasts" not in args:
        args += ["--forecasts", str(tmp_path / "b.csv")]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, _, err = invoke("evaluate", model, data, "--horizon", "6", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_text_model_refuses_backtest_options(tmp_path, tiny_model, tiny_text):
    code, _, err = invoke("evaluate", tiny_model, tiny_text, "--forecasts", tmp_path / "b.csv")
    assert code == 2 and err.startswith("error: --forecasts: for forecasting models") and err.count("\n") == 1
    assert not (tmp_path / "b.csv").exists()
