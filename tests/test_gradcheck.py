"""bptt gradcheck: the four checks on tiny seeded models, and the command end to end."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from bptt_cli import gradcheck as lib
from bptt_cli.cli import app
from bptt_cli.errors import BpttError
from bptt_cli.modelfile import ModelFile, save_model_file
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.render import gradcheck as render
from bptt_cli.render.console import fmt
from bptt_cli.render.sparkline import sparkline
from bptt_cli.text import Tokenizer


SMALL = lib.Settings(window=6, segment=30, windows=(1, 5, 30))
FAST_CLI = ["--window", "6", "--segment", "30", "--windows", "1,5,30"]
TEXT = "the quick brown fox jumps over the lazy dog\n" * 3


@pytest.fixture(autouse=True)
def seeded_single_thread():
    """Seed torch, and run one thread (batch-1 steps gain nothing from more); restore after."""
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(cell: str = "lstm", layers: int = 1) -> RecurrentModel:
    return lib.fresh_model(cell, vocab=8, embed=8, hidden=8, layers=layers, seed=0)


def scaled_rnn(scale: float, embed_scale: float = 0.0, hidden: int = 8) -> RecurrentModel:
    """A float64 vanilla RNN whose recurrent matrix is ``scale`` times an orthogonal one.

    With zero inputs and biases the state stays 0, where tanh' = 1, so the step
    Jacobian is exactly that matrix and dL/dh_t shrinks or grows by ``scale`` per step.
    """
    torch.manual_seed(0)
    config = ModelConfig(cell="rnn", input_size=8, output_size=8, embed=hidden, hidden=hidden, layers=1)
    model = RecurrentModel(config).double().eval()
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(hidden, hidden, dtype=torch.float64))
        model.rnn.weight_hh_l0.copy_(scale * q)
        model.rnn.bias_hh_l0.zero_()
        model.rnn.bias_ih_l0.zero_()
        model.embedding.weight.mul_(embed_scale)
    return model


def broken(model: RecurrentModel) -> RecurrentModel:
    """Backpropagation reports 1.5 times the true gradient of the recurrent weights."""
    model = model.double().eval()  # float64 already, so run_gradcheck keeps this object and its hook
    model.rnn.weight_hh_l0.register_hook(lambda grad: grad * 1.5)
    return model


def invoke(*args: str):
    return CliRunner().invoke(app, ["gradcheck", *args])


@pytest.fixture
def model_file(tmp_path):
    """A model file as 'bptt train' writes it, with a char tokenizer, and text for it."""
    tokenizer = Tokenizer.fit("char", TEXT)
    torch.manual_seed(0)
    config = ModelConfig(cell="gru", input_size=tokenizer.size, output_size=tokenizer.size, embed=8, hidden=8, layers=2)
    path = tmp_path / "model.pt"
    save_model_file(path, ModelFile(RecurrentModel(config), tokenizer, {"batch_size": 4}, {}))
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    return path, data


# ---------------------------------------------------------------- checks 1 and 2


@pytest.mark.parametrize("cell,layers", [("lstm", 1), ("lstm", 2), ("gru", 2), ("rnn", 2)])
def test_healthy_model_passes_both_gradient_checks(cell, layers):
    model = tiny(cell, layers)
    result = lib.run_gradcheck(model, lib.synthetic_problem(model, 30), SMALL)
    fd, fm = result["finite_difference"], result["forward_mode"]
    assert result["passed"] and fd["passed"] and fm["passed"]
    assert {t["name"] for t in fd["tensors"]} == {name for name, _ in model.named_parameters()}
    assert max(t["max_rel_error"] for t in fd["tensors"]) < 1e-7
    assert fm["max_rel_error"] < 1e-12  # forward and reverse mode are both exact
    assert fm["parameters"] == sum(p.numel() for p in model.parameters())
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is left as it was


def test_finite_differences_sample_at_most_max_entries_per_tensor():
    model = tiny()
    result = lib.check_finite_differences(model.double(), lib.synthetic_problem(model, 30), SMALL)
    entries = {t["name"]: t["entries"] for t in result["tensors"]}
    assert entries["rnn.weight_hh_l0"] == SMALL.max_entries  # 32x8: sampled
    assert entries["decoder.bias"] == 8  # small: every entry


def test_broken_gradient_fails_finite_differences_and_forward_mode():
    model = broken(tiny("lstm"))
    result = lib.run_gradcheck(model, lib.synthetic_problem(model, 30), SMALL)
    failing = [t["name"] for t in result["finite_difference"]["tensors"] if not t["passed"]]
    assert failing == ["rnn.weight_hh_l0"]
    bad = next(t for t in result["forward_mode"]["tensors"] if t["name"] == "rnn.weight_hh_l0")
    assert bad["max_rel_error"] == pytest.approx(0.5, rel=1e-9)  # max |1.5 g - g| / max |g|
    assert result["forward_mode"]["passed"] is False
    assert result["passed"] is False


def test_forward_mode_is_skipped_for_large_models():
    model = lib.fresh_model("gru", vocab=8, embed=8, hidden=33, layers=1)
    result = lib.check_forward_mode(model.double(), lib.synthetic_problem(model, 10), SMALL)
    assert result["passed"] is None
    assert "hidden 33 > 32" in result["skipped"]


# ---------------------------------------------------------------- check 3


@pytest.mark.parametrize("scale,verdict,horizon", [(0.2, "vanishing", 5), (2.0, "exploding", None), (1.0, "stable", None)])
def test_flow_verdict_follows_the_recurrent_weights(scale, verdict, horizon):
    model = scaled_rnn(scale)
    flow = lib.check_flow(model, lib.synthetic_problem(model, 30), lib.Settings(window=12))
    assert flow["verdict"] == verdict
    assert len(flow["norms"]) == 12
    assert flow["rate_per_step"] == pytest.approx(scale, rel=1e-9)
    assert flow["jacobian_spectral_norm"]["mean"] == pytest.approx(scale, rel=1e-9)
    assert flow["jacobian_spectral_norm"]["max"] == pytest.approx(scale, rel=1e-9)
    assert flow["horizon_steps"] == horizon
    for back in range(1, 12):  # exactly one factor of the scale per step back
        assert flow["norms"][back] == pytest.approx(flow["norms"][0] * scale**back, rel=1e-9)


def test_gated_fresh_model_reports_its_horizon():
    model = tiny("lstm", 2)
    flow = lib.check_flow(model.double(), lib.synthetic_problem(model, 40), lib.Settings(window=40))
    assert flow["verdict"] == "vanishing"  # a fresh forget gate sits near 0.5
    assert 0 < flow["rate_per_step"] < 0.9
    assert not flow["horizon_estimated"] and flow["horizon_steps"] < 40
    assert flow["norms"][flow["horizon_steps"]] < 1e-3 * flow["norms"][0]
    assert flow["jacobian_spectral_norm"]["size"] == 2 * 2 * 8  # h and c of both layers


# ---------------------------------------------------------------- check 4


def test_a_window_covering_the_segment_gives_the_full_gradient():
    model = tiny("gru")
    problem = lib.synthetic_problem(model, 50)
    result = lib.check_truncation(model.double(), problem, lib.Settings(segment=40, windows=(40, 1000)))
    assert [w["window"] for w in result["windows"]] == [40]  # 1000 is capped at the segment
    assert result["windows"][0]["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert result["windows"][0]["relative_norm"] == pytest.approx(1.0, abs=1e-6)
    assert result["recommended_window"] is not None


def test_cosine_rises_with_the_window_on_a_long_range_task():
    """Targets repeat the input 15 steps back; a near-identity RNN carries the gradient that far."""
    model = scaled_rnn(1.0, embed_scale=0.1, hidden=16)
    ids = torch.randint(0, 8, (121,), generator=torch.Generator().manual_seed(1))
    copy = lib.token_problem(ids)
    problem = lib.Problem(copy.inputs, torch.roll(copy.inputs, 15, 0), copy.loss)  # the loss seam, reused
    result = lib.check_truncation(model, problem, lib.Settings(segment=120, windows=(1, 5, 10, 20, 40, 120), min_cosine=0.95))
    cosines = [w["cosine"] for w in result["windows"]]
    assert cosines == sorted(cosines)
    assert cosines[0] < 0.5 and cosines[-1] == pytest.approx(1.0, abs=1e-12)
    assert result["recommended_window"] == 40
    per_step = result["activation_bytes_per_step"]
    assert result["memory_saved_bytes"] == (120 - 40) * per_step
    seconds = {w["window"]: w["seconds_per_update"] for w in result["windows"]}  # measured, not 40 / 120
    assert result["full_update_from_table"] and result["full_update_seconds"] == seconds[120]
    assert result["time_per_update_fraction"] == pytest.approx(seconds[40] / seconds[120])
    assert [w["updates"] for w in result["windows"]] == [120, 24, 12, 6, 3, 1]


def test_activation_estimate_scales_with_batch():
    config = ModelConfig(cell="lstm", input_size=10, output_size=10, embed=4, hidden=8, layers=2)
    # memory.py's estimate, shared with training: embed 4 + 2 layers * 17 (LSTM's memory factor, counted
    # from autograd's saved tensors) * 8 + 10 log-probabilities + 2 for the int64 target, float32
    assert lib.activation_bytes_per_step(config) == (4 + 2 * 17 * 8 + 10 + 2) * 4
    assert lib.activation_bytes_per_step(config, batch=3) == 3 * lib.activation_bytes_per_step(config)


# ---------------------------------------------------------------- inputs


def test_a_feature_model_without_data_gets_seeded_frames_and_a_text_file_is_refused():
    model = RecurrentModel(ModelConfig(tokens=False, input_size=3, output_size=1, hidden=4, layers=1))
    problem = lib.synthetic_problem(model, 10, seed=1)
    assert problem.inputs.shape == (10, 1, 3) and problem.targets.shape == (10, 1, 1)
    assert torch.equal(problem.inputs, lib.synthetic_problem(model, 10, seed=1).inputs)
    with pytest.raises(BpttError, match="feature frames, not text"):
        lib.text_problem(model, None, "some text", "notes.txt")


def test_window_longer_than_the_data_is_refused():
    model = tiny()
    with pytest.raises(BpttError, match="--window 40 is longer than the data"):
        lib.run_gradcheck(model, lib.synthetic_problem(model, 20), lib.Settings(window=40))


# ---------------------------------------------------------------- rendering


def numbers(value) -> list:
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]\d+)?(?![\w])")


def test_json_holds_every_figure_in_the_tables(monkeypatch, capsys):
    model = tiny("lstm", 2)
    result = lib.run_gradcheck(model, lib.synthetic_problem(model, 40), lib.Settings(window=35, segment=40, windows=(1, 10, 40)))
    tables = []
    monkeypatch.setattr(render, "print_table", lambda title, columns, rows, caption=None: tables.append((rows, caption or "")))
    render.render_gradcheck(result)
    assert len(tables) == 4
    render.render_gradcheck(result, as_json=True)
    out = capsys.readouterr().out
    parsed = json.loads(out)  # one object and nothing else on stdout
    assert parsed["passed"] is True and parsed["flow"]["verdict"] in ("vanishing", "stable", "exploding")
    assert len(parsed["flow"]["norms"]) == 35
    figures = {fmt(n) for n in numbers(parsed)}
    tables[2] = ([row[2:] for row in tables[2][0]], tables[2][1])  # steps back and t index the norms
    shown = [fmt(cell) for rows, _ in tables for row in rows for cell in row]
    shown += [n for _, caption in tables for n in NUMBER.findall(caption)]
    for cell in shown:
        for token in NUMBER.findall(cell):
            assert token in figures, f"{token} is in a table but not in the JSON"
    assert len(tables[2][0]) < 35  # a long window shows a sample of steps...
    assert len(sparkline(parsed["flow"]["norms"], log=True)) == 35  # ...and a sparkline of all of them


def test_the_flow_sparkline_runs_from_high_to_low_on_a_log_scale():
    line = sparkline([1.0, 0.1, 0.01, 0.0], ascii=False, log=True)
    assert line == "█▅▁▁"  # 1, 0.1, 0.01 evenly spaced in log10; 0 takes the lowest bar


# ---------------------------------------------------------------- the command


def test_cli_fresh_model_exits_0_with_json():
    result = invoke("--model", "rnn", "--hidden", "8", "--layers", "2", *FAST_CLI, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["passed"] is True
    assert data["model"] == {**data["model"], "cell": "rnn", "hidden": 8, "layers": 2, "vocab": 16}
    assert data["forward_mode"]["skipped"] is None
    assert [w["window"] for w in data["truncation"]["windows"]] == [1, 5, 30]
    assert data["truncation"]["windows"][-1]["cosine"] == pytest.approx(1.0, abs=1e-6)


def test_cli_tables_without_a_terminal():
    result = invoke("--hidden", "8", *FAST_CLI)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    for title in ("1. autograd vs finite differences", "2. reverse mode", "3. gradient flow", "4. cost of truncation"):
        assert f"# {title}" in result.stderr
    assert "\x1b[" not in result.stderr
    assert result.stderr.rstrip().endswith("gradcheck passed")


def test_cli_exits_1_when_a_gradient_is_wrong(monkeypatch):
    model = broken(tiny("gru"))
    monkeypatch.setattr(lib, "fresh_model", lambda *args, **kwargs: model)
    result = invoke(*FAST_CLI)
    assert result.exit_code == 1
    assert "gradcheck FAILED: finite differences (rnn.weight_hh_l0); forward mode" in result.stderr


def test_cli_trained_model_on_real_text(model_file):
    path, data = model_file
    result = invoke(str(path), str(data), *FAST_CLI, "--json")
    assert result.exit_code == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert parsed["data"] == {"source": str(data), "steps": len(TEXT) - 1}
    assert parsed["model"]["cell"] == "gru" and parsed["model"]["layers"] == 2
    assert parsed["truncation"]["batch_size"] == 4  # from the model file's run configuration


@pytest.mark.parametrize(
    "args,message",
    [
        (["--window", "500"], "--window 500 is longer than the data"),
        (["--hidden", "4"], "--hidden shape a fresh model only"),
        (["--windows", "1,x"], "--windows takes comma-separated"),
        (["--window", "1"], "--window must be at least 2"),
    ],
)
def test_cli_bad_input_with_a_model_file(model_file, args, message):
    path, data = model_file
    result = invoke(str(path), str(data), *args)
    assert_bad_input(result, message)


def test_cli_bad_input(tmp_path, model_file):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    assert_bad_input(invoke(str(junk)), "not a bptt model file")
    assert_bad_input(invoke(str(model_file[1])), "DATA needs a MODEL first")
    assert_bad_input(invoke("--model", "transformer"), "transformer")
    assert_bad_input(invoke(str(tmp_path / "missing.pt")), "no such model file")


def assert_bad_input(result, message: str) -> None:
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


# ---------------------------------------------------------------- the other data kinds


def hourly_csv(path, rows: int = 120):
    hours = np.arange(rows)
    frame = pd.DataFrame({"time": pd.date_range("2024-01-01", periods=rows, freq="h").astype(str),
                          "load": np.sin(hours * 2 * np.pi / 24) + 0.1 * hours / rows, "temp": np.cos(hours / 7)})
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("kind", ["series", "audio"])
def test_gradcheck_runs_on_feature_models_with_their_own_data(tmp_path, kind):
    if kind == "series":
        data = hourly_csv(tmp_path / "load.csv")
        extra, check = ["--window", "12"], ["--window", "10", "--segment", "60"]
    else:
        data = tmp_path / "frames"
        data.mkdir()
        rng = np.random.default_rng(0)
        for i in range(6):
            np.save(data / f"{i}.npy", rng.normal(size=(15 + i, 3)))
        (data / "labels.csv").write_text("file,label\n" + "".join(f"{i}.npy,{'ab'[i % 2]}\n" for i in range(6)))
        extra = ["--labels", str(data / "labels.csv"), "--window", "0"]
        check = ["--window", "8", "--labels", str(data / "labels.csv")]
    model = tmp_path / "m.pt"
    trained = CliRunner().invoke(app, ["train", str(data), "-o", str(model), "--hidden", "6", "--layers", "2",
                                       "--batch-size", "2", "--max-steps", "2", *extra])
    assert trained.exit_code == 0, trained.stderr
    result = CliRunner().invoke(app, ["gradcheck", str(model), str(data), *check, "--json"])
    assert result.exit_code == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert parsed["passed"] is True and parsed["forward_mode"]["passed"] is True
    assert max(t["max_rel_error"] for t in parsed["finite_difference"]["tensors"]) < 1e-6
    assert parsed["truncation"]["windows"][-1]["cosine"] == pytest.approx(1.0, abs=1e-6)
