"""CSV time series: reading, checking, normalising, splitting and laying out as streams; bad files fail in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bptt_cli.errors import BpttError
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.series import Normaliser, SeriesSpec, load_series, pack, split_pieces
from bptt_cli.streams import tail_cut
from bptt_cli.kinds import KINDS
from bptt_cli.kinds.sequences import split as _split
from bptt_cli.kinds.series import SeriesOptions
from bptt_cli.scoring import stream_pass

SMALL = ["--hidden", "8", "--layers", "1", "--batch-size", "4", "--window", "8", "--log-every", "5"]


def seasonal_csv(path: Path, rows: int = 240, groups: int = 0, seed: int = 0) -> Path:
    """A half-hourly series with a daily-like cycle of 12 steps, and optionally several groups."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    frames = []
    for g in range(max(1, groups)):
        frame = pd.DataFrame({
            "time": pd.date_range("2024-01-01", periods=rows, freq="30min").astype(str),
            "load": 10 + 3 * np.sin(2 * np.pi * t / 12 + g) + 0.1 * rng.standard_normal(rows),
            "temp": 20 + np.cos(2 * np.pi * t / 12) + 0.1 * rng.standard_normal(rows),
        })
        if groups:
            frame.insert(0, "site", f"s{g}")
        frames.append(frame)
    pd.concat(frames).to_csv(path, index=False)
    return path


def test_normalisation_round_trip():
    rng = np.random.default_rng(1)
    data = [rng.normal(5, 3, size=(50, 3)), rng.normal(-2, 0.5, size=(20, 3))]
    norm = Normaliser.fit(data)
    scaled = norm.apply(data[0])
    assert np.allclose(np.concatenate([norm.apply(d) for d in data]).mean(0), 0, atol=1e-5)
    assert np.allclose(norm.invert(scaled.astype(np.float64)), data[0], atol=1e-4)
    assert np.allclose(norm.invert(scaled[:, [2]].astype(np.float64), [2]), data[0][:, [2]], atol=1e-4)
    again = Normaliser.from_dict(norm.to_dict())
    assert np.array_equal(again.mean, norm.mean) and np.array_equal(again.std, norm.std)


def test_normalisation_is_fitted_on_the_training_part_only(tmp_path, run):
    path = tmp_path / "s.csv"
    frame = pd.DataFrame({"x": np.r_[np.linspace(0, 1, 90), np.full(10, 1000.0)]})
    frame.to_csv(path, index=False)
    out = tmp_path / "m.pt"
    code, _, err = run("train", path, "-o", out, "--max-steps", "1", *SMALL)
    assert code == 0, err
    from bptt_cli.modelfile import load_model_file

    mean = load_model_file(out).data["norm"]["mean"][0]
    assert mean == pytest.approx(0.5, abs=1e-6)  # the 1000s in the validation tail are not seen


def test_the_split_is_chronological_per_series(tmp_path):
    seq = KINDS["series"].read(seasonal_csv(tmp_path / "g.csv", rows=100, groups=3), SeriesOptions(group_column="site"))
    ends, starts, keep = _split(seq, 0.2, seed=0)
    assert ends == [80, 80, 80] and starts == ends and keep == [0, 1, 2]
    assert tail_cut(100, 0.0) == 100
    with pytest.raises(BpttError, match="val-fraction"):
        _split(seq, 1.0, seed=0)


def test_time_column_is_detected_parsed_and_sorted_with_duplicates_and_gaps_reported(tmp_path):
    path = tmp_path / "t.csv"
    times = list(pd.date_range("2024-01-01", periods=8, freq="h").astype(str))
    times[5] = times[4]  # a duplicate
    times[7] = "2024-01-01 12:00"  # a gap
    frame = pd.DataFrame({"when": times, "v": np.arange(8.0)}).iloc[::-1]  # reversed: must be sorted back
    frame.to_csv(path, index=False)
    found = load_series(path, SeriesSpec())
    assert found.time_column == "when" and found.columns == ["v"]
    assert found.values[0][:, 0].tolist()[:3] == [0.0, 1.0, 2.0]
    assert found.freq == "h"
    notes = " ".join(found.notes)
    assert "repeat a time" in notes and "irregular gap" in notes


@pytest.mark.parametrize("policy, expected", [("ffill", [1, 1, 3, 4]), ("interpolate", [1, 2, 3, 4]),
                                              ("drop", [1, 3, 4])])
def test_missing_value_policies(tmp_path, policy, expected):
    path = tmp_path / "m.csv"
    path.write_text("v,w\n1,1\n,2\n3,5\n4,3\n")
    found = load_series(path, SeriesSpec(missing=policy))
    assert found.values[0][:, 0].tolist() == expected


def test_groups_become_separate_series_and_layout_resets_where_each_begins():
    lengths = [30, 12, 7]
    pieces = split_pieces(lengths, streams=4, min_length=8)
    assert sum(b - a for _, a, b in pieces) == sum(lengths)  # every step kept once
    xs = [np.full((b - a, 1), i, dtype=np.float32) for i, a, b in pieces]
    streams = pack(xs, [x[:, 0].copy() for x in xs], streams=2)
    assert streams.inputs.shape[1] == 2
    for (stream, start, length), x in zip(streams.where, xs):
        assert streams.resets[start, stream]
        assert torch.equal(streams.inputs[start : start + length, stream], torch.from_numpy(x))
    assert int(streams.resets.sum()) == len(xs)


def test_no_state_leaks_from_one_series_into_another():
    """Changing one series never changes another's outputs, even when both share a stream."""
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig(cell="lstm", input_size=2, output_size=2, tokens=False, hidden=8, layers=2))
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(15, 2)).astype(np.float32), rng.normal(size=(9, 2)).astype(np.float32)

    def outputs_of_second(first_values):
        streams = pack([first_values, second], [first_values, second], streams=1)  # one stream: back to back
        out, _ = stream_pass(model, streams, torch.device("cpu"))
        stream, start, length = streams.where[1]
        return out[start : start + length, stream]

    changed = first * 10 + 3
    assert torch.equal(outputs_of_second(first), outputs_of_second(changed))


def test_group_column_end_to_end_trains_and_forecasts_every_series(tmp_path, run):
    path = seasonal_csv(tmp_path / "g.csv", rows=120, groups=3)
    out = tmp_path / "m.pt"
    code, _, err = run("train", path, "--group-column", "site", "--target", "load", "-o", out, "--epochs", "2", *SMALL)
    assert code == 0, err
    code, stdout, err = run("generate", out, "--horizon", "5")  # the direct head reads no future temp
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert lines[0] == "site,time,load" and len(lines) == 1 + 3 * 5
    assert "not forecast" not in err


def test_tag_task_learns_labels_at_every_step(tmp_path, run):
    path = tmp_path / "tag.csv"
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    pd.DataFrame({"x": x, "state": np.where(x > 0, "up", "down")}).to_csv(path, index=False)
    out = tmp_path / "m.pt"
    code, _, err = run("train", path, "--task", "tag", "--target", "state", "-o", out, "--epochs", "15",
                       "--hidden", "16", "--layers", "1", "--batch-size", "4", "--window", "10", "--lr", "0.01")
    assert code == 0, err
    code, stdout, err = run("evaluate", out, path, "--json")
    import json

    figures = json.loads(stdout)
    assert code == 0 and set(figures) >= {"accuracy", "macro_f1", "confusion", "frames"}
    assert figures["accuracy"] > 0.9
    code, _, err = run("generate", out)
    assert code == 2 and "does not forecast" in err


def _bad(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


NUMBERS = "".join(f"{i},{i % 7}\n" for i in range(30))
BAD_CSVS = {
    "empty": ("", [], "empty"),
    "header only": ("a,b\n", [], "no data rows"),
    "one row": ("a,b\n1,2\n", [], "only one data row"),
    "text column as target": ("a,b\n" + "".join(f"{i},x{i}\n" for i in range(30)), ["--target", "b"], "not numeric"),
    "constant column": ("a,b\n" + "".join(f"{i},5\n" for i in range(30)), [], "'b' is constant"),
    "all-missing column": ("a,b\n" + "".join(f"{i},\n" for i in range(30)), [], "'b' is empty"),
    "missing values": ("a,b\n" + NUMBERS + "31,\n32,\n40,1\n", [], "'b' has 2 missing value(s) (rows 32, 33)"),
    "infinite value": ("a,b\n" + NUMBERS + "31,inf\n", [], "infinite"),
    "column named twice": ("a,a\n" + NUMBERS, [], "named 2 times"),
    "target not a column": ("a,b\n" + NUMBERS, ["--target", "price"], "'price' is not a column"),
    "time column not a column": ("a,b\n" + NUMBERS, ["--time-column", "when"], "'when' is not a column"),
    "no numeric column": ("a,b\n" + "".join(f"x{i},y{i}\n" for i in range(30)), [], "no numeric column"),
    "window longer than the data": ("a,b\n" + NUMBERS, ["--window", "500"], "longer than the data"),
    "bad dates": ("when,v\n2024-01-01,1\nnot a date,2\n2024-01-03,4\n", ["--time-column", "when"], "not dates"),
    "tag with two targets": ("a,b\n" + NUMBERS, ["--task", "tag", "--target", "a", "--target", "b"], "exactly one"),
}


@pytest.mark.parametrize("case", list(BAD_CSVS))
def test_every_bad_csv_gives_one_error_line_and_exit_2(tmp_path, run, case):
    text, extra, message = BAD_CSVS[case]
    path = _bad(tmp_path, "bad.csv", text)
    out = tmp_path / "m.pt"
    code, stdout, stderr = run("train", path, "-o", out, "--hidden", "8", "--layers", "1", "--batch-size", "2",
                               *(["--window", "4"] if "--window" not in extra else []), *extra)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr
    assert "Traceback" not in stderr and stdout == ""
    assert not out.exists() and not list(tmp_path.glob("m.pt*"))


def test_evaluate_a_file_missing_a_training_column_fails_cleanly(tmp_path, run):
    path = seasonal_csv(tmp_path / "s.csv", rows=80)
    out = tmp_path / "m.pt"
    assert run("train", path, "-o", out, "--max-steps", "1", *SMALL)[0] == 0
    other = _bad(tmp_path, "other.csv", "time,load\n" + "".join(f"2024-01-01 {i:02d}:00,{i}\n" for i in range(20)))
    code, _, stderr = run("evaluate", out, other)
    assert code == 2 and "temp" in stderr and len(stderr.strip().splitlines()) == 1


def test_mixed_time_zones_are_refused_as_pandas_2_reports_them(monkeypatch):
    """pandas 2 warns and returns plain objects where pandas 3 raises; both must give the one-line refusal."""
    import warnings

    from bptt_cli import series

    def pandas_2(values, **options):
        warnings.warn("In a future version of pandas, parsing datetimes with mixed time zones will raise an error "
                      "unless `utc=True`.", FutureWarning)
        return pd.Series(list(values), dtype=object)

    monkeypatch.setattr(series.pd, "to_datetime", pandas_2)
    values = pd.Series(["2024-03-01 10:00+01:00", "2024-03-01 13:00+02:00"])
    with pytest.raises(BpttError, match=r"mixes time zones \(\+01:00, \+02:00\)"):
        series._dates(values, "time", Path("zones.csv"))
