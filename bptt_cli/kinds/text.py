"""Text: one file read as one token stream, cut into B contiguous columns (see ``streams``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from bptt_cli import baselines, distributed
from bptt_cli.choices import TEXT_DEFAULTS
from bptt_cli.errors import BpttError
from bptt_cli.evaluation import (
    EVALUATE_CONTEXT,
    EVALUATE_STREAMS,
    VALIDATION_CONTEXT,
    VALIDATION_STREAMS,
    scoring_precision,
    stream_count,
    summarise,
    token_loss,
)
from bptt_cli.kinds.base import DataKind, Prepared, Request, kind_option, table_defaults
from bptt_cli.modelfile import ModelFile
from bptt_cli.models import RecurrentModel
from bptt_cli.streams import mapped_streams, tail_cut
from bptt_cli.text import Tokenizer, read_text
from bptt_cli.token_cache import cached_tokens
from bptt_cli.trainer import seed_everything


@dataclass
class TextOptions:
    """The options of ``bptt train`` for text (named as the command names its parameters)."""

    tokenizer: str = kind_option("char", shape=True)  # one of text.TOKENIZERS
    cache_dir: Path | None = kind_option(None, resume=False)  # where the token cache goes
    no_cache: bool = kind_option(False, resume=False)  # encode into a temporary file, keep no cache


@dataclass
class TextSample:
    """What ``generate`` writes for a token model: the prime, then the new text piece by piece."""

    prime: str
    pieces: Iterator[str]


def split_tail(ids: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The first (1 - fraction) of the tokens for training, the contiguous tail for validation."""
    cut = tail_cut(len(ids), fraction)
    if fraction and len(ids) - cut < 2:
        raise BpttError("the validation tail would hold fewer than 2 tokens; use more data or --val-fraction 0")
    return ids[:cut], (ids[cut:] if fraction else None)


def remap(ids: np.ndarray, own: Tokenizer, shared: Tokenizer) -> np.ndarray:
    """Ids under one vocabulary -> ids under another (one lookup, no loop per token); -1 where it lacks the token."""
    if shared.kind == "byte":
        return np.asarray(ids, dtype=np.int64)
    lookup = pd.Index(shared.vocab).get_indexer(own.vocab)
    return lookup[np.asarray(ids, dtype=np.int64)]


def known_ids(ids: np.ndarray, own: Tokenizer, shared: Tokenizer) -> tuple[np.ndarray, int]:
    """``remap`` with the tokens the shared vocabulary lacks dropped, and their count."""
    mapped = remap(ids, own, shared)
    known = mapped >= 0
    return mapped[known], int(known.size - known.sum())


def token_model(run, tokenizer) -> RecurrentModel:
    """The model a run trains: the ``--init-from`` model as stored, or a fresh, seeded one over ``tokenizer``."""
    seed_everything(run.train_config.seed)
    if run.init_from is not None:
        return run.init_from.model.train()
    run.model_config.input_size = run.model_config.output_size = tokenizer.size
    run.model_config.tokens = True
    return RecurrentModel(run.model_config)


def token_run_files(run, model: RecurrentModel, tokenizer: Tokenizer, summary: dict, kind: str, validate,
                    training: list[np.ndarray]):
    """What text and corpora runs share: the model file for a validation record (with the unigram and bigram
    counts of the ``training`` documents, counted once, for evaluate's baselines), the loss of another
    model file on the run's validation tokens (only a model with this run's vocabulary reads them alike),
    and a sample of the model's text (``--sample-every``)."""
    counts: dict = {}

    def make_file(record: dict) -> ModelFile:
        best = {"best_step": record["step"], "best_epoch": record["epoch"], "best_val_loss": record["val_loss"]}
        if not counts:
            counts.update(baselines.token_counts(training, tokenizer.size))
        return ModelFile(model, tokenizer, run.run_config, {**summary, **best}, {"kind": kind, "baseline": counts})

    def score_other(file: ModelFile) -> tuple[float | None, str]:
        if validate is None:
            return None, "this run has no validation data"
        if file.tokenizer is None or file.tokenizer.to_dict() != tokenizer.to_dict():
            return None, "its vocabulary is not this run's"
        return validate(file.model.to(run.device))["loss"], ""

    def sample(m: RecurrentModel, seed: int, length: int, temperature: float) -> str:
        from bptt_cli.generation import generate

        return "".join(generate(m, tokenizer, "", length, temperature, seed=seed, device=run.device))

    return make_file, score_other, sample


class TextKind(DataKind, name="text", what="text", holds="text", options=TextOptions):
    tokens = True

    def defaults(self, values: dict, untouched: set[str]) -> dict:
        return table_defaults(TEXT_DEFAULTS, values, untouched)

    def claims(self, data: Path) -> bool:
        return True  # anything no other kind claims is read as text

    def unit_for(self, options: TextOptions) -> str:
        return "char" if options.tokenizer == "char" else "token"

    @contextlib.contextmanager
    def prepare(self, data: Path, options: TextOptions, run):
        """The text is encoded once into a token cache that later runs reuse; training reads it a window at a time."""
        init = run.init_from
        kind = init.tokenizer.kind if init is not None else options.tokenizer
        with cached_tokens(data, kind, options.cache_dir, not options.no_cache) as cache:
            tokenizer, ids = cache.tokenizer, cache.ids
            if init is not None:  # a warm start keeps the stored vocabulary: it cannot grow
                tokenizer = init.tokenizer
                ids, unknown = known_ids(ids, cache.tokenizer, tokenizer)
                if unknown:
                    run.reporter.note(f"{data}: {unknown:,} token(s) outside the --init-from model's vocabulary "
                                      "are skipped (a warm start keeps its vocabulary)")
            if run.val is not None:
                val_ids, unknown = tokenizer.encode(read_text(run.val, options.tokenizer))
                if unknown:
                    run.reporter.note(f"{run.val}: {unknown} token(s) not in the training vocabulary are skipped")
                if len(val_ids) < 2:
                    raise BpttError(f"{run.val}: fewer than 2 tokens known to the training vocabulary; give more text")
                train_ids = ids
            else:
                train_ids, val_ids = split_tail(ids, run.val_fraction)
            if len(train_ids) < 2:
                raise BpttError(f"{data}: {len(train_ids)} training token(s) is too little; give more text")
            model = token_model(run, tokenizer)
            inputs, targets = mapped_streams(train_ids, run.train_config.batch_size)  # (L, B) each, no copy
            summary = {"data_file": Path(data).name, "data_sha256": cache.sha256, "train_tokens": int(len(train_ids)),
                       "val_tokens": int(len(val_ids)) if val_ids is not None else 0}
            precision = run.train_config.precision

            def validate(m: RecurrentModel) -> dict:
                total, count = token_loss(m, val_ids, run.device, precision, VALIDATION_STREAMS,
                                          VALIDATION_CONTEXT, (distributed.rank(), distributed.world()))
                total, count = distributed.all_sum(torch.tensor([total, count], dtype=torch.float64)).tolist()
                return summarise(total, int(count))

            validate = validate if val_ids is not None else None
            make_file, score_other, sample = token_run_files(run, model, tokenizer, summary, self.name, validate,
                                                             [train_ids])
            notes = []
            if cache.built and not options.no_cache:
                notes.append(f"the text's {len(ids):,} tokens are cached in {cache.path}; later runs reuse them")
            yield Prepared(model, distributed.shard_streams(inputs), distributed.shard_streams(targets), None, None,
                           validate, make_file, cache.sha256, score_other, sample,
                           result={"train_tokens": summary["train_tokens"], "val_tokens": summary["val_tokens"]},
                           closing_notes=notes)

    def predictor(self, file: ModelFile, model_path: Path, device, horizon: int = 1):
        from bptt_cli.predict import TextPredictor

        return TextPredictor(file, model_path, device, horizon)

    def check_request(self, file: ModelFile, request: Request, command: str) -> None:
        if command == "generate" and (any(v is not None for v in (request.context, request.horizon, request.output,
                                                                  request.plot, request.future))
                                      or request.assume_seasonal):
            raise BpttError("--context, --horizon, -o, --plot, --future and --assume-seasonal are for series and "
                            "audio models; a text model takes --prime")
        if command == "evaluate" and request.plot is not None:
            raise BpttError("--plot is for series models (it draws their forecasts); this is a text model")

    def evaluate(self, file: ModelFile, data: Path, device, request: Request) -> dict:
        """Loss, perplexity and bits per token of a token model on a text; unknown tokens are skipped.

        Many streams side by side, each warmed up on the text before its part, unless ``request.exact``
        asks for the one stream from first token to last; the figures say which.
        """
        ids, unknown = self.tokenizer(file).encode(read_text(data, file.tokenizer.kind))
        streams, context = (1, 0) if request.exact else (EVALUATE_STREAMS, EVALUATE_CONTEXT)
        streams = stream_count(len(ids) - 1, streams, context) if len(ids) >= 2 else 1
        context = context if streams > 1 else 0  # one stream reads from the first token: nothing before it
        precision = scoring_precision(device, request.precision, file.model.config.cell, request.exact)
        total, count = token_loss(file.model.to(device), ids, device, precision, streams, context)
        return {**summarise(total, count), "tokens": count, "unknown_tokens": unknown,
                "tokenizer": file.tokenizer.kind, "streams": streams, "context": context, "exact": streams == 1,
                "precision": precision,
                "baselines": baselines.token_baselines(file.data.get("baseline"), [ids])}

    def generate(self, file: ModelFile, device, request: Request) -> TextSample:
        from bptt_cli.generation import generate

        pieces = generate(file.model, self.tokenizer(file), request.prime, request.length, request.temperature,
                          request.top_k, request.top_p, request.seed, device)
        return TextSample(request.prime, pieces)

    def gradcheck_problem(self, file: ModelFile, data: Path, request: Request):
        from bptt_cli import gradcheck

        tokenizer = self.tokenizer(file)
        return gradcheck.text_problem(file.model, tokenizer, read_text(data, tokenizer.kind), str(data))

    @staticmethod
    def tokenizer(file: ModelFile):
        if file.tokenizer is None:
            raise BpttError("this model was not trained on text; use data of the kind it was trained on")
        return file.tokenizer
