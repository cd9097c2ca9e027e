"""Wall-clock budgets as people write them: ``90``, ``90s``, ``10m``, ``2h``."""

from __future__ import annotations

import re

from bptt_cli.errors import BpttError

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``text``; a bare number is seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text).lower())
    if not match or float(match.group(1)) <= 0:
        raise BpttError(f"--max-time {text!r} is not a duration; write e.g. 90, 90s, 10m or 2h")
    return float(match.group(1)) * _UNITS[match.group(2)]
