"""WAV features computed once: each recording's frames kept in the cache folder for later runs.

Turning a WAV into log-mel or MFCC frames (librosa: decode, resample, trim, STFT)
costs milliseconds per file and a second or two of importing librosa; training,
evaluation and prediction read the same recordings again and again. A file's
frames (float32, as librosa computes them) and sample rate are kept as ``.npz``,
keyed by the file's SHA-256 and the settings that shape the frames (not
``--cmvn`` or ``--deltas``, applied after), so a moved or copied recording is
found again and a changed one is not::

    <cache dir>/features/<file stem>-<sha256[:16]>-<settings hash[:12]>.npz

The cache folder is the token cache's (``--cache-dir``, ``$BPTT_CACHE_DIR``,
``$XDG_CACHE_HOME/bptt``, ``~/.cache/bptt``). An entry is written by
``atomic_write`` without fsync: one that cannot be read is computed again, so a
crash costs time, never wrong frames.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from bptt_cli.atomic import atomic_write
from bptt_cli.errors import BpttError
from bptt_cli.token_cache import sha256

VERSION = 1  # bump when the frames a setting gives change
EXTRACTION = ("kind", "n_mels", "n_mfcc", "hop_ms", "win_ms", "sample_rate", "trim_db")  # what shapes the frames


def entry(folder: Path, path: Path, settings: dict) -> Path:
    """Where the frames of ``path`` under ``settings`` are kept."""
    shaping = json.dumps({"version": VERSION, **{k: settings[k] for k in EXTRACTION}}, sort_keys=True)
    key = hashlib.sha256(shaping.encode()).hexdigest()[:12]
    return folder / "features" / f"{path.stem}-{sha256(path)[:16]}-{key}.npz"


def cached_frames(path: Path, settings: dict, folder: Path | None,
                  compute: Callable[[], tuple[np.ndarray, int]]) -> tuple[np.ndarray, int]:
    """``compute()``'s (frames, sample rate) of ``path``, from the cache when it holds them; None: no cache."""
    if folder is None:
        return compute()
    kept = entry(folder, path, settings)
    with contextlib.suppress(OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # unreadable: a miss
        with np.load(kept, allow_pickle=False) as stored:
            return stored["frames"], int(stored["rate"])
    frames, rate = compute()
    with contextlib.suppress(OSError, BpttError):  # a cache that cannot be written is only slower
        kept.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(kept, lambda out: np.savez(out, frames=frames, rate=np.int64(rate)), durable=False)
    return frames, rate
