"""A series as one line of characters: the shape of a loss curve or a gradient decay in a table cell.

Block characters on a terminal; plain ASCII on a ``NO_COLOR`` terminal or one
that cannot show the blocks. Either way the result is printable text with no
escapes, so it can sit inside a JSON string unchanged. Where nobody watches a
terminal (pipes, cron mail, log files) ``trend`` gives numbers instead: a row
of ``*:@=_.`` reads as noise in a log.
"""

from __future__ import annotations

import math
import sys
from typing import Iterable

BLOCKS = "▁▂▃▄▅▆▇█"
# Lowest level is "_", not a space: a space would vanish when a line is right-stripped
# (print_table does) and a run of low values would look like missing data.
ASCII = "_.:-=+*#%@"
NOT_FINITE = {False: "×", True: "!"}  # NaN or infinity: a diverged step must never pass for a tall bar


def _blocks_encodable() -> bool:
    try:
        BLOCKS.encode(sys.stderr.encoding or "utf-8")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def use_ascii() -> bool:
    """Plain ASCII when nobody watches a terminal, or the terminal cannot show the blocks."""
    from bptt_cli.render.console import plain

    return plain() or not _blocks_encodable()


def on_terminal() -> bool:
    """Whether stderr, where progress goes, is a terminal someone may be watching."""
    return sys.stderr.isatty()


def first_min_last(values: Iterable[float]) -> str:
    """``first 4.2, min 1.3, last 1.4``: a series in a log line."""
    from bptt_cli.render.console import fmt

    numbers = [float(v) for v in values]
    if not numbers:
        return "-"
    finite = [v for v in numbers if math.isfinite(v)]
    lowest = min(finite) if finite else math.nan
    return f"first {fmt(numbers[0])}, min {fmt(lowest)}, last {fmt(numbers[-1])}"


def trend(values: Iterable[float], log: bool = False, width: int | None = None) -> str:
    """A series in a line of progress: its sparkline and last value on a terminal, else ``first_min_last``."""
    from bptt_cli.render.console import fmt

    numbers = list(values)
    if not on_terminal():
        return first_min_last(numbers)
    return f"{sparkline(numbers, log=log, width=width)} {fmt(numbers[-1]) if numbers else '-'}"


def _resample(values: list[float], width: int) -> list[float]:
    """``width`` buckets of consecutive values, each their mean; a bucket holding NaN or inf is NaN."""
    n = len(values)
    buckets = [values[i * n // width : (i + 1) * n // width] for i in range(width)]
    return [sum(b) / len(b) if all(math.isfinite(v) for v in b) else math.nan for b in buckets]


def sparkline(
    values: Iterable[float | None],
    ascii: bool | None = None,
    log: bool = False,
    width: int | None = None,
) -> str:
    """One character per value, from the series' minimum (lowest bar) to its maximum (highest bar).

    ``ascii``: None decides by the terminal (see ``use_ascii``). ``log``: scale by
    log10, for gradient norms spanning decades; values <= 0 then take the lowest
    bar (a vanished gradient). ``width``: at most this many characters; a longer
    series is averaged in equal buckets. NaN, infinity and None show as ``×``
    (``!`` in ASCII); a constant series is a flat line at mid height.
    """
    levels = ASCII if (use_ascii() if ascii is None else ascii) else BLOCKS
    numbers = [math.nan if v is None else float(v) for v in values]
    if width is not None and len(numbers) > width:
        if width < 1:
            raise ValueError(f"sparkline width must be at least 1, got {width}")
        numbers = _resample(numbers, width)
    if log:  # -inf stands for a finite value <= 0: the floor, unlike NaN and inf
        numbers = [math.nan if not math.isfinite(v) else math.log10(v) if v > 0 else -math.inf for v in numbers]
        floor = -math.inf
    else:
        floor = None
    finite = [v for v in numbers if math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    top = len(levels) - 1

    def char(v: float) -> str:
        if v == floor:
            return levels[0]
        if not math.isfinite(v):
            return NOT_FINITE[levels is ASCII]
        if high == low:
            return levels[top // 2]
        return levels[round((v - low) / (high - low) * top)]

    return "".join(char(v) for v in numbers)
