"""How series and audio results look: forecast error tables against the baselines, classification
figures with a confusion table, and forecasts as CSV or .npy bytes."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bptt_cli.atomic import write_bytes
from bptt_cli.render.console import info, print_json, print_table

METRICS = {"mae": "MAE", "rmse": "RMSE", "smape": "sMAPE %", "mase": "MASE", "mase_seasonal": "MASE (seasonal)"}
NAMES = {"model": "model", "persistence": "persistence (last value)", "seasonal_naive": "seasonal naive"}


def render_sequence_scores(figures: dict, as_json: bool) -> None:
    """Forecast or classification figures: tables on stderr, or one JSON object on stdout."""
    for note in figures.get("notes", []):
        info(note)
    if as_json:
        print_json({k: v for k, v in figures.items() if k not in ("notes", "plot")})
        return
    if figures["task"] == "forecast":
        _forecast_tables(figures)
    else:
        _classification_tables(figures)


def _forecast_tables(figures: dict) -> None:
    for horizon, result in figures["horizons"].items():
        shown = [m for m in METRICS if m in result["model"]]  # MASE (seasonal) where the model knows its season
        rows = [[NAMES[name], *(result[name][m] for m in shown)] for name in NAMES if name in result]
        caption = None
        if "seasonal_naive" not in result:
            caption = "give --season S to compare with the seasonal-naive forecast as well"
        title = "one-step forecast" if horizon == "1" else f"forecasts 1..{horizon} steps ahead"
        print_table(f"{title}: {result['points']:,} points, targets {', '.join(figures['targets'])}",
                    ["forecast", *(METRICS[m] for m in shown)], rows, caption=caption)


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
    """The forecast as a table: [group,] [time,] one column per target, H rows per series."""
    values = result["values"]  # (G, H, O)
    groups, horizon = len(result["names"]), result["horizon"]
    frame = pd.DataFrame(values.reshape(groups * horizon, -1), columns=result["targets"])
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
