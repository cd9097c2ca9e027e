"""What ``bptt generate`` writes: sampled text streamed to stdout, or a forecast as a file or CSV."""

from __future__ import annotations

import sys

from bptt_cli.kinds.text import TextSample
from bptt_cli.render.forecast import render_forecast


def render_generated(result, output) -> None:
    if isinstance(result, TextSample):
        render_sample(result)
    else:
        render_forecast(result, output)


def render_sample(sample: TextSample) -> None:
    """The prime, then each piece as it comes, flushed at line ends so a pipe sees whole lines."""
    out = sys.stdout
    out.write(sample.prime)
    for piece in sample.pieces:
        out.write(piece)
        if piece.endswith("\n"):
            out.flush()
    out.write("\n")
    out.flush()
