"""How series and audio results look: forecast error tables against the baselines, classification
figures with a confusion table, and forecasts as CSV or .npy bytes."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bptt_cli.atomic import write_bytes
from bptt_cli.losses import level_name
from bptt_cli.render.console import info, print_json, print_table

METRICS = {"mae": "MAE", "rmse": "RMSE", "smape": "sMAPE %", "mase": "MASE", "mase_seasonal": "MASE (seasonal)",
           "pinball": "pinball", "crps": "CRPS"}
NAMES = {"model": "model", "persistence": "persistence (last value)", "seasonal_naive": "seasonal naive"}


def render_sequence_scores(figures: dict, as_json: bool) -> None:
    """Forecast or classification figures: tables on stderr, or one JSON object on stdout."""
    for note in figures.get("notes", []):
        info(note)
    if as_json:
        print_json({k: v for k, v in figures.items() if k not in ("notes", "plot", "backtest")})
        return
    if figures["task"] == "forecast":
        _forecast_tables(figures)
    else:
        _classification_tables(figures)


def _forecast_tables(figures: dict) -> None:
    intervals = figures.get("intervals", [])
    covered = [f"in {i['nominal']:.0%} interval" for i in intervals]
    for horizon, result in figures["horizons"].items():
        shown = [m for m in METRICS if m in result["model"]]  # MASE (seasonal) where the model knows its season
        rows = [[NAMES[name], *(result[name].get(m, "") for m in shown), *result[name].get("coverage", [""] * len(covered))]
                for name in NAMES if name in result]
        captions = []
        if "seasonal_naive" not in result:
            captions.append("give --season S to compare with the seasonal-naive forecast as well")
        if intervals:
            captions.append("pinball: mean quantile loss over the levels; 'in N% interval': the share of actual values "
                            "inside it (the baselines' intervals: their training errors' quantiles at each lead)")
        title = "one-step forecast" if horizon == "1" else f"forecasts 1..{horizon} steps ahead"
        print_table(f"{title}: {result['points']:,} points, targets {', '.join(figures['targets'])}",
                    ["forecast", *(METRICS[m] for m in shown), *covered], rows, caption="\n".join(captions) or None)


def _classification_tables(figures: dict) -> None:
    unit = "sequences" if "sequences" in figures else "frames"
    print_table("classification", ["", "value"], [
        ["accuracy", figures["accuracy"]],
        ["macro-F1", figures["macro_f1"]],
        [f"{unit} scored", figures[unit]],
    ])
    classes = figures["classes"]
    print_table("confusion (rows: true class, columns: predicted)", ["", *classes],
                [[name, *row] for name, row in zip(classes, figures["confusion"])])


def render_forecast_notes(result: dict) -> None:
    for note in result["notes"]:
        info(note)


def render_forecast_plot(picture: dict, path) -> None:
    """The ``plot`` entry of a forecast or a scoring, drawn to ``path`` (checked before the work began)."""
    from bptt_cli.render.plotting import plot_forecast

    info(f"wrote {plot_forecast(path, **picture)}")


def render_forecast(result: dict, output) -> None:
    """The forecast to ``output`` (CSV, or .npy frames), written atomically, or as CSV on stdout."""
    render_forecast_notes(result)
    payload = forecast_bytes(result, output)
    if output is None:
        sys.stdout.write(payload.decode())
        sys.stdout.flush()
        return
    write_bytes(output, payload)  # -o was checked before the work began (output_paths.check_output)
    info(f"wrote {result['horizon']} forecast step(s) for {len(result['names'])} sequence(s) to {output}")


def forecast_frame(result: dict) -> pd.DataFrame:
    """The forecast as a table: [group,] [time,] one column per target, then, for a gaussian or quantile
    model, one per target and level (Demand_p10, Demand_p50, Demand_p90), H rows per series."""
    values = result["values"]  # (G, H, O)
    groups, horizon = len(result["names"]), result["horizon"]
    frame = pd.DataFrame(values.reshape(groups * horizon, -1), columns=result["targets"])
    for name, column in _level_columns(result.get("bands"), result.get("levels", []), result["targets"]):
        frame[name] = column
    if result["times"] is not None:
        frame.insert(0, result["time_column"], np.concatenate([t.astype(str) for t in result["times"]]))
    else:
        frame.insert(0, "step", np.tile(np.arange(1, horizon + 1), groups))
    if result["group_column"]:
        frame.insert(0, result["group_column"], np.repeat(result["names"], horizon))
    return frame


def forecast_bytes(result: dict, path: str | Path | None) -> bytes:
    """The forecast as CSV, or as .npy frames (H, O) for feature data written to a .npy path."""
    if path is not None and Path(path).suffix.lower() == ".npy":
        buffer = io.BytesIO()
        values = result["values"]
        np.save(buffer, (values[0] if len(values) == 1 else values).astype(np.float32))
        return buffer.getvalue()
    return forecast_frame(result).to_csv(index=False, float_format="%.6g").encode()


def _level_columns(bands, levels: list[float], targets: list[str]):
    """(name, values) of every target's forecast at every level, from bands (..., H, L, O), rows flattened."""
    if bands is None:
        return
    flat = bands.reshape(-1, *bands.shape[-2:])  # (rows, L, O)
    for j, target in enumerate(targets):
        for k, level in enumerate(levels):
            yield f"{target}_{level_name(level)}", flat[:, k, j]


def backtest_frame(figures: dict) -> pd.DataFrame:
    """Every --horizon forecast scored, one row per (origin, lead, target): the backtest a user keeps."""
    scored = figures["backtest"]
    names, times = scored.names, scored.times
    n, horizon, width = scored.truth.shape
    origin, lead, target = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(1, horizon + 1), np.arange(width),
                                                           indexing="ij"))
    columns: dict = {}
    if len(names) > 1:
        columns["series"] = np.asarray(names, dtype=object)[scored.sequence[origin]]
    rows = scored.origin[origin]
    if times is not None:
        which = scored.sequence[origin]
        columns["origin"] = _time_text([times[i][r] for i, r in zip(which, rows)])
        columns["time"] = _time_text([times[i][r + h] for i, r, h in zip(which, rows, lead)])
    else:
        columns["origin"] = rows
    columns |= {"lead": lead, "target": np.asarray(figures["targets"], dtype=object)[target],
                "forecast": scored.point.ravel(), "actual": scored.truth.ravel()}
    levels = figures.get("levels", [])
    _add_bands(columns, "", scored.bands, levels)
    for name, values in scored.baselines.items():
        columns[name] = values.ravel()
        _add_bands(columns, f"{name}_", scored.baseline_bands.get(name), levels)
    return pd.DataFrame(columns)


def _time_text(times: list) -> np.ndarray:
    """Times as the data writes them (2024-01-01 12:30:00), not numpy's ISO form with nanoseconds."""
    return pd.to_datetime(np.asarray(times)).astype(str).to_numpy()


def _add_bands(columns: dict, prefix: str, bands, levels: list[float]) -> None:
    """Interval columns (p10, p50, p90 ...) of one forecaster, rows in (origin, lead, target) order."""
    if bands is None:
        return
    for k, level in enumerate(levels):
        columns[f"{prefix}{level_name(level)}"] = bands[:, :, k, :].ravel()


def render_backtest(figures: dict, path: Path) -> None:
    """The backtest CSV, written atomically to ``path`` (checked before the work began)."""
    frame = backtest_frame(figures)
    write_bytes(path, frame.to_csv(index=False, float_format="%.10g").encode())
    origins = len(figures["backtest"].origin)
    info(f"wrote {len(frame):,} forecasts ({origins:,} origins x {figures['backtest'].truth.shape[1]} leads x "
         f"{len(figures['targets'])} targets) to {path}")
