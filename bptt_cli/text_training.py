"""Training and scoring token models on text files: the glue between text, streams, trainer and model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bptt_cli import distributed
from bptt_cli.errors import BpttError
from bptt_cli.evaluation import VALIDATION_CONTEXT, VALIDATION_STREAMS, summarise, token_loss
from bptt_cli.modelfile import ModelFile
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.text import read_text
from bptt_cli.runfiles import RunFiles
from bptt_cli.streams import tail_cut
from bptt_cli.token_cache import cached_tokens, mapped_streams
from bptt_cli.trainer import Reporter, TrainConfig, seed_everything
from bptt_cli.training_run import run_training


def split_tail(ids: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The first (1 - fraction) of the tokens for training, the contiguous tail for validation."""
    cut = tail_cut(len(ids), fraction)
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
    resume: bool = False,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> dict:
    """Train a token model on ``data`` and keep the best one (on validation) in ``output``.

    The text is encoded once into a token cache (``cache_dir``, default beside
    the data) that later runs reuse; training reads it a window at a time.
    """
    train_config.validate()
    with RunFiles(output) as files, cached_tokens(data, tokenizer_kind, cache_dir, use_cache) as cache:
        tokenizer, ids = cache.tokenizer, cache.ids
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
        inputs, targets = mapped_streams(train_ids, train_config.batch_size)  # (L, B) each, no copy of the ids
        inputs, targets = distributed.shard_streams(inputs), distributed.shard_streams(targets)
        summary = {
            "data_file": Path(data).name,
            "data_sha256": cache.sha256,
            "train_tokens": int(len(train_ids)),
            "val_tokens": int(len(val_ids)) if val_ids is not None else 0,
        }
        run = {**(run_config or {}), "data_sha256": summary["data_sha256"]}

        def validate(m: RecurrentModel) -> dict:
            total, count = token_loss(m, val_ids, device, train_config.precision, VALIDATION_STREAMS,
                                      VALIDATION_CONTEXT, (distributed.rank(), distributed.world()))
            total, count = distributed.all_sum(torch.tensor([total, count], dtype=torch.float64)).tolist()
            return summarise(total, int(count))

        def make_file(record: dict) -> ModelFile:
            best = {"best_step": record["step"], "best_epoch": record["epoch"], "best_val_loss": record["val_loss"]}
            return ModelFile(model, tokenizer, run_config or {}, {**summary, **best})

        result = run_training(files, model, make_file, train_config, device, reporter,
                              validate if val_ids is not None else None, inputs, targets, run,
                              resume=resume)
        if cache.built and use_cache:  # said after the run, so that bad input still gets one error line alone
            reporter.note(f"the text's {len(ids):,} tokens are cached in {cache.path}; later runs reuse them")
    result.update(train_tokens=summary["train_tokens"], val_tokens=summary["val_tokens"])
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
