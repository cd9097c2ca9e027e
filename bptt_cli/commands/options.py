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
    Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch (default: one per core this process may use; OMP_NUM_THREADS if set).")
]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; runs on CPU are reproducible.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]


def option_names(ctx: typer.Context) -> dict[str, str]:
    """Each parameter's name in a config file: its first long option without dashes (``--model`` for ``cell``)."""
    names = {}
    for param in ctx.command.params:
        long = [o for o in param.opts if o.startswith("--")]
        names[param.name] = long[0][2:] if long else param.name.replace("_", "-")
    return names


def config_keys(ctx: typer.Context) -> dict[str, str]:
    """Every key a config file may use (option names and parameter names) and the parameter it sets."""
    keys = {name: name for name in option_names(ctx)}
    keys.update({option: name for name, option in option_names(ctx).items()})
    return keys


def _load_config(ctx: typer.Context, value: Optional[Path]) -> Optional[Path]:
    """Make the file's values the defaults of this command, so flags still override them."""
    if value is not None:
        from bptt_cli.run_config import read_config

        values = read_config(value, config_keys(ctx))
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


class SeriesTask(str, Enum):
    forecast = "forecast"
    tag = "tag"


class Missing(str, Enum):
    error = "error"
    ffill = "ffill"
    interpolate = "interpolate"
    drop = "drop"


class SeriesLoss(str, Enum):
    mse = "mse"
    huber = "huber"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
