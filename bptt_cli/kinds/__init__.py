"""The registry of data kinds: which kind reads DATA, and which kind a model file was trained on.

Adding a kind means one module beside these (a ``DataKind`` subclass) and one
entry in ``KINDS``. Kinds are asked in order whether they claim DATA; text
comes last and claims anything.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from bptt_cli.errors import BpttError
from bptt_cli.kinds.audio import AudioKind
from bptt_cli.kinds.base import DataKind, Prepared, Request, RunSetup, resume_keys
from bptt_cli.kinds.corpus import CorpusKind
from bptt_cli.kinds.series import SeriesKind
from bptt_cli.kinds.text import TextKind

KINDS: dict[str, DataKind] = {kind.name: kind for kind in (SeriesKind(), AudioKind(), CorpusKind(), TextKind())}


def detect(data: str | Path) -> DataKind:
    """The kind that reads DATA: by its suffix, or by what a directory or a pattern holds."""
    return next(kind for kind in KINDS.values() if kind.claims(Path(data)))


def of_model(file) -> DataKind:
    """The kind a model file was trained on (files from before kinds were written are text)."""
    name = file.data.get("kind", "text")
    if name not in KINDS:
        raise BpttError(f"the model file's data kind {name!r} is unknown to this bptt; upgrade bptt")
    return KINDS[name]


def kind_options() -> dict[str, list[DataKind]]:
    """Every kind-specific option name, with the kinds that take it."""
    owners: dict[str, list[DataKind]] = {}
    for kind in KINDS.values():
        for option in fields(kind.Options):
            owners.setdefault(option.name, []).append(kind)
    return owners


def refuse_foreign_options(kind: DataKind, given: dict[str, str], data: Path) -> None:
    """An option another kind takes, given for DATA of this kind: say whose it is instead of ignoring it.

    ``given`` maps the parameter names the user set to how they spelled them (``--target``).
    """
    for name, owners in kind_options().items():
        if name in given and kind not in owners:
            whose = " and ".join(dict.fromkeys(o.what for o in owners))
            raise BpttError(f"{given[name]} is for {whose}; {data} holds {kind.holds}")


__all__ = ["KINDS", "DataKind", "Prepared", "Request", "RunSetup", "detect", "of_model", "refuse_foreign_options",
           "resume_keys"]
