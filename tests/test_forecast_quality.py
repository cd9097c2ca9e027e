"""Issue 12: series forecasts that start from persistence (the anchor), decode a season at once (the direct
head), and series defaults that train without tuning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bptt_cli.forecast import rollout
from bptt_cli.modelfile import read_payload
from bptt_cli.models import ModelConfig, RecurrentModel

SMALL = ["--hidden", "16", "--batch-size", "4", "--window", "24", "--threads", "1"]


def daily_csv(path: Path, days: int = 20, seed: int = 0) -> Path:
    """An hourly series with a daily cycle plus seeded noise, and an AR(1) wobble persistence can follow."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 24)
    wobble = np.zeros(len(t))
    for i in range(1, len(t)):
        wobble[i] = 0.8 * wobble[i - 1] + 0.3 * rng.standard_normal()
    frame = pd.DataFrame({"time": pd.date_range("2024-01-01", periods=len(t), freq="1h").astype(str),
                          "load": 10 + 3 * np.sin(2 * np.pi * t / 24) + wobble})
    frame.to_csv(path, index=False)
    return path


def untrained(leads: int, anchor: list[int]) -> RecurrentModel:
    torch.manual_seed(0)
    return RecurrentModel(ModelConfig(cell="lstm", tokens=False, input_size=3, output_size=2, hidden=8, layers=1,
                                      anchor=anchor, leads=leads)).eval()


@pytest.mark.parametrize("leads", [1, 3])
def test_an_untrained_anchored_model_forecasts_persistence_exactly(leads):
    model = untrained(leads, anchor=[2, 0])  # output 0 continues input 2, output 1 continues input 0
    first = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    known = torch.randn(5, 6, 3, generator=torch.Generator().manual_seed(2))
    predicted = rollout(model, model.init_state(5), first, known, [(0, 2), (1, 0)], 7)  # 7 > leads: blocks fed back
    assert predicted.shape == (5, 7, 2)
    expected = first[:, [2, 0]].unsqueeze(1).expand(-1, 7, -1)
    assert torch.equal(predicted, expected)


def test_without_an_anchor_the_decoder_starts_random():
    model = untrained(1, anchor=[])
    assert model.decoder.weight.abs().sum() > 0
    first = torch.zeros(2, 3)
    assert not torch.equal(rollout(model, model.init_state(2), first, torch.zeros(2, 0, 3), [], 1)[:, 0], first[:, :2])


def test_a_daily_cycle_is_forecast_below_both_baselines_after_a_short_training(tmp_path, run):
    data = daily_csv(tmp_path / "daily.csv")
    code, _, err = run("train", data, "-o", tmp_path / "m.pt", *SMALL, "--max-steps", "300", "--quiet")
    assert code == 0, err
    code, out, err = run("evaluate", tmp_path / "m.pt", data, "--horizon", "24", "--json")
    assert code == 0, err
    for horizon in ("1", "24"):
        figures = json.loads(out)["horizons"][horizon]
        assert figures["model"]["mase"] < figures["persistence"]["mase"], horizon
        assert figures["model"]["mase"] < figures["seasonal_naive"]["mase"], horizon


def test_the_model_file_keeps_the_anchor_and_the_season_of_leads(tmp_path, run):
    data = daily_csv(tmp_path / "daily.csv", days=8)
    code, _, err = run("train", data, "-o", tmp_path / "m.pt", *SMALL, "--max-steps", "2", "--quiet")
    assert code == 0, err
    config = read_payload(tmp_path / "m.pt")["model_config"]
    assert (config["anchor"], config["leads"]) == ([0], 24)  # hourly data: a season of 24 steps
    code, _, err = run("train", data, "-o", tmp_path / "one.pt", *SMALL, "--max-steps", "2", "--quiet",
                       "--anchor", "none", "--leads", "1")
    assert code == 0, err
    config = read_payload(tmp_path / "one.pt")["model_config"]
    assert (config["anchor"], config["leads"]) == ([], 1)


def test_a_model_file_from_before_the_anchor_evaluates_as_before(tmp_path, run):
    """Files written before anchors and direct heads lack both fields: they load as one-step, unanchored models."""
    data = daily_csv(tmp_path / "daily.csv", days=8)
    code, _, err = run("train", data, "-o", tmp_path / "m.pt", *SMALL, "--max-steps", "5", "--quiet",
                       "--anchor", "none", "--leads", "1")
    assert code == 0, err
    code, before, err = run("evaluate", tmp_path / "m.pt", data, "--horizon", "6", "--json")
    assert code == 0, err
    payload = read_payload(tmp_path / "m.pt")
    for name in ("anchor", "leads"):
        del payload["model_config"][name]
    torch.save(payload, tmp_path / "old.pt")
    code, after, err = run("evaluate", tmp_path / "old.pt", data, "--horizon", "6", "--json")
    assert code == 0, err
    assert json.loads(after)["horizons"] == json.loads(before)["horizons"]


def test_print_config_shows_the_series_defaults_and_text_keeps_its_own(tmp_path, run):
    code, out, _ = run("train", daily_csv(tmp_path / "daily.csv", days=3), "--print-config")
    assert code == 0
    for line in ("hidden: 64", "layers: 1", "window: 48", "epochs: 500", "patience: 20", "anchor: linear", "lr: 0.001",
                 "average: ema:0.99"):
        assert line in out.splitlines()
    code, out, _ = run("train", daily_csv(tmp_path / "daily.csv", days=3), "--print-config", "--optimizer", "nt-asgd")
    assert code == 0 and "average: null" in out.splitlines()  # nt-asgd averages its own weights
    code, out, _ = run("train", daily_csv(tmp_path / "d.csv", days=3), "--print-config", "--val-fraction", "0",
                       "--hidden", "32")
    assert "hidden: 32" in out.splitlines() and "patience: null" in out.splitlines()  # no tail to stop on
    (tmp_path / "t.txt").write_text("hello world\n" * 20)
    code, out, _ = run("train", tmp_path / "t.txt", "--print-config")
    assert code == 0
    for line in ("hidden: 256", "layers: 2", "window: 50", "epochs: 10", "patience: null", "dropout: 0.2"):
        assert line in out.splitlines()


def test_lead_weights_lean_on_the_near_leads_and_on_the_better_naive_reference():
    from bptt_cli.losses import LEAD_WEIGHT_POWER, OutputHead, lead_weights

    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.standard_normal((20000, 1)), axis=0)  # k-step changes have variance k
    weights = lead_weights([walk[:12000], walk[12000:]], 6)
    assert weights.shape == (6,) and weights.mean().item() == pytest.approx(1.0)
    np.testing.assert_allclose(weights.numpy() * np.arange(1, 7) ** LEAD_WEIGHT_POWER, weights[0].item(), rtol=0.1)
    assert lead_weights([walk], 1) is None and lead_weights([walk[:4]], 6) is None
    assert lead_weights([np.ones((50, 1))], 6) is None  # a target that never changes
    # persistence forecast of each lead: lead k adds about k ** (1 - power) of the first lead's to the loss
    origins = np.arange(100, 19000, 7)
    truth = torch.from_numpy(walk[origins[:, None] + np.arange(1, 7)[None, :], 0]).float()  # (N, 6)
    last = torch.from_numpy(walk[origins, :]).float().expand(-1, 6)
    per_lead = [OutputHead().sums(last[:, [k]], truth[:, [k]], weights[[k]])[0].item() for k in range(6)]
    np.testing.assert_allclose(np.array(per_lead) * np.arange(1, 7) ** (LEAD_WEIGHT_POWER - 1), per_lead[0],
                               rtol=0.15)
    # a season repeated with little noise: the leads past the first are all as hard as seasonal naive makes them,
    # so they weigh alike instead of the season's last lead taking all the weight
    cycle = np.sin(2 * np.pi * np.arange(6000) / 12)[:, None] + 0.05 * rng.standard_normal((6000, 1))
    plain, seasonal = lead_weights([cycle], 12).numpy(), lead_weights([cycle], 12, season=12).numpy()
    assert plain[-1] / plain.sum() > 0.99
    assert seasonal[-1] / seasonal.sum() < 0.1
    np.testing.assert_allclose(seasonal[3:], seasonal[-1], rtol=0.2)


def test_inputs_nobody_knows_ahead_get_the_direct_head_and_known_ones_a_rollout(tmp_path, run):
    """The direct head reads nothing after the origin, so a temperature nobody forecasts is never guessed;
    inputs marked --future are read, so a model whose other inputs are all known ahead is rolled out."""
    data = daily_csv(tmp_path / "daily.csv", days=8)
    frame = pd.read_csv(data)
    frame["temp"] = 20 + np.cos(np.arange(len(frame)) / 5)
    frame.to_csv(data, index=False)
    for extra, leads in (([], 24), (["--future", "temp"], 1)):
        out = tmp_path / f"m{leads}.pt"
        code, _, err = run("train", data, "--target", "load", "-o", out, *SMALL, "--max-steps", "2", "--quiet",
                           *extra)
        assert code == 0, err
        assert read_payload(out)["model_config"]["leads"] == leads
    code, stdout, err = run("generate", tmp_path / "m24.pt", "--horizon", "24")  # no --future file needed
    assert code == 0, err
    assert len(pd.read_csv(pd.io.common.StringIO(stdout))) == 24
    code, _, err = run("generate", tmp_path / "m24.pt", "--horizon", "30")  # past the head: it would guess
    assert code == 2 and "inputs temp are not forecast" in err


@pytest.mark.parametrize("extra, averaged", [([], True), (["--average", "none"], False)])
def test_a_series_run_averages_its_weights_by_default(tmp_path, run, extra, averaged):
    """Regression: the series default ema:0.99 reached --print-config but not the run."""
    out = tmp_path / "m.pt"
    code, _, err = run("train", daily_csv(tmp_path / "d.csv", days=6), "-o", out, "--max-steps", "4", *extra)
    assert code == 0, err
    saved = torch.load(f"{out}.ckpt", weights_only=True)["training"]
    assert (saved["average"] is not None) == averaged


@pytest.mark.parametrize("extra, lr", [([], 1e-3), (["--lr", "0.004"], 4e-3), (["--optimizer", "sgd"], 2e-3)])
def test_a_series_run_takes_the_series_learning_rate_unless_told_or_not_adam(tmp_path, run, extra, lr):
    out, metrics = tmp_path / "m.pt", tmp_path / "m.jsonl"
    code, _, err = run("train", daily_csv(tmp_path / "d.csv", days=6), "-o", out, "--max-steps", "4",
                       "--metrics", metrics, "--log-every", "2", *extra)
    assert code == 0, err
    rates = {json.loads(line).get("lr") for line in metrics.read_text().splitlines()} - {None}
    assert rates == {lr}


def test_every_option_the_series_kind_defaults_is_one_train_reads():
    import inspect

    from bptt_cli.commands.train import train
    from bptt_cli.kinds.series import SeriesKind

    options = set(inspect.signature(train).parameters) - {"ctx"}
    found = SeriesKind().defaults({"val_fraction": 0.1}, options)
    assert found and set(found) <= options


def test_a_file_that_extends_the_training_rows_is_scored_on_its_new_rows_only(tmp_path, run):
    """Trained on the first 600 rows and evaluated on all 720: the 120 rows training never read are scored
    (before, every row was, the training rows too, so a benchmark of the held-out tail was in-sample); a file
    whose first rows differ is scored whole."""
    whole = daily_csv(tmp_path / "whole.csv", days=30)
    lines = whole.read_text().splitlines(keepends=True)
    (tmp_path / "part.csv").write_text("".join(lines[:601]))
    code, _, err = run("train", tmp_path / "part.csv", "-o", tmp_path / "m.pt", *SMALL, "--max-steps", "2", "--quiet")
    assert code == 0, err
    code, out, err = run("evaluate", tmp_path / "m.pt", whole, "--horizon", "24", "--json")
    assert code == 0, err
    figures = json.loads(out)
    assert figures["horizons"]["1"]["points"] == figures["horizons"]["24"]["points"] == 120  # origins 24 apart
    assert "whole.csv extends the training data: scoring its 120 new row(s)" in err
    other = daily_csv(tmp_path / "other.csv", days=30, seed=5)
    code, out, err = run("evaluate", tmp_path / "m.pt", other, "--json")
    assert code == 0, err
    assert json.loads(out)["horizons"]["1"]["points"] == 720 - 24  # from the first origin a season in
