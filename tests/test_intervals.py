"""Probabilistic forecasts: gaussian and quantile heads, their intervals in generate, predict and evaluate,
the baselines' empirical intervals, and the refusal of bad --quantiles."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from bptt_cli import forecast
from bptt_cli.cli import app
from bptt_cli.losses import OutputHead, level_name, pinball
from bptt_cli.modelfile import load_model_file
from test_series import seasonal_csv

SHORT = ["--hidden", "16", "--layers", "1", "--batch-size", "8", "--window", "20", "--lr", "0.01"]


def ar1_csv(path, rows: int, seed: int, phi: float = 0.8, noise: float = 1.0):
    """y[t] = phi * y[t-1] + N(0, noise): the one-step forecast's error is exactly N(0, noise)."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0.0, noise, rows)
    y = np.zeros(rows)
    for t in range(1, rows):
        y[t] = phi * y[t - 1] + shocks[t]
    pd.DataFrame({"y": 5 + y}).to_csv(path, index=False)
    return path


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def ar_models(tmp_path_factory):
    """A gaussian and a quantile model trained briefly on one AR(1) series, and a held-out one to score."""
    folder = tmp_path_factory.mktemp("ar")
    train, test = ar1_csv(folder / "ar.csv", 2000, seed=0), ar1_csv(folder / "ar_test.csv", 1000, seed=1)
    models = {}
    for loss in ("gaussian", "quantile"):
        models[loss] = folder / f"{loss}.pt"
        code, _, err = invoke("train", train, "-o", models[loss], "--loss", loss, "--epochs", "3", *SHORT, "-q")
        assert code == 0, err
    return models, test


# ---------------------------------------------------------------- the heads themselves


def test_a_gaussian_head_reads_a_mean_and_a_floored_scale_and_its_nll_is_the_normal_one():
    head = OutputHead.of("gaussian")
    assert head.per_target == 2 and head.levels == (0.1, 0.5, 0.9) and head.intervals == [(0, 2, pytest.approx(0.8))]
    outputs = torch.tensor([[1.0, -2.0, math.log(math.e - 1), -50.0]])  # targets a, b: means 1, -2; raw scales
    torch.testing.assert_close(head.point(outputs), torch.tensor([[1.0, -2.0]]))
    sigma = head.scale(outputs)
    assert sigma[0, 0].item() == pytest.approx(1.0 + 1e-3) and sigma[0, 1].item() == pytest.approx(1e-3)
    bands = head.bands(outputs)  # (1, L, O)
    assert bands.shape == (1, 3, 2) and bands[0, 2, 0].item() == pytest.approx(1 + 1.2815516 * 1.001, rel=1e-5)
    targets = torch.tensor([[2.0, float("nan")]])
    total, count = head.sums(outputs, targets)
    expected = -torch.distributions.Normal(1.0, 1.001).log_prob(torch.tensor(2.0)).item()
    assert count.item() == 1 and total.item() == pytest.approx(expected, rel=1e-5)


def test_a_quantile_head_is_sorted_its_point_is_the_median_and_its_loss_is_pinball():
    head = OutputHead.of("quantile", "0.9,0.1,0.5")  # given unsorted: the levels are sorted
    assert head.quantiles == (0.1, 0.5, 0.9) and head.per_target == 3
    outputs = torch.tensor([[3.0, 1.0, 2.0]])  # one target, blocks out of order: read sorted
    torch.testing.assert_close(head.bands(outputs), torch.tensor([[[1.0], [2.0], [3.0]]]))
    torch.testing.assert_close(head.point(outputs), torch.tensor([[2.0]]))
    total, count = head.sums(outputs, torch.tensor([[2.5]]))
    # pinball at 0.1 on 1 (under by 1.5): 0.15; at 0.5 on 2: 0.25; at 0.9 on 3 (over by 0.5): 0.05
    assert count.item() == 1 and total.item() == pytest.approx((0.15 + 0.25 + 0.05) / 3)
    assert OutputHead.of("quantile", "0.25,0.75").point(torch.tensor([[1.0, 3.0]])).item() == 2.0  # even: the middle two
    assert [level_name(q) for q in (0.1, 0.5, 0.025)] == ["p10", "p50", "p2.5"]
    assert pinball(np.array([1.0]), np.array([3.0]), 0.9).tolist() == [pytest.approx(1.8)]


def test_older_model_files_read_as_point_forecasts():
    assert OutputHead.stored({}, {"loss": "huber"}) == OutputHead("huber")
    assert OutputHead.stored({}, {"loss": "mae"}) == OutputHead("mse")  # an old loss: scored as mse, one output
    assert OutputHead.stored({}, None).per_target == 1 and not OutputHead.stored({}, None).probabilistic


def test_interval_scores_and_gaussian_crps_on_known_numbers():
    head = OutputHead.of("quantile", "0.1,0.5,0.9")
    truth = np.array([[[0.0]], [[5.0]]])  # (N=2, H=1, O=1)
    bands = np.array([[[[-1.0], [0.0], [1.0]]], [[[-1.0], [0.0], [1.0]]]])  # (N, H, L, O)
    found = forecast.interval_scores(truth, bands, head)
    assert found["coverage"] == [0.5]  # 0 is inside [-1, 1], 5 is not
    # the second point: pinball 0.1*6, 0.5*5, 0.9*4 = 0.6 + 2.5 + 3.6; the first: 0.1*1 + 0 + 0.1*1
    assert found["pinball"] == pytest.approx((0.2 + 6.7) / 6)
    # CRPS of N(0, 1) at its mean is (sqrt(2) - 1) / sqrt(pi)
    crps = forecast.gaussian_crps(np.array([0.0]), np.array([0.0]), np.array([1.0]))
    assert crps[0] == pytest.approx((math.sqrt(2) - 1) / math.sqrt(math.pi))


# ---------------------------------------------------------------- trained models


def test_gaussian_and_quantile_coverage_is_near_nominal_on_gaussian_data(ar_models):
    """AR(1) with N(0, 1) noise: a short training gives an 80 % interval covering 65-95 % of 999 points."""
    models, test = ar_models
    for loss, path in models.items():
        code, stdout, err = invoke("evaluate", path, test, "--json")
        assert code == 0, err
        figures = json.loads(stdout)
        assert figures["intervals"] == [{"low": 0.1, "high": 0.9, "nominal": 0.8}]
        model = figures["horizons"]["1"]["model"]
        assert figures["horizons"]["1"]["points"] == 999
        assert 0.65 <= model["coverage"][0] <= 0.95, (loss, model)
        assert model["pinball"] > 0 and ("crps" in model) == (loss == "gaussian")
        naive = figures["horizons"]["1"]["persistence"]
        assert 0.65 <= naive["coverage"][0] <= 0.95 and naive["pinball"] > 0  # its in-sample error quantiles
        assert "crps" not in naive


def test_the_table_shows_pinball_crps_and_coverage(ar_models):
    models, test = ar_models
    code, _, err = invoke("evaluate", models["gaussian"], test)
    assert code == 0, err
    header = next(line for line in err.splitlines() if line.startswith("forecast "))
    assert "pinball" in header and "CRPS" in header and "in 80% interval" in header


def test_generate_writes_ordered_interval_columns_next_to_the_point_forecast(ar_models):
    models, _ = ar_models
    for loss, path in models.items():
        code, stdout, err = invoke("generate", path, "--horizon", "12")
        assert code == 0, err
        frame = pd.read_csv(io.StringIO(stdout))
        assert list(frame.columns) == ["step", "y", "y_p10", "y_p50", "y_p90"] and len(frame) == 12
        assert (frame["y_p10"] <= frame["y_p50"]).all() and (frame["y_p50"] <= frame["y_p90"]).all()
        width = frame["y_p90"] - frame["y_p10"]
        assert width.min() > 0.5  # noise of std 1: an 80 % band of about 2.6 one step ahead
        if loss == "quantile":
            np.testing.assert_allclose(frame["y"], frame["y_p50"], rtol=1e-6)  # the point is the median
        else:  # the mean, and the median of the sampled paths beyond one step
            assert frame["y"].iloc[0] == pytest.approx(frame["y_p50"].iloc[0], rel=1e-5)
            assert width.iloc[-1] > 1.15 * width.iloc[0]  # AR(1): 12 steps ahead is about 1.66 times as uncertain


def test_a_gaussian_rollout_samples_paths_so_later_leads_stay_covered(ar_models):
    """The predicted scale alone is one step wide at every lead (measured: 64 % inside its 80 % interval at
    lead 12 on this data); paths that feed back draws widen it."""
    models, test = ar_models
    code, stdout, err = invoke("evaluate", models["gaussian"], test, "--horizon", "12", "--json")
    assert code == 0, err
    model = json.loads(stdout)["horizons"]["12"]["model"]
    assert 0.65 <= model["coverage"][0] <= 0.95, model
    assert len(model["coverage_by_lead"][0]) == 12 and "crps" not in model  # CRPS: the one-step table only


def test_the_model_file_keeps_its_loss_and_levels(ar_models):
    models, _ = ar_models
    gaussian, quantile = (load_model_file(models[k]) for k in ("gaussian", "quantile"))
    assert gaussian.data["loss"] == "gaussian" and gaussian.model.config.output_size == 2
    assert quantile.data["quantiles"] == [0.1, 0.5, 0.9] and quantile.model.config.output_size == 3


def test_predict_prints_the_levels_of_every_lead(ar_models, tmp_path):
    models, test = ar_models
    rows = pd.read_csv(test).iloc[:5].to_csv(index=False)
    result = CliRunner().invoke(app, ["predict", str(models["quantile"]), "--horizon", "2"], input=rows)
    code, stdout, err = result.exit_code, result.stdout, result.stderr
    assert code == 0, err
    frame = pd.read_csv(io.StringIO(stdout))
    assert list(frame.columns) == ["y+1", "y_p10+1", "y_p50+1", "y_p90+1", "y+2", "y_p10+2", "y_p50+2", "y_p90+2"]
    assert (frame["y_p10+2"] <= frame["y_p50+2"]).all() and (frame["y_p50+2"] <= frame["y_p90+2"]).all()


def test_evaluate_plot_draws_the_band(ar_models, tmp_path):
    pytest.importorskip("matplotlib")
    models, test = ar_models
    picture = tmp_path / "band.svg"
    code, _, err = invoke("evaluate", models["gaussian"], test, "--horizon", "6", "--plot", picture)
    assert code == 0, err
    assert "80% interval (p10-p90)" in picture.read_text()


def test_a_seasonal_quantile_model_gives_the_baselines_intervals_per_lead(tmp_path):
    """On the training file the baselines' intervals come from the training part: one set of levels per lead."""
    data = seasonal_csv(tmp_path / "s.csv", rows=300)
    out = tmp_path / "q.pt"
    code, _, err = invoke("train", data, "--target", "load", "-o", out, "--loss", "quantile", "--quantiles",
                          "0.05,0.25,0.5,0.75,0.95", "--max-steps", "5", "--hidden", "8", "--layers", "1",
                          "--window", "12", "--season", "12")
    assert code == 0, err
    code, stdout, err = invoke("evaluate", out, data, "--horizon", "6", "--json")
    assert code == 0, err
    figures = json.loads(stdout)
    assert [i["nominal"] for i in figures["intervals"]] == [0.9, 0.5]
    for name in ("model", "persistence", "seasonal_naive"):
        coverage = figures["horizons"]["6"][name]["coverage"]
        assert len(coverage) == 2 and coverage[0] >= coverage[1]  # the 90 % interval holds the 50 % one
    seq = load_model_file(out).data
    assert seq["quantiles"] == [0.05, 0.25, 0.5, 0.75, 0.95]


@pytest.mark.parametrize("args,needle", [
    (["--loss", "quantile", "--quantiles", "0,0.5,0.9"], "strictly between 0 and 1"),
    (["--loss", "quantile", "--quantiles", "0.1,0.5,1.5"], "strictly between 0 and 1"),
    (["--loss", "quantile", "--quantiles", "0.5,0.1,0.5"], "given twice"),
    (["--loss", "quantile", "--quantiles", "0.1,a"], "not a comma-separated list"),
    (["--quantiles", "0.1,0.5,0.9"], "needs --loss quantile"),
    (["--loss", "gaussian", "--quantiles", "0.1,0.9"], "needs --loss quantile"),
])
def test_bad_quantiles_are_one_line_exit_2_and_nothing_written(tmp_path, args, needle):
    data = seasonal_csv(tmp_path / "s.csv", rows=100)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = invoke("train", data, "-o", tmp_path / "m.pt", "--max-steps", "2", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --quantiles") and needle in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_feature_sequences_take_a_gaussian_loss_but_a_warm_start_keeps_the_outputs(tmp_path):
    """Regression: --init-from a point model with --loss gaussian would have fed 3 outputs to a 6-output loss."""
    from test_audio import write_npys

    frames = write_npys(tmp_path / "npys")
    small = ["--max-steps", "3", "--hidden", "8", "--layers", "1", "--window", "10", "-q"]
    point, gaussian = tmp_path / "point.pt", tmp_path / "gaussian.pt"
    assert invoke("train", frames, "-o", point, *small)[0] == 0
    code, _, err = invoke("train", frames, "-o", gaussian, "--loss", "gaussian", *small)
    assert code == 0, err
    assert load_model_file(gaussian).model.config.output_size == 6  # 3 features, a mean and a scale each
    code, _, err = invoke("train", frames, "-o", tmp_path / "warm.pt", "--init-from", point, "--loss", "gaussian", *small)
    assert code == 2 and err.count("\n") == 1 and "--init-from model was trained with --loss mse" in err, err
    assert not (tmp_path / "warm.pt").exists()
