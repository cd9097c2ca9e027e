"""The files a training run owns: the model file (-o), its checkpoint and its lock.

- The lock (``model.pt.lock``) stops two runs from writing the same output; a
  lock left by a dead process is released by the kernel and simply taken over.
- The model file is only ever replaced by a better model (lower validation loss),
  so a bad run never clobbers a good result.
- The checkpoint (``model.pt.ckpt``) is written atomically, read as plain data
  and checked field by field before a run resumes from it; a file there that is
  not a bptt checkpoint is never overwritten. The checkpoint beside a model file
  is the resume point of the run that wrote that model: a fresh run that keeps
  the existing model leaves its checkpoint alone, and writes its own only once it
  has written the model (a run resumed from the checkpoint owns it).
- Temporaries that a killed run left beside either file are removed by the
  next run, once it holds the lock.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import stat
from pathlib import Path
from typing import Any

import torch

from bptt_cli import distributed
from bptt_cli.atomic import remove_stale_temporaries
from bptt_cli.errors import BpttError
from bptt_cli.modelfile import (
    DamagedField,
    ModelFile,
    atomic_save,
    corrupt_member,
    damaged,
    finite_tensors,
    is_whole,
    need,
    read_payload,
    save_model_file,
)
from bptt_cli.output_paths import check_output

CHECKPOINT_FORMAT = "bptt-checkpoint"
CHECKPOINT_VERSION = 1


class RunFiles:
    """Use as a context manager around a training run: holds the lock while it lives."""

    def __init__(self, output: str | Path, owner: bool | None = None, inputs: tuple = (), force: bool = False):
        """``owner`` is False on the ranks of a distributed run other than 0: they read, never write.

        ``inputs`` are the run's data files, never to be written over; ``force``
        lets -o replace a file that is not a bptt model (never the checkpoint).
        """
        self.output = check_output(output, "model", "-o", inputs, force)
        self.owner = distributed.is_main() if owner is None else owner
        self.checkpoint_path = check_output(self.output.with_name(self.output.name + ".ckpt"), "checkpoint",
                                            "the checkpoint of -o", inputs)
        self.lock_path = self.output.with_name(self.output.name + ".lock")
        self.force = force
        self._lock = None
        self.best_on_disk: float | None = None  # the validation loss of the model already at -o
        self.kept_existing = False
        self.foreign_checkpoint = False  # the checkpoint beside -o belongs to the run that wrote the model there
        self.refused_checkpoint = False  # this run left that checkpoint alone and wrote none of its own

    def __enter__(self) -> "RunFiles":
        if not self.owner:
            return self
        self._acquire()
        for path in (self.output, self.checkpoint_path):  # left by a run killed while writing: ours now
            remove_stale_temporaries(path)
        if self.output.exists():
            try:
                payload = read_payload(self.output)
            except BpttError:
                if not self.force:
                    self._release()
                    raise BpttError(f"{self.output}: exists and is not a readable bptt model file; it is not "
                                    "overwritten: choose another -o") from None
                payload = {}  # forced: whatever is there is replaced by the first model
            loss = (payload.get("summary") or {}).get("best_val_loss")
            self.best_on_disk = float(loss) if isinstance(loss, (int, float)) else None
            self.foreign_checkpoint = self.checkpoint_path.exists()
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _acquire(self) -> None:
        while True:
            handle = self._open_lock()
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

    def _open_lock(self):
        """The lock file, opened without following a symbolic link (its target would get the lock text)."""
        try:
            descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise BpttError(f"{self.lock_path}: is a symbolic link; nothing is written through it: remove it "
                                "or choose another -o") from None
            raise BpttError(f"{self.output}: cannot write beside it ({err.strerror}); choose another -o") from None
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # O_NONBLOCK: a FIFO there does not hang the open
            os.close(descriptor)
            raise BpttError(f"{self.lock_path}: is not a regular file; remove it or choose another -o")
        return os.fdopen(descriptor, "a+")

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
        self.kept_existing = self.foreign_checkpoint = False  # the model is ours now, and so is its checkpoint
        return True

    def save_checkpoint(self, training: dict[str, Any], run: dict[str, Any]) -> bool:
        """Write this run's checkpoint unless the one there belongs to the kept model; returns whether it wrote."""
        if not self.owner:
            return True
        if self.foreign_checkpoint:
            self.refused_checkpoint = True
            return False
        self.refused_checkpoint = False
        atomic_save({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "run": run,
                     "training": training}, self.checkpoint_path)

    def load_checkpoint(self, run: dict[str, Any], must_match: tuple[str, ...]) -> dict[str, Any]:
        """The training state of the checkpoint, after checking it belongs to this run."""
        path = self.checkpoint_path
        if not path.is_file():
            raise BpttError(f"{path}: no checkpoint to resume from; start the run without --resume")
        corrupt = corrupt_member(path)
        if corrupt:
            raise damaged(path, f"the bytes of {corrupt} do not match their checksum", "bptt checkpoint",
                          "start the run without --resume")
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
        differ = [f"{key.replace('_', '-')} is {run.get(key)!r} but the checkpoint was made with {saved.get(key)!r}"
                  for key in must_match if saved.get(key) != run.get(key)]
        if differ:  # all of them in one line, so one retry with the same options resumes
            raise BpttError(f"--resume: {'; '.join(differ)}; resume with the same options and data")
        try:
            check_training(payload.get("training"), saved)
        except DamagedField as err:
            raise damaged(path, str(err), "bptt checkpoint", "start the run without --resume") from None
        self.foreign_checkpoint = False  # it is this run's: resuming continues it
        return payload["training"]


POSITION_COUNTS = ("step", "window_index", "stale", "tokens", "skipped")  # whole numbers >= 0 in a position


def check_position(position) -> None:
    """A position that can be: counts are whole and not negative, and the epoch's windows are among the steps."""
    need(isinstance(position, dict), "position is not a mapping")
    for name in POSITION_COUNTS:
        need(is_whole(position.get(name)), f"position {name} is {position.get(name)!r}, not a whole number >= 0")
    need(is_whole(position.get("epoch"), 1), f"position epoch is {position.get('epoch')!r}, not a whole number >= 1")
    need(position["window_index"] <= position["step"],
         f"position window_index {position['window_index']} is beyond the {position['step']} steps trained")
    for name in ("best", "seconds"):
        value = position.get(name)
        need(type(value) in (int, float) and not math.isnan(value) and value >= 0,
             f"position {name} is {value!r}, not a number >= 0")
    need(position.get("epoch_rng") is None or isinstance(position["epoch_rng"], dict), "position epoch_rng is damaged")


def check_training(training, run: dict) -> None:
    """Every field of a checkpoint's training state checked, before the run allocates or restores anything."""
    need(isinstance(training, dict), "no training state")
    missing = [k for k in ("position", "weights", "optimizer", "schedule", "torch_rng", "carried_state")
               if k not in training]
    need(not missing, f"it lacks {', '.join(missing)}")
    check_position(training["position"])
    need(isinstance(training["weights"], dict) and all(isinstance(v, torch.Tensor) for v in training["weights"].values()),
         "weights are not a mapping of names to tensors")
    finite_tensors(training["weights"], "weight")  # a checkpoint of a diverged run would diverge again
    need(isinstance(training["optimizer"], dict) and {"state", "param_groups"} <= set(training["optimizer"]),
         "the optimizer state is damaged")
    finite_tensors(training["optimizer"]["state"], "optimizer state")
    need(isinstance(training["schedule"], dict), "the schedule is not a mapping")
    rng = training["torch_rng"]
    need(isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8, "the random generator state is damaged")
    _check_carried(training["carried_state"], run)


def _check_carried(state, run: dict) -> None:
    """The carried state has the run's parts (h, or h and c for LSTM), each (layers, streams, hidden)."""
    need(isinstance(state, list) and state and all(isinstance(s, torch.Tensor) and s.dim() == 3 for s in state),
         "the carried state is not a list of (layers, streams, hidden) tensors")
    parts = 2 if run.get("model") == "lstm" else 1
    need(len(state) == parts, f"the carried state has {len(state)} part(s), a {run.get('model')} has {parts}")
    shape = tuple(state[0].shape)
    need(all(tuple(s.shape) == shape for s in state), "the parts of the carried state differ in shape")
    for axis, name in ((0, "layers"), (2, "hidden")):
        need(not is_whole(run.get(name)) or shape[axis] == run[name],
             f"the carried state is {shape[axis]} wide in {name}, the run's --{name} is {run.get(name)}")
    finite_tensors(state, "carried state")

