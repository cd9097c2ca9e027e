"""--anchor linear (the series default): forecasts that start from a ridge autoregression on the last week of
values, fitted on the training rows, so an untrained model is already that linear forecast."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_forecast_quality import SMALL, daily_csv

from bptt_cli.autoregression import LinearStart, default_lags, windows
from bptt_cli.errors import BpttError
from bptt_cli.forecast import rollout
from bptt_cli.modelfile import read_payload
from bptt_cli.models import ModelConfig, RecurrentModel

PERIOD = 12


def test_a_sinusoid_is_continued_exactly_and_a_random_walk_gets_no_weight():
    t = np.arange(60 * PERIOD)
    wave = np.sin(2 * np.pi * t / PERIOD)[:, None]
    start = LinearStart.fit([wave[:500]], 6, 2 * PERIOD, held=[(wave, 500)])  # the penalty chosen on rows 500+
    origins = np.arange(600, 700)
    truth = wave[origins[:, None] + np.arange(1, 7)][..., 0] - wave[origins]
    np.testing.assert_allclose(start.offsets(start.trail(wave, origins)), truth, atol=1e-3)
    walk = np.cumsum(np.random.default_rng(0).standard_normal(5000))[:, None]
    assert np.abs(LinearStart.fit([walk], 6, 2 * PERIOD).weights).max() < 0.1  # the past says nothing


def test_the_window_before_a_sequence_starts_reads_as_the_last_value():
    values = np.array([[1.0], [2.0], [np.nan], [4.0]])
    got = windows(values, np.array([1, 3]), 3)
    np.testing.assert_array_equal(got[..., 0], [[2.0, 1.0, 2.0], [2.0, 4.0, 4.0]])  # before row 0, NaN: own value
    np.testing.assert_array_equal(windows(torch.from_numpy(values), np.array([1, 3]), 3).numpy(), got)


def test_the_lags_are_a_week_of_seasons_within_the_bounds():
    assert default_lags(24, 10_000) == 168 and default_lags(48, 100_000) == 336
    assert default_lags(288, 100_000) == 1024  # 5-minute data: capped
    assert default_lags(None, 10_000) == 48 and default_lags(24, 400) == 100  # a quarter of a short series


def test_a_series_too_short_for_a_window_and_its_leads_has_no_linear_start():
    assert LinearStart.fit([np.ones((30, 1))], 24, 12) is None


@pytest.mark.parametrize("leads", [1, PERIOD])
def test_an_untrained_model_rolls_the_linear_forecast_out_past_its_leads(leads):
    """Weights that copy the value a period back: over two periods, the last period twice, each block of leads
    reading the forecasts before it."""
    weights = np.zeros((leads, 1, PERIOD))
    weights[np.arange(leads), 0, np.arange(leads)] = 1.0  # lead k reads the lag k - 1 (oldest first)
    torch.manual_seed(0)
    config = ModelConfig(cell="lstm", tokens=False, input_size=2, output_size=1, hidden=8, layers=1, anchor=[1],
                         leads=leads, linear=weights.reshape(-1).tolist(), linear_lags=PERIOD)
    model = RecurrentModel(config).eval()
    values = torch.randn(3, 30, generator=torch.Generator().manual_seed(1))  # three histories of the target
    trail = LinearStart.of(config).trail(values.T, np.array([29]))[0].T.unsqueeze(-1)  # (3 series, P, 1)
    first = torch.stack([torch.zeros(3), values[:, -1]], dim=1)  # input 1 is the target
    predicted = rollout(model, model.init_state(3), first, torch.zeros(3, 2 * PERIOD - 1, 2), [(0, 1)], 2 * PERIOD,
                        trail=trail)
    last_period = values[:, -PERIOD:]
    torch.testing.assert_close(predicted[..., 0], torch.cat([last_period, last_period], dim=1))


@pytest.mark.parametrize("linear, lags", [([0.5, float("nan")], 2), ([0.5] * 3, 2), ([0.5], 1)])
def test_a_bad_stored_linear_start_is_refused(linear, lags):
    with pytest.raises(BpttError, match="linear start"):
        ModelConfig(cell="lstm", tokens=False, input_size=1, output_size=1, anchor=[0], leads=1, linear=linear,
                    linear_lags=lags).validate()


@pytest.fixture
def trained(tmp_path, run):
    data = daily_csv(tmp_path / "daily.csv", days=30)
    code, _, err = run("train", data, "-o", tmp_path / "m.pt", *SMALL, "--max-steps", "300", "--quiet")
    assert code == 0, err
    return tmp_path / "m.pt", data


def test_the_default_model_file_keeps_its_linear_start_and_beats_both_baselines(trained, run):
    model, data = trained
    config = read_payload(model)["model_config"]
    assert config["leads"] == 24 and 2 <= config["linear_lags"] <= 168
    assert len(config["linear"]) == 24 * config["linear_lags"]
    code, out, err = run("evaluate", model, data, "--horizon", "24", "--json")
    assert code == 0, err
    for horizon in ("1", "24"):
        figures = json.loads(out)["horizons"][horizon]
        assert figures["model"]["mase"] < figures["persistence"]["mase"], horizon
        assert figures["model"]["mase"] < figures["seasonal_naive"]["mase"], horizon


def test_generate_from_a_context_equals_the_backtest_from_the_same_origin(trained, run, tmp_path):
    """The linear start reads the same values in both: the context's last rows, then the forecasts (30 > 24
    leads, so the second block reads the first block's forecasts)."""
    model, data = trained
    code, _, err = run("evaluate", model, data, "--horizon", "30", "--forecasts", tmp_path / "bt.csv")
    assert code == 0, err
    backtest = pd.read_csv(tmp_path / "bt.csv")
    origin = backtest["origin"].iloc[-1]
    rows = pd.read_csv(data)
    rows[rows["time"] <= origin].to_csv(tmp_path / "context.csv", index=False)
    code, _, err = run("generate", model, "--context", tmp_path / "context.csv", "--horizon", "30",
                       "-o", tmp_path / "f.csv")
    assert code == 0, err
    generated = pd.read_csv(tmp_path / "f.csv")["load"].to_numpy()
    expected = backtest[backtest["origin"] == origin].sort_values("lead")["forecast"].to_numpy()
    np.testing.assert_allclose(generated, expected, rtol=1e-5, atol=1e-5)


def test_anchor_last_keeps_no_linear_start(tmp_path, run):
    data = daily_csv(tmp_path / "daily.csv", days=10)
    code, _, err = run("train", data, "-o", tmp_path / "m.pt", *SMALL, "--max-steps", "2", "--quiet",
                       "--anchor", "last")
    assert code == 0, err
    config = read_payload(tmp_path / "m.pt")["model_config"]
    assert (config["linear"], config["linear_lags"]) == ([], 0)
