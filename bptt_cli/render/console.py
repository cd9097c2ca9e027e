"""Where output goes and in what form: data on stdout, progress and tables on stderr.

Rich output (colour, live progress, boxed tables) only when stderr is a terminal
and ``NO_COLOR`` is unset; otherwise plain one-line records with no ANSI codes.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table


def plain() -> bool:
    """True when nobody is watching a terminal: pipes, cron, ``NO_COLOR``, ``TERM=dumb``."""
    return (
        bool(os.environ.get("NO_COLOR"))
        or os.environ.get("TERM") == "dumb"
        or not sys.stderr.isatty()
    )


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, no_color=plain(), soft_wrap=plain())


def error_line(message: str) -> None:
    """The one line a failing command prints."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def info(message: str) -> None:
    """A line of progress or advice on stderr."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def print_json(data: Any) -> None:
    """One JSON object on stdout; NaN and infinity become null so every parser reads it."""
    sys.stdout.write(json.dumps(_finite(data), indent=None) + "\n")
    sys.stdout.flush()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def fmt(value: Any, digits: int = 4) -> str:
    """A number as a person reads it: 4 significant digits, scientific when tiny or huge."""
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e12):
            return f"{value:.{digits - 1}e}"
        if abs(value) >= 10**digits:  # 17,770 tokens/s, not 1.777e+04
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    caption: str | None = None,
    console: Console | None = None,
) -> None:
    """A table on stderr: boxed on a terminal, aligned plain text without one.

    Pass the live progress bar's ``console`` to print above the bar without tearing it.
    """
    rows = [[fmt(v) for v in row] for row in rows]
    if plain():
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        lines = [f"# {title}", "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        if caption:
            lines.append(caption)
        info("\n".join(lines))
        return
    table = Table(title=title, caption=caption, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    (console or stderr_console()).print(table)
