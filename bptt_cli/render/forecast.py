"""How series and audio results look: forecast error tables against the baselines, classification
figures with a confusion table, and the training reporter's validation line for these data."""

from __future__ import annotations

import sys

from bptt_cli.render.console import info, print_json, print_table
from bptt_cli.render.training import TrainReporter

METRICS = ("mae", "rmse", "smape", "mase")
NAMES = {"model": "model", "persistence": "persistence (last value)", "seasonal_naive": "seasonal naive"}


class SequenceReporter(TrainReporter):
    """The text reporter, with validation figures that speak of loss (and accuracy), not perplexity."""

    def validation_figures(self, record: dict) -> list[tuple[str, float]]:
        figures = [("loss", record["val_loss"])]
        return figures + ([("accuracy", record["val_accuracy"])] if "val_accuracy" in record else [])


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
        rows = [[NAMES[name], *(result[name][m] for m in METRICS)] for name in NAMES if name in result]
        caption = None
        if "seasonal_naive" not in result:
            caption = "give --season S to compare with the seasonal-naive forecast as well"
        title = "one-step forecast" if horizon == "1" else f"forecasts 1..{horizon} steps ahead"
        print_table(f"{title}: {result['points']:,} points, targets {', '.join(figures['targets'])}",
                    ["forecast", "MAE", "RMSE", "sMAPE %", "MASE"], rows, caption=caption)


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
    from bptt_cli.plotting import plot_forecast

    info(f"wrote {plot_forecast(path, **picture)}")


def render_forecast(result: dict, output) -> None:
    """The forecast to ``output`` (CSV, or .npy frames), written atomically, or as CSV on stdout."""
    from bptt_cli.series_training import forecast_bytes, write_atomic

    render_forecast_notes(result)
    payload = forecast_bytes(result, output)
    if output is None:
        sys.stdout.write(payload.decode())
        sys.stdout.flush()
        return
    write_atomic(output, payload)
    info(f"wrote {result['horizon']} forecast step(s) for {len(result['names'])} sequence(s) to {output}")
