"""bptt plot, the metrics reader, the pictures and the sparklines."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bptt_cli.render import plotting
from bptt_cli.metrics_file import MetricsFile
from bptt_cli.render.sparkline import sparkline
from conftest import TINY

LAYERS = ("embedding", "lstm layer 1", "decoder")


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG signature and IHDR chunk: no image library needed."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def write_metrics(path: Path, seed: int = 0, steps: int = 200, every: int = 20) -> Path:
    """A plausible run written by the trainer's own metrics writer: loss falling, norms noisy."""
    rng = np.random.default_rng(seed)
    out = MetricsFile(path)
    for step in range(every, steps + 1, every):
        norms = {name: float(rng.uniform(0.01, 1.0)) for name in LAYERS}
        out.log({"step": step, "epoch": 1 + step // 100, "train_loss": 4.0 * math.exp(-step / 150) + rng.uniform(0, 0.1),
                 "grad_norm_mean": float(rng.uniform(0.2, 2.0)), "grad_norm_max": float(rng.uniform(2.0, 9.0)),
                 "clip_share": float(rng.uniform(0, 1)), "lr": 0.002 * (1 - step / (2 * steps)),
                 "tokens_per_second": 5e4, "elapsed_seconds": step / 40, "layer_grad_norms": norms})
        if step % 100 == 0:
            loss = 4.0 * math.exp(-step / 150) + 0.2
            out.validation({"step": step, "epoch": step // 100, "val_loss": loss, "val_perplexity": math.exp(loss),
                            "val_bits_per_token": loss / math.log(2), "best": True, "elapsed_seconds": step / 40})
    return path


# --- sparklines ----------------------------------------------------------------------------------------


def test_sparkline_of_known_series_is_exact():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8], ascii=False) == "▁▂▃▄▅▆▇█"
    assert sparkline(range(10), ascii=True) == "_.:-=+*#%@"
    assert sparkline([8, 1, 4.5], ascii=False) == "█▁▅"
    assert sparkline([1, 10, 100, 1000], ascii=False, log=True) == "▁▃▆█"
    assert sparkline([1, 1000, 0, math.nan, math.inf, None], ascii=False, log=True) == "▁█▁×××"
    assert sparkline([1, math.nan, 3, -math.inf], ascii=True) == "_!@!"
    assert sparkline([5, 5, 5], ascii=True) == "==="
    assert sparkline([5, 5, 5], ascii=False) == "▄▄▄"
    assert sparkline([], ascii=False) == ""
    assert sparkline([math.nan, math.nan], ascii=True) == "!!"


def test_sparkline_resamples_to_width_by_bucket_means():
    assert sparkline(range(100), ascii=False, width=10) == "▁▂▃▃▄▅▆▆▇█"
    assert sparkline(range(5), ascii=False, width=10) == "▁▃▅▆█"  # short series are left alone
    values = list(range(100))
    values[55] = math.nan  # a diverged step is never averaged away
    assert sparkline(values, ascii=True, width=10) == "_.:-=!*#%@"


def test_sparkline_is_ascii_without_a_terminal_and_json_safe(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    line = sparkline([3, 1, math.nan, 2, 9], log=True)
    assert line.isascii() and line.isprintable()
    assert not set(line) & set('"\\')
    assert json.loads(json.dumps({"spark": line})) == {"spark": line}
    assert json.dumps(line, ensure_ascii=True) == f'"{line}"'  # nothing to escape


# --- reading metrics files -----------------------------------------------------------------------------


def test_jsonl_and_csv_read_alike(tmp_path: Path):
    jsonl = plotting.read_metrics(write_metrics(tmp_path / "run.jsonl"))
    table = plotting.read_metrics(write_metrics(tmp_path / "run.csv"))
    assert len(jsonl.train) == 10 and len(jsonl.validation) == 2
    for a, b in ((jsonl.train, table.train), (jsonl.validation, table.validation)):
        assert sorted(a.columns) == sorted(b.columns)
        for column in a.columns:
            assert a[column].tolist() == pytest.approx(b[column].tolist()), column
    assert jsonl.train["grad_norm[lstm layer 1]"].between(0.01, 1.0).all()
    assert jsonl.validation["best"].tolist() == [True, True]
    assert jsonl.train["step"].tolist() == list(range(20, 201, 20))


def test_a_step_logged_twice_keeps_the_later_record(tmp_path: Path):
    """A run resumed from an older checkpoint logs some steps again; the later records are the real ones."""
    path = tmp_path / "resumed.jsonl"
    lines = [{"kind": "train", "step": s, "train_loss": loss} for s, loss in ((20, 3.0), (40, 2.5), (20, 2.9))]
    lines.append({"kind": "checkpoint", "step": 40})  # a kind this version does not know is skipped
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    run = plotting.read_metrics(path)
    assert run.train["step"].tolist() == [20, 40]
    assert run.train["train_loss"].tolist() == [2.9, 2.5]
    assert run.validation.empty


def test_non_finite_values_written_as_null_read_as_nan(tmp_path: Path):
    path = tmp_path / "nan.jsonl"
    MetricsFile(path).log({"step": 1, "train_loss": math.nan, "grad_norm_mean": math.inf})
    run = plotting.read_metrics(path)
    assert math.isnan(run.train["train_loss"][0]) and math.isnan(run.train["grad_norm_mean"][0])


def test_legend_labels_are_the_file_names_told_apart():
    assert plotting.run_labels(["a/w10.jsonl", "a/w50.csv"]) == ["w10.jsonl", "w50.csv"]
    assert plotting.run_labels(["x/a/run.jsonl", "x/b/run.jsonl"]) == ["a/run.jsonl", "b/run.jsonl"]


# --- the command ---------------------------------------------------------------------------------------

BAD_FILES = {
    "garbage.jsonl": ('{"kind": "train", "step": 1, "train_loss": 2.0}\nthis is not json\n', "line 2"),
    "text.txt": ("ROMEO: but soft\nwhat light\n", "line 1"),
    "ragged.csv": ("kind,step,train_loss\ntrain,1,2.0\ntrain,2,1.5,9\n", "line 3"),
    "word.csv": ("kind,step,train_loss\ntrain,1,low\n", "line 2"),
    "nostep.jsonl": ('{"kind": "train", "train_loss": 2.0}\n', "line 1"),
    "list.jsonl": ("[1, 2]\n", "line 1"),
    "empty.jsonl": ("", "empty"),
    "other.jsonl": ('{"kind": "summary", "step": 3}\n', "no train or validation"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_metrics_file_is_one_error_line(tmp_path: Path, run, name):
    text, where = BAD_FILES[name]
    path = tmp_path / name
    path.write_text(text)
    out = tmp_path / "curves.png"
    code, stdout, stderr = run("plot", path, "-o", out)
    assert code == 2
    assert stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: ")
    assert str(path) in stderr and where in stderr
    assert not out.exists()


def test_missing_or_binary_metrics_file(tmp_path: Path, run):
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)))
    for path, why in ((tmp_path / "nope.jsonl", "no such"), (binary, "not a text file")):
        code, _, stderr = run("plot", path, "-o", tmp_path / "c.png")
        assert code == 2 and stderr.count("\n") == 1 and why in stderr


@pytest.mark.parametrize(
    "args, message",
    [(["-o", "curves.pdf"], ".png or .svg"), (["--size", "10x10"], "from 200 to 10000"),
     (["--size", "big"], "--size big"), (["-o", "nodir/curves.png"], "existing directory")],
)
def test_bad_output_options(tmp_path: Path, run, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    metrics = write_metrics(tmp_path / "run.jsonl")
    code, _, stderr = run("plot", metrics, *args)
    assert code == 2 and stderr.count("\n") == 1 and message in stderr


def test_missing_matplotlib_names_the_extra(tmp_path: Path, run, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets when it is not installed
    out = tmp_path / "curves.png"
    code, stdout, stderr = run("plot", write_metrics(tmp_path / "run.jsonl"), "-o", out)
    assert code == 2 and stdout == ""
    assert stderr == f"error: {plotting.MISSING_EXTRA}\n"
    assert "pip install 'bptt[plot]'" in stderr
    assert not out.exists()


def test_help_does_not_import_matplotlib():
    code = "import sys; from bptt_cli.cli import app; import bptt_cli.commands.plot; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_help_shows_defaults_and_an_example(run):
    code, stdout, _ = run("plot", "--help")
    assert code == 0
    assert "Example:" in stdout and "1200x900" in stdout and "curves.png" in stdout


def test_plot_png_of_requested_size_changes_with_the_data(tmp_path: Path, run):
    pytest.importorskip("matplotlib")
    first = write_metrics(tmp_path / "window10.jsonl", seed=1)
    second = write_metrics(tmp_path / "window50.csv", seed=2)
    out = tmp_path / "curves.png"
    code, stdout, stderr = run("plot", first, second, "-o", out, "--size", "640x480")
    assert code == 0, stderr
    assert stdout == ""
    assert png_size(out) == (640, 480)
    assert "window10.jsonl: train loss" in stderr and "window50.csv: train loss" in stderr
    assert stderr.isascii()  # no terminal: the sparklines are plain ASCII
    picture = out.read_bytes()

    assert run("plot", first, second, "-o", out, "--size", "640x480")[0] == 0
    assert out.read_bytes() == picture  # the same data draws the same picture...
    first.unlink()
    write_metrics(first, seed=3)
    assert run("plot", first, second, "-o", out, "--size", "640x480")[0] == 0
    assert out.read_bytes() != picture  # ...and other data another one
    assert png_size(out) == (640, 480)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_plot_svg_by_the_extension(tmp_path: Path, run):
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.svg"
    code, _, stderr = run("plot", write_metrics(tmp_path / "run.jsonl"), "-o", out, "--title", "one run")
    assert code == 0, stderr
    text = out.read_text()
    assert text.startswith("<?xml") and "<svg" in text and 'width="864pt"' in text  # 1200 px at 100 dpi


def test_train_metrics_then_plot(tmp_path: Path, tiny_text: Path, run):
    """The reader reads what the trainer really writes, in both formats."""
    pytest.importorskip("matplotlib")
    files = []
    for name in ("run.jsonl", "run.csv"):
        metrics = tmp_path / name
        code, _, err = run("train", tiny_text, "-o", tmp_path / f"{name}.pt", "--max-steps", "6", "--log-every", "2",
                           "--metrics", metrics, *TINY)
        assert code == 0, err
        files.append(metrics)
    runs = [plotting.read_metrics(f) for f in files]
    for r in runs:
        assert r.train["step"].tolist() == [2, 4, 6]
        assert {"train_loss", "grad_norm_max", "clip_share", "lr", "grad_norm[decoder]"} <= set(r.train.columns)
        assert len(r.validation) >= 1 and "val_loss" in r.validation
    code, _, err = run("plot", *files, "-o", tmp_path / "curves.png", "--size", "800x600")
    assert code == 0, err
    assert png_size(tmp_path / "curves.png") == (800, 600)


# --- gradient flow and forecast pictures ----------------------------------------------------------------


def gradcheck_result(rate: float) -> dict:
    norms = [0.5 * rate**j for j in range(30)]
    horizon = next((j for j, n in enumerate(norms) if n < 1e-3 * norms[0]), None)
    windows = [{"window": k, "cosine": 1 - 0.5 * rate**k, "relative_norm": 1 - 0.6 * rate**k} for k in (1, 5, 10, 25)]
    return {
        "flow": {"norms": norms, "verdict": "vanishing", "rate_per_step": rate, "horizon_fraction": 1e-3,
                 "horizon_steps": horizon},
        "truncation": {"windows": windows, "recommended_window": 5, "min_cosine": 0.9},
    }


def test_gradient_flow_picture(tmp_path: Path):
    pytest.importorskip("matplotlib")
    out = plotting.plot_gradient_flow(gradcheck_result(0.6), tmp_path / "flow.png", width=900, height=400)
    assert png_size(out) == (900, 400)
    picture = out.read_bytes()
    plotting.plot_gradient_flow(gradcheck_result(0.8), out, width=900, height=400)
    assert out.read_bytes() != picture


def test_forecast_picture_with_dates_and_baselines(tmp_path: Path):
    pytest.importorskip("matplotlib")
    times = np.arange("2024-01-01T00", "2024-01-05T00", dtype="datetime64[h]")
    values = np.sin(np.arange(len(times)) / 4.0)
    context_time, forecast_time = times[:72].astype(str), times[72:].astype(str)  # as a CSV gives them
    out = plotting.plot_forecast(
        tmp_path / "forecast.png", context_time, values[:72], forecast_time, values[72:] + 0.1, ["demand (MW)"],
        actual_values=values[72:], persistence_values=np.full(24, values[71]), width=800,
    )
    assert png_size(out) == (800, 380)  # one target: 120 + 260 px
    two = np.stack([values, 2 * values], axis=1)
    out = plotting.plot_forecast(tmp_path / "two.svg", np.arange(72), two[:72], np.arange(72, 96), two[72:],
                                 ["a", "b"])
    assert "<svg" in out.read_text()
    with pytest.raises(ValueError, match="2 columns for 1 target"):
        plotting.plot_forecast(tmp_path / "x.png", np.arange(72), two[:72], np.arange(72, 96), two[72:], ["a"])
