"""CSV time series: numeric targets forecast one step ahead, or a class label tagged at every step."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from bptt_cli.choices import SERIES_TASKS as TASKS
from bptt_cli.errors import BpttError
from bptt_cli.kinds.base import kind_option
from bptt_cli.kinds.sequences import SequenceKind, Sequences
from bptt_cli.series import SeriesSpec, calendar_names, load_series, stored_calendar



@dataclass
class SeriesOptions:
    """The options of ``bptt train`` for CSV data (named as the command names its parameters)."""

    target_columns: list[str] = kind_option(default_factory=list, shape=True)  # --target: every numeric column
    features: list[str] = kind_option(default_factory=list, shape=True)  # --features: input columns
    task: str | None = kind_option(None, shape=True)  # forecast | tag; None: forecast
    time_column: str | None = None
    group_column: str | None = None
    missing: str = "error"  # one of choices.MISSING
    loss: str = kind_option("mse", shape=True)  # one of choices.LOSSES; gaussian and quantile change the outputs
    quantiles: str | None = kind_option(None, shape=True)  # --quantiles 0.1,0.5,0.9 with --loss quantile
    season: int | None = None  # steps per season; None: from the time step when it has a natural one
    bidirectional: bool = kind_option(False, shape=True)  # --task tag only, with --window 0
    calendar: str = kind_option("auto", shape=True)  # --calendar: auto | none | hour,week,year (extra inputs)
    future: list[str] = kind_option(default_factory=list)  # --future: inputs whose future values are known
    resample: str | None = None  # --resample: a pandas offset (5min) or auto; the rows go on that grid first


class SeriesKind(SequenceKind, name="series", what="CSV data", holds="a CSV time series", options=SeriesOptions):
    def predictor(self, file, model_path: Path, device, horizon: int = 1):
        from bptt_cli.predict import SeriesPredictor

        return SeriesPredictor(file, model_path, device, horizon)

    def claims(self, data: Path) -> bool:
        return Path(data).suffix.lower() == ".csv"

    def read(self, data: Path, options: SeriesOptions, stored: dict | None = None,
             labels: Path | None = None) -> Sequences:
        if stored:
            spec = SeriesSpec(**stored["settings"])
        else:
            task = options.task or "forecast"
            if task not in TASKS:
                raise BpttError(f"--task is forecast or tag, got {task!r}")
            spec = SeriesSpec(list(options.target_columns), list(options.features), task, options.time_column,
                              options.group_column, options.missing, options.calendar or "auto",
                              list(options.future), options.resample)
        need = None
        if stored:  # the calendar columns are computed from the times, not read from the file
            computed = set(calendar_names(stored_calendar(stored)))
            need = [c for c in stored["columns"] if c not in computed]
        found = load_series(data, spec, stored.get("classes") if stored else None, need)
        if stored:  # the model reads the training columns, in the training order
            found = _reorder(found, stored)
        computed = set(calendar_names(found.calendar))
        spec.time_column, spec.targets = found.time_column, found.targets
        spec.features = [c for c in found.features if c not in computed]
        spec.calendar = ",".join(found.calendar) or "none"
        spec.resample = found.resample
        index = {c: i for i, c in enumerate(found.columns)}
        return Sequences(
            "series", "tag" if spec.task == "tag" else "forecast", found.groups, found.values, found.labels,
            found.columns, [index[c] for c in found.features],
            [index[c] for c in found.targets] if spec.task == "forecast" else [], found.classes, found.times,
            found.time_column, found.group_column, found.freq, found.notes, asdict(spec),
        )


def _reorder(found, stored: dict):
    """Put the columns a model was trained on first, in its order (a later file may order them otherwise)."""
    order = [found.columns.index(c) for c in stored["columns"]]
    found.values = [v[:, order] for v in found.values]
    found.columns = list(stored["columns"])
    found.features = [found.columns[i] for i in stored["features"]]
    if stored["task"] == "forecast":
        found.targets = [found.columns[i] for i in stored["targets"]]
    return found

