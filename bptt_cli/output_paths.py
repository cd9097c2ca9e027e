"""One guard for every path a command writes, checked before any work starts.

A command names the kind of file it writes and the files it reads. The guard
refuses, unless ``force=True``: the input data itself; an existing file of
another kind (a forecast CSV over a bptt model, a metrics record appended to
the training text). Whatever ``force`` says it refuses what can never be
written: a directory, a device or FIFO, a folder that does not exist or is not
writable. A file's kind is read from its first bytes, never by loading it.
"""

from __future__ import annotations

import os
import pickletools
import stat
import zipfile
from collections.abc import Iterable
from pathlib import Path

from bptt_cli.errors import BpttError

MODEL, CHECKPOINT = "bptt-model", "bptt-checkpoint"  # the format tags of modelfile and runfiles
# What may already be at a path of each kind and be replaced (or added to): the kinds of file_kind().
REPLACES = {
    "model": {MODEL},
    "checkpoint": {CHECKPOINT},
    "csv": {"empty", "text"},
    "svg": {"empty", "text"},
    "npy": {"empty", "npy"},
    "png": {"empty", "png"},
    "metrics": {"empty", "metrics"},
    "metrics-csv": {"empty", "metrics-csv"},
}
DESCRIBED = {
    MODEL: "a bptt model file", CHECKPOINT: "a bptt checkpoint", "zip": "a zip archive (not a bptt model file)",
    "npy": "a numpy array file", "png": "a PNG picture", "text": "a text file that is not a bptt metrics file",
    "binary": "a binary file", "empty": "an empty file",
}
WANTED = {"model": "a bptt model file", "checkpoint": "a bptt checkpoint", "csv": "CSV", "svg": "an SVG picture",
          "npy": "a .npy array", "png": "a PNG picture", "metrics": "JSON-lines metrics",
          "metrics-csv": "CSV metrics"}
_SNIFF = 65536  # bytes read to tell text from binary


def _torch_format(path: Path) -> str:
    """``bptt-model``, ``bptt-checkpoint`` or ``zip``: the format tag of a torch zip file, read without unpickling.

    The payload is a dict whose first key is ``format``; its first two strings
    are that key and the tag. ``pickletools.genops`` only parses opcodes.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return "zip"
            with archive.open(name) as pickled:
                strings = []
                for opcode, argument, _ in pickletools.genops(pickled):
                    if isinstance(argument, str) and "UNICODE" in opcode.name:
                        strings.append(argument)
                    if len(strings) == 2:
                        break
    except Exception:  # a broken archive or pickle is simply not one of ours
        return "zip"
    if len(strings) == 2 and strings[0] == "format" and strings[1] in (MODEL, CHECKPOINT):
        return strings[1]
    return "zip"


def _text_kind(head: bytes) -> str:
    """``metrics``, ``metrics-csv`` or ``text`` for a UTF-8 text; ``binary`` for anything else."""
    if b"\x00" in head:
        return "binary"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not merely a character cut by the sniff
            return "binary"
        text = head[: err.start].decode("utf-8")
    first = text.split("\n", 1)[0].strip()
    if first.startswith("{") and '"kind":' in first:
        return "metrics"
    if "kind" in [c.strip() for c in first.split(",")]:
        return "metrics-csv"
    return "text"


def file_kind(path: str | Path) -> str:
    """What an existing regular file holds, from its first bytes (see DESCRIBED)."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return _torch_format(path)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    return _text_kind(head)


def suffix_kind(path: str | Path, default: str = "csv") -> str:
    """The kind a forecast or picture path asks for by its extension (``.npy``, ``.png``, ``.svg``), else ``default``."""
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in ("npy", "png", "svg") else default


def _same_file(path: Path, inputs: Iterable[str | Path | None]) -> Path | None:
    for given in inputs:
        if given is None:
            continue
        try:
            if os.path.samefile(path, given):
                return Path(given)
        except OSError:
            continue
    return None


def check_output(path: str | Path, kind: str, option: str = "-o", inputs: Iterable[str | Path | None] = (),
                 force: bool = False) -> Path:
    """``path`` if a command may write a file of ``kind`` there (see REPLACES); a BpttError naming the fix if not.

    ``inputs`` are the files the command reads: it never writes over one of them.
    """
    path = Path(path)
    where = f"{option} {path}"
    if path.is_dir():
        raise BpttError(f"{where}: is a directory; give a file name, e.g. {option} {path / ('out.' + kind)}")
    if not path.parent.is_dir():
        raise BpttError(f"{where}: not a writable file path: the directory {path.parent} does not exist; "
                        f"create it or give a file in an existing directory")
    if not os.access(path.parent, os.W_OK):
        raise BpttError(f"{where}: the directory {path.parent} is not writable; choose another {option}")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    if stat.S_ISLNK(mode):
        raise BpttError(f"{where}: is a symbolic link; give the real path, so nothing is written through the link")
    if not stat.S_ISREG(mode):
        raise BpttError(f"{where}: is not a regular file (a device, FIFO or socket); give a file path")
    if force:
        return path
    same = _same_file(path, inputs)
    if same is not None:
        raise BpttError(f"{where}: is the input {same}; it is never overwritten: choose another {option}")
    try:
        found = file_kind(path)
    except OSError as err:
        raise BpttError(f"{where}: cannot read what is there ({err.strerror}); choose another {option}") from None
    if found not in REPLACES[kind]:
        raise BpttError(f"{where}: exists and is {DESCRIBED.get(found, found)}, not {WANTED[kind]}; "
                        f"it is not overwritten: choose another {option}")
    return path
