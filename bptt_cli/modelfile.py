"""The model file: one self-contained, plain-data file that rebuilds a trained model.

It holds a format tag and version, the resolved configuration, the tokenizer
(text) or the data description (series, audio: normalisation, columns), the
model configuration, the weights and a training summary. It is written
atomically and read with ``torch.load(weights_only=True)``, so a file from
someone else can never run code on load; its contents are validated before use.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from bptt_cli import __version__
from bptt_cli.atomic import atomic_write
from bptt_cli.errors import BpttError
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.text import Tokenizer

FORMAT = "bptt-model"
FORMAT_VERSION = 1


@dataclass
class ModelFile:
    """What a model file holds, in memory."""

    model: RecurrentModel
    tokenizer: Tokenizer | None
    config: dict[str, Any] = field(default_factory=dict)  # the resolved run configuration
    summary: dict[str, Any] = field(default_factory=dict)  # data hash, steps, best validation
    data: dict[str, Any] = field(default_factory=dict)  # what the data kind needs later: normalisation, columns, ...


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that never leaves a torn file (see ``atomic.atomic_write``)."""
    atomic_write(path, lambda out: torch.save(obj, out))


def check_writable(path: str | Path) -> Path:
    """Fail early, before any training, when ``path`` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise BpttError(f"{path}: is a directory; give a file name for the model, e.g. -o {path / 'model.pt'}")
    if not path.parent.is_dir():
        raise BpttError(f"{path}: the directory {path.parent} does not exist; create it or choose another -o")
    if not os.access(path.parent, os.W_OK):
        raise BpttError(f"{path}: the directory {path.parent} is not writable; choose another -o")
    return path


def save_model_file(path: str | Path, file: ModelFile) -> None:
    state = {k: v.detach().cpu() for k, v in file.model.state_dict().items()}
    atomic_save(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "bptt_version": __version__,
            "model_config": file.model.config.to_dict(),
            "tokenizer": file.tokenizer.to_dict() if file.tokenizer else None,
            "config": file.config,
            "summary": file.summary,
            "data": file.data,
            "weights": state,
        },
        path,
    )


def read_payload(path: str | Path) -> dict[str, Any]:
    """Load a file as plain data only, with one clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise BpttError(f"{path}: no such model file; check the path or train one with 'bptt train'")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # a reference to code, not just bad bytes
            raise BpttError(f"{path}: not a bptt model file (unreadable or truncated); train one with 'bptt train'") from None
        raise BpttError(
            f"{path}: refused: the file holds objects that are not plain data (possibly code); "
            "only load model files you trust, written by 'bptt train'"
        ) from None
    except Exception:
        raise BpttError(f"{path}: not a bptt model file (unreadable or truncated); train one with 'bptt train'") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BpttError(f"{path}: not a bptt model file; train one with 'bptt train'")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BpttError(
            f"{path}: model file format {version} is newer than this bptt reads ({FORMAT_VERSION}); upgrade bptt"
        )
    return payload


def load_model_file(path: str | Path) -> ModelFile:
    """Rebuild the model and tokenizer from a model file, validating keys and shapes."""
    payload = read_payload(path)
    try:
        known = {f.name for f in fields(ModelConfig)}
        config = ModelConfig(**{k: v for k, v in payload["model_config"].items() if k in known})
        model = RecurrentModel(config)
        model.load_state_dict(payload["weights"], strict=True)
        tokenizer = Tokenizer.from_dict(payload["tokenizer"]) if payload.get("tokenizer") else None
    except (KeyError, TypeError, ValueError, RuntimeError, BpttError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BpttError(f"{path}: damaged bptt model file ({reason[:200]}); retrain it with 'bptt train'") from None
    model.eval()
    return ModelFile(
        model,
        tokenizer,
        dict(payload.get("config") or {}),
        dict(payload.get("summary") or {}),
        dict(payload.get("data") or {}),
    )
