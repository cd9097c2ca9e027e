"""Options shared by several commands, declared once."""

from __future__ import annotations

from enum import Enum
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


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
