"""``--metrics FILE``: one record per log interval and per validation, for other programs to read.

JSON lines by default (appended, one whole line per write: a failed write is
cut back, never left as half a line); CSV when the name ends in ``.csv``
(rewritten atomically at each record, since a later record may bring a new
column). Layer norms are flattened into ``grad_norm[NAME]`` columns in CSV.

The path is checked when the file is named (see ``output_paths``: never the
training data, a model or a file that is not bptt metrics), but the file is
only created by the first record, so a run that stops on bad input leaves none.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from pathlib import Path

from bptt_cli.atomic import write_bytes
from bptt_cli.errors import BpttError
from bptt_cli.output_paths import check_output


def _plain(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def flatten(record: dict) -> dict:
    """A record with nested layer norms as flat ``grad_norm[NAME]`` keys."""
    flat = {k: v for k, v in record.items() if k != "layer_grad_norms"}
    flat.update({f"grad_norm[{k}]": v for k, v in record.get("layer_grad_norms", {}).items()})
    return flat


class MetricsFile:
    """A Reporter that writes the trainer's records to a file and shows nothing."""

    def __init__(self, path: str | Path, inputs: tuple = (), force: bool = False):
        """``inputs`` are the run's data files: never written to, whatever their name."""
        self.path = Path(path)
        self.csv = self.path.suffix.lower() == ".csv"
        check_output(self.path, "metrics-csv" if self.csv else "metrics", "--metrics", inputs, force)
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise BpttError(f"--metrics {self.path}: the file is not writable; choose another path")
        self.rows: list[dict] = []
        if self.csv and self.path.exists():  # a resumed run adds to what the first part wrote
            try:
                with open(self.path, newline="", encoding="utf-8") as existing:
                    self.rows = list(csv.DictReader(existing))
            except (UnicodeDecodeError, csv.Error) as err:
                raise BpttError(f"--metrics {self.path}: the file there is not a readable UTF-8 CSV "
                                f"({str(err).splitlines()[0][:80]}); choose another path") from None

    def _write(self, record: dict) -> None:
        if not self.csv:
            self._append((json.dumps({k: _plain(v) for k, v in record.items()}) + "\n").encode("utf-8"))
            return
        self.rows.append(flatten(record))
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        write_bytes(self.path, text.getvalue().encode("utf-8"))

    def _append(self, line: bytes) -> None:
        """Add one whole line: if the disk fills midway, what was written of it is cut off again."""
        try:
            handle = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as err:
            raise BpttError(f"--metrics {self.path}: cannot write it ({err.strerror}); choose another path") from None
        try:
            size = os.fstat(handle).st_size
            done = 0
            while done < len(line):
                done += os.write(handle, line[done:])
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(handle, size)
            raise BpttError(f"--metrics {self.path}: cannot write it ({err.strerror}); "
                            "free some space or choose another path") from None
        finally:
            os.close(handle)

    # -- the trainer's Reporter protocol
    def start(self, plan: dict) -> None: ...

    def step(self, step: int, epoch: int) -> None: ...

    def log(self, record: dict) -> None:
        self._write({"kind": "train", **record})

    def validation(self, record: dict) -> None:
        self._write({"kind": "validation", **record})

    def sample(self, record: dict) -> None: ...

    def window_check(self, record: dict) -> None:
        self._write({"kind": "window", **record})

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
