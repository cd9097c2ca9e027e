"""Writing files so that a crash never leaves half of one: a temporary file beside it, fsync, rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from bptt_cli.errors import BpttError


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``.

    Readers see the old file or the new one, never a torn one; a failed write
    (disk full, read-only file system) leaves the old file and one error line.
    """
    path = Path(path)
    tmp = None
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the usual permissions
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
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
