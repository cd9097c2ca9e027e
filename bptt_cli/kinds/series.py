"""CSV time series: numeric targets forecast one step ahead, or a class label tagged at every step."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from bptt_cli.choices import SERIES_DEFAULTS, SERIES_PATIENCE
from bptt_cli.choices import SERIES_TASKS as TASKS
from bptt_cli.errors import BpttError
from bptt_cli.kinds.base import kind_option, table_defaults
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
    leads: int | None = kind_option(None, shape=True)  # steps decoded at once; None: a season (1: next step only)
    anchor: str = kind_option("linear", shape=True)  # one of choices.ANCHORS: linear | last (the change) | none


# --window left at its default and a season known (--season, or the time step's): a window of this many seasons,
# so every update back-propagates through whole cycles (a direct head's block of --leads is one season by default)
SEASON_WINDOW_SEASONS = 2
MAX_SEASON_WINDOW = 512  # steps; 15-minute data (96 a day) gets 192, a weekly season of half-hours (336) this


def season_window(season: int, longest: int) -> int:
    """The default --window of a series with a known season: SEASON_WINDOW_SEASONS seasons, never shorter than
    the plain default, capped at MAX_SEASON_WINDOW and at half the longest training sequence (not below that
    default: a series too short for it keeps today's window)."""
    base = SERIES_DEFAULTS["window"]
    return min(max(base, SEASON_WINDOW_SEASONS * season), MAX_SEASON_WINDOW, max(base, longest // 2))


class SeriesKind(SequenceKind, name="series", what="CSV data", holds="a CSV time series", options=SeriesOptions):
    def defaults(self, values: dict, untouched: set[str]) -> dict:
        found = table_defaults(SERIES_DEFAULTS, values, untouched)
        if "patience" in untouched and (values.get("val") or values.get("val_fraction")):
            found["patience"] = SERIES_PATIENCE
        return found

    def tie_to_data(self, split_data, season: int | None, run) -> None:
        """A --window left at its default follows the season (``season_window``), in the run and its files."""
        if "window" not in run.untouched or not season:
            return
        longest = max(split_data.ends[i] for i in split_data.train_ids) - 1  # the steps of the longest training pairs
        window = season_window(season, longest)
        run.train_config.window = run.run_config["window"] = window

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

