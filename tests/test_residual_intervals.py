"""Intervals of point-loss (default mse) series models, from their error quantiles on the validation tail."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch

from bptt_cli.modelfile import load_model_file, read_payload, save_model_file
from bptt_cli.residuals import ResidualBands
from test_intervals import ar1_csv, invoke

SHORT = ["--hidden", "16", "--layers", "1", "--window", "20", "--max-steps", "150", "-q"]


@pytest.fixture(scope="module")
def default_model(tmp_path_factory):
    """A default-loss (mse) model on an AR(1) series with N(0, 1) noise, and a second series to score."""
    folder = tmp_path_factory.mktemp("residual")
    train, test = ar1_csv(folder / "ar.csv", 1500, seed=0), ar1_csv(folder / "ar_test.csv", 1500, seed=1)
    model = folder / "m.pt"
    code, _, err = invoke("train", train, "-o", model, *SHORT)
    assert code == 0, err
    return model, test


def test_a_default_model_keeps_its_error_quantiles_per_lead(default_model):
    model, _ = default_model
    data = load_model_file(model).data
    assert data["loss"] == "mse" and data["residual_quantiles"]["levels"] == [0.1, 0.9]
    errors = data["residual_quantiles"]["errors"]
    assert tuple(errors.shape) == (24, 2, 1) and (errors[:, 0] < 0).all() and (errors[:, 1] > 0).all()


def test_a_default_models_80_interval_covers_near_nominal_on_gaussian_data(default_model):
    model, test = default_model
    code, stdout, err = invoke("evaluate", model, test, "--horizon", "12", "--json")
    assert code == 0, err
    figures = json.loads(stdout)
    assert figures["intervals"] == [{"low": 0.1, "high": 0.9, "nominal": 0.8}]
    for horizon in ("1", "12"):
        found = figures["horizons"][horizon]["model"]
        assert 0.65 <= found["coverage"][0] <= 0.95, (horizon, found)
        assert found["pinball"] > 0 and len(found["coverage_by_lead"][0]) == int(horizon)
    code, _, err = invoke("evaluate", model, test)
    assert code == 0 and "in 80% interval" in next(line for line in err.splitlines() if line.startswith("forecast "))


def test_generate_writes_ordered_interval_columns_beyond_the_measured_leads(default_model):
    model, _ = default_model
    code, stdout, err = invoke("generate", model, "--horizon", "40")
    assert code == 0, err
    frame = pd.read_csv(io.StringIO(stdout))
    assert list(frame.columns) == ["step", "y", "y_p10", "y_p90"] and len(frame) == 40
    assert (frame["y_p10"] <= frame["y"]).all() and (frame["y"] <= frame["y_p90"]).all()
    width = (frame["y_p90"] - frame["y_p10"]).to_numpy()
    assert width[0] > 0.5 and width[-1] > width[23]  # beyond lead 24: widened by sqrt(lead / 24)


def test_a_biased_quantile_never_puts_the_point_outside_its_band():
    bands = ResidualBands((0.1, 0.9), np.array([[[0.5], [2.0]]]))  # every error above the point
    found = bands.around(np.array([[[10.0]]]))
    assert found[0, 0, :, 0].tolist() == [10.0, 12.0]


def test_older_model_files_without_quantiles_load_and_generate_without_interval_columns(default_model, tmp_path):
    model, _ = default_model
    file = load_model_file(model)
    del file.data["residual_quantiles"]
    old = tmp_path / "old.pt"
    save_model_file(old, file)
    code, stdout, err = invoke("generate", old, "--horizon", "5")
    assert code == 0, err
    assert list(pd.read_csv(io.StringIO(stdout)).columns) == ["step", "y"]


def test_damaged_quantiles_are_refused_on_load(default_model, tmp_path):
    model, _ = default_model
    payload = read_payload(model)
    payload["data"]["residual_quantiles"]["errors"] = torch.full((24, 2, 1), float("nan"))
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    code, _, err = invoke("generate", bad)
    assert code == 2 and "residual_quantiles" in err and "NaN" in err


def test_intervals_are_calibrated_once_on_the_kept_weights_not_at_every_best_save(tmp_path, monkeypatch):
    """Regression: the validation tail's rollout ran at every new best model, inside the --max-time budget."""
    import bptt_cli.forecast as forecast_module
    import bptt_cli.runfiles as runfiles_module

    calls, saves = [], []
    calibrate, save = forecast_module.residual_quantiles, runfiles_module.save_model_file
    monkeypatch.setattr(forecast_module, "residual_quantiles", lambda model, *rest: calls.append(
        {k: v.clone() for k, v in model.state_dict().items()}) or calibrate(model, *rest))
    monkeypatch.setattr(runfiles_module, "save_model_file", lambda *a: saves.append(1) or save(*a))
    train = ar1_csv(tmp_path / "ar.csv", 1500, seed=0)
    model = tmp_path / "m.pt"
    code, _, err = invoke("train", train, "-o", model, "--hidden", "8", "--layers", "1", "--window", "20",
                          "--epochs", "6", "--patience", "6", "-q")
    assert code == 0, err
    assert len(saves) >= 2, "the run must save several best models for this test to mean anything"
    assert len(calls) == 1
    kept = load_model_file(model)
    assert kept.data["residual_quantiles"]["errors"].shape == (24, 2, 1)
    assert all(torch.equal(calls[0][k], v) for k, v in kept.model.state_dict().items())


def test_predict_prints_a_point_models_interval_beside_each_forecast(default_model):
    from typer.testing import CliRunner

    from bptt_cli.cli import app

    model, test = default_model
    rows = "\n".join(test.read_text().splitlines()[:31]) + "\n"
    quantiles = load_model_file(model).data["residual_quantiles"]["errors"].double().numpy()  # (H, 2, 1)
    for horizon, suffixes in ((1, [""]), (3, ["+1", "+2", "+3"])):
        result = CliRunner().invoke(app, ["predict", str(model), "--format", "json", "--horizon", str(horizon)],
                                    input=rows)
        assert result.exit_code == 0, result.stderr
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(records) == 30
        assert list(records[0]) == [f"y{level}{s}" for s in suffixes for level in ("", "_p10", "_p90")]
        for record in records:
            for lead, s in enumerate(suffixes):
                low, high = record[f"y_p10{s}"] - record[f"y{s}"], record[f"y_p90{s}"] - record[f"y{s}"]
                assert low == pytest.approx(quantiles[lead, 0, 0], abs=1e-5)
                assert high == pytest.approx(quantiles[lead, 1, 0], abs=1e-5)
