"""How ``bptt predict`` writes: one CSV or JSON line per record on stdout, flushed at once."""

from __future__ import annotations

import csv
import io
import json
import math
import sys


class PredictionWriter:
    """CSV with a header line first, or JSON lines; NaN becomes an empty field or null."""

    def __init__(self, columns: list[str], as_json: bool):
        self.columns, self.as_json = columns, as_json
        if not as_json:
            self._write(columns)

    def write(self, result: dict) -> None:
        if self.as_json:
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()}
            sys.stdout.write(json.dumps(clean) + "\n")
            sys.stdout.flush()
            return
        self._write([_field(result.get(c)) for c in self.columns])

    @staticmethod
    def _write(fields: list) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(fields)
        sys.stdout.write(buffer.getvalue())
        sys.stdout.flush()


def _field(value) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return "" if value is None else str(value)
