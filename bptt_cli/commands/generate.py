"""``bptt generate``: sample from a model file, streaming to stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from bptt_cli.commands.options import Config, Device, Seed, Threads
from bptt_cli.errors import BpttError


def generate(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL", help="A model file written by 'bptt train'.", show_default=False)],
    prime: Annotated[str, typer.Option("--prime", help="Text the model reads before it writes.")] = "",
    length: Annotated[int, typer.Option("--length", "-n", help="Tokens to generate.")] = 500,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Sampling temperature; 0 is greedy.")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample among the k likeliest tokens; 0 = all.")] = 0,
    top_p: Annotated[float, typer.Option("--top-p", help="Sample among the likeliest tokens holding this much probability.")] = 1.0,
    context: Annotated[Optional[Path], typer.Option("--context", help="Rows (CSV) or frames (feature file) to warm the state on; default: the end of the training data.", rich_help_panel="Series and audio")] = None,
    horizon: Annotated[Optional[int], typer.Option("--horizon", min=1, help="Steps to forecast (default: the season if known, else 24).", rich_help_panel="Series and audio")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write the forecast here (CSV, or .npy frames), atomically; default: CSV on stdout.", rich_help_panel="Series and audio")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Also draw the context and the forecast here (.png or .svg; needs bptt\\[plot]).", rich_help_panel="Series and audio", show_default=False)] = None,
    seed: Seed = 0,
    device: Device = "cpu",
    threads: Threads = None,
    config: Config = None,
) -> None:
    """Write text that continues --prime; each new token costs one recurrent step.

    For a series or audio model: forecast --horizon steps after --context (or after the training data).

    Example: bptt generate shakespeare.pt --prime "ROMEO:" --length 400 --temperature 0.8;
    bptt generate demand.pt --context recent.csv --horizon 96 -o forecast.csv --plot forecast.png
    """
    from bptt_cli.device import resolve_device, set_threads
    from bptt_cli.generation import generate as sample
    from bptt_cli.modelfile import load_model_file

    set_threads(threads)
    file = load_model_file(model_file)
    if file.data.get("kind") in ("series", "audio"):
        if prime:
            raise BpttError("--prime is for text models; a series or audio model takes --context and --horizon")
        from bptt_cli.render.forecast import render_forecast, render_forecast_plot
        from bptt_cli.series_training import check_forecast_plot, generate_forecast

        if plot is not None:
            check_forecast_plot(file, plot)
        result = generate_forecast(file, resolve_device(device), context, horizon)
        render_forecast(result, output)
        if plot is not None:
            render_forecast_plot(result["plot"], plot)
        return
    if context is not None or horizon is not None or output is not None or plot is not None:
        raise BpttError("--context, --horizon, -o and --plot are for series and audio models; a text model takes --prime")
    pieces = sample(file.model, file.tokenizer, prime, length, temperature, top_k, top_p, seed,
                    resolve_device(device))
    out = sys.stdout
    out.write(prime)
    for piece in pieces:
        out.write(piece)
        if piece.endswith("\n"):
            out.flush()
    out.write("\n")
    out.flush()
