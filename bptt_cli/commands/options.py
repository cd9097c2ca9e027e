"""Options shared by several commands, declared once."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from bptt_cli import choices
from bptt_cli.cells import CELL_SPECS

Device = Annotated[
    str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
]
Threads = Annotated[
    Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch (default: one per core this process may use; OMP_NUM_THREADS if set).")
]
Seed = Annotated[int, typer.Option("--seed", min=0, max=2**63 - 1, help="Random seed; runs on CPU are reproducible.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]


def shown(value) -> str:
    """A default as the command line gives it: a flag that is on is ``on``."""
    return "on" if value is True else str(value)


def kind_note(option: str) -> str:
    """The defaults data kinds give ``option`` when it is left untouched, for its --help line."""
    tables = (("text", choices.TEXT_DEFAULTS), ("CSV series", choices.SERIES_DEFAULTS),
              ("WAV files with --labels", choices.LABELLED_WAV_DEFAULTS))
    given = [f"{what}: {shown(table[option])}" for what, table in tables if option in table]
    return f" ({'; '.join(given)} unless given)" if given else ""


def option_names(ctx: typer.Context) -> dict[str, str]:
    """Each parameter's name in a config file: its first long option without dashes (``--model`` for ``cell``)."""
    names = {}
    for param in ctx.command.params:
        long = [o for o in param.opts if o.startswith("--")]
        names[param.name] = long[0][2:] if long else param.name.replace("_", "-")
    return names


def given_options(ctx: typer.Context) -> dict[str, str]:
    """The parameters the user set on the command line, each with the option that set it (``--target``)."""
    given = {}
    for name, option in option_names(ctx).items():
        source = ctx.get_parameter_source(name)
        if getattr(source, "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP"):
            given[name] = f"--{option}"
    return given


def config_keys(ctx: typer.Context) -> dict[str, str]:
    """Every key a config file may use (option names and parameter names) and the parameter it sets."""
    keys = {name: name for name in option_names(ctx)}
    keys.update({option: name for name, option in option_names(ctx).items()})
    return keys


def _load_config(ctx: typer.Context, value: Optional[Path]) -> Optional[Path]:
    """Make the file's values the defaults of this command, so flags still override them."""
    if value is not None:
        from bptt_cli.run_config import param_kinds, read_config

        values = read_config(value, config_keys(ctx), param_kinds(ctx.command.params))
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


def _choices(name: str, names) -> type[Enum]:
    """A str Enum of the library's own names, so the CLI offers exactly what the library accepts."""
    return Enum(name, {n: n for n in names}, type=str)


Cell = _choices("Cell", CELL_SPECS)
TokenizerKind = _choices("TokenizerKind", choices.TOKENIZERS)
OptimizerKind = _choices("OptimizerKind", choices.OPTIMIZERS)
DropoutKind = _choices("DropoutKind", choices.DROPOUT_KINDS)
ScheduleKind = _choices("ScheduleKind", choices.SCHEDULES)
OnNan = _choices("OnNan", choices.ON_NAN)
SeriesTask = _choices("SeriesTask", choices.SERIES_TASKS)
Missing = _choices("Missing", choices.MISSING)
SeriesLoss = _choices("SeriesLoss", choices.LOSSES)
Anchor = _choices("Anchor", choices.ANCHORS)
Precision = _choices("Precision", choices.PRECISIONS)
ReplaceRule = _choices("ReplaceRule", choices.REPLACE_RULES)
OnBadRow = _choices("OnBadRow", choices.BAD_ROW_RULES)
OutputFormat = _choices("OutputFormat", choices.PREDICT_FORMATS)
