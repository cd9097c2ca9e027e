"""Writing files so that a crash never leaves half of one: a temporary file beside it, fsync, rename.

The temporary is ``.NAME.XXXXXXXX.tmp`` beside ``NAME``; a process killed while
writing leaves it behind, and the next owner of ``NAME`` removes it
(``remove_stale_temporaries``), matching that exact pattern and nothing else.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from bptt_cli.errors import BpttError

_RANDOM = "[a-z0-9_]{8}"  # what tempfile.mkstemp puts between prefix and suffix


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], durable: bool = True) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``.

    Readers see the old file or the new one, never a torn one; a failed write
    (disk full, read-only file system) leaves the old file and one error line.
    ``durable=False`` skips the fsync, for files a reader can rebuild (a cache
    entry that a power cut may leave empty is read as missing).
    """
    path = Path(path)
    tmp = None
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the usual permissions
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise BpttError(f"{path}: cannot write it ({err.strerror or err}); free some space or choose another path") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, payload: bytes) -> None:
    atomic_write(path, lambda out: out.write(payload))


def stale_temporaries(path: str | Path) -> list[Path]:
    """The temporaries ``atomic_write(path)`` leaves when its process is killed mid-write."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{_RANDOM}\.tmp")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    return sorted(path.parent / n for n in names if pattern.fullmatch(n))


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove them; only the holder of ``path``'s lock may call this (another writer's file is live)."""
    removed = []
    for leftover in stale_temporaries(path):
        try:
            if leftover.is_file() and not leftover.is_symlink():
                leftover.unlink()
                removed.append(leftover)
        except OSError:
            continue
    return removed
