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
from bptt_cli.kinds.base import DataKind, Prepared, Request, RunSetup, resume_keys, shape_keys
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


MODEL_SHAPE = {"model": "cell", "layers": "layers", "hidden": "hidden", "embed": "embed", "tie_weights": "tie_weights"}


def warm_start_shape(kind: DataKind, file, given: dict[str, str], values: dict, source: Path) -> dict:
    """``--init-from`` keeps the stored model's shape: the options that fix it, as stored; a given option
    that would change one is refused by name."""
    trained_on = of_model(file)
    if trained_on is not kind:
        raise BpttError(f"--init-from {source}: the model was trained on {trained_on.what}, but DATA holds "
                        f"{kind.holds}; start from a model of this kind of data")
    stored = {name: getattr(file.model.config, field) for name, field in MODEL_SHAPE.items()}
    stored.update({name: file.config.get(name) for name in shape_keys(kind.Options())})
    for name, was in stored.items():
        if name in given and values.get(name) != was:
            raise BpttError(f"{given[name]} {values.get(name)!r}: the model in {source} has {was!r} and --init-from "
                            f"keeps its shape; drop {given[name]} or train without --init-from")
    return stored


__all__ = ["warm_start_shape", "KINDS", "DataKind", "Prepared", "Request", "RunSetup", "detect", "of_model", "refuse_foreign_options",
           "resume_keys", "shape_keys"]
