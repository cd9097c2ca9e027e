"""Show, don't tell: the epoch sparklines of a training run, and the pictures behind --plot on
gradcheck, generate and evaluate."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from bptt_cli.render import plotting
from bptt_cli.cli import app
from bptt_cli.render.sparkline import BLOCKS
from bptt_cli.render.training import TrainReporter
from conftest import TINY
from test_plot import png_size

GRADCHECK = ["gradcheck", "--window", "8", "--segment", "30", "--windows", "1,5,10"]  # a fresh model, quick
SERIES = ["--hidden", "8", "--layers", "1", "--batch-size", "4", "--window", "24", "--max-steps", "6"]


# --- the epoch summary ---------------------------------------------------------------------------------


def feed(reporter: TrainReporter, losses=(4.0, 3.0, 2.0, 1.0), norms=(0.1, 1.0, 10.0, 100.0)) -> None:
    """Log intervals every 10 updates: the loss falls by equal steps while the norm grows by decades."""
    for i, (loss, norm) in enumerate(zip(losses, norms), 1):
        reporter.log({"step": 10 * i, "epoch": 1, "train_loss": loss, "grad_norm_mean": norm, "grad_norm_max": 2 * norm,
                      "clip_share": 0.0, "lr": 0.002, "tokens_per_second": 1000.0, "layer_grad_norms": {"decoder": norm}})


def validation(**extra) -> dict:
    return {"step": 40, "epoch": 1, "val_loss": 1.5, "best": True, **extra}


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


def test_epoch_line_on_a_plain_terminal_is_exact_ascii(capsys, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr("bptt_cli.render.sparkline.on_terminal", lambda: True)  # someone watches: sparklines
    reporter = TrainReporter(unit="char")
    feed(reporter)
    reporter.validation(validation(val_perplexity=math.exp(1.5), val_bits_per_token=1.5 / math.log(2)))
    err = capsys.readouterr().err
    assert last_line(err) == (
        "validation after epoch 1 (step 40): loss 1.5, perplexity 4.482, bits/char 2.164 (best of this run, saved); "
        "train loss @*-_ 1; grad norm (pre-clip) _-*@ 100 over 4 intervals to update 40"
    )
    assert err.isascii()


def test_epoch_line_without_a_terminal_gives_first_min_and_last(capsys):
    reporter = TrainReporter(unit="char")  # stderr is captured: no terminal
    feed(reporter, losses=(4.0, 3.0, 0.5, 1.0))
    reporter.validation(validation(val_perplexity=math.exp(1.5), val_bits_per_token=1.5 / math.log(2)))
    assert last_line(capsys.readouterr().err) == (
        "validation after epoch 1 (step 40): loss 1.5, perplexity 4.482, bits/char 2.164 (best of this run, saved); "
        "train loss first 4, min 0.5, last 1; grad norm (pre-clip) first 0.1, min 0.1, last 100 "
        "over 4 intervals to update 40"
    )


def test_series_epoch_line_speaks_of_accuracy_not_perplexity(capsys, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    reporter = TrainReporter(unit="step")
    feed(reporter, losses=(1.0, 1.0), norms=(0.5, 0.5))
    reporter.validation(validation(val_accuracy=0.75, best=False))
    assert last_line(capsys.readouterr().err) == (
        "validation after epoch 1 (step 40): loss 1.5, accuracy 0.75; "
        "train loss first 1, min 1, last 1; grad norm (pre-clip) first 0.5, min 0.5, last 0.5 "
        "over 2 intervals to update 40"
    )


def test_epoch_table_on_a_terminal_draws_block_sparklines(capsys, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    for module in ("bptt_cli.render.console", "bptt_cli.render.training"):
        monkeypatch.setattr(f"{module}.plain", lambda: False)  # as if stderr were a terminal
    reporter = TrainReporter(unit="char")
    feed(reporter)
    capsys.readouterr()
    reporter.validation(validation(val_perplexity=math.exp(1.5), val_bits_per_token=1.5 / math.log(2)))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "epoch 1 (step 40)" in captured.err and "4 intervals to update 40" in captured.err
    assert "█▆▃▁" in captured.err and "▁▃▆█" in captured.err  # loss falling, norm rising by decades
    assert "validation perplexity" in captured.err and "4.482" in captured.err


def test_training_prints_the_trend_on_stderr_only(tmp_path: Path, tiny_text: Path, run):
    code, stdout, stderr = run("train", tiny_text, "-o", tmp_path / "m.pt", "--epochs", "2", "--log-every", "2",
                               "--json", *TINY)
    assert code == 0, stderr
    assert set(json.loads(stdout)) >= {"steps", "best_val_loss"}  # stdout: the JSON object and nothing else
    epochs = [line for line in stderr.splitlines() if line.startswith("validation after epoch")]
    assert len(epochs) == 2 and all("train loss " in line and "grad norm (pre-clip) " in line for line in epochs)
    assert stderr.isascii()


def test_without_a_terminal_the_trend_is_the_logged_numbers(tmp_path: Path, tiny_text: Path, run):
    """No sparkline in a pipe: the epoch line's first, min and last are the step lines' own figures."""
    code, _, stderr = run("train", tiny_text, "-o", tmp_path / "m.pt", "--epochs", "2", "--log-every", "2", *TINY)
    assert code == 0, stderr
    losses = [float(v) for v in re.findall(r"^step=.* train_loss=(\S+) ", stderr, re.M)]
    norms = [float(v) for v in re.findall(r"^step=.* grad_norm_mean=(\S+) ", stderr, re.M)]
    last_epoch = [line for line in stderr.splitlines() if line.startswith("validation after epoch 2")][0]
    shown = re.search(r"train loss first (\S+), min (\S+), last (\S+); grad norm \(pre-clip\) "
                      r"first (\S+), min (\S+), last (\S+) over", last_epoch)
    assert shown, last_epoch
    figures = [float(v) for v in shown.groups()]
    expected = [losses[0], min(losses), losses[-1], norms[0], min(norms), norms[-1]]
    assert figures == pytest.approx(expected, rel=1e-3)
    assert not set(stderr) & set(BLOCKS)
    assert not re.search(r"[_.:\-=+*#%@!]{4,}", last_epoch)  # no run of ASCII sparkline levels either


# --- gradcheck --plot ----------------------------------------------------------------------------------


def test_gradcheck_plot_is_drawn_with_json_on_stdout(tmp_path: Path, run):
    pytest.importorskip("matplotlib")
    out = tmp_path / "flow.png"
    code, stdout, stderr = run(*GRADCHECK, "--plot", out, "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["passed"] is True
    assert png_size(out) == (1200, 500)
    picture = out.read_bytes()
    assert run(*GRADCHECK, "--plot", out, "--json", "--model", "gru")[0] == 0
    assert out.read_bytes() != picture and png_size(out) == (1200, 500)  # another model, another picture


def test_gradcheck_plot_is_drawn_when_a_check_fails(tmp_path: Path, run):
    pytest.importorskip("matplotlib")
    out = tmp_path / "flow.png"
    code, _, stderr = run(*GRADCHECK, "--plot", out, "--tolerance", "1e-300")
    assert code == 1 and "FAILED" in stderr
    assert png_size(out) == (1200, 500)


@pytest.mark.parametrize("name, message", [("flow.jpg", ".png or .svg"), ("nodir/flow.png", "existing directory")])
def test_gradcheck_bad_plot_path_fails_before_any_check(tmp_path: Path, run, monkeypatch, name, message):
    monkeypatch.setattr("bptt_cli.gradcheck.run_gradcheck", lambda *a: pytest.fail("the checks ran"))
    code, stdout, stderr = run(*GRADCHECK, "--plot", tmp_path / name)
    assert code == 2 and stdout == "" and stderr.count("\n") == 1
    assert "--plot" in stderr and message in stderr


def test_missing_matplotlib_is_one_line_before_any_check(tmp_path: Path, run, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets when it is not installed
    monkeypatch.setattr("bptt_cli.gradcheck.run_gradcheck", lambda *a: pytest.fail("the checks ran"))
    code, stdout, stderr = run(*GRADCHECK, "--plot", tmp_path / "flow.png")
    assert code == 2 and stdout == ""
    assert stderr == f"error: {plotting.MISSING_EXTRA}\n" and "pip install 'bptt[plot]'" in stderr


# --- forecasts: generate --plot and evaluate --plot ------------------------------------------------------


def sine_csv(path: Path, phase: float = 0.0, rows: int = 400) -> Path:
    """An hourly sine with a daily period, around 50 (units of load), with a timestamp column."""
    times = pd.date_range("2024-01-01", periods=rows, freq="h")
    load = 50 + 10 * np.sin(2 * np.pi * np.arange(rows) / 24 + phase)
    pd.DataFrame({"timestamp": times.astype(str), "load": load}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def sine(tmp_path_factory) -> tuple[Path, Path]:
    """(model, data): a tiny LSTM trained for a few updates on the sine; its season is a day."""
    folder = tmp_path_factory.mktemp("sine")
    data, model = sine_csv(folder / "sine.csv"), folder / "sine.pt"
    result = CliRunner().invoke(app, ["train", str(data), "--target", "load", "-o", str(model), *SERIES])
    assert result.exit_code == 0, result.stderr
    return model, data


def test_generate_plot_draws_the_forecast_and_leaves_the_csv_alone(tmp_path: Path, run, sine):
    pytest.importorskip("matplotlib")
    model, _ = sine
    out = tmp_path / "forecast.png"
    code, with_plot, stderr = run("generate", model, "--horizon", "12", "--plot", out)
    assert code == 0, stderr
    assert with_plot == run("generate", model, "--horizon", "12")[1]  # stdout: the same CSV
    assert png_size(out) == (1200, 380)  # one target: 120 + 260 px
    assert f"wrote {out}" in stderr


def test_evaluate_plot_draws_the_last_window_and_changes_with_the_data(tmp_path: Path, run, sine):
    pytest.importorskip("matplotlib")
    model, data = sine
    out = tmp_path / "eval.png"
    code, stdout, stderr = run("evaluate", model, data, "--horizon", "12", "--plot", out, "--json")
    assert code == 0, stderr
    assert "plot" not in json.loads(stdout) and set(json.loads(stdout)["horizons"]) == {"1", "12"}
    assert png_size(out) == (1200, 380)
    picture = out.read_bytes()
    assert run("evaluate", model, data, "--horizon", "12", "--plot", out)[0] == 0
    assert out.read_bytes() == picture  # the same data draws the same picture...
    other = sine_csv(tmp_path / "other.csv", phase=1.0)
    assert run("evaluate", model, other, "--horizon", "12", "--plot", out)[0] == 0
    assert out.read_bytes() != picture and png_size(out) == (1200, 380)  # ...and other data another one


def test_the_evaluate_picture_holds_the_real_last_window(tmp_path: Path, sine):
    """Context, actual values and persistence come from the data, in original units and times."""
    from bptt_cli.modelfile import load_model_file
    from bptt_cli.kinds import KINDS, Request

    model, _ = sine
    data = sine_csv(tmp_path / "other.csv", phase=1.0)
    picture = KINDS["series"].evaluate(load_model_file(model), data, torch.device("cpu"), Request(horizon=12))["plot"]
    frame = pd.read_csv(data, parse_dates=["timestamp"])
    end = len(picture["context_values"])
    assert end == 36 and picture["target_names"] == ["load"]  # three horizons of context
    origin = frame.index[frame["timestamp"] == picture["context_time"][-1]][0]
    assert origin + 12 < len(frame) <= origin + 24  # the last whole 12-step window
    np.testing.assert_allclose(picture["context_values"][:, 0], frame["load"][origin - 35 : origin + 1])
    np.testing.assert_allclose(picture["actual_values"][:, 0], frame["load"][origin + 1 : origin + 13])
    np.testing.assert_allclose(picture["persistence_values"][:, 0], frame["load"][origin])
    assert picture["forecast_values"].shape == (12, 1)
    assert list(pd.to_datetime(picture["forecast_time"])) == list(frame["timestamp"][origin + 1 : origin + 13])


def test_evaluate_bad_plot_path_fails_before_scoring(tmp_path: Path, run, sine, monkeypatch):
    monkeypatch.setattr("bptt_cli.kinds.series.SeriesKind.evaluate", lambda *a: pytest.fail("scored"))
    model, data = sine
    code, stdout, stderr = run("evaluate", model, data, "--plot", tmp_path / "nodir" / "eval.png")
    assert code == 2 and stdout == "" and stderr.count("\n") == 1 and "--plot" in stderr


@pytest.mark.parametrize("command", ["generate", "evaluate"])
def test_plot_on_a_text_model_is_one_line(tmp_path: Path, run, tiny_model, tiny_text, command):
    args = [tiny_model] if command == "generate" else [tiny_model, tiny_text]
    code, stdout, stderr = run(command, *args, "--plot", tmp_path / "x.png")
    assert code == 2 and stdout == "" and stderr.count("\n") == 1
    assert "--plot" in stderr and "series" in stderr
    assert not (tmp_path / "x.png").exists()
