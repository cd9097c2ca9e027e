"""``bptt evaluate``: score a model file on data it has not seen."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bptt_cli.commands.options import Config, Device, Json, Threads


def evaluate(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL", help="A model file written by 'bptt train'.", show_default=False)],
    data: Annotated[Path, typer.Argument(help="Text to score.", show_default=False)],
    device: Device = "auto",
    threads: Threads = None,
    json: Json = False,
    config: Config = None,
) -> None:
    """Loss, perplexity and bits per token of MODEL on DATA, with the state carried through the whole text.

    Example: bptt evaluate shakespeare.pt other_text.txt --json
    """
    from bptt_cli.device import resolve_device, set_threads
    from bptt_cli.modelfile import load_model_file
    from bptt_cli.render.evaluation import render_text_scores
    from bptt_cli.text_training import evaluate_text

    set_threads(threads)
    target = resolve_device(device)
    figures = evaluate_text(load_model_file(model_file), data, target)
    render_text_scores(figures, as_json=json)
