"""CSV time series: from a file to validated, normalised sequences and (T, B) training streams.

A CSV becomes one or more series (``--group-column``), each sorted by its time
column and each its own sequence. Sequences, from a CSV or from feature files,
are laid out the same way: a sequence long enough is cut into pieces, the
pieces are packed into B streams, and a stream's state is reset where a new
piece begins, so the state never flows from one series into another::

    stream 0:  [series A, piece 1.......][series B.......]  pad
    stream 1:  [series A, piece 2..........][series C.....]
                ^ reset                     ^ reset

Everything is vectorised with numpy and pandas: there is no Python loop per row.
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bptt_cli import distributed
from bptt_cli.augment import Augmentation, masked, stretched, warped
from bptt_cli.choices import CALENDAR_PARTS, MISSING
from bptt_cli.errors import BpttError
from bptt_cli.input_paths import check_input
from bptt_cli.losses import IGNORE_LABEL

HEADER_BYTES = 1 << 20  # a header line longer than this is not a CSV worth reading
THOUSANDS = r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?"  # 1,234 or -12,345.5: digits grouped by thousands
# Seasons that follow from a regular time step: one day of sub-daily data, a week of days, a year of months.
SEASONS = {pd.Timedelta("15min"): 96, pd.Timedelta("30min"): 48, pd.Timedelta("1h"): 24, pd.Timedelta("1D"): 7,
           pd.Timedelta("7D"): 52}
# The cycle of each calendar input (choices.CALENDAR_PARTS): hour of the day, day of the week, day of the year.
CALENDAR_PERIODS = {"hour": pd.Timedelta("1D"), "week": pd.Timedelta("7D"), "year": pd.Timedelta("365.25D")}


@dataclass
class SeriesSpec:
    """How a CSV becomes series; stored in the model file so evaluate and generate read data the same way."""

    targets: list[str] = field(default_factory=list)  # empty: every numeric column
    features: list[str] = field(default_factory=list)  # empty: every numeric column
    task: str = "forecast"  # forecast (numeric targets, next step) | tag (a class label at every step)
    time_column: str | None = None  # None: detected when exactly one column parses as dates
    group_column: str | None = None  # one series per value
    missing: str = "error"
    # auto | none | parts of choices.CALENDAR_PARTS ("hour,week"); a trained model stores the parts it reads
    # (older model files have none)
    calendar: str = "none"
    future: list[str] = field(default_factory=list)  # input columns whose future values are known (--future)
    resample: str | None = None  # a pandas offset (5min) or auto: put the rows on that regular grid first


@dataclass
class SeriesData:
    """A CSV read and checked: one entry per series, in the order the groups first appear."""

    columns: list[str]  # numeric columns used, the order of ``values``' last axis
    features: list[str]
    targets: list[str]
    values: list[np.ndarray]  # per series (L, C) float64 in original units
    labels: list[np.ndarray] | None  # per series (L,) int64 class ids (task tag)
    classes: list[str] | None
    times: list[np.ndarray] | None  # per series (L,) datetime64[ns]
    groups: list[str]
    time_column: str | None
    group_column: str | None
    freq: str | None  # the regular time step as a pandas offset string
    notes: list[str]
    calendar: list[str] = field(default_factory=list)  # calendar parts, whose columns end ``columns``
    resample: str | None = None  # the grid the rows were put on, as a pandas offset


def _fail(path: Path, message: str) -> BpttError:
    return BpttError(f"{path}: {message}")


def _rows(index: pd.Index | np.ndarray, limit: int = 5) -> str:
    """File line numbers (header = line 1) of the first few rows, for error messages."""
    shown = ", ".join(str(int(i) + 2) for i in list(index[:limit]))
    return shown + (", ..." if len(index) > limit else "")


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a CSV with pandas, refusing files that cannot be a time series."""
    path = check_input(path)
    if path.stat().st_size == 0:
        raise _fail(path, "the file is empty; give a CSV with a header line and data rows")
    with path.open("rb") as handle:
        head = handle.read(HEADER_BYTES)
    if b"\x00" in head:
        raise _fail(path, "holds NUL bytes: a binary file, not a CSV; give a text CSV")
    line = head.split(b"\n", 1)[0]
    if len(line) == len(head) == HEADER_BYTES:
        raise _fail(path, f"the header line is longer than {HEADER_BYTES >> 20} MiB; is this a CSV?")
    try:
        header = next(csv.reader([line.decode("utf-8", errors="replace")]), [])
    except csv.Error as err:
        raise _fail(path, f"not a readable CSV header ({err}); check the file") from None
    names = [h.strip() for h in header]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise _fail(path, f"column {twice[0]!r} is named {names.count(twice[0])} times; give every column its own name")
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OverflowError, csv.Error) as err:
        reason = str(err).strip().splitlines()[0][:160]
        raise _fail(path, f"not a readable CSV ({reason}); check the file") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame) == 0:
        raise _fail(path, "the file has a header but no data rows; add rows")
    if len(frame) == 1:
        raise _fail(path, "the file has only one data row; a time series needs at least 2")
    return frame


def _parse_time(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    raw = frame[column]
    if pd.api.types.is_numeric_dtype(raw):  # numbers are read as seconds since the epoch only when asked
        parsed = pd.to_datetime(raw, unit="s", errors="coerce")
    else:
        parsed = _dates(raw, column, path)
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        raise _fail(path, f"time column {column!r}: {len(bad)} value(s) are not dates (rows {_rows(bad)}); "
                          "fix them or name another --time-column")
    return parsed


def _dates(values: pd.Series, column: str, path: Path | None) -> pd.Series:
    """Dates of text values (NaT where one is not a date); times in several zones are an error, not a guess."""
    try:
        with warnings.catch_warnings():  # pandas 2 warns (and returns objects) where pandas 3 raises
            warnings.filterwarnings("error", message=".*mixed time zones", category=FutureWarning)
            return pd.to_datetime(values, errors="coerce", format="mixed")
    except (ValueError, FutureWarning) as err:
        if "zone" not in str(err).lower():
            raise
        zones = sorted(set(values.dropna().astype(str).str.extract(r"([+-]\d\d:?\d\d|Z|UTC)$")[0].dropna()))[:3]
        raise BpttError(f"{path}: time column {column!r} mixes time zones ({', '.join(zones) or 'several'}); "
                        "write every time in one zone, or in UTC") from None


def detect_time_column(frame: pd.DataFrame, path: Path | None = None) -> str | None:
    """The one text column whose every value parses as a date, if there is exactly one.

    A column of dates with a few that do not parse is an error naming them,
    not silently a column of text.
    """
    found = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column) or column.isna().all():
            continue
        values = column.dropna().astype(str).head(200)  # a sample: _parse_time then names any bad row further on
        if not values.str.contains(r"\d").all():
            continue
        parsed = _dates(values, name, path)
        bad = values.index[parsed.isna().to_numpy()]
        if len(bad) == 0:
            found.append(name)
        elif len(bad) <= max(1, len(values) // 10):  # dates but for a few: those are mistakes
            raise _fail(path, f"column {name!r} holds dates, but {len(bad)} value(s) are not (e.g. "
                              f"{values[bad[0]]!r} in row {_rows(bad, 1)}); fix them, or name --time-column")
    return found[0] if len(found) == 1 else None


def _numbers_in_text(frame: pd.DataFrame, exclude: set[str], path: Path, notes: list[str]) -> None:
    """Columns pandas left as text that hold numbers: thousands separators are read, a stray value is named."""
    for name in frame.columns:
        column = frame[name]
        if name in exclude or pd.api.types.is_numeric_dtype(column) or column.isna().all():
            continue
        values = column.dropna().astype(str).str.strip()
        if values.str.fullmatch(THOUSANDS).any() and values.str.fullmatch(rf"{THOUSANDS}|[+-]?\d+(\.\d*)?").all():
            frame[name] = pd.to_numeric(column.astype("string").str.replace(",", "", regex=False).str.strip())
            notes.append(f"{path.name}: column {name!r} writes thousands with ',' (e.g. {values.iloc[0]!r}); "
                         "read as numbers")
            continue
        numeric = pd.to_numeric(values, errors="coerce").notna()
        if numeric.mean() >= 0.9:
            bad = values.index[~numeric.to_numpy()]
            raise _fail(path, f"column {name!r} holds numbers but also {values[bad[0]]!r} (row {_rows(bad, 1)}); "
                              "fix that value, or leave the column out with --features")


def check_scale(values: np.ndarray, columns: list[str], path: str | Path) -> None:
    """Values whose mean or spread overflows float64 (e.g. +-1.7e308) cannot be normalised: say which column."""
    with np.errstate(over="ignore", invalid="ignore"):
        spread = np.nanstd(values, axis=0) if len(values) else np.zeros(len(columns))
        centre = np.nanmean(values, axis=0) if len(values) else np.zeros(len(columns))
    bad = np.flatnonzero(~(np.isfinite(spread) & np.isfinite(centre)))
    if len(bad):
        raise BpttError(f"{path}: column {columns[int(bad[0])]!r} holds values too large to normalise (the mean or "
                        "standard deviation overflows); rescale the data")


def _check_column(frame: pd.DataFrame, name: str, option: str, path: Path) -> None:
    if name not in frame.columns:
        shown = ", ".join(frame.columns[:12])
        raise _fail(path, f"{option} {name!r} is not a column; the columns are: {shown}")


def _numeric_columns(frame: pd.DataFrame, exclude: set[str]) -> list[str]:
    return [c for c in frame.columns if c not in exclude and pd.api.types.is_numeric_dtype(frame[c])]


def _apply_missing(frame: pd.DataFrame, columns: list[str], policy: str, keys: list[str], path: Path) -> pd.DataFrame:
    """Fill or drop missing values per series; ``error`` names the column, the count and the first rows."""
    if policy not in MISSING:
        raise BpttError(f"unknown --missing {policy!r}; use one of {', '.join(MISSING)}")
    holes = frame[columns].isna()
    if not holes.to_numpy().any():
        return frame
    if policy == "error":
        column = holes.any().idxmax()
        rows = frame.index[holes[column].to_numpy()]
        raise _fail(path, f"column {column!r} has {len(rows)} missing value(s) (rows {_rows(rows)}); "
                          "choose --missing ffill, interpolate or drop")
    if policy == "drop":
        return frame[~holes.any(axis=1)]
    by = frame[keys[0]] if keys else pd.Series(0, index=frame.index)
    part = frame[columns].groupby(by, sort=False)
    if policy == "ffill":  # leading gaps take the first value that follows
        filled = part.ffill().groupby(by, sort=False).bfill()
    else:  # linear within each series; the ends hold the nearest value
        filled = part.transform(lambda s: s.interpolate(limit_direction="both"))
    frame = frame.copy()
    frame[columns] = filled
    return frame


def _regular_grid(frame: pd.DataFrame, spec: SeriesSpec, time_column: str | None, keys: list[str],
                  columns: list[str], path: Path, notes: list[str]) -> tuple[pd.DataFrame, str]:
    """The rows of each series on a regular grid of step ``spec.resample`` (auto: the most common step): rows
    in one slot are averaged, and slots without a row are gaps that ``spec.missing`` fills (error: refused)."""
    if not time_column:
        raise _fail(path, f"--resample {spec.resample}: the data has no time column to put on a grid; name one "
                          "with --time-column, or drop --resample")
    if spec.task == "tag":
        raise BpttError("--resample is for forecasting; labelled rows (--task tag) keep their own times")
    grid = _grid_step(frame[time_column], frame[keys[0]] if keys else None, spec.resample, path)
    indexed = frame.set_index(time_column)
    parts = indexed.groupby(keys[0], sort=False) if keys else indexed
    regular = parts[columns].resample(grid).mean().reset_index()  # (slots, keys + time + columns)
    gaps = regular[columns].isna().all(axis=1).to_numpy()
    count = int(gaps.sum())
    if count and spec.missing == "error":
        first = regular[time_column].iloc[int(np.argmax(gaps))]
        raise _fail(path, f"{count} time(s) on the {grid} grid have no row (the first {first}); choose --missing "
                          "ffill, interpolate or drop to fill them, or another --resample")
    if count:
        notes.append(f"{path.name}: --resample {grid} leaves {count} time(s) without a row; --missing {spec.missing} "
                     "fills them")
    return _apply_missing(regular, columns, spec.missing, keys, path), grid


def _grid_step(times: pd.Series, groups: pd.Series | None, request: str, path: Path) -> str:
    """The grid's step as a pandas offset: ``request``, or with auto the most common step within series."""
    if request != "auto":
        try:
            return pd.tseries.frequencies.to_offset(request).freqstr
        except (ValueError, TypeError):
            raise BpttError(f"--resample {request!r} is not a time step; give a pandas offset such as 5min, 1h "
                            "or 1D, or auto for the data's most common step") from None
    steps = (times.groupby(groups, sort=False).diff() if groups is not None else times.diff()).dropna()
    steps = steps[steps > pd.Timedelta(0)]
    if steps.empty:
        raise _fail(path, "--resample auto: the times never advance, so there is no step to detect; "
                          "give --resample with a step such as 5min")
    return offset_string(steps.value_counts().idxmax())


def _regularity(times: pd.Series, starts: np.ndarray) -> tuple[pd.Timedelta | None, int, int]:
    """The typical time step, and the count of duplicated times and of irregular gaps (within series)."""
    steps = times.diff().to_numpy()
    inside = np.ones(len(times), dtype=bool)
    inside[starts] = False
    steps = steps[inside]
    if len(steps) == 0:
        return None, 0, 0
    step = pd.Timedelta(np.median(steps))
    duplicates = int((steps == np.timedelta64(0)).sum())
    gaps = int(((steps != np.timedelta64(step)) & (steps != np.timedelta64(0))).sum())
    return step, duplicates, gaps


def offset_string(step: pd.Timedelta) -> str:
    return pd.tseries.frequencies.to_offset(step).freqstr


def season_of(freq: str | None) -> int | None:
    """The natural season of a regular time step (a day of half-hours is 48), if there is one."""
    if not freq:
        return None
    try:
        return SEASONS.get(pd.Timedelta(pd.tseries.frequencies.to_offset(freq)))
    except (ValueError, TypeError):
        return None


# ---------------------------------------------------------------- calendar inputs


def calendar_names(parts: list[str]) -> list[str]:
    """The input columns of calendar parts: a sine and a cosine each (``hour_sin``, ``hour_cos``, ...)."""
    return [f"{part}_{wave}" for part in parts for wave in ("sin", "cos")]


def calendar_values(times, parts: list[str]) -> np.ndarray:
    """The calendar inputs (N, 2 * parts) at ``times``: where each time falls in its day, week and year,
    as the sine and cosine of that phase, so the last moment of a cycle sits next to its first.

    Local wall-clock time for times with a zone; the year's phase counts 366 days in leap years.
    """
    stamps = pd.DatetimeIndex(times)
    seconds = (stamps.hour * 3600 + stamps.minute * 60 + stamps.second + stamps.microsecond / 1e6).to_numpy(np.float64)
    day = seconds / 86400.0  # (N,) fraction of the day gone
    phases = {"hour": day,
              "week": (stamps.day_of_week.to_numpy(np.float64) + day) / 7.0,
              "year": (stamps.day_of_year.to_numpy(np.float64) - 1 + day) / (365.0 + stamps.is_leap_year)}
    angles = np.stack([2 * np.pi * phases[part] for part in parts], axis=1)  # (N, parts)
    return np.stack([np.sin(angles), np.cos(angles)], axis=2).reshape(len(stamps), 2 * len(parts))


def parse_calendar(text: str) -> list[str] | None:
    """The parts ``--calendar`` names, [] for none, None for auto; an unknown part is refused."""
    words = [w.strip().lower() for w in str(text).split(",") if w.strip()]
    if words in (["auto"], []):
        return None if words else []
    if words == ["none"]:
        return []
    unknown = [w for w in words if w not in CALENDAR_PARTS]
    if unknown:
        raise BpttError(f"--calendar: unknown part {unknown[0]!r}; give auto, none, or some of "
                        f"{', '.join(CALENDAR_PARTS)} separated by commas (e.g. hour,week)")
    return [p for p in CALENDAR_PARTS if p in words]


def stored_calendar(stored: dict) -> list[str]:
    """The calendar parts a model file's data description reads (none in files from before them)."""
    return parse_calendar((stored.get("settings") or {}).get("calendar", "none")) or []


def choose_calendar(text: str, freq: str | None, span: pd.Timedelta | None, time_column: str | None,
                    path: Path) -> list[str]:
    """The calendar parts a training run reads, from ``--calendar`` and the data's time step and span.

    ``auto`` takes each part whose cycle is longer than the time step and at most half the longest
    series' span (a cycle seen at least twice): half-hourly data of one year gets hour and week, daily
    data of three years week and year. Named parts are checked against the step.
    """
    parts = parse_calendar(text)
    if not time_column:
        if parts:
            raise _fail(path, f"--calendar {text}: the data has no time column to read a calendar from; "
                              "name one with --time-column, or drop --calendar")
        return []
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq)) if freq else None
    if parts is None:
        if step is None or span is None:
            return []
        return [p for p in CALENDAR_PARTS if step < CALENDAR_PERIODS[p] and span >= 2 * CALENDAR_PERIODS[p]]
    for part in parts:
        if step is None or step >= CALENDAR_PERIODS[part]:
            every = f"the time step is {step}" if step is not None else "the data has no regular time step"
            raise _fail(path, f"--calendar {part}: {every}, so the {part}'s phase does not vary from row to row; "
                              "leave it out, or use --calendar auto")
    return parts


def _choose_columns(frame: pd.DataFrame, spec: SeriesSpec, exclude: set[str], need: list[str] | None,
                    path: Path) -> tuple[list[str], list[str], list[str]]:
    """Features, targets and the numeric columns they use, checked against the file's columns."""
    numeric = _numeric_columns(frame, exclude)
    for option, names in (("--target", spec.targets if spec.task == "forecast" else []), ("--features", spec.features)):
        for name in names:
            _check_column(frame, name, option, path)
            if name in exclude:
                raise _fail(path, f"{option} {name!r} is the time or group column; choose a data column")
            if name not in numeric:
                raise _fail(path, f"{option} {name!r} is not numeric (e.g. {frame[name].dropna().astype(str).iloc[0]!r} "
                                  f"in row {_rows(frame.index[frame[name].notna()], 1)}); give a numeric column"
                                  + ("" if spec.task == "tag" else ", or --task tag for labels"))
    features = list(spec.features) or list(numeric)
    targets = list(spec.targets) if spec.task == "forecast" and spec.targets else ([] if spec.task == "tag" else features)
    columns = list(dict.fromkeys(features + targets))
    for name in need or []:
        if name not in frame.columns:
            raise _fail(path, f"the model reads column {name!r}, which this file lacks; give a file with the training columns")
    if not columns:
        text = [c for c in frame.columns if c not in exclude]
        raise _fail(path, "no numeric column to learn from" + (f" ({', '.join(text[:6])} hold text)" if text else "")
                    + "; give numeric columns, or --time-column / --group-column for the others")
    return features, targets, columns


def _check_future(future: list[str], features: list[str], targets: list[str]) -> None:
    """``--future`` names input columns that are not targets: their future is given, not forecast."""
    for name in future:
        if name in targets:
            raise BpttError(f"--future {name!r} is a target: the model forecasts its future; "
                            "drop it from --future or from --target")
        if name not in features:
            raise BpttError(f"--future {name!r} is not an input column; the inputs are: {', '.join(features[:12])}")


def read_future(path: str | Path, stored: dict, names: list[str], times, wanted: list[str],
                required: list[str]) -> dict[str, np.ndarray]:
    """Future values (G, H) of the ``wanted`` input columns a ``--future`` CSV holds, per series ``names``
    at the forecast ``times`` (G lists of H times; None without a time column: its first H rows).

    The file must hold the ``required`` columns (the model's ``--future``), a row at every forecast time
    of every series (by the group column when it has one, else the same rows for all), and no gaps.
    """
    path = Path(path)
    frame = read_frame(path)
    held = [c for c in wanted if c in frame.columns]
    lacking = [c for c in required if c not in frame.columns] or ([] if held else wanted)
    if lacking:
        raise _fail(path, f"lacks column(s) {', '.join(lacking)}, whose future values the forecast needs; "
                          "add them (one row per forecast time)")
    horizon = len(times[0]) if times is not None else None
    time_column, group_column = stored.get("time_column"), stored.get("group_column")
    found = {c: [] for c in held}
    for g, name in enumerate(names):  # one iteration per series
        rows = frame[frame[group_column].astype(str) == name] if group_column in frame.columns else frame
        rows = _future_rows(rows, time_column, None if times is None else times[g], horizon, path)
        for column in held:
            found[column].append(pd.to_numeric(rows[column], errors="coerce").to_numpy(np.float64))
    values = {c: np.stack(v) for c, v in found.items()}
    for column, array in values.items():
        if not np.isfinite(array).all():
            raise _fail(path, f"column {column!r} has missing or non-numeric values at the forecast times; "
                              "give a number for every time")
    return values


def _future_rows(rows: pd.DataFrame, time_column: str | None, times, horizon: int | None, path: Path) -> pd.DataFrame:
    """The rows of a future file at the forecast ``times``, in their order."""
    if times is None or not time_column:
        return rows.iloc[:horizon]
    if time_column not in rows.columns:
        raise _fail(path, f"has no time column {time_column!r}; give one row per forecast time, with its time")
    stamps = pd.DatetimeIndex(_parse_time(rows, time_column, path))
    if stamps.has_duplicates:
        raise _fail(path, f"time {stamps[stamps.duplicated()][0]} appears twice; give one row per forecast time")
    where = stamps.get_indexer(pd.DatetimeIndex(times))
    if (where < 0).any():
        raise _fail(path, f"has no row for {times[int(np.argmax(where < 0))]} (the forecast needs the {len(times)} "
                          f"times {times[0]} .. {times[-1]}); give a row for each")
    return rows.iloc[where]


def _check_values(frame: pd.DataFrame, columns: list[str], label_column: str | None, path: Path) -> None:
    """Every used column has values, none infinite or too large to normalise, and every row a label."""
    for name in columns:
        if frame[name].isna().all():
            raise _fail(path, f"column {name!r} is empty (every value is missing); drop it or name --features")
    values = frame[columns].to_numpy(dtype=np.float64)
    infinite = np.flatnonzero(np.isinf(values).any(axis=1))
    if len(infinite):
        column = columns[int(np.isinf(values[infinite[0]]).argmax())]
        raise _fail(path, f"column {column!r} holds infinite values (rows {_rows(frame.index[infinite])}); fix the data")
    check_scale(values, columns, path)
    if label_column and frame[label_column].isna().any():
        rows = frame.index[frame[label_column].isna().to_numpy()]
        raise _fail(path, f"label column {label_column!r} has {len(rows)} missing value(s) (rows {_rows(rows)}); "
                          "label every row")


def _check_constant(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    """Constant columns carry nothing and cannot be normalised (only checked when training)."""
    spread = frame[columns].max() - frame[columns].min()
    constant = [c for c in columns if not spread[c] > 0]
    if constant:
        raise _fail(path, f"column {constant[0]!r} is constant ({frame[constant[0]].iloc[0]}); "
                          "drop it with --features or use a column that varies")


def _label_ids(text: np.ndarray, classes: list[str] | None, label_column: str, path: Path) -> tuple[np.ndarray, list[str]]:
    """Class ids of the labels (in ``classes``' order when a model fixes it, else sorted)."""
    if classes is None:
        classes = sorted(set(text.tolist()))
    lookup = {c: i for i, c in enumerate(classes)}
    ids = pd.Series(text).map(lookup)
    if ids.isna().any():
        unknown = sorted(set(text[ids.isna().to_numpy()].tolist()))
        raise _fail(path, f"label(s) {', '.join(unknown[:5])} were not seen in training; the model knows {', '.join(classes[:10])}")
    if len(classes) < 2:
        raise _fail(path, f"label column {label_column!r} holds one class only ({classes[0]}); a classifier needs 2 or more")
    return ids.to_numpy(dtype=np.int64), classes


def _time_notes(stamps: np.ndarray, starts: np.ndarray, time_column: str, path: Path,
                notes: list[str]) -> str | None:
    """The regular time step as an offset string; repeated times and irregular gaps become notes."""
    step, duplicates, gaps = _regularity(pd.Series(stamps), starts)
    if duplicates:
        notes.append(f"{path.name}: {duplicates} row(s) repeat a time already seen in their series "
                     f"(time column {time_column!r}); they are kept in file order")
    if gaps:
        notes.append(f"{path.name}: {gaps} irregular gap(s) in {time_column!r} (the usual step is {step}); "
                     "the model sees the rows as consecutive")
    return offset_string(step) if step is not None and step > pd.Timedelta(0) else None


def load_series(path: str | Path, spec: SeriesSpec, classes: list[str] | None = None,
                need: list[str] | None = None) -> SeriesData:
    """Read, check, sort and clean a CSV into series; ``classes`` fixes the label order (from a model file).

    ``need`` lists the numeric columns a trained model reads; they must all be there.
    """
    path = Path(path)
    frame = read_frame(path)
    notes: list[str] = []
    for option, name in (("--time-column", spec.time_column), ("--group-column", spec.group_column)):
        if name:
            _check_column(frame, name, option, path)
    time_column = spec.time_column or detect_time_column(
        frame.drop(columns=[spec.group_column] if spec.group_column else []), path)
    keys = [spec.group_column] if spec.group_column else []
    if time_column:
        frame[time_column] = _parse_time(frame, time_column, path)
        frame = frame.sort_values(keys + [time_column], kind="stable")
    label_column = None
    if spec.task == "tag":
        if len(spec.targets) != 1:
            raise BpttError("--task tag takes exactly one --target: the column holding the labels")
        label_column = spec.targets[0]
        _check_column(frame, label_column, "--target", path)
    exclude = {c for c in (time_column, spec.group_column, label_column) if c}
    _numbers_in_text(frame, exclude, path, notes)
    features, targets, columns = _choose_columns(frame, spec, exclude, need, path)
    _check_future(spec.future, features, targets)
    _check_values(frame, columns, label_column, path)
    frame = _apply_missing(frame, columns, spec.missing, keys, path)
    grid = None
    if spec.resample:
        frame, grid = _regular_grid(frame, spec, time_column, keys, columns, path, notes)
    if need is None:
        _check_constant(frame, columns, path)
    if len(frame) < 2:
        raise _fail(path, "fewer than 2 rows are left after --missing drop; fill the gaps instead")

    group_keys = frame[spec.group_column].astype(str).to_numpy() if spec.group_column else np.zeros(len(frame), dtype=object)
    codes, uniques = pd.factorize(group_keys, sort=False)
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    bounds = np.flatnonzero(np.diff(codes)) + 1
    starts = np.concatenate(([0], bounds))
    table = frame[columns].to_numpy(dtype=np.float64)[order]  # (rows, C) every series, one after another
    labels = None
    if label_column:
        ids, classes = _label_ids(frame[label_column].astype(str).to_numpy()[order], classes, label_column, path)
        labels = np.split(ids, bounds)
    times, freq = None, None
    if time_column:
        stamps = frame[time_column].to_numpy()[order]
        times = np.split(stamps, bounds)
        freq = _time_notes(stamps, starts, time_column, path, notes)
    if need is not None:  # a trained model reads the parts it stored
        calendar = parse_calendar(spec.calendar) or []
    else:
        calendar = choose_calendar(spec.calendar, freq, _longest_span(times) if times else None, time_column, path)
    if calendar:
        names = calendar_names(calendar)
        taken = [n for n in names if n in frame.columns]
        if taken:
            raise _fail(path, f"column {taken[0]!r} has the name of a calendar input; rename it, or --calendar none")
        table = np.concatenate([table, calendar_values(stamps, calendar)], axis=1)
        columns, features = columns + names, features + names
    values = np.split(table, bounds)
    return SeriesData(columns, features, targets if spec.task == "forecast" else [label_column], values, labels,
                      classes, times, [str(u) for u in uniques], time_column, spec.group_column, freq, notes, calendar,
                      grid)


def _longest_span(times: list[np.ndarray]) -> pd.Timedelta:
    """The time from the first to the last row of the longest series."""
    return max(pd.Timestamp(t[-1]) - pd.Timestamp(t[0]) for t in times)


# ---------------------------------------------------------------- normalisation


@dataclass
class Normaliser:
    """Per-column mean and standard deviation, fitted on training data only."""

    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)

    @classmethod
    def fit(cls, arrays: list[np.ndarray]) -> "Normaliser":
        stacked = np.concatenate(arrays)
        std = stacked.std(axis=0)
        return cls(stacked.mean(axis=0), np.where(std > 0, std, 1.0))

    def apply(self, values: np.ndarray, columns: np.ndarray | slice = slice(None)) -> np.ndarray:
        """To normalised units; ``columns`` picks the statistics of the columns ``values`` holds."""
        return ((values - self.mean[columns]) / self.std[columns]).astype(np.float32)

    def invert(self, values: np.ndarray, columns: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Back to original units; ``columns`` picks the statistics of the columns ``values`` holds."""
        return values * self.std[columns] + self.mean[columns]

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "Normaliser":
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["std"], dtype=np.float64))


# ---------------------------------------------------------------- splits and streams


@dataclass
class Streams:
    """Sequences packed into B time-major streams."""

    inputs: torch.Tensor  # (T, B, F) float32 features, or (T, B) int64 token ids
    targets: torch.Tensor  # (T, B, O) float32 with NaN where no loss, or (T, B) int64 with IGNORE_LABEL
    resets: np.ndarray  # (T, B) bool: a new sequence begins here (its state starts from zeros)
    where: list[tuple[int, int, int]]  # per piece: (stream, first step, length)


def split_pieces(lengths: list[int], streams: int, min_length: int) -> list[tuple[int, int, int]]:
    """Cut sequences into (sequence, start, end) pieces so that about ``streams`` pieces exist.

    Fewer sequences than streams would leave streams idle; a piece is never
    shorter than ``min_length`` steps, so each still spans several windows.
    """
    total = sum(lengths)
    if len(lengths) >= streams or min_length <= 0:
        return [(i, 0, n) for i, n in enumerate(lengths)]
    size = max(min_length, math.ceil(total / streams))
    pieces = []
    for i, n in enumerate(lengths):
        count = max(1, n // size)
        edges = np.linspace(0, n, count + 1).round().astype(int)
        pieces += [(i, int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
    return pieces


def pack(inputs: list[np.ndarray], targets: list[np.ndarray], streams: int, align_end: bool = False,
         mark_padding: bool = False) -> Streams:
    """Pack sequences (L_i, F) with their targets (L_i, ...) into at most ``streams`` streams.

    Longest first, each to the emptiest stream; ``align_end`` instead puts one
    sequence per stream, ending at the last step, so the final state of stream
    b is the state at the end of sequence b. ``mark_padding`` also resets where a
    stream's padding begins, so that its last sequence ends there (a bidirectional
    model reads each sequence backwards from its end).
    """
    lengths = np.array([len(x) for x in inputs], dtype=np.int64)
    if align_end:
        batch = len(inputs)
        stream_of = np.arange(batch)
        start_of = lengths.max() - lengths
    else:
        batch = max(1, min(streams, len(inputs)))
        stream_of = np.empty(len(inputs), dtype=np.int64)
        start_of = np.empty(len(inputs), dtype=np.int64)
        totals = np.zeros(batch, dtype=np.int64)
        for i in np.argsort(-lengths, kind="stable"):  # one iteration per sequence, not per step
            b = int(totals.argmin())
            stream_of[i], start_of[i] = b, totals[b]
            totals[b] += lengths[i]
    steps = int((start_of + lengths).max())
    flat_x = np.concatenate(inputs)
    flat_x = flat_x.astype(np.int64 if flat_x.dtype.kind in "iu" else np.float32)  # token ids stay ids
    flat_y = np.concatenate(targets)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    t = np.repeat(start_of, lengths) + (np.arange(len(flat_x)) - offsets)
    b = np.repeat(stream_of, lengths)
    x = np.zeros((steps, batch, *flat_x.shape[1:]), dtype=flat_x.dtype)
    x[t, b] = flat_x
    if flat_y.dtype.kind == "f":
        y = np.full((steps, batch, *flat_y.shape[1:]), np.nan, dtype=np.float32)
    else:
        y = np.full((steps, batch, *flat_y.shape[1:]), IGNORE_LABEL, dtype=np.int64)
    y[t, b] = flat_y
    resets = np.zeros((steps, batch), dtype=bool)
    resets[start_of, stream_of] = True
    if mark_padding:
        filled = np.zeros(batch, dtype=np.int64)
        np.maximum.at(filled, stream_of, start_of + lengths)
        padded = np.flatnonzero(filled < steps)
        resets[filled[padded], padded] = True
    where = list(zip(stream_of.tolist(), start_of.tolist(), lengths.tolist()))
    return Streams(torch.from_numpy(x), torch.from_numpy(y), resets, where)


@dataclass
class SequenceBatches:
    """Whole sequences, ``size`` to an update, in an order drawn anew each epoch from the seed and the epoch.

    What the trainer takes instead of streams when every update is full BPTT over whole labelled
    sequences: an epoch has ceil(N / size) updates rather than one, and a resumed run draws the same
    order with no generator state to store. The last batch of an epoch is filled up from its first
    sequences, so every batch has ``size`` streams (the state's shape never changes).
    """

    inputs: list[np.ndarray]  # per sequence (L_i, F)
    targets: list[np.ndarray]  # per sequence (L_i,) labels
    size: int  # sequences per update (--batch-size), at most the sequences there are
    seed: int
    mark_padding: bool = False  # reset where a stream's padding begins (bidirectional models)
    augmentation: Augmentation = Augmentation()  # --augment: what each training batch gets

    def __len__(self) -> int:
        return math.ceil(len(self.inputs) / self.size)

    @property
    def longest(self) -> int:
        return max(len(x) for x in self.inputs)

    def batch(self, epoch: int, index: int) -> Streams:
        """Update ``index`` of ``epoch``: its sequences one per stream from step 0, padded to the longest."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.inputs))
        chosen = np.concatenate([order, order])[index * self.size : (index + 1) * self.size]
        inputs, targets = [self.inputs[i] for i in chosen], [self.targets[i] for i in chosen]
        rng = np.random.default_rng([self.seed, epoch, index])  # the update's own draws: a resume repeats them
        if self.augmentation.stretch:
            inputs, targets = stretched(inputs, targets, self.augmentation.stretch, rng)
        streams = pack(inputs, targets, self.size, mark_padding=self.mark_padding)
        if self.augmentation:
            lengths = np.zeros(streams.inputs.shape[1], dtype=np.int64)
            lengths[[w[0] for w in streams.where]] = [w[2] for w in streams.where]
            if self.augmentation.warp:
                warped(streams.inputs.numpy(), self.augmentation, rng)
            masked(streams.inputs.numpy(), lengths, self.augmentation, rng)  # the tensor shares the array
        inputs, targets, resets = (distributed.shard_streams(s) for s in (streams.inputs, streams.targets,
                                                                           streams.resets))
        return Streams(inputs, targets, resets, [])


def check_window(window: int, longest: int, what: str) -> None:
    """A window longer than every sequence can never be filled: say so before training."""
    if window > longest:
        raise BpttError(f"--window {window} is longer than the data (the longest {what} has {longest} steps); "
                        f"use --window {max(1, longest // 2)} or less, or --window 0 for full BPTT")
