"""``bptt evaluate``: score a model file on data it has not seen."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bptt_cli.commands.options import Config, Device, Json, Precision, Threads

SERIES = "Series and audio"


def evaluate(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL", help="A model file written by 'bptt train'.", show_default=False)],
    data: Annotated[Path, typer.Argument(help="Data to score, of the kind MODEL was trained on (text, CSV, feature files).", show_default=False)],
    horizon: Annotated[int, typer.Option("--horizon", min=1, help="Also score forecasts this many steps ahead, rolled out from the carried state.", rich_help_panel=SERIES)] = 1,
    season: Annotated[Optional[int], typer.Option("--season", min=1, help="Steps per season for the seasonal-naive baseline (default: the model's).", rich_help_panel=SERIES)] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="CSV with columns file,label: one class per feature file.", rich_help_panel=SERIES)] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Also draw the last --horizon window scored: context, forecast, actual values and persistence (.png or .svg; needs bptt\\[plot]).", rich_help_panel=SERIES, show_default=False)] = None,
    forecasts: Annotated[Optional[Path], typer.Option("--forecasts", help="Also write every --horizon forecast scored to this CSV, one row per (origin, lead, target): the origin, lead, target, forecast, actual value, each baseline's forecast (and interval columns for a gaussian or quantile model). The weights stay fixed across origins: no refit.", rich_help_panel=SERIES, show_default=False)] = None,
    origins: Annotated[Optional[int], typer.Option("--origins", min=1, help="Score the --horizon forecasts from N evenly spaced rolling origins over the scored part of each series (default: one every --horizon steps).", rich_help_panel=SERIES, show_default=False)] = None,
    every: Annotated[Optional[int], typer.Option("--every", min=1, help="Score the --horizon forecasts from an origin every K steps (instead of --origins).", rich_help_panel=SERIES, show_default=False)] = None,
    exact: Annotated[bool, typer.Option("--exact", help="Text: score in one stream from the first token to the last (slow). By default many streams run side by side, each warmed up on the text before its part: within 1e-4 bits of the exact figure, and the output says how it was computed.")] = False,
    precision: Annotated[Precision, typer.Option("--precision", help="A text file: the recurrence's precision when scored in streams (the decoder and the loss stay fp32). auto: bf16 where the CPU computes in bf16 and the cell trains faster in it (the LSTM), within 1e-4 bits of fp32 (benchmarks/evaluate_speed.py); fp32 elsewhere and with --exact.")] = Precision.auto,
    device: Device = "auto",
    threads: Threads = None,
    json: Json = False,
    config: Config = None,
) -> None:
    """Score MODEL on DATA with the state carried throughout: loss and perplexity for text; MAE, RMSE,
    sMAPE and MASE against persistence and seasonal naive for series (with pinball loss, CRPS and interval
    coverage for gaussian and quantile models); accuracy, macro-F1 and confusion for labels. Beside them,
    baselines fitted on the training data score the same points: unigram and bigram for text; majority
    class, 1-NN on mean+std of frames and DTW 1-NN for labels.

    Forecasts from every origin use the same weights (a backtest without refitting); --forecasts keeps them.

    Example: bptt evaluate shakespeare.pt other_text.txt --json;
    bptt evaluate demand.pt sample_data/elecdemand.csv --horizon 48 --season 48 --plot eval.png;
    bptt evaluate demand.pt sample_data/elecdemand.csv --horizon 48 --every 24 --forecasts backtest.csv
    """
    from bptt_cli import kinds
    from bptt_cli.device import resolve_device, set_threads
    from bptt_cli.forecast import OriginPlan, check_backtest
    from bptt_cli.modelfile import load_model_file
    from bptt_cli.render.evaluation import render_scores

    set_threads(threads)
    target = resolve_device(device)
    plan = OriginPlan(origins, every)
    file = load_model_file(model_file)
    kind = kinds.of_model(file)
    request = kinds.Request(labels=labels, horizon=horizon, season=season, plot=plot, exact=exact, origins=plan,
                              precision=precision.value)
    kind.check_request(file, request, "evaluate")
    check_backtest(file.data, forecasts, plan)
    if forecasts is not None:
        from bptt_cli.output_paths import check_output

        check_output(forecasts, "csv", "--forecasts", inputs=(model_file, data, labels))
    if plot is not None:  # before any work, so a long scoring never ends in a failed picture
        from bptt_cli.render.plotting import check_plot

        check_plot(plot)
    figures = kind.evaluate(file, data, target, request)
    render_scores(figures, as_json=json)
    if forecasts is not None:
        from bptt_cli.render.forecast import render_backtest

        render_backtest(figures, forecasts)
    if plot is not None:
        from bptt_cli.render.forecast import render_forecast_plot

        render_forecast_plot(figures["plot"], plot)
