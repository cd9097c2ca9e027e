"""``bptt export``: write a model file as ONNX or torch.export, with its state as explicit inputs and outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bptt_cli.commands.options import Json


def export(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL", help="A model file written by 'bptt train'.", show_default=False)],
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="Where to write: .onnx (ONNX, needs bptt\\[export]) or .pt2 (torch.export); a JSON sidecar goes beside it.", show_default=False),
    ],
    json: Json = False,
) -> None:
    """Export MODEL with the recurrent state as explicit inputs and outputs (x, h[, c]) -> (y, h_next[, c_next]),
    plus OUTPUT.json with the tokenizer or normalisation, names, shapes and dtypes. The exported file is then run
    against bptt's model over two windows with the state carried; a difference above 1e-5 fails (exit 1, nothing kept).

    Examples: bptt export shakespeare.pt -o shakespeare.onnx; bptt export demand.pt -o demand.pt2 --json
    """
    from bptt_cli.export import export_model
    from bptt_cli.render.export import render_export

    render_export(export_model(model_file, output).to_dict(), as_json=json)
