"""``bptt export``: ONNX and .pt2 equal bptt's model over two windows with the state carried, the sidecar says how
to feed them, and bad input fails in one line with nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SAMPLE_TEXT
from typer.testing import CliRunner

from bptt_cli import __version__
from bptt_cli.cli import app
from bptt_cli.modelfile import load_model_file

CELLS = ("lstm", "gru", "rnn")
KINDS = ("text", "series")
TINY = ["--hidden", "12", "--layers", "2", "--batch-size", "2", "--window", "8", "--max-steps", "2", "--quiet"]


def invoke(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """One tiny model per cell and kind, trained for 2 steps through the CLI."""
    root = tmp_path_factory.mktemp("export-models")
    text = root / "tiny.txt"
    text.write_text(SAMPLE_TEXT.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    rng = np.random.default_rng(0)
    t = np.arange(200)
    series = root / "load.csv"
    pd.DataFrame({
        "time": pd.date_range("2024-01-01", periods=len(t), freq="30min").astype(str),
        "load": 10 + 3 * np.sin(2 * np.pi * t / 12) + 0.1 * rng.standard_normal(len(t)),
        "temp": 20 + np.cos(2 * np.pi * t / 12) + 0.1 * rng.standard_normal(len(t)),
    }).to_csv(series, index=False)
    made = {}
    for kind, data, extra in (("text", text, ["--embed", "8"]), ("series", series, ["--calendar", "none", "--anchor", "last"])):
        for cell in CELLS:
            out = root / f"{kind}-{cell}.pt"
            code, _, err = invoke("train", data, "-o", out, "--model", cell, *TINY, *extra)
            assert code == 0, err
            made[kind, cell] = out
    return made


@pytest.fixture
def onnx_extra():
    pytest.importorskip("onnx", reason="the export extra is not installed: pip install 'bptt[export]'")
    pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install 'bptt[export]'")
    return pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'bptt[export]'")


def _windows_against_bptt(model_path: Path, run, names: list[str], windows=(9, 1), batch: int = 2) -> float:
    """Our own check, independent of the command's: other window sizes (one of a single step), another batch."""
    model = load_model_file(model_path).model
    generator = torch.Generator().manual_seed(1)
    config = model.config
    shape = (sum(windows), batch) if config.tokens else (sum(windows), batch, config.input_size)
    x = (torch.randint(0, config.input_size, shape, generator=generator) if config.tokens
         else torch.randn(shape, generator=generator))
    ours, theirs = model.init_state(batch), [s.numpy() for s in model.init_state(batch)]
    worst, start = 0.0, 0
    for steps in windows:
        window = x[start:start + steps]
        start += steps
        with torch.no_grad():
            y, ours = model(window, ours)
        y_exported, *theirs = run(dict(zip(names, [window.numpy(), *theirs])))
        assert y_exported.shape == tuple(y.shape)
        for expected, got in zip((y, *ours), (y_exported, *theirs)):
            worst = max(worst, float(np.abs(expected.numpy() - got).max()))
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cell", CELLS)
def test_onnx_equals_bptt_over_two_windows_with_the_state_carried(models, onnx_extra, tmp_path, kind, cell):
    import onnx

    out = tmp_path / "model.onnx"
    code, stdout, err = invoke("export", models[kind, cell], "-o", out, "--json")
    assert code == 0, err
    record = json.loads(stdout)
    assert record["max_abs_diff"] <= 1e-5 and record["passed"] and record["windows"] == [7, 5]
    assert len(err.strip().splitlines()) == 1 and "max abs diff" in err and "state carried" in err
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert sidecar["parity"]["max_abs_diff"] == record["max_abs_diff"]
    session = onnx_extra.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [i["name"] for i in sidecar["inputs"]]
    assert [i.name for i in session.get_inputs()] == names
    assert [o.name for o in session.get_outputs()] == [o["name"] for o in sidecar["outputs"]]
    assert session.get_inputs()[0].shape[:2] == ["time", "batch"]  # dynamic axes, named
    assert [i.shape for i in session.get_inputs()[1:]] == [[2, "batch", 12]] * (2 if cell == "lstm" else 1)
    assert max(o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert _windows_against_bptt(models[kind, cell], lambda feed: session.run(None, feed), names) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("kind, cell", [("text", "lstm"), ("series", "gru"), ("text", "rnn"), ("series", "lstm")])
def test_pt2_equals_bptt_over_two_windows_with_the_state_carried(models, tmp_path, kind, cell):
    out = tmp_path / "model.pt2"
    code, stdout, err = invoke("export", models[kind, cell], "-o", out, "--json")
    assert code == 0, err
    assert json.loads(stdout)["max_abs_diff"] <= 1e-5
    program = torch.export.load(str(out)).module()

    def run(feed: dict) -> list:
        with torch.no_grad():
            return [t.numpy() for t in program(*(torch.from_numpy(a) for a in feed.values()))]

    names = [i["name"] for i in json.loads((tmp_path / "model.pt2.json").read_text())["inputs"]]
    assert _windows_against_bptt(models[kind, cell], run, names) <= 1e-5


def test_the_sidecar_of_a_text_model_holds_its_tokenizer_names_shapes_and_state_layout(models, tmp_path):
    out = tmp_path / "text.pt2"
    assert invoke("export", models["text", "lstm"], "-o", out)[0] == 0
    sidecar = json.loads((tmp_path / "text.pt2.json").read_text())
    file = load_model_file(models["text", "lstm"])
    vocab = file.tokenizer.size
    assert sidecar["format"] == "bptt-export" and sidecar["bptt_version"] == __version__
    assert sidecar["kind"] == "text" and sidecar["export_format"] == "pt2" and sidecar["file"] == "text.pt2"
    assert sidecar["data"]["tokenizer"] == file.tokenizer.to_dict()
    assert sidecar["inputs"] == [
        {"name": "x", "shape": ["time", "batch"], "dtype": "int64"},
        {"name": "h", "shape": [2, "batch", 12], "dtype": "float32"},
        {"name": "c", "shape": [2, "batch", 12], "dtype": "float32"},
    ]
    assert sidecar["outputs"][0] == {"name": "y", "shape": ["time", "batch", vocab], "dtype": "float32"}
    assert [o["name"] for o in sidecar["outputs"]] == ["y", "h_next", "c_next"]
    assert sidecar["state"]["parts"] == ["h", "c"] and sidecar["state"]["initial"] == "zeros"


def test_the_sidecar_of_a_series_model_holds_its_normalisation_and_columns(models, tmp_path):
    out = tmp_path / "series.pt2"
    assert invoke("export", models["series", "gru"], "-o", out)[0] == 0
    sidecar = json.loads((tmp_path / "series.pt2.json").read_text())
    file = load_model_file(models["series", "gru"])
    data = sidecar["data"]
    assert sidecar["kind"] == "series" and data["task"] == "forecast"
    assert data["normalisation"] == {"columns": ["load", "temp"], **file.data["norm"]}
    assert data["feature_columns"] == ["load", "temp"] and data["target_columns"] == ["load", "temp"]
    assert sidecar["inputs"][0] == {"name": "x", "shape": ["time", "batch", 2], "dtype": "float32"}
    assert [i["name"] for i in sidecar["inputs"]] == ["x", "h"]  # GRU: one state part
    assert sidecar["state"]["shape"] == [2, "batch", 12]


def test_the_sidecar_says_how_calendar_inputs_are_computed(tmp_path):
    series = tmp_path / "load.csv"
    t = np.arange(200)
    pd.DataFrame({"time": pd.date_range("2024-01-01", periods=len(t), freq="30min").astype(str),
                  "load": 10 + 3 * np.sin(2 * np.pi * t / 48)}).to_csv(series, index=False)
    model, out = tmp_path / "m.pt", tmp_path / "m.pt2"
    assert invoke("train", series, "-o", model, "--calendar", "hour", "--anchor", "last", *TINY)[0] == 0
    assert invoke("export", model, "-o", out)[0] == 0
    data = json.loads((tmp_path / "m.pt2.json").read_text())["data"]
    assert data["feature_columns"] == ["load", "hour_sin", "hour_cos"] and data["target_columns"] == ["load"]
    assert data["calendar"] == {"time_column": "time", "hour_sin": "sin(2 * pi * (seconds since midnight) / 86400)",
                                "hour_cos": "cos(2 * pi * (seconds since midnight) / 86400)"}


def test_a_second_export_replaces_the_first(models, tmp_path):
    out = tmp_path / "m.pt2"
    assert invoke("export", models["text", "gru"], "-o", out)[0] == 0
    code, _, err = invoke("export", models["text", "rnn"], "-o", out)
    assert code == 0, err
    assert json.loads((tmp_path / "m.pt2.json").read_text())["model_file"] == "text-rnn.pt"


def test_a_broken_state_carry_fails_the_parity_check_and_leaves_nothing(models, tmp_path, monkeypatch):
    """An exporter that drops the carried state (pytorch#16025) matches on the first window only: exit 1."""
    from bptt_cli import export

    forward = export.StatefulStep.forward
    monkeypatch.setattr(export.StatefulStep, "forward",
                        lambda self, x, *state: forward(self, x, *(torch.zeros_like(s) for s in state)))
    out = tmp_path / "m.pt2"
    code, _, err = invoke("export", models["series", "lstm"], "-o", out)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "differs from bptt's" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_a_linear_start_exports_with_its_last_values_carried(tmp_path, fmt, request):
    """The default series model adds a linear autoregression on its last values: the export carries them as the
    state part ``recent`` (NaN at first) and, run over a series in three windows, gives bptt's own forecasts
    from every row (the series is longer than the lags, so the oldest values leave ``recent``)."""
    if fmt == "onnx":
        request.getfixturevalue("onnx_extra")
    from bptt_cli import export, forecast, kinds
    from bptt_cli.series import Normaliser

    series = tmp_path / "load.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"load": np.sin(np.arange(120) / 4) + 0.1 * rng.standard_normal(120)}).to_csv(series, index=False)
    assert invoke("train", series, "-o", tmp_path / "m.pt", *TINY)[0] == 0
    code, _, err = invoke("export", tmp_path / "m.pt", "-o", tmp_path / f"m.{fmt}")
    assert code == 0, err
    file = load_model_file(tmp_path / "m.pt")
    model = file.model.float().eval()
    assert 2 <= model.config.linear_lags < 50
    sidecar = json.loads((tmp_path / f"m.{fmt}.json").read_text())
    assert sidecar["state"]["recent"]["shape"] == ["batch", model.config.linear_lags, 1]
    kind = kinds.KINDS["series"]
    x = torch.from_numpy(kind.read(series, kind.Options(), file.data).frames(Normaliser.from_dict(file.data["norm"]), 0))
    run = export._runner(tmp_path / f"m.{fmt}", fmt, model)
    state, found = [s.numpy() for s in export.initial_state(model, 1)], []
    for begin, end in ((0, 50), (50, 90), (90, len(x))):
        y, *state = run(x[begin:end].unsqueeze(1).numpy(), *state)
        found.append(y[:, 0])
    with torch.no_grad():
        out, _ = model.recur(x.unsqueeze(1), model.init_state(1))
        expected = forecast.decoded(model, out[:, 0], x, forecast.trail_at(model, x, np.arange(len(x))))
    np.testing.assert_allclose(np.concatenate(found), expected.numpy(), atol=2e-5)


def test_a_missing_extra_names_the_install_line(models, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    code, _, err = invoke("export", models["text", "lstm"], "-o", tmp_path / "m.onnx")
    assert code == 2
    assert err.strip().splitlines() == [
        "error: ONNX export needs the export extra (onnxruntime is missing): pip install 'bptt[export]'"]
    assert list(tmp_path.iterdir()) == []


BAD = {
    "not a model file": (lambda d, m: (d / "notes.txt", d / "out.onnx"), "not a bptt model file"),
    "a directory as MODEL": (lambda d, m: (d, d / "out.onnx"), "is a directory"),
    "a suffix that is neither": (lambda d, m: (m, d / "out.pt"), "-o must end in .onnx (ONNX) or .pt2"),
    "no suffix": (lambda d, m: (m, d / "out"), "-o must end in .onnx (ONNX) or .pt2"),
    "-o is MODEL itself": (lambda d, m: (d / "model.pt2", d / "model.pt2"), "is MODEL itself"),
    "-o an existing other file": (lambda d, m: (m, d / "keep.onnx"), "exists and is not a bptt export"),
    "-o a directory": (lambda d, m: (m, d / "dir.onnx"), "is a directory"),
    "-o in a missing directory": (lambda d, m: (m, d / "missing" / "out.onnx"), "does not exist"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_nothing_written(models, tmp_path, case):
    (tmp_path / "notes.txt").write_text("just some text\n")
    (tmp_path / "model.pt2").write_bytes(models["text", "lstm"].read_bytes())
    (tmp_path / "keep.onnx").write_bytes(b"someone else's file")
    (tmp_path / "dir.onnx").mkdir()
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    paths, message = BAD[case]
    model, out = paths(tmp_path, models["text", "lstm"])
    code, stdout, err = invoke("export", model, "-o", out)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert stdout == ""
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    assert (tmp_path / "keep.onnx").read_bytes() == b"someone else's file"
