"""Predictions as rows arrive: one recurrent step per row, the state carried and never recomputed.

A predictor reads one record at a time (a dict of column values for a series
model, a line for a text model, a frame for a feature model) and returns the
figures for it at once, so ``bptt predict`` can flush a line per row. Its
carried state can be saved and loaded (``save_state``/``load_state``), so one
stream continues across invocations; a state file names the model it belongs to.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import torch

from bptt_cli import forecast
from bptt_cli.atomic import atomic_write
from bptt_cli.errors import BpttError
from bptt_cli.losses import OutputHead, class_sum, level_name
from bptt_cli.memory import require_rollout_fits
from bptt_cli.models import next_step
from bptt_cli.residuals import ResidualBands
from bptt_cli.series import Normaliser, calendar_names, calendar_values, stored_calendar
from bptt_cli.token_cache import sha256

STATE_FORMAT = "bptt-stream-state"
STATE_VERSION = 1


class BadRow(BpttError):
    """A record that cannot be read: the stream skips it or stops, as the user chose."""


@dataclass
class StreamState:
    """What a stream carries from one record to the next."""

    state: tuple  # the recurrent state, each (layers, 1, hidden)
    rows: int = 0  # records read so far
    last_time: str | None = None  # the time of the last row (series with a time column)
    history: np.ndarray | None = None  # (<= season, C) the last rows in original units, to fill future inputs
    logits: torch.Tensor | None = None  # text: the prediction for the next token (None before the first)
    header: list[str] | None = None  # the CSV header the stream's rows follow, so a later invocation may omit it


class Predictor:
    """One model, one stream; ``step`` takes a record and returns what to print for it."""

    def __init__(self, file, model_path: Path, device: torch.device, horizon: int = 1):
        self.file, self.device, self.horizon = file, device, horizon
        self.model = file.model.to(device).eval()
        self.model_sha256 = sha256(model_path)
        self.stream = StreamState(self.model.init_state(1, device))

    def load_state(self, path: Path) -> None:
        """Continue the stream a state file holds; refused for another model's state."""
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise BpttError(f"--state {path}: not a readable bptt state file; remove it to start a new stream") from None
        if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
            raise BpttError(f"--state {path}: not a bptt state file; name another file or remove it")
        if saved.get("model_sha256") != self.model_sha256:
            raise BpttError(f"--state {path}: it belongs to another model file; use a state file of this model "
                            "or remove it to start a new stream")
        parts = saved.get("state")
        expected = self.stream.state
        if not isinstance(parts, list) or len(parts) != len(expected) or any(
                not isinstance(p, torch.Tensor) or p.shape != e.shape for p, e in zip(parts, expected)):
            raise BpttError(f"--state {path}: damaged state file (its state does not fit the model); remove it")
        logits = saved.get("logits")
        self.stream = StreamState(tuple(p.to(self.device, expected[0].dtype) for p in parts), int(saved.get("rows", 0)),
                                  saved.get("last_time"),
                                  None if saved.get("history") is None else np.asarray(saved["history"], np.float64),
                                  logits.to(self.device) if isinstance(logits, torch.Tensor) else None,
                                  saved.get("header"))

    def save_state(self, path: Path) -> None:
        """Write the carried state atomically, beside what a later invocation needs to go on."""
        payload = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "model_sha256": self.model_sha256,
                   "state": [s.detach().cpu() for s in self.stream.state], "rows": self.stream.rows,
                   "last_time": self.stream.last_time,
                   "history": None if self.stream.history is None else self.stream.history.tolist(),
                   "logits": None if self.stream.logits is None else self.stream.logits.cpu(),
                   "header": self.stream.header}
        atomic_write(path, lambda handle: torch.save(payload, handle))

    def columns(self) -> list[str]:
        raise NotImplementedError

    def needed(self) -> list[str]:
        """The fields a record must have (none for text lines)."""
        return []

    def future_notes(self, assume_seasonal: bool) -> list[str]:
        """What the forecasts assume of inputs whose future no row brings; refused without ``assume_seasonal``."""
        return []

    def step(self, record) -> dict:
        raise NotImplementedError


class SeriesPredictor(Predictor):
    """A forecast after every row: the next step, or ``horizon`` steps rolled out from a copy of the state."""

    def __init__(self, file, model_path: Path, device: torch.device, horizon: int = 1):
        if file.data.get("task") != "forecast":
            raise BpttError(f"this model labels data ({file.data.get('task')}); score it with 'bptt evaluate'")
        if horizon < 1:
            raise BpttError(f"--horizon must be at least 1, got {horizon}")
        super().__init__(file, model_path, device, horizon)
        require_rollout_fits(file.model.config, horizon, 1)
        data = file.data
        self.norm = Normaliser.from_dict(data["norm"])
        self.names, self.features, self.targets = data["columns"], data["features"], data["targets"]
        self.time_column, self.season = data.get("time_column"), data.get("season")
        self.feed = forecast.feedback(self.features, self.targets)
        self.head = OutputHead.stored(data, file.config)  # a gaussian or quantile model also prints its levels
        # a point model prints the levels of its validation errors (older files have none)
        self.residual = None if self.head.probabilistic else ResidualBands.stored(data)
        # rows of history kept to fill future inputs one season back, and for a linear start's lags
        self.keep = max(1, self.season or 1, self.model.config.linear_lags)
        self.calendar = stored_calendar(data)  # computed from each row's time, never read from the row
        computed = calendar_names(self.calendar)
        self.given = [c for c in self.names if c not in computed]  # the columns a row brings
        self.given_index = [self.names.index(c) for c in self.given]
        self.computed = [self.names.index(c) for c in computed]
        self.step_offset = pd.tseries.frequencies.to_offset(data["freq"]) if data.get("freq") else None

    def needed(self) -> list[str]:
        """The columns a row must have."""
        return ([self.time_column] if self.time_column else []) + list(self.given)

    def future_notes(self, assume_seasonal: bool) -> list[str]:
        """A forecast of several steps reuses last season's values of the inputs it neither predicts nor
        computes (a row brings only their present), as ``generate`` does only when told to."""
        outside = forecast.outside_inputs(self.file.data) if self.horizon > self.model.config.leads else []
        if not outside:
            return []
        how = forecast.reused_values(self.season)
        if not assume_seasonal:
            raise BpttError(f"inputs {', '.join(outside)} are not forecast and their future is unknown: "
                            f"--horizon {self.horizon} would use {how}; pass --assume-seasonal to accept that, "
                            "or --horizon 1")
        return [f"--assume-seasonal: inputs {', '.join(outside)} are not forecast; the forecasts use {how}"]

    def columns(self) -> list[str]:
        lead = [""] if self.horizon == 1 else [f"+{k}" for k in range(1, self.horizon + 1)]
        banded = self.residual or self.head
        levels = [""] + [f"_{level_name(q)}" for q in banded.levels]  # Demand, Demand_p10, ... per lead
        names = [f"{self.names[t]}{level}{suffix}" for suffix in lead for level in levels for t in self.targets]
        return ([self.time_column] if self.time_column else []) + names

    def _values(self, record: dict) -> tuple[np.ndarray, pd.Timestamp | None]:
        """The row's values (C,) in the model's column order, its calendar inputs computed from its time."""
        missing = [c for c in self.given if c not in record or record[c] in (None, "")]
        if missing:
            raise BadRow(f"missing column(s) {', '.join(missing)}")
        try:
            given = [float(record[c]) for c in self.given]
        except (TypeError, ValueError):
            bad = next(c for c in self.given if not _is_number(record[c]))
            raise BadRow(f"column {bad!r} is not a number ({record[bad]!r})") from None
        values = np.zeros(len(self.names), dtype=np.float64)
        values[self.given_index] = given
        if not np.isfinite(values).all():
            raise BadRow("a value is NaN or infinite")
        when = None
        if self.time_column:
            when = pd.to_datetime(record.get(self.time_column), errors="coerce")
            if pd.isna(when):
                raise BadRow(f"time {record.get(self.time_column)!r} is not a date")
            if self.stream.last_time is not None and when <= pd.Timestamp(self.stream.last_time):
                raise BadRow(f"time {when} does not come after the previous row's {self.stream.last_time}")
            if self.calendar:
                values[self.computed] = calendar_values([when], self.calendar)[0]
        return values, when

    def _future_times(self, when: pd.Timestamp | None):
        """The times of the ``horizon`` steps after ``when`` (None without a time column or a regular step)."""
        if when is None or self.step_offset is None:
            return None
        return pd.date_range(when, periods=self.horizon + 1, freq=self.step_offset)[1:]

    @torch.no_grad()
    def step(self, record: dict) -> dict:
        values, when = self._values(record)
        x = torch.from_numpy(self.norm.apply(values[None, :])[:, self.features]).to(self.device)  # (1, F)
        previous = self.stream.history if self.stream.history is not None else np.zeros((0, len(self.names)))
        history = np.concatenate([previous[-(self.keep - 1):] if self.keep > 1 else previous[:0], values[None, :]])
        trail = forecast.trail_at(self.model, torch.from_numpy(self.norm.apply(history)[:, self.features]).to(
            self.device), np.array([len(history) - 1]))
        if self.horizon == 1:
            out, state = self.model.recur(x.unsqueeze(0), self.stream.state)  # (1, 1, hidden): one step
            predicted = next_step(forecast.decoded(self.model, out[0], x, trail), self.model.config).unsqueeze(1)
            bands = self.head.bands(predicted) if self.head.probabilistic else None
        else:
            known = self.norm.apply(forecast.future_inputs(history, self.horizon, self.season, self.names,
                                                           self.calendar, self._future_times(when)))
            known = torch.from_numpy(known[None, :, self.features]).to(self.device)
            predicted = forecast.rollout(self.model, self.stream.state, x, known, self.feed, self.horizon, self.head,
                                         trail=trail)
            bands = forecast.rollout_bands(self.model, self.stream.state, x, known, self.feed, self.horizon,
                                           self.head, predicted)
            _, state = self.model.recur(x.unsqueeze(0), self.stream.state)
        self.stream = StreamState(state, self.stream.rows + 1, str(when) if when is not None else None,
                                  history, None, self.stream.header)
        point = self.norm.invert(self.head.point(predicted[0]).double().cpu().numpy(), self.targets)  # (H, O)
        if bands is not None:
            levels = self.norm.invert(bands[0].double().cpu().numpy(), self.targets)  # (H, L, O)
        elif self.residual is not None:
            levels = self.residual.around(point[None])[0]
        else:
            levels = np.zeros((len(point), 0, point.shape[1]))
        forecast_values = np.concatenate([point[:, None], levels], axis=1)  # (H, 1 + L, O)
        result: dict = {}
        if self.time_column:
            result[self.time_column] = str(when + self.step_offset) if self.step_offset is not None else str(when)
        names = self.columns()[1:] if self.time_column else self.columns()
        result.update(zip(names, forecast_values.reshape(-1).tolist()))
        return result


class TextPredictor(Predictor):
    """Every line scored as it comes: how surprising it is to the model, given every line before it."""

    def __init__(self, file, model_path: Path, device: torch.device, horizon: int = 1):
        if horizon != 1:
            raise BpttError("--horizon is for series models; a text model scores each line")
        super().__init__(file, model_path, device)

    def columns(self) -> list[str]:
        return ["line", "tokens", "unknown_tokens", "bits_per_token", "surprise_bits"]

    @torch.no_grad()
    def step(self, line: str) -> dict:
        ids, unknown = self.file.tokenizer.encode(line if line.endswith("\n") else line + "\n")
        self.stream.rows += 1
        if len(ids) == 0:
            return dict(zip(self.columns(), [self.stream.rows, 0, unknown, math.nan, 0.0]))
        x = torch.as_tensor(ids.astype(np.int64), device=self.device).view(-1, 1)  # (T, 1)
        logits, state = self.model(x, self.stream.state)  # (T, 1, V)
        scored = logits[:-1, 0]  # predictions of ids[1:] within the line
        wanted = x[1:, 0]
        if self.stream.logits is not None:  # the line's first token, predicted from the lines before it
            scored, wanted = torch.cat([self.stream.logits, scored]), torch.cat([x[:1, 0], wanted])
        nats = float(class_sum(scored.unsqueeze(1), wanted.unsqueeze(1))[0]) if len(wanted) else 0.0  # (T, 1, V)
        self.stream.state, self.stream.logits = state, logits[-1:, 0]
        bits = nats / math.log(2)
        per = bits / len(wanted) if len(wanted) else math.nan
        return dict(zip(self.columns(), [self.stream.rows, int(len(wanted)), unknown, per, bits]))


class FramePredictor(SeriesPredictor):
    """Feature frames (a .npy file's rows) in, the next frame out, one recurrent step per frame."""

    def step(self, frame) -> dict:
        return super().step(dict(zip(self.names, np.asarray(frame, dtype=np.float64).tolist())))


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True



class Records:
    """(line number, record) from lines as they arrive: text lines as they are; for a series, CSV rows or
    JSON objects, one per line (told apart by the first line, after which ``json_lines`` says which).

    A CSV stream's first line is its header when it names every ``needed`` column; without one, the rows
    follow ``header`` (the one a state file kept). A row that cannot be parsed comes as a ``BadRow``.
    """

    def __init__(self, lines: Iterable[str], text: bool, needed: list[str] = (), header: list[str] | None = None):
        self.lines, self.text, self.needed, self.header = lines, text, list(needed), header
        self.json_lines = False

    def __iter__(self) -> Iterator[tuple[int, object]]:
        first = True
        for number, line in enumerate(self.lines, start=1):
            if self.text:
                yield number, line
                continue
            if not line.strip():
                continue
            if first:
                first, self.json_lines = False, line.lstrip().startswith("{")
                fields = next(csv.reader([line]), [])
                if not self.json_lines and set(self.needed) <= set(fields):
                    self.header = fields
                    continue
                if not self.json_lines and self.header is None:
                    raise BpttError(f"line {number} is not a CSV header naming the model's columns "
                                    f"({', '.join(self.needed)}); start the stream with its header")
            yield number, (_json_record(line) if self.json_lines else _csv_record(line, self.header))


def _json_record(line: str):
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return BadRow(f"not a JSON object ({err.msg})")
    return record if isinstance(record, dict) else BadRow("not a JSON object")


def _csv_record(line: str, header: list[str]):
    fields = next(csv.reader([line]), [])
    if len(fields) != len(header):
        return BadRow(f"{len(fields)} field(s) where the header has {len(header)}")
    return dict(zip(header, fields))
