"""``bptt plot``: training curves of one or more runs in one picture, from their metrics files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from bptt_cli.commands.options import Config


def _size(value: str) -> tuple[int, int]:
    """``WxH`` in pixels, e.g. ``1200x900``."""
    from bptt_cli.errors import BpttError

    try:
        width, height = (int(part) for part in value.lower().split("x"))
    except ValueError:
        raise BpttError(f"--size {value}: give width x height in pixels, e.g. --size 1200x900") from None
    return width, height


def plot(
    files: Annotated[List[Path], typer.Argument(metavar="FILE...", help="Metrics files written by 'bptt train --metrics' (JSON lines or CSV); one run each.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The picture: PNG or SVG, by the extension.")] = Path("curves.png"),
    size: Annotated[str, typer.Option("--size", metavar="WxH", help="Width x height in pixels.")] = "1200x900",
    title: Annotated[Optional[str], typer.Option("--title", help="A title above the legend (default: none).")] = None,
    config: Config = None,
) -> None:
    """Draw training curves over update steps, one panel each: loss (train line, validation points),
    gradient norm before clipping (log scale, mean and max), share of clipped updates and learning rate.
    Several files are overlaid with a legend from their names, to compare two windows or two clip values.
    Needs matplotlib: pip install 'bptt\\[plot]'.

    Example: bptt plot window10.jsonl window50.jsonl -o curves.png --size 1600x1000
    """
    from bptt_cli.render import plotting
    from bptt_cli.render.console import fmt, info
    from bptt_cli.render.sparkline import trend

    width, height = _size(size)
    plotting.check_size(width, height)
    plotting.check_output(output)
    runs = [plotting.read_metrics(path) for path in files]
    labels = plotting.run_labels(files)
    plotting.plot_training(runs, output, labels=labels, width=width, height=height, title=title)
    info(f"wrote {output} ({width}x{height} px, {len(runs)} run{'s' if len(runs) != 1 else ''})")
    for run, label in zip(runs, labels):
        losses = run.train["train_loss"] if "train_loss" in run.train else []
        norms = run.train["grad_norm_mean"] if "grad_norm_mean" in run.train else []
        best = run.validation["val_loss"].min() if "val_loss" in run.validation else None
        info(f"{label}: train loss {trend(losses, width=40)}; grad norm {trend(norms, log=True, width=40)}; "
             f"best validation {fmt(best)}")
