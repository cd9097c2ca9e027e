"""The model file: one self-contained, plain-data file that rebuilds a trained model.

It holds a format tag and version, the resolved configuration, the tokenizer
(text) or the data description (series, audio: normalisation, columns), the
model configuration, the weights and a training summary. It is written
atomically and read with ``torch.load(weights_only=True)``, so a file from
someone else can never run code on load; its contents are validated before use.
"""

from __future__ import annotations

import errno
import math
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bptt_cli import __version__, residuals
from bptt_cli.atomic import atomic_write
from bptt_cli.errors import BpttError
from bptt_cli.input_paths import check_input
from bptt_cli.losses import OutputHead
from bptt_cli.models import CELL_SPECS, ModelConfig, RecurrentModel
from bptt_cli.text import TOKENIZERS, Tokenizer

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
    """``torch.save`` that never leaves a torn file (see ``atomic.atomic_write``).

    On a full disk torch's writer raises RuntimeError ("[enforce fail at
    inline_container.cc ...] file write failed"), not OSError: it becomes the
    same one-line error as any failed write.
    """

    def write(out) -> None:
        try:
            torch.save(obj, out)
        except RuntimeError as err:
            raise OSError(errno.EIO, f"the write failed, is the disk full? ({_first_line(err)})") from None

    atomic_write(path, write)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


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


def corrupt_member(path: str | Path) -> str | None:
    """The first part of a torch zip file whose CRC-32 fails (torch itself reads flipped bytes silently)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None  # not a whole zip file: torch.load says so


def read_payload(path: str | Path) -> dict[str, Any]:
    """Load a file as plain data only, with one clear error for anything else."""
    path = Path(path)
    if not path.exists():
        raise BpttError(f"{path}: no such model file; check the path or train one with 'bptt train'")
    check_input(path)
    corrupt = corrupt_member(path)
    if corrupt:
        raise damaged(path, f"the bytes of {corrupt} do not match their checksum: flipped or overwritten")
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


class DamagedField(Exception):
    """A field of a model file or checkpoint that does not fit the others; the message says which."""


def need(condition: bool, reason: str) -> None:
    """Raise the reason a file is damaged unless ``condition`` holds."""
    if not condition:
        raise DamagedField(reason)


def is_whole(value: Any, least: int = 0) -> bool:
    """An int (not a bool) of at least ``least``."""
    return type(value) is int and value >= least


def finite_tensors(values: Any, what: str) -> None:
    """Every tensor in ``values`` (a tensor, or a dict or list of them, nested) is finite."""
    if isinstance(values, torch.Tensor):
        need(not values.is_floating_point() or bool(torch.isfinite(values).all()),
             f"{what} holds NaN or infinite values")
    elif isinstance(values, dict):
        for key, value in values.items():
            finite_tensors(value, f"{what} {key}")
    elif isinstance(values, (list, tuple)):
        for i, value in enumerate(values):
            finite_tensors(value, f"{what} {i}")


LATER_MODEL_FIELDS = ("anchor", "leads", "linear", "linear_lags")  # model_config fields older files lack: their defaults rebuild those models


def _model_config(raw: Any) -> ModelConfig:
    need(isinstance(raw, dict), "model_config is not a mapping")
    raw = {"bidirectional": False, **raw}  # files written before --bidirectional existed
    stored = list(ModelConfig().to_dict())  # what a model file holds (not run-time switches such as force)
    missing = [name for name in stored if name not in raw and name not in LATER_MODEL_FIELDS]
    need(not missing, f"model_config lacks {', '.join(missing)}")
    for name in ("input_size", "output_size", "embed", "hidden", "layers"):
        need(is_whole(raw[name], 1), f"model_config {name} is {raw[name]!r}, not a positive whole number")
    for name in ("tokens", "tie_weights", "bidirectional"):
        need(type(raw[name]) is bool, f"model_config {name} is {raw[name]!r}, not true or false")
    need(raw["cell"] in CELL_SPECS, f"model_config cell {raw['cell']!r} is not one of {', '.join(CELL_SPECS)}")
    dropout = raw["dropout"]
    need(type(dropout) in (int, float) and 0 <= dropout < 1, f"model_config dropout {dropout!r} is not in [0, 1)")
    config = ModelConfig(**{name: raw[name] for name in stored if name in raw})
    try:
        config.validate()
    except BpttError as err:
        raise DamagedField(f"model_config: {err}") from None
    return config


def _weights(raw: Any, config: ModelConfig) -> None:
    """The weights are the declared model's, shape for shape, and finite; checked on a model with no storage."""
    need(isinstance(raw, dict) and all(isinstance(v, torch.Tensor) for v in raw.values()),
         "weights are not a mapping of names to tensors")
    with torch.device("meta"):  # shapes only: nothing is allocated for what the file declares
        expected = {k: tuple(v.shape) for k, v in RecurrentModel(config).state_dict().items()}
    missing, extra = sorted(set(expected) - set(raw)), sorted(set(raw) - set(expected))
    need(not missing, f"weights lack {', '.join(missing[:3])}")
    need(not extra, f"weights hold {', '.join(extra[:3])}, which the declared model has not")
    for name, shape in expected.items():
        tensor = raw[name]
        need(tuple(tensor.shape) == shape,
             f"weight {name} has shape {tuple(tensor.shape)} but the declared model needs {shape}")
        need(tensor.is_floating_point(), f"weight {name} is not floating point ({tensor.dtype})")
    finite_tensors(raw, "weight")


def _tokenizer(raw: Any, config: ModelConfig) -> Tokenizer | None:
    if not config.tokens:
        need(raw is None, "a model of feature inputs holds a tokenizer")
        return None
    need(isinstance(raw, dict) and raw.get("kind") in TOKENIZERS, "the tokenizer is missing or of an unknown kind")
    vocab = raw.get("vocab")
    need(isinstance(vocab, list) and all(isinstance(t, str) for t in vocab), "the vocabulary is not a list of strings")
    need(len(set(vocab)) == len(vocab), "the vocabulary lists a token twice")
    need(raw["kind"] != "byte" or not vocab, "a byte tokenizer holds a vocabulary")
    need(raw["kind"] != "char" or all(len(t) == 1 for t in vocab), "a char vocabulary holds longer strings")
    tokenizer = Tokenizer(raw["kind"], list(vocab))
    need(tokenizer.size == config.input_size == config.output_size,
         f"the tokenizer has {tokenizer.size} tokens but the model {config.input_size} inputs "
         f"and {config.output_size} outputs")
    return tokenizer


def _indices(values: Any, count: int, what: str) -> list[int]:
    need(isinstance(values, list) and all(is_whole(v) and v < count for v in values),
         f"data {what} are not column numbers below {count}")
    return values


def _normaliser(norm: Any, width: int) -> None:
    need(isinstance(norm, dict), "data norm is not a mapping of mean and std")
    for name in ("mean", "std"):
        values = norm.get(name)
        need(isinstance(values, list) and len(values) == width and all(type(v) in (int, float) for v in values),
             f"data norm {name} does not hold {width} numbers, one per column")
        need(all(math.isfinite(v) for v in values), f"data norm {name} holds NaN or infinite values")
    need(all(v > 0 for v in norm["std"]), "data norm std holds zero or negative values")


def _baseline(raw: dict, config: ModelConfig) -> None:
    """The counts or reference set evaluate's baselines read (absent from older files) fit the model."""
    from bptt_cli import baselines

    if raw.get("baseline") is None:
        return
    if config.tokens:
        reason = baselines.check_token_counts(raw["baseline"], config.output_size)
    elif raw.get("task") == "forecast":
        reason = "a forecasting model holds a labelling baseline"
    else:
        reason = baselines.check_label_reference(raw["baseline"], config.output_size, config.input_size)
    need(reason is None, reason or "")


def _data(raw: Any, config: ModelConfig) -> None:
    """What series and audio models keep about their data fits the model's inputs and outputs."""
    from bptt_cli.kinds import KINDS  # here, not at the top: the kinds build on model files

    need(isinstance(raw, dict), "data is not a mapping")
    name = raw.get("kind", "text")  # files from before kinds were written are text
    need(name in KINDS, f"data kind {name!r} is not one of {', '.join(KINDS)}")
    need(KINDS[name].tokens == config.tokens,
         f"a {'token' if config.tokens else 'feature'} model holds {name!r} data")
    _baseline(raw, config)
    if config.tokens:
        return
    columns = raw.get("columns")
    need(isinstance(columns, list) and columns and all(isinstance(c, str) for c in columns),
         "data columns are not a list of names")
    features = _indices(raw.get("features"), len(columns), "features")
    need(len(features) == config.input_size, f"{len(features)} feature columns but {config.input_size} model inputs")
    if raw.get("task") == "forecast":
        targets = _indices(raw.get("targets"), len(columns), "targets")
        per_target = OutputHead.stored(raw, None).per_target  # 2 for a gaussian head, one per quantile level
        need(len(targets) * per_target == config.output_size,
             f"{len(targets)} targets but {config.output_size} model outputs"
             + (f" ({per_target} wanted per target by its {raw.get('loss')} loss)" if per_target != 1 else ""))
        reason = residuals.check(raw.get("residual_quantiles"), len(targets))
        need(reason is None, reason or "")
    else:
        classes = raw.get("classes")
        need(isinstance(classes, list) and len(classes) == config.output_size >= 2,
             f"a labelling model needs one output per class (2 or more), it has {config.output_size}")
    _normaliser(raw.get("norm"), len(columns))


def check_payload(payload: dict[str, Any]) -> tuple[ModelConfig, Tokenizer | None]:
    """Every field of a model file checked against the others, before anything is allocated for it."""
    config = _model_config(payload.get("model_config"))
    _weights(payload.get("weights"), config)
    tokenizer = _tokenizer(payload.get("tokenizer"), config)
    _data(payload.get("data") or {}, config)
    for name in ("config", "summary"):
        need(isinstance(payload.get(name) or {}, dict), f"{name} is not a mapping")
    best = (payload.get("summary") or {}).get("best_val_loss")
    need(best is None or (type(best) in (int, float) and not math.isnan(best)), "summary best_val_loss is not a number")
    return config, tokenizer


def damaged(path: str | Path, reason: str, what: str = "bptt model file",
            fix: str = "retrain it with 'bptt train'") -> BpttError:
    """The one line every damaged file gets: which field is wrong and what to do."""
    reason = " ".join(reason.split())[:200]
    return BpttError(f"{path}: damaged {what} ({reason}); {fix}")


def load_model_file(path: str | Path) -> ModelFile:
    """Rebuild the model and tokenizer from a model file, after checking every field against the others."""
    payload = read_payload(path)
    try:
        config, tokenizer = check_payload(payload)
    except DamagedField as err:
        raise damaged(path, str(err)) from None
    model = RecurrentModel(config)
    model.load_state_dict(payload["weights"], strict=True)
    model.eval()
    return ModelFile(
        model,
        tokenizer,
        dict(payload.get("config") or {}),
        dict(payload.get("summary") or {}),
        dict(payload.get("data") or {}),
    )
