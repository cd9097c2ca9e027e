"""Options shared by several commands, declared once."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

Device = Annotated[
    str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
]
Threads = Annotated[
    Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch (default: torch's choice).")
]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; runs on CPU are reproducible.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]


def _load_config(ctx: typer.Context, value: Optional[Path]) -> Optional[Path]:
    """Make the file's values the defaults of this command, so flags still override them."""
    if value is not None:
        from bptt_cli.run_config import read_config

        values = read_config(value, [p.name for p in ctx.command.params])
        ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


Config = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        callback=_load_config,
        is_eager=True,
        help="A YAML file (or a bptt model file) holding any of this command's options; flags override it.",
    ),
]


class Cell(str, Enum):
    lstm = "lstm"
    gru = "gru"
    rnn = "rnn"


class TokenizerKind(str, Enum):
    char = "char"
    byte = "byte"
    word = "word"


class OptimizerKind(str, Enum):
    adamw = "adamw"
    adam = "adam"
    sgd = "sgd"


class ScheduleKind(str, Enum):
    constant = "constant"
    cosine = "cosine"
    plateau = "plateau"


class OnNan(str, Enum):
    stop = "stop"
    skip = "skip"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
