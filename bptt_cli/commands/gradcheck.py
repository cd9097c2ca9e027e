"""``bptt gradcheck``: prove the gradients right and show how they flow through time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bptt_cli.commands.options import Cell, Config, Device, Json, Seed, given_options
from bptt_cli.errors import BpttError

FRESH = {"hidden": 16, "layers": 1, "embed": 16, "vocab": 16}  # a fresh model small enough for every check


def _fresh_option(name: str, help: str):
    return typer.Option(f"--{name}", min=1, help=f"{help} (fresh model only).")


def gradcheck(
    ctx: typer.Context,
    model_file: Annotated[
        Optional[Path],
        typer.Argument(metavar="MODEL", help="A model file from 'bptt train' (default: a fresh model).", show_default=False),
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Argument(metavar="DATA", help="Text to run MODEL on (default: seeded random tokens).", show_default=False),
    ] = None,
    cell: Annotated[Cell, typer.Option("--model", help="Cell of a fresh model.")] = Cell.lstm,
    hidden: Annotated[int, _fresh_option("hidden", "Hidden units")] = FRESH["hidden"],
    layers: Annotated[int, _fresh_option("layers", "Recurrent layers")] = FRESH["layers"],
    embed: Annotated[int, _fresh_option("embed", "Embedding width")] = FRESH["embed"],
    vocab: Annotated[int, _fresh_option("vocab", "Vocabulary size")] = FRESH["vocab"],
    window: Annotated[int, typer.Option("--window", help="Steps of checks 1-3 (finite differences, forward mode, flow).")] = 20,
    segment: Annotated[int, typer.Option("--segment", help="Steps of the truncation check, capped at the data.")] = 200,
    windows: Annotated[
        str, typer.Option("--windows", help="Truncation windows to compare with full BPTT, comma-separated.")
    ] = "1,5,10,25,50,100,200",
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Largest relative gradient error that passes (float64).")
    ] = 1e-6,
    min_cosine: Annotated[
        float, typer.Option("--min-cosine", help="Recommend the shortest window whose gradient has this cosine with full BPTT.")
    ] = 0.9,
    labels: Annotated[
        Optional[Path], typer.Option("--labels", help="For a sequence classifier: the CSV of file,label its data needs.")
    ] = None,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Annotated[
        int, typer.Option("--threads", min=1, help="CPU threads for torch; the checks run one stream, where more threads only add overhead.")
    ] = 1,
    json: Json = False,
    plot: Annotated[
        Optional[Path], typer.Option("--plot", help="Also draw the gradient flow and the truncation check here (.png or .svg; needs bptt\\[plot]).", show_default=False)
    ] = None,
    config: Config = None,
) -> None:
    """Check the BPTT gradients (finite differences, forward mode) and show how they flow through time.

    Exits 0 when every check passes, 1 when a gradient check fails, 2 for bad input.

    Examples: bptt gradcheck --model lstm --hidden 16 --window 30;
    bptt gradcheck model.pt sample_data/shakespeare.txt --json --plot flow.png
    """
    from bptt_cli import gradcheck as lib
    from bptt_cli.render import plotting
    from bptt_cli.device import resolve_device, set_threads
    from bptt_cli.render.console import info
    from bptt_cli.render.gradcheck import render_gradcheck

    if plot is not None:
        plotting.check_plot(plot)
    set_threads(threads)
    target = resolve_device(device)
    settings = lib.Settings(
        window=window, segment=segment, windows=_parse_windows(windows), tolerance=tolerance,
        min_cosine=min_cosine, seed=seed,
    )
    if model_file is None:
        model = lib.fresh_model(cell.value, vocab, embed, hidden, layers, seed)
        problem = lib.synthetic_problem(model, max(window, segment), seed)
    else:
        fresh_only = {"cell", *FRESH}
        given = [option for name, option in given_options(ctx).items() if name in fresh_only]
        if given:
            raise BpttError(f"{', '.join(given)} shape a fresh model only; MODEL fixes its own, so drop them")
        from bptt_cli import kinds
        from bptt_cli.modelfile import load_model_file

        _refuse_text(model_file)
        loaded = load_model_file(model_file)
        model = loaded.model
        if data is None:
            problem = lib.synthetic_problem(model, max(window, segment), seed)
        else:
            problem = kinds.of_model(loaded).gradcheck_problem(loaded, data, kinds.Request(labels=labels))
        batch = loaded.config.get("batch_size")
        settings.batch_size = batch if isinstance(batch, int) and batch > 0 else 1
    result = lib.run_gradcheck(model, problem, settings, target)
    render_gradcheck(result, as_json=json)
    if plot is not None:  # drawn even when a check failed: the picture shows why
        info(f"wrote {plotting.plot_gradient_flow(result, plot)}")
    if not result["passed"]:
        raise typer.Exit(1)


def _refuse_text(path: Path) -> None:
    """A text file where MODEL goes is DATA given without a model: say so, not just "not a model file"."""
    if path.is_file():
        with path.open("rb") as handle:
            head = handle.read(1024)
        if head and not head.startswith(b"PK") and b"\x00" not in head:  # model files are zip archives
            raise BpttError(
                f"{path}: looks like a text file, not a model; DATA needs a MODEL first: bptt gradcheck MODEL DATA"
            )


def _parse_windows(text: str) -> list[int]:
    try:
        windows = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BpttError(f"--windows takes comma-separated step counts such as 1,5,10, got {text!r}") from None
    if not windows or min(windows) < 1:
        raise BpttError(f"--windows takes positive step counts such as 1,5,10, got {text!r}")
    return windows
