"""Baselines scored beside the RNN on the same points, so a user sees what the RNN earns.

Token models: an add-one unigram and a bigram (absolute discounting interpolated
with that unigram), both fitted on the training text. A model file does not hold
its training text, so ``bptt train`` stores the counts (plain int64 tensors, read
with ``weights_only``); files from before that show no baseline.

Labelling models: the majority class of the training labels; for one label per
sequence also a 1-nearest-neighbour on each sequence's mean and standard
deviation of frames, and a 1-nearest-neighbour with dynamic time warping (DTW) on
the frames themselves. The training frames the DTW needs are stored (float16)
when they fit ``REFERENCE_BUDGET`` values; beyond that the DTW row is left out.
Everything is vectorised: counts by ``bincount``/``unique`` on chunks, lookups
by ``searchsorted``, DTW one anti-diagonal at a time over every reference.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch

DISCOUNT = 0.75  # absolute discount of the bigram (Kneser and Ney's usual value)
MAX_BIGRAMS = 1 << 20  # distinct bigrams stored at most (16 MB); beyond that only the unigram is kept
REFERENCE_BUDGET = 1 << 20  # training frame values kept for the DTW baseline (2 MB as float16)
CHUNK = 1 << 24  # tokens counted per step, so a mapped 1 GB text is never copied whole
DENSE_PAIRS = 1 << 22  # vocabularies with at most this many pairs are counted densely

UNIGRAM = "unigram (add-one)"
BIGRAM = f"bigram (discount {DISCOUNT}, add-one unigram)"
MAJORITY = "majority class"
NEAREST = "1-NN, mean+std of frames"
DTW = "1-NN, DTW on frames"


# ---------------------------------------------------------------- token models


def _pair_counts(codes: np.ndarray, pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct pair codes (sorted) and their counts."""
    if pairs <= DENSE_PAIRS:
        dense = np.bincount(codes, minlength=pairs)
        found = np.flatnonzero(dense)
        return found, dense[found]
    return np.unique(codes, return_counts=True)


def _merge(codes: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair codes (possibly repeated) with counts -> distinct codes with summed counts."""
    found, inverse = np.unique(codes, return_inverse=True)
    return found, np.bincount(inverse, weights=counts).astype(np.int64)


def token_counts(documents: Iterable[np.ndarray], vocab: int) -> dict:
    """Unigram and bigram counts of the training tokens, as a model file keeps them.

    Bigrams never cross from one document into the next. ``bigram_pairs`` are
    codes ``previous * vocab + next``, sorted; when there are more than
    MAX_BIGRAMS of them only the unigram is kept.
    """
    unigram = np.zeros(vocab, dtype=np.int64)
    codes, counts = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for ids in documents:
        for start in range(0, len(ids), CHUNK):
            piece = np.asarray(ids[start: start + CHUNK + 1], dtype=np.int64)  # one token of overlap
            unigram += np.bincount(piece[: CHUNK], minlength=vocab)
            found, seen = _pair_counts(piece[:-1] * vocab + piece[1:], vocab * vocab)
            codes.append(found)
            counts.append(seen)
        if len(codes) > 64:  # keep the pieces' lists short on a long corpus
            merged = _merge(np.concatenate(codes), np.concatenate(counts))
            codes, counts = [merged[0]], [merged[1]]
    pairs, seen = _merge(np.concatenate(codes), np.concatenate(counts))
    stored = {"unigram": torch.from_numpy(unigram)}
    if len(pairs) <= MAX_BIGRAMS:
        stored.update(bigram_pairs=torch.from_numpy(pairs), bigram_counts=torch.from_numpy(seen))
    return stored


def _unigram_probs(unigram: np.ndarray) -> np.ndarray:
    return (unigram + 1.0) / (unigram.sum() + len(unigram))


def _bigram_probs(counts: dict, previous: np.ndarray, following: np.ndarray) -> np.ndarray:
    """p(next | previous): max(c(v,w) - d, 0) / c(v) + d * N1+(v) / c(v) * p_unigram(w); p_unigram(w) after
    a token never seen with a follower."""
    unigram = counts["unigram"].numpy()
    vocab = len(unigram)
    pairs, seen = counts["bigram_pairs"].numpy(), counts["bigram_counts"].numpy()
    context = np.bincount(pairs // vocab, weights=seen, minlength=vocab)  # c(v): v followed by anything
    followers = np.bincount(pairs // vocab, minlength=vocab)  # N1+(v): distinct tokens after v
    codes = previous * vocab + following
    at = np.minimum(np.searchsorted(pairs, codes), max(0, len(pairs) - 1))
    pair = np.where(pairs[at] == codes, seen[at], 0) if len(pairs) else np.zeros(len(codes))
    c = context[previous]
    lower = _unigram_probs(unigram)[following]
    known = c > 0
    safe = np.where(known, c, 1.0)
    interpolated = np.maximum(pair - DISCOUNT, 0) / safe + DISCOUNT * followers[previous] / safe * lower
    return np.where(known, interpolated, lower)


def _token_row(name: str, probs: np.ndarray) -> dict:
    loss = float(-np.log(probs).sum() / max(1, len(probs)))
    return {"name": name, "loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf,
            "bits_per_token": loss / math.log(2), "tokens": int(len(probs))}


def token_baselines(counts: dict | None, documents: list[np.ndarray]) -> list[dict]:
    """Bits per token of the stored unigram and bigram on every ids[1:] of each document (the RNN's points)."""
    if not counts:
        return []
    previous = np.concatenate([np.asarray(d[:-1], np.int64) for d in documents])
    following = np.concatenate([np.asarray(d[1:], np.int64) for d in documents])
    rows = [_token_row(UNIGRAM, _unigram_probs(counts["unigram"].numpy())[following])]
    if "bigram_pairs" in counts:
        rows.append(_token_row(BIGRAM, _bigram_probs(counts, previous, following)))
    return rows


def check_token_counts(raw, vocab: int) -> str | None:
    """Why stored token counts do not fit a vocabulary of ``vocab``, or None when they do."""
    if not isinstance(raw, dict) or not isinstance(raw.get("unigram"), torch.Tensor):
        return "baseline counts are not a mapping holding a unigram tensor"
    tensors = [raw[k] for k in ("unigram", "bigram_pairs", "bigram_counts") if k in raw]
    if not all(isinstance(t, torch.Tensor) and t.dtype == torch.int64 and t.dim() == 1 for t in tensors):
        return "baseline counts are not one-dimensional int64 tensors"
    if len(raw["unigram"]) != vocab or bool((raw["unigram"] < 0).any()):
        return f"the baseline unigram does not hold {vocab} counts of zero or more"
    if ("bigram_pairs" in raw) != ("bigram_counts" in raw):
        return "the baseline bigram has pairs without counts or counts without pairs"
    if "bigram_pairs" in raw:
        pairs, seen = raw["bigram_pairs"], raw["bigram_counts"]
        if len(pairs) != len(seen) or bool((seen < 1).any()):
            return "the baseline bigram counts do not match its pairs"
        if len(pairs) and (int(pairs.min()) < 0 or int(pairs.max()) >= vocab * vocab
                           or bool((pairs[1:] <= pairs[:-1]).any())):
            return "the baseline bigram pairs are not sorted codes of two tokens of the vocabulary"
    return None


# ---------------------------------------------------------------- labelling models


def summary_features(frames: list[np.ndarray]) -> np.ndarray:
    """Each sequence's mean and standard deviation over its frames: (N, 2F)."""
    return np.stack([np.concatenate([f.mean(axis=0), f.std(axis=0)]) for f in frames]).astype(np.float32)


def label_reference(frames: list[np.ndarray], labels: list[np.ndarray], classes: int, per_sequence: bool) -> dict:
    """What a model file keeps for the labelling baselines: class counts, and for one label per sequence the
    training sequences' summaries and (within REFERENCE_BUDGET) their frames."""
    truth = np.concatenate([np.asarray(y, np.int64) for y in labels])
    truth = truth[truth >= 0]  # frames without a label
    stored = {"class_counts": torch.from_numpy(np.bincount(truth, minlength=classes))}
    if not per_sequence:
        return stored
    stored["summaries"] = torch.from_numpy(summary_features(frames))
    stored["labels"] = torch.from_numpy(truth)
    if sum(f.size for f in frames) <= REFERENCE_BUDGET:
        stored["frames"] = torch.from_numpy(np.concatenate(frames).astype(np.float16))
        stored["lengths"] = torch.tensor([len(f) for f in frames], dtype=torch.int64)
    return stored


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of the rows of ``a`` (N, F) to those of ``b`` (..., M, F): (..., N, M),
    without the (..., N, M, F) difference array."""
    cross = np.einsum("nf,...mf->...nm", a, b)
    return np.maximum((a * a).sum(-1)[:, None] + (b * b).sum(-1)[..., None, :] - 2 * cross, 0)


def dtw_distances(query: np.ndarray, references: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """DTW distance of one sequence (La, F) to each of R references (R, Lmax, F), padded past ``lengths``.

    The cost of a path is the sum of Euclidean distances of the frames it pairs
    (steps right, down or diagonal), divided by La + Lb so that long and short
    references compare fairly. One anti-diagonal at a time, over every reference at once.
    """
    rows, cols = len(query), references.shape[1]
    cost = np.sqrt(squared_distances(query, references))  # (R, La, Lb)
    total = np.full((len(references), rows + 1, cols + 1), np.inf)
    total[:, 0, 0] = 0.0
    for diagonal in range(2, rows + cols + 1):  # i + j, both counted from 1
        i = np.arange(max(1, diagonal - cols), min(rows, diagonal - 1) + 1)
        j = diagonal - i
        best = np.minimum(np.minimum(total[:, i - 1, j - 1], total[:, i - 1, j]), total[:, i, j - 1])
        total[:, i, j] = cost[:, i - 1, j - 1] + best
    return total[np.arange(len(references)), rows, lengths] / (rows + lengths)


def _padded(frames: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated frames (sum L, F) -> (R, Lmax, F), zeros past each length."""
    width = frames.shape[1]
    out = np.zeros((len(lengths), int(lengths.max()), width), dtype=np.float64)
    steps = np.arange(out.shape[1])[None, :] < lengths[:, None]
    out[steps] = frames
    return out


def label_baselines(reference: dict | None, frames: list[np.ndarray], truth: np.ndarray, classes: list[str]) -> list[dict]:
    """Accuracy and macro-F1 of each baseline on the scored points: one per sequence (``frames`` given per
    sequence) or one per frame (``truth`` per frame, ``frames`` unused)."""
    from bptt_cli.forecast import classification

    if not reference:
        return []
    majority = int(np.argmax(reference["class_counts"].numpy()))
    predictions = {MAJORITY: np.full(len(truth), majority, dtype=np.int64)}
    if "summaries" in reference:
        known, labels = reference["summaries"].numpy().astype(np.float64), reference["labels"].numpy()
        wanted = summary_features(frames).astype(np.float64)
        predictions[NEAREST] = labels[squared_distances(wanted, known).argmin(axis=1)]
    if "frames" in reference:
        lengths = reference["lengths"].numpy()
        padded = _padded(reference["frames"].numpy().astype(np.float64), lengths)
        labels = reference["labels"].numpy()
        predictions[DTW] = np.array([labels[dtw_distances(f, padded, lengths).argmin()] for f in frames],
                                    dtype=np.int64)
    rows = []
    for name, predicted in predictions.items():
        figures = classification(truth, predicted, classes)
        rows.append({"name": name, "accuracy": figures["accuracy"], "macro_f1": figures["macro_f1"],
                     "points": int(len(truth))})
    return rows


def check_label_reference(raw, classes: int, width: int) -> str | None:
    """Why a stored labelling reference does not fit ``classes`` classes of ``width`` features, or None."""
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        return "the baseline reference is not a mapping of tensors"
    counts = raw.get("class_counts")
    if counts is None or counts.dtype != torch.int64 or tuple(counts.shape) != (classes,) or bool((counts < 0).any()):
        return f"the baseline class counts are not {classes} counts of zero or more"
    if "summaries" not in raw:
        return None if "frames" not in raw else "the baseline reference holds frames without summaries"
    summaries, labels = raw["summaries"], raw.get("labels")
    if summaries.dim() != 2 or summaries.shape[1] != 2 * width or not bool(torch.isfinite(summaries).all()):
        return f"the baseline summaries are not finite rows of {2 * width} numbers"
    if labels is None or labels.dtype != torch.int64 or tuple(labels.shape) != (len(summaries),) \
            or (len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes)):
        return "the baseline labels are not one class per summary"
    if "frames" in raw:
        frames, lengths = raw["frames"], raw.get("lengths")
        if lengths is None or tuple(lengths.shape) != (len(labels),) or bool((lengths < 1).any()) \
                or frames.dim() != 2 or frames.shape != (int(lengths.sum()), width) \
                or not bool(torch.isfinite(frames).all()):
            return "the baseline frames do not match their lengths and the model's features"
    return None
