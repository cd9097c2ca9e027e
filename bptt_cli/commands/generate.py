"""``bptt generate``: sample from a model file, streaming to stdout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bptt_cli.commands.options import Config, Device, Seed, Threads


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
    future: Annotated[Optional[Path], typer.Option("--future", help="CSV of the future values of the model's inputs that are not targets (its time column and those columns, a row per forecast time).", rich_help_panel="Series and audio", show_default=False)] = None,
    assume_seasonal: Annotated[bool, typer.Option("--assume-seasonal", help="Inputs that are not targets and have no --future values take their values one season earlier (or their last ones).", rich_help_panel="Series and audio")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Also draw the context and the forecast here (.png or .svg; needs bptt\\[plot]).", rich_help_panel="Series and audio", show_default=False)] = None,
    seed: Seed = 0,
    device: Device = "cpu",
    threads: Threads = None,
    config: Config = None,
) -> None:
    """Write text that continues --prime; each new token costs one recurrent step.

    For a series or audio model: forecast --horizon steps after --context (or after the training data).

    Example: bptt generate shakespeare.pt --prime "ROMEO:" --length 400 --temperature 0.8;
    bptt generate demand.pt --context recent.csv --horizon 96 --future next_days.csv -o forecast.csv --plot forecast.png
    """
    from bptt_cli import kinds
    from bptt_cli.device import resolve_device, set_threads
    from bptt_cli.modelfile import load_model_file
    from bptt_cli.render.generation import render_generated

    set_threads(threads)
    file = load_model_file(model_file)
    kind = kinds.of_model(file)
    request = kinds.Request(prime=prime, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                            seed=seed, context=context, horizon=horizon, output=output, plot=plot, future=future,
                            assume_seasonal=assume_seasonal)
    kind.check_request(file, request, "generate")
    if output is not None:
        from bptt_cli.output_paths import check_output, suffix_kind

        check_output(output, suffix_kind(output), "-o", inputs=(model_file, context, future))
    if plot is not None:
        from bptt_cli.render.plotting import check_plot

        check_plot(plot)
    result = kind.generate(file, resolve_device(device), request)
    render_generated(result, output)
    if plot is not None:
        from bptt_cli.render.forecast import render_forecast_plot

        render_forecast_plot(result["plot"], plot)
