"""Data read as the user meant it, or refused with a reason: numbers written as text, dates, scales, odd files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bptt_cli.errors import BpttError
from bptt_cli.input_paths import check_input
from bptt_cli.series import SeriesSpec, load_series
from bptt_cli.text import read_text


def csv_file(tmp_path, text: str):
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


def test_thousands_separators_are_read_as_numbers_and_said(tmp_path):
    rows = "".join(f'2024-01-0{d},"{d},{d}34",{d}\n' for d in range(1, 8))
    found = load_series(csv_file(tmp_path, "time,price,b\n" + rows), SeriesSpec())
    assert found.columns == ["price", "b"]
    np.testing.assert_array_equal(found.values[0][:3, 0], [1134, 2234, 3334])
    assert any("column 'price' writes thousands with ','" in note for note in found.notes)


def test_a_decimal_comma_is_not_taken_for_thousands(tmp_path):
    rows = "".join(f'2024-01-0{d},"{d},5",{d}\n' for d in range(1, 8))  # 1,5 is not 15
    found = load_series(csv_file(tmp_path, "time,x,b\n" + rows), SeriesSpec())
    assert found.columns == ["b"]  # a column of text, as before; not silently 15, 25, ...


def test_a_text_column_is_still_not_a_number_column(tmp_path):
    rows = "".join(f"2024-01-0{d},w{d},{d}\n" for d in range(1, 8))
    assert load_series(csv_file(tmp_path, "time,word,b\n" + rows), SeriesSpec()).columns == ["b"]


def test_a_column_of_mostly_text_with_one_date_is_not_a_time_column_error(tmp_path):
    rows = "".join(f"2024-01-0{d},{'2024-01-01' if d == 1 else 'w' + str(d)},{d}\n" for d in range(1, 8))
    found = load_series(csv_file(tmp_path, "time,note,b\n" + rows), SeriesSpec())
    assert found.time_column == "time"


def test_one_unparseable_date_beyond_the_first_rows_is_named(tmp_path):
    rows = [f"2024-01-01 00:{m:02d},{m}" for m in range(60)] * 5
    rows[250] = "yesterday,3"
    with pytest.raises(BpttError, match=r"1 value\(s\) are not dates \(rows 252\)"):
        load_series(csv_file(tmp_path, "time,a\n" + "\n".join(rows) + "\n"), SeriesSpec())


def test_one_time_zone_is_fine(tmp_path):
    rows = "".join(f"2024-03-01 {h:02d}:00+01:00,{h}\n" for h in range(6))
    assert load_series(csv_file(tmp_path, "time,a\n" + rows), SeriesSpec()).freq == "h"


def test_check_input_names_what_a_path_is(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    cases = [(tmp_path / "fifo", "is a FIFO"), (tmp_path / "none", "no such file"), (tmp_path, "is a directory"),
             ("/dev/zero", "is a character device")]
    for path, needle in cases:
        with pytest.raises(BpttError, match=needle):
            check_input(path, "--val")
    assert check_input(tmp_path, folder_ok=True) == tmp_path


def test_reading_dev_zero_as_text_returns_at_once(tmp_path):
    with pytest.raises(BpttError, match="/dev/zero: is a character device, not a regular file"):
        read_text("/dev/zero")
