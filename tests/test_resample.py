"""``--resample``: rows with irregular times go on a regular grid per series before training and scoring,
``--missing`` fills the new gaps, and the model file keeps the grid for evaluate and generate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bptt_cli.cli import app
from bptt_cli.modelfile import load_model_file
from bptt_cli.series import SeriesSpec, load_series

TINY = ["--hidden", "8", "--layers", "1", "--batch-size", "2", "--window", "8", "--max-steps", "3", "--quiet"]


def invoke(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def gappy_csv(path: Path, groups: int = 0) -> Path:
    """A 5-minute series of 100 slots with 7 missing rows (slots 10, 11, 12, 40, 70, 71, 98)."""
    keep = np.setdiff1d(np.arange(100), [10, 11, 12, 40, 70, 71, 98])
    times = pd.Timestamp("2024-03-01") + pd.to_timedelta(5 * keep, unit="min")
    frames = []
    for g in range(max(1, groups)):
        frame = pd.DataFrame({"time": times.astype(str), "glucose": 100.0 + keep + 1000 * g})
        if groups:
            frame.insert(0, "patient", f"p{g}")
        frames.append(frame)
    pd.concat(frames).to_csv(path, index=False)
    return path


def test_without_resample_the_gaps_are_read_as_consecutive_rows(tmp_path):
    found = load_series(gappy_csv(tmp_path / "g.csv"), SeriesSpec())
    assert len(found.values[0]) == 93 and any("irregular gap" in n for n in found.notes)


@pytest.mark.parametrize("every", ["5min", "auto"])
def test_interpolate_puts_the_rows_on_the_grid(tmp_path, every):
    found = load_series(gappy_csv(tmp_path / "g.csv"), SeriesSpec(resample=every, missing="interpolate"))
    assert found.resample == "5min" and found.freq == "5min"
    assert len(found.values[0]) == 100  # every slot from the first time to the last
    np.testing.assert_allclose(found.values[0][:, 0], 100.0 + np.arange(100))  # a linear series, interpolated
    assert pd.DatetimeIndex(found.times[0]).equals(pd.date_range("2024-03-01", periods=100, freq="5min"))
    assert not any("irregular gap" in n for n in found.notes)
    assert any("leaves 7 time(s) without a row; --missing interpolate fills them" in n for n in found.notes)


def test_ffill_and_drop_fill_the_new_gaps_per_series(tmp_path):
    path = gappy_csv(tmp_path / "g.csv", groups=2)
    filled = load_series(path, SeriesSpec(group_column="patient", resample="5min", missing="ffill"))
    assert [len(v) for v in filled.values] == [100, 100]
    for g, values in enumerate(filled.values):  # slots 10..12 hold the value of slot 9, in each series
        np.testing.assert_allclose(values[9:13, 0], 1000 * g + 109.0)
    dropped = load_series(path, SeriesSpec(group_column="patient", resample="5min", missing="drop"))
    assert [len(v) for v in dropped.values] == [93, 93]


def test_rows_in_one_slot_are_averaged(tmp_path):
    path = tmp_path / "s.csv"
    pd.DataFrame({"time": ["2024-01-01 00:00", "2024-01-01 00:01", "2024-01-01 00:05", "2024-01-01 00:10"],
                  "x": [1.0, 3.0, 5.0, 7.0]}).to_csv(path, index=False)
    found = load_series(path, SeriesSpec(resample="5min"))
    np.testing.assert_allclose(found.values[0][:, 0], [2.0, 5.0, 7.0])


def test_the_model_file_keeps_the_grid_for_evaluate_and_generate(tmp_path):
    path = gappy_csv(tmp_path / "g.csv")
    model = tmp_path / "m.pt"
    code, _, err = invoke("train", path, "--resample", "auto", "--missing", "interpolate", "-o", model, *TINY)
    assert code == 0, err
    file = load_model_file(model)
    assert file.data["settings"]["resample"] == "5min" and file.data["freq"] == "5min"
    code, out, err = invoke("evaluate", model, path, "--horizon", "3", "--json")
    assert code == 0 and '"points"' in out, err
    code, out, err = invoke("generate", model, "--context", path, "--horizon", "2")
    assert code == 0, err
    assert [line.split(",")[0] for line in out.strip().splitlines()[1:]] == ["2024-03-01 08:20:00",
                                                                             "2024-03-01 08:25:00"]


@pytest.mark.parametrize(("args", "message"), [
    (["--resample", "5min"], ("g.csv: 7 time(s) on the 5min grid have no row (the first 2024-03-01 00:50:00); "
                              "choose --missing ffill, interpolate or drop")),
    (["--resample", "5 minutes please"], "--resample '5 minutes please' is not a time step"),
    (["--resample", "auto", "--time-column", "none"], None),
])
def test_bad_resample_requests_are_one_line_exit_2_and_nothing_written(tmp_path, args, message):
    path = gappy_csv(tmp_path / "g.csv")
    if args[-1] == "none":  # a file without times
        pd.DataFrame({"glucose": np.arange(50.0)}).to_csv(path, index=False)
        args, message = args[:2], "--resample auto: the data has no time column to put on a grid"
    model = tmp_path / "m.pt"
    code, _, err = invoke("train", path, *args, "-o", model, *TINY)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not model.exists()
