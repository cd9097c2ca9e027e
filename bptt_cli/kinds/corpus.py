"""A text corpus: a directory or a glob of text files, one document per file.

One vocabulary covers every file; each file keeps its own token cache, so a
changed file is encoded again alone. Documents are packed into the B streams
like sequences (``series.pack``): the state is reset where each document
begins and no loss crosses from one document into the next, so what one file
holds never changes the loss of another's first window.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import numpy as np

from bptt_cli import baselines, distributed
from bptt_cli.errors import BpttError
from bptt_cli.evaluation import summarise
from bptt_cli.kinds.audio import FEATURE_SUFFIXES, is_pattern, pattern_files
from bptt_cli.kinds.base import Prepared, Request
from bptt_cli.kinds.text import TextKind, TextOptions, known_ids, token_model, token_run_files
from bptt_cli.losses import IGNORE_LABEL, class_loss
from bptt_cli.modelfile import ModelFile
from bptt_cli.scoring import ranked_sums, scored_sums, stream_pass
from bptt_cli.series import Streams, check_window, pack, split_pieces
from bptt_cli.streams import tail_cut
from bptt_cli.text import Tokenizer, read_text
from bptt_cli.token_cache import cached_tokens

SCORING_STREAMS = 64  # documents scored side by side


class _Scored:
    classifies = True  # next-token cross-entropy over the steps that carry a target


def hidden(path: Path, root: Path) -> bool:
    """Files under a dot-folder (a cache, a repository's own) or dot-files are not documents."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def corpus_files(data: str | Path) -> list[Path]:
    """The documents DATA names, sorted: every regular file under a directory (not under dot-folders), or a glob's."""
    path = Path(data)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not hidden(p, path))
    elif is_pattern(data):
        files = pattern_files(data)
    else:
        files = [path]
    if not files:
        raise BpttError(f"{data}: holds no .npy, .npz, .wav or text file; give a folder of text files "
                        "(one document each) or of feature files")
    return files


def union_tokenizer(kind: str, tokenizers: list[Tokenizer]) -> Tokenizer:
    """One vocabulary over every file's, sorted as ``Tokenizer.fit`` sorts, so one file gives the same ids."""
    if kind == "byte":
        return Tokenizer("byte", [])
    return Tokenizer(kind, sorted(set().union(*(t.vocab for t in tokenizers))))


def document_pairs(documents: list[np.ndarray], scored_from: list[int] | None = None):
    """Inputs ids[:-1] and next-token targets ids[1:] per document; targets before ``scored_from`` carry no loss."""
    inputs, targets = [], []
    for i, ids in enumerate(documents):
        y = ids[1:].copy()
        if scored_from is not None:
            y[: max(0, scored_from[i] - 1)] = IGNORE_LABEL
        inputs.append(ids[:-1])
        targets.append(y)
    return inputs, targets


class CorpusKind(TextKind, name="corpus", what="text corpora", holds="a text corpus", options=TextOptions):

    def claims(self, data: Path) -> bool:
        """A directory (the feature-file kind claims those holding feature files first), or a glob of text files."""
        text_files = is_pattern(data) and any(p.suffix.lower() not in FEATURE_SUFFIXES for p in pattern_files(data))
        return Path(data).is_dir() or text_files

    @contextlib.contextmanager
    def prepare(self, data: Path, options: TextOptions, run):
        init = run.init_from
        kind = init.tokenizer.kind if init is not None else options.tokenizer
        with contextlib.ExitStack() as stack:
            files = corpus_files(data)
            caches = [stack.enter_context(cached_tokens(f, kind, options.cache_dir, not options.no_cache)) for f in files]
            # a warm start keeps the stored vocabulary; else one vocabulary over every file
            tokenizer = init.tokenizer if init is not None else union_tokenizer(kind, [c.tokenizer for c in caches])
            encoded = [known_ids(c.ids, c.tokenizer, tokenizer) for c in caches]
            documents = [ids for ids, _ in encoded]
            train_docs, val_streams, notes = self._split(documents, tokenizer, options, run)
            unknown = sum(n for _, n in encoded)
            if unknown:
                notes.append(f"{data}: {unknown:,} token(s) outside the --init-from model's vocabulary are skipped "
                             "(a warm start keeps its vocabulary)")
            streams = self._train_streams(train_docs, run)
            model = token_model(run, tokenizer)
            digest = hashlib.sha256("".join(f"{f.name}:{c.sha256}\n" for f, c in zip(files, caches)).encode()).hexdigest()
            summary = {"data_file": Path(data).name, "data_sha256": digest, "documents": len(files),
                       "train_tokens": int(sum(len(d) for d in train_docs)),
                       "val_tokens": int((val_streams.targets != IGNORE_LABEL).sum()) if val_streams else 0}

            def validate(m) -> dict:
                sums, _ = ranked_sums(m, val_streams, run.device, _Scored)
                total, count, _ = sums.tolist()
                return summarise(total, int(count))

            validate = validate if val_streams is not None else None
            make_file, score_other, sample = token_run_files(run, model, tokenizer, summary, self.name, validate,
                                                             train_docs)

            built = sum(c.built for c in caches)
            if built and not options.no_cache:
                notes.append(f"{built} of {len(files)} document(s) encoded into the token cache; later runs reuse them")
            inputs, targets, resets = (distributed.shard_streams(s) for s in (streams.inputs, streams.targets, streams.resets))
            yield Prepared(model, inputs, targets, resets, class_loss, validate, make_file,
                           digest, score_other, sample, result={"documents": len(files),
                                                                "train_tokens": summary["train_tokens"],
                                                                "val_tokens": summary["val_tokens"]},
                           closing_notes=notes)

    def _split(self, documents: list[np.ndarray], tokenizer: Tokenizer, options: TextOptions, run):
        """Training documents, and validation streams: --val's documents whole, or every document's tail
        (scored after the state has read the document's beginning)."""
        notes: list[str] = []
        if run.val is not None:
            held, unknown = self._encode_all(run.val, tokenizer)
            if unknown:
                notes.append(f"{run.val}: {unknown} token(s) not in the training vocabulary are skipped")
            return documents, pack(*document_pairs(held), SCORING_STREAMS), notes
        cuts = [tail_cut(len(d), run.val_fraction) for d in documents]
        if run.val_fraction and sum(len(d) - c for d, c in zip(documents, cuts)) < 2:
            raise BpttError("the validation tails would hold fewer than 2 tokens; use more text or --val-fraction 0")
        train = [d[:c] for d, c in zip(documents, cuts) if c >= 2]
        if not train:
            raise BpttError("no document keeps 2 training tokens after the validation split; use more text")
        if not run.val_fraction:
            return train, None, notes
        return train, pack(*document_pairs(documents, cuts), SCORING_STREAMS), notes

    def _train_streams(self, documents: list[np.ndarray], run) -> Streams:
        config = run.train_config
        inputs, targets = document_pairs(documents)
        check_window(config.window, max(len(x) for x in inputs), "document")
        pieces = split_pieces([len(x) for x in inputs], config.batch_size, 2 * config.window if config.window else 0)
        streams = pack([inputs[i][a:b] for i, a, b in pieces], [targets[i][a:b] for i, a, b in pieces],
                       config.batch_size)
        if streams.inputs.shape[1] < config.batch_size:
            run.reporter.note(f"{len(pieces)} document piece(s) fill {streams.inputs.shape[1]} of the "
                              f"{config.batch_size} streams (--batch-size); each piece starts from a zero state")
        return streams

    @staticmethod
    def _encode_all(data: Path, tokenizer: Tokenizer) -> tuple[list[np.ndarray], int]:
        documents, unknown = [], 0
        for file in corpus_files(data):
            ids, missing = tokenizer.encode(read_text(file, tokenizer.kind))
            unknown += missing
            if len(ids) >= 2:
                documents.append(ids.astype(np.int64))
        if not documents:
            raise BpttError(f"{data}: no document holds 2 tokens known to the vocabulary; give more text")
        return documents, unknown

    def evaluate(self, file: ModelFile, data: Path, device, request: Request) -> dict:
        """Every document scored from its first token, the state reset where each begins."""
        documents, unknown = self._encode_all(data, self.tokenizer(file))
        streams = pack(*document_pairs(documents), SCORING_STREAMS)
        outputs, _ = stream_pass(file.model.to(device), streams, device)
        total, count, _ = scored_sums(_Scored, outputs, streams).tolist()
        return {**summarise(total, int(count)), "tokens": int(count), "unknown_tokens": unknown,
                "tokenizer": file.tokenizer.kind, "documents": len(documents),
                "baselines": baselines.token_baselines(file.data.get("baseline"), documents)}

    def gradcheck_problem(self, file: ModelFile, data: Path, request: Request):
        from bptt_cli import gradcheck

        documents, _ = self._encode_all(data, self.tokenizer(file))
        longest = max(documents, key=len)
        return gradcheck.token_problem(longest, f"{data} (its longest document)")

