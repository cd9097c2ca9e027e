"""Training and scoring token models on text files: the glue between text, streams, trainer and model file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from bptt_cli.errors import BpttError
from bptt_cli.evaluation import summarise, token_loss
from bptt_cli.modelfile import ModelFile, check_writable, save_model_file
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.streams import batchify
from bptt_cli.text import Tokenizer, read_text
from bptt_cli.trainer import Reporter, TrainConfig, Trainer, seed_everything


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_tail(ids: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The first (1 - fraction) of the tokens for training, the contiguous tail for validation."""
    if not 0 <= fraction < 1:
        raise BpttError(f"--val-fraction must be in [0, 1), got {fraction}")
    cut = len(ids) - int(round(len(ids) * fraction))
    if fraction and len(ids) - cut < 2:
        raise BpttError("the validation tail would hold fewer than 2 tokens; use more data or --val-fraction 0")
    return ids[:cut], (ids[cut:] if fraction else None)


def train_text(
    data: str | Path,
    output: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig,
    device: torch.device,
    reporter: Reporter,
    tokenizer_kind: str = "char",
    val: str | Path | None = None,
    val_fraction: float = 0.1,
    run_config: dict | None = None,
) -> dict:
    """Train a token model on ``data`` and keep the best one (on validation) in ``output``."""
    output = check_writable(output)
    train_config.validate()
    text = read_text(data, tokenizer_kind)
    tokenizer = Tokenizer.fit(tokenizer_kind, text)
    ids, _ = tokenizer.encode(text)
    if val is not None:
        val_ids, unknown = tokenizer.encode(read_text(val, tokenizer_kind))
        if unknown:
            reporter.note(f"{val}: {unknown} token(s) not in the training vocabulary are skipped")
        if len(val_ids) < 2:
            raise BpttError(f"{val}: fewer than 2 tokens known to the training vocabulary; give more text")
        train_ids = ids
    else:
        train_ids, val_ids = split_tail(ids, val_fraction)
    if len(train_ids) < 2:
        raise BpttError(f"{data}: {len(train_ids)} training token(s) is too little; give more text")

    seed_everything(train_config.seed)
    model_config.input_size = model_config.output_size = tokenizer.size
    model_config.tokens = True
    model = RecurrentModel(model_config)
    streams = batchify(train_ids, train_config.batch_size)  # (L + 1, B)
    summary = {
        "data_file": Path(data).name,
        "data_sha256": sha256(data),
        "train_tokens": int(len(train_ids)),
        "val_tokens": int(len(val_ids)) if val_ids is not None else 0,
    }

    def validate(m: RecurrentModel) -> dict:
        return summarise(*token_loss(m, val_ids, device, train_config.precision))

    def save_best(record: dict) -> None:
        summary.update(best_step=record["step"], best_epoch=record["epoch"],
                       best_val_loss=record.get("val_loss"))
        save_model_file(output, ModelFile(model, tokenizer, run_config or {}, dict(summary)))

    trainer = Trainer(model, train_config, device, reporter, validate if val_ids is not None else None, save_best)
    result = trainer.fit(streams[:-1], streams[1:])
    result.update(model_file=str(output), train_tokens=summary["train_tokens"], val_tokens=summary["val_tokens"])
    return result


def evaluate_text(file: ModelFile, data: str | Path, device: torch.device) -> dict:
    """Loss, perplexity and bits per token of a token model on a text; unknown tokens are skipped."""
    if file.tokenizer is None:
        raise BpttError("this model was not trained on text; evaluate it on the kind of data it was trained on")
    ids, unknown = file.tokenizer.encode(read_text(data, file.tokenizer.kind))
    total, count = token_loss(file.model.to(device), ids, device)
    figures = summarise(total, count)
    figures.update(tokens=count, unknown_tokens=unknown, tokenizer=file.tokenizer.kind)
    return figures
