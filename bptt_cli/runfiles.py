"""The files a training run owns: the model file (-o), its checkpoint and its lock.

- The lock (``model.pt.lock``) stops two runs from writing the same output; a
  lock left by a dead process is released by the kernel and simply taken over.
- The model file is only ever replaced by a better model (lower validation loss),
  so a bad run never clobbers a good result.
- The checkpoint (``model.pt.ckpt``) is written atomically and read as plain data.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
from pathlib import Path
from typing import Any

import torch

from bptt_cli import distributed
from bptt_cli.errors import BpttError
from bptt_cli.modelfile import ModelFile, atomic_save, check_writable, read_payload, save_model_file

CHECKPOINT_FORMAT = "bptt-checkpoint"
CHECKPOINT_VERSION = 1


class RunFiles:
    """Use as a context manager around a training run: holds the lock while it lives."""

    def __init__(self, output: str | Path, owner: bool | None = None):
        """``owner`` is False on the ranks of a distributed run other than 0: they read, never write."""
        self.output = check_writable(output)
        self.owner = distributed.is_main() if owner is None else owner
        self.checkpoint_path = self.output.with_name(self.output.name + ".ckpt")
        self.lock_path = self.output.with_name(self.output.name + ".lock")
        self._lock = None
        self.best_on_disk: float | None = None  # the validation loss of the model already at -o
        self.kept_existing = False

    def __enter__(self) -> "RunFiles":
        if not self.owner:
            return self
        self._acquire()
        if self.output.exists():
            try:
                payload = read_payload(self.output)
            except BpttError:
                self._release()
                raise BpttError(
                    f"{self.output}: exists and is not a bptt model file; it is not overwritten: choose another -o"
                ) from None
            loss = (payload.get("summary") or {}).get("best_val_loss")
            self.best_on_disk = float(loss) if isinstance(loss, (int, float)) else None
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _acquire(self) -> None:
        while True:
            try:
                handle = open(self.lock_path, "a+")
            except OSError as err:
                raise BpttError(f"{self.output}: cannot write beside it ({err.strerror}); choose another -o") from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise BpttError(
                    f"{self.output}: another bptt train is writing it ({holder}); wait for it or choose another -o"
                ) from None
            try:  # the holder may have removed the file between our open and our lock: lock the current one
                if os.stat(self.lock_path).st_ino == os.fstat(handle.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self._lock = handle

    def _release(self) -> None:
        if self._lock is not None:
            self.lock_path.unlink(missing_ok=True)
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def save_model(self, file: ModelFile, val_loss: float | None) -> bool:
        """Write the model file unless the one on disk is better; returns whether it was written."""
        if not self.owner:
            return True
        on_disk = self.best_on_disk
        if on_disk is not None and (val_loss is None or not val_loss < on_disk):
            self.kept_existing = True
            return False
        save_model_file(self.output, file)
        self.best_on_disk = val_loss
        self.kept_existing = False
        return True

    def save_checkpoint(self, training: dict[str, Any], run: dict[str, Any]) -> None:
        if not self.owner:
            return
        atomic_save({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "run": run,
                     "training": training}, self.checkpoint_path)

    def load_checkpoint(self, run: dict[str, Any], must_match: tuple[str, ...]) -> dict[str, Any]:
        """The training state of the checkpoint, after checking it belongs to this run."""
        path = self.checkpoint_path
        if not path.is_file():
            raise BpttError(f"{path}: no checkpoint to resume from; start the run without --resume")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise BpttError(f"{path}: not a readable bptt checkpoint (truncated or not plain data); "
                            "start the run without --resume") from None
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise BpttError(f"{path}: not a bptt checkpoint; start the run without --resume")
        if payload.get("format_version", math.inf) > CHECKPOINT_VERSION:
            raise BpttError(f"{path}: checkpoint format {payload.get('format_version')} is newer than this bptt reads; "
                            "upgrade bptt")
        saved = payload.get("run") or {}
        for key in must_match:
            if saved.get(key) != run.get(key):
                raise BpttError(
                    f"--resume: {key.replace('_', '-')} is {run.get(key)!r} but the checkpoint was made with "
                    f"{saved.get(key)!r}; resume with the same options and data"
                )
        return payload["training"]
