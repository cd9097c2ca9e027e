"""What every data reader checks first: the path names a regular file (or a folder where one is allowed).

A FIFO, ``/dev/zero`` or a socket would hang a reader or feed it forever; a
missing path and a path that is there but not a file get different messages.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bptt_cli.errors import BpttError

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def check_input(path: str | Path, what: str = "", folder_ok: bool = False) -> Path:
    """``path`` if it is a regular file (or a folder, with ``folder_ok``); else one line naming what it is.

    ``what`` goes before the path in messages (e.g. ``--labels``).
    """
    path = Path(path)
    where = f"{what} {path}".strip()
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise BpttError(f"{where}: no such file; check the path") from None
    except OSError as err:
        raise BpttError(f"{where}: cannot be read ({err.strerror}); check the path") from None
    if stat.S_ISDIR(mode):
        if folder_ok:
            return path
        raise BpttError(f"{where}: is a directory; give a file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise BpttError(f"{where}: is {kind}, not a regular file; save the data to a file and give that")
    return path
