"""``bptt generate``: sample from a model file, streaming to stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bptt_cli.commands.options import Config, Device, Seed


def generate(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL", help="A model file written by 'bptt train'.", show_default=False)],
    prime: Annotated[str, typer.Option("--prime", help="Text the model reads before it writes.")] = "",
    length: Annotated[int, typer.Option("--length", "-n", help="Tokens to generate.")] = 500,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Sampling temperature; 0 is greedy.")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample among the k likeliest tokens; 0 = all.")] = 0,
    top_p: Annotated[float, typer.Option("--top-p", help="Sample among the likeliest tokens holding this much probability.")] = 1.0,
    seed: Seed = 0,
    device: Device = "cpu",
    config: Config = None,
) -> None:
    """Write text that continues --prime; each new token costs one recurrent step.

    Example: bptt generate shakespeare.pt --prime "ROMEO:" --length 400 --temperature 0.8
    """
    from bptt_cli.device import resolve_device
    from bptt_cli.generation import generate as sample
    from bptt_cli.modelfile import load_model_file

    file = load_model_file(model_file)
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
