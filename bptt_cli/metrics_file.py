"""``--metrics FILE``: one record per log interval and per validation, for other programs to read.

JSON lines by default (appended, one flush per record); CSV when the name ends
in ``.csv`` (rewritten atomically at each record, since a later record may bring
a new column). Layer norms are flattened into ``grad_norm[NAME]`` columns in CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from bptt_cli.atomic import write_bytes
from bptt_cli.errors import BpttError


def _plain(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def flatten(record: dict) -> dict:
    """A record with nested layer norms as flat ``grad_norm[NAME]`` keys."""
    flat = {k: v for k, v in record.items() if k != "layer_grad_norms"}
    flat.update({f"grad_norm[{k}]": v for k, v in record.get("layer_grad_norms", {}).items()})
    return flat


class MetricsFile:
    """A Reporter that writes the trainer's records to a file and shows nothing."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise BpttError(f"--metrics {self.path}: the directory {self.path.parent} does not exist; create it")
        self.csv = self.path.suffix.lower() == ".csv"
        self.rows: list[dict] = []
        if self.csv and self.path.exists():  # a resumed run adds to what the first part wrote
            with open(self.path, newline="", encoding="utf-8") as existing:
                self.rows = list(csv.DictReader(existing))
        try:
            if not self.csv:
                self.path.touch()
        except OSError as err:
            raise BpttError(f"--metrics {self.path}: cannot write it ({err.strerror}); choose another path") from None

    def _write(self, record: dict) -> None:
        if not self.csv:
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(json.dumps({k: _plain(v) for k, v in record.items()}) + "\n")
            return
        self.rows.append(flatten(record))
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        write_bytes(self.path, text.getvalue().encode("utf-8"))

    # -- the trainer's Reporter protocol
    def start(self, plan: dict) -> None: ...

    def step(self, step: int, epoch: int) -> None: ...

    def log(self, record: dict) -> None:
        self._write({"kind": "train", **record})

    def validation(self, record: dict) -> None:
        self._write({"kind": "validation", **record})

    def note(self, message: str) -> None: ...


class Fanout:
    """Sends every report to several reporters (the screen and a metrics file)."""

    def __init__(self, *reporters):
        self.reporters = [r for r in reporters if r is not None]

    def __getattr__(self, name):
        def forward(*args):
            for reporter in self.reporters:
                getattr(reporter, name)(*args)

        return forward
