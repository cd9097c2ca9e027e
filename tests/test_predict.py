"""bptt predict: a prediction per record as it arrives, one recurrent step each, the state carried."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from bptt_cli import forecast, kinds
from bptt_cli.modelfile import load_model_file
from test_series import seasonal_csv

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def series_model(tmp_path, run):
    data = seasonal_csv(tmp_path / "s.csv", rows=120)
    out = tmp_path / "s.pt"
    code, _, err = run("train", data, "-o", out, "--max-steps", "3", "--hidden", "8", "--layers", "1", "--window", "12")
    assert code == 0, err
    return out, data


def one_step_forecasts(model_path: Path, data: Path) -> np.ndarray:
    """What evaluate computes: one pass over every row from a zero state, decoded, in original units."""
    file = load_model_file(model_path)
    kind = kinds.KINDS["series"]
    seq = kind.read(data, kind.Options(), file.data)
    from bptt_cli.models import next_step
    from bptt_cli.series import Normaliser

    norm = Normaliser.from_dict(file.data["norm"])
    x = torch.from_numpy(seq.frames(norm, 0)).unsqueeze(1)
    with torch.no_grad():
        out, _ = file.model.recur(x, file.model.init_state(1))
        trail = forecast.trail_at(file.model, x[:, 0], np.arange(len(x)))  # a linear start's values
        predicted = next_step(forecast.decoded(file.model, out[:, 0], x[:, 0], trail), file.model.config)
    predicted = predicted.double().numpy()
    return norm.invert(predicted, seq.targets)


def test_each_row_gets_the_forecast_evaluate_makes_from_the_same_rows(series_model, run):
    model, data = series_model
    lines = data.read_text().splitlines()[:41]
    code, stdout, err = run_with_input(run, "\n".join(lines) + "\n", "predict", model, "--format", "json")
    assert code == 0, err
    got = np.array([[r["load"], r["temp"]] for r in map(json.loads, stdout.splitlines())])
    np.testing.assert_allclose(got, one_step_forecasts(model, data)[:40], rtol=1e-6, atol=1e-6)


def run_with_input(run, text: str, *args):
    from typer.testing import CliRunner

    from bptt_cli.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], input=text)
    return result.exit_code, result.stdout, result.stderr


def test_the_state_carried_over_two_invocations_equals_one(tmp_path, series_model, run):
    model, data = series_model
    lines = data.read_text().splitlines()
    state = tmp_path / "stream.state"
    _, first, _ = run_with_input(run, "\n".join(lines[:21]) + "\n", "predict", model, "--state", state)
    _, second, err = run_with_input(run, "\n".join(lines[21:31]) + "\n", "predict", model, "--state", state)
    _, whole, _ = run_with_input(run, "\n".join(lines[:31]) + "\n", "predict", model)
    assert first.splitlines() + second.splitlines()[1:] == whole.splitlines(), err
    assert len(whole.splitlines()) == 31  # the header, then a line per row


def test_a_state_file_of_another_model_is_refused(tmp_path, series_model, run):
    model, data = series_model
    state = tmp_path / "stream.state"
    run_with_input(run, "\n".join(data.read_text().splitlines()[:5]) + "\n", "predict", model, "--state", state)
    other = tmp_path / "other.pt"
    code, _, _ = run("train", data, "-o", other, "--max-steps", "2", "--hidden", "8", "--layers", "1", "--window", "12",
                     "--seed", "3")
    assert code == 0
    code, stdout, err = run_with_input(run, data.read_text().splitlines()[0] + "\n", "predict", other, "--state", state)
    assert code == 2 and "belongs to another model file" in err and stdout == ""


@pytest.mark.parametrize("rule,code,lines_out", [("skip", 0, 3), ("stop", 2, 2)])
def test_bad_rows_are_named_and_skipped_or_stop_the_stream(series_model, run, rule, code, lines_out):
    model, data = series_model
    header, *rows = data.read_text().splitlines()
    bad = rows[1].split(",")
    bad[1] = "lots"
    text = "\n".join([header, rows[0], ",".join(bad), rows[2]]) + "\n"
    got, stdout, err = run_with_input(run, text, "predict", model, "--on-bad-row", rule)
    assert got == code and len(stdout.splitlines()) == lines_out  # the header and the good rows before a stop
    assert err.startswith("error: row 3: column 'load' is not a number ('lots')") and "Traceback" not in err


def test_a_time_going_backwards_is_a_bad_row(series_model, run):
    model, data = series_model
    header, *rows = data.read_text().splitlines()
    code, stdout, err = run_with_input(run, "\n".join([header, rows[1], rows[0]]) + "\n", "predict", model)
    assert code == 0 and "row 3: time " in err and "does not come after" in err and len(stdout.splitlines()) == 2


def test_text_lines_are_scored_and_add_up_to_evaluate(tmp_path, tiny_model, tiny_text, run):
    text = tiny_text.read_text()
    lines = tmp_path / "lines.txt"
    lines.write_text(text[: text.rindex("\n") + 1])  # whole lines
    code, stdout, err = run_with_input(run, lines.read_text(), "predict", tiny_model, "--format", "json")
    assert code == 0, err
    scored = [json.loads(line) for line in stdout.splitlines()]
    assert len(scored) == lines.read_text().count("\n")
    code, out, _ = run("evaluate", tiny_model, lines, "--json")
    figures = json.loads(out)
    total_bits = figures["loss"] * figures["tokens"] / np.log(2)
    assert sum(s["tokens"] for s in scored) == figures["tokens"]
    assert sum(s["surprise_bits"] for s in scored) == pytest.approx(total_bits, rel=1e-4)


def test_predict_really_streams(series_model):
    """A subprocess fed one row at a time answers each row before it sees the next."""
    model, data = series_model
    header, *rows = data.read_text().splitlines()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "bptt_cli", "predict", str(model)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in child.stdout], daemon=True).start()

    def next_line() -> str:
        try:
            return lines.get(timeout=300)  # generous: torch's import on a busy machine
        except queue.Empty:
            raise AssertionError("no forecast came back for a row while the stream stayed open") from None

    try:
        child.stdin.write(header + "\n")
        for k, row in enumerate(rows[:3]):
            child.stdin.write(row + "\n")
            child.stdin.flush()  # the next row is written only after this one's forecast was read
            if k == 0:
                assert next_line().startswith("time,load,temp")
            forecast_time = rows[k + 1].split(",")[0]  # the forecast is for the next row's time
            assert next_line().startswith(forecast_time + ",")
    finally:
        child.stdin.close()
        child.wait(timeout=300)
    assert child.returncode == 0


def test_a_feature_model_predicts_the_next_frame_of_each_frame_in_a_file(tmp_path, run):
    from test_audio import write_npys

    folder = write_npys(tmp_path / "clips", count=3, frames=20)
    out = tmp_path / "f.pt"
    code, _, err = run("train", folder, "-o", out, "--max-steps", "2", "--hidden", "8", "--layers", "1", "--window", "5")
    assert code == 0, err
    frames = sorted(folder.glob("*.npy"))[0]
    code, stdout, err = run("predict", out, frames, "--format", "json")
    assert code == 0, err
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert len(rows) == len(np.load(frames)) and set(rows[0]) == {"f0", "f1", "f2"}
    code, _, err = run("predict", out)
    assert code == 2 and "reads its frames from a file" in err


def test_a_multi_step_forecast_with_inputs_nobody_forecasts_needs_assume_seasonal(tmp_path, run):
    """Regression: predict --horizon N silently reused last season's temperature, where generate refuses."""
    data = seasonal_csv(tmp_path / "s.csv", rows=120)
    model = tmp_path / "load.pt"
    code, _, err = run("train", data, "-o", model, "--target", "load", "--max-steps", "3", "--hidden", "8",
                       "--layers", "1", "--window", "12", "--leads", "1")  # rolled out (a direct head reads no future)
    assert code == 0, err
    rows = "\n".join(data.read_text().splitlines()[:21]) + "\n"
    code, stdout, err = run_with_input(run, rows, "predict", model, "--horizon", "3")
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and "inputs temp are not forecast" in err and "--assume-seasonal" in err
    code, stdout, err = run_with_input(run, rows, "predict", model, "--horizon", "3", "--assume-seasonal")
    assert code == 0, err
    assert "--assume-seasonal: inputs temp are not forecast" in err and len(stdout.splitlines()) == 21
    code, stdout, err = run_with_input(run, rows, "predict", model)  # one step reads only the rows given
    assert code == 0 and "temp" not in err and len(stdout.splitlines()) == 21
