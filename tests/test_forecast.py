"""Forecasts from the carried state, their metrics and baselines, and the forecast and evaluate commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from bptt_cli import forecast
from bptt_cli.models import ModelConfig, RecurrentModel
from test_series import SMALL, seasonal_csv


def test_error_metrics_on_known_numbers():
    truth = np.array([[1.0], [2.0], [4.0]])
    predicted = np.array([[2.0], [2.0], [2.0]])
    figures = forecast.errors(truth, predicted, scale=np.array([2.0]))
    assert figures["mae"] == pytest.approx(1.0)
    assert figures["rmse"] == pytest.approx(np.sqrt(5 / 3))
    assert figures["smape"] == pytest.approx(100 * (2 / 3 + 0 + 4 / 6) / 3)
    assert figures["mase"] == pytest.approx(0.5)
    assert forecast.naive_scale([np.array([[0.0], [2.0], [3.0]])]).tolist() == [1.5]


def test_baselines_and_seasonal_fill():
    series = np.arange(20, dtype=float)[:, None]  # value = time index
    origins = forecast.origins_for(20, horizon=3, season=4)
    assert origins.tolist() == [3, 6, 9, 12, 15]  # from season - 1 on, one horizon apart, inside the data
    base = forecast.baselines(series, origins, 3, season=4)
    assert base["persistence"][0, :, 0].tolist() == [3, 3, 3]
    assert base["seasonal_naive"][0, :, 0].tolist() == [0, 1, 2]  # lead h -> origin + h - 4
    fill = forecast.seasonal_fill(series, 6, season=4)
    assert fill[:, 0].tolist() == [16, 17, 18, 19, 16, 17]
    assert forecast.seasonal_fill(series, 2, None)[:, 0].tolist() == [19, 19]


def test_classification_figures():
    truth = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 2])
    figures = forecast.classification(truth, predicted, ["a", "b", "c"])
    assert figures["accuracy"] == pytest.approx(0.8)
    assert figures["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert figures["macro_f1"] == pytest.approx(np.mean([2 / 3, 0.8, 1.0]))


def test_a_one_step_rollout_equals_the_fused_pass_and_shapes_hold():
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig(cell="gru", input_size=3, output_size=2, tokens=False, hidden=8, layers=2)).eval()
    x = torch.randn(30, 3)
    origins = np.array([4, 10, 20])
    with torch.no_grad():
        out, _ = model.recur(x.unsqueeze(1), model.init_state(1))
        fused = model.decode(out[:, 0])
        state = forecast.states_at(model, x, origins, torch.device("cpu"))
        known = x[origins[:, None] + np.arange(1, 5)[None, :]]
        rolled = forecast.rollout(model, state, x[origins], known, [(0, 0), (1, 2)], 5)
    assert rolled.shape == (3, 5, 2)
    torch.testing.assert_close(rolled[:, 0], fused[origins])


def test_forecasting_beats_persistence_on_a_seasonal_series(tmp_path, run):
    path = seasonal_csv(tmp_path / "s.csv", rows=600)
    out = tmp_path / "m.pt"
    code, _, err = run("train", path, "--target", "load", "-o", out, "--epochs", "40", "--hidden", "24",
                       "--layers", "1", "--batch-size", "8", "--window", "24", "--lr", "0.01", "--season", "12")
    assert code == 0, err
    code, stdout, err = run("evaluate", out, path, "--horizon", "6", "--json")
    assert code == 0, err
    figures = json.loads(stdout)
    assert set(figures) >= {"horizons", "targets", "points"} and figures["targets"] == ["load"]
    for horizon in ("1", "6"):
        result = figures["horizons"][horizon]
        assert set(result) >= {"model", "persistence", "seasonal_naive"}
        assert set(result["model"]) >= {"mae", "rmse", "smape", "mase"}
    assert figures["horizons"]["6"]["model"]["mase"] < 0.5 * figures["horizons"]["6"]["persistence"]["mase"]
    assert figures["horizons"]["1"]["model"]["mae"] < figures["horizons"]["1"]["persistence"]["mae"]
    assert "held-out tail" in err  # the training file: only its tail is scored

    other = seasonal_csv(tmp_path / "other.csv", rows=100, seed=3)
    code, stdout, err = run("evaluate", out, other, "--horizon", "6", "--json")
    assert code == 0 and "held-out" not in err
    figures = json.loads(stdout)
    assert figures["points"] == 100 - 11 - 1 and figures["horizons"]["6"]["points"] == 6 * len(range(11, 94, 6))


def test_generate_continues_the_time_column_in_original_units(tmp_path, run):
    path = seasonal_csv(tmp_path / "s.csv", rows=150)
    out = tmp_path / "m.pt"
    assert run("train", path, "-o", out, "--epochs", "2", *SMALL)[0] == 0
    code, stdout, err = run("generate", out)  # defaults: from the end of the training data, a season ahead
    assert code == 0, err
    frame = pd.read_csv(pd.io.common.StringIO(stdout))
    assert list(frame.columns) == ["time", "load", "temp"] and len(frame) == 48  # 30 min -> a season of 48
    assert frame["time"].iloc[0] == str(pd.Timestamp("2024-01-01") + 150 * pd.Timedelta("30min"))
    assert pd.to_datetime(frame["time"]).diff().dropna().eq(pd.Timedelta("30min")).all()
    assert 5 < frame["load"].mean() < 15  # original units, not normalised ones

    context = tmp_path / "recent.csv"
    pd.read_csv(path).iloc[:40].to_csv(context, index=False)
    target = tmp_path / "forecast.csv"
    code, stdout, err = run("generate", out, "--context", context, "--horizon", "7", "-o", target)
    assert code == 0 and stdout == "", err
    written = pd.read_csv(target)
    assert len(written) == 7 and written["time"].iloc[0] == "2024-01-01 20:00:00"
    assert not list(tmp_path.glob(".forecast.csv.*"))  # the temporary file was renamed


def test_text_options_and_sequence_options_do_not_mix(tmp_path, run, tiny_model):
    code, _, err = run("generate", tiny_model, "--horizon", "5")
    assert code == 2 and "--prime" in err


def test_mase_has_the_one_step_and_the_seasonal_scale():
    """Hyndman's MASE (scaled by the lag-1 naive error) and the M4 one (by the seasonal-naive error)."""
    history = [np.array([[0.0], [2.0], [4.0], [6.0]])]
    assert forecast.naive_scale(history).tolist() == [2.0]  # |2| + |2| + |2|, over 3
    assert forecast.naive_scale(history, lag=2).tolist() == [4.0]  # |4 - 0| + |6 - 2|, over 2
    truth, predicted = np.array([[[1.0]], [[2.0]]]), np.array([[[2.0]], [[4.0]]])  # MAE 1.5
    figures = forecast.errors(truth, predicted, np.array([2.0]), np.array([4.0]))
    assert figures["mase"] == 0.75 and figures["mase_seasonal"] == 0.375
    assert "mase_seasonal" not in forecast.errors(truth, predicted, np.array([2.0]))


def test_evaluate_reports_mase_seasonal_at_the_models_season(tmp_path, run):
    data = seasonal_csv(tmp_path / "s.csv", rows=200)
    out = tmp_path / "m.pt"
    code, _, err = run("train", data, "-o", out, "--max-steps", "2", "--hidden", "8", "--layers", "1",
                       "--window", "12", "--season", "12")
    assert code == 0, err
    code, stdout, err = run("evaluate", out, data, "--horizon", "12", "--json")
    figures = json.loads(stdout)["horizons"]["12"]
    assert code == 0 and figures["model"]["mase_seasonal"] > 0
    for model, naive in zip(figures["model"]["per_target"], figures["seasonal_naive"]["per_target"]):
        # one pair of scales per target, whatever the forecast
        assert model["mase"] / model["mase_seasonal"] == pytest.approx(naive["mase"] / naive["mase_seasonal"])
