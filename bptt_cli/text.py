"""Text files and tokenizers: text in, integer token ids out, all vectorised.

A tokenizer is plain data (kind and vocabulary), so it travels inside the model
file and ``generate``/``evaluate`` never need the training text. Encoding never
loops in Python per token: characters go through numpy code points, words
through a pandas hash index, bytes through ``np.frombuffer``.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bptt_cli.choices import TOKENIZERS
from bptt_cli.errors import BpttError
from bptt_cli.input_paths import check_input

_WORD = re.compile(r"\S+|\n")


def read_text(path: str | Path, tokenizer: str = "char") -> str | bytes:
    """Read a training or evaluation file, refusing what cannot be text.

    The ``byte`` tokenizer takes any bytes; ``char`` and ``word`` need UTF-8 text.
    """
    path = check_input(path)
    raw = path.read_bytes()
    if not raw:
        raise BpttError(f"{path}: the file is empty; give a file with text in it")
    if tokenizer == "byte":
        return raw
    if b"\x00" in raw[:65536]:
        raise BpttError(f"{path}: looks like a binary file (it holds NUL bytes); give a UTF-8 text file or use --tokenizer byte")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BpttError(
            f"{path}: not UTF-8 text (bad byte at offset {err.start}); convert it to UTF-8 or use --tokenizer byte"
        ) from None


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


@dataclass
class Tokenizer:
    """A vocabulary and the rule that cuts text into its tokens.

    ``vocab`` lists the token strings in id order (empty for ``byte``, whose ids
    are the byte values 0-255).
    """

    kind: str
    vocab: list[str]

    @classmethod
    def fit(cls, kind: str, text: str | bytes) -> "Tokenizer":
        """Build the vocabulary from training text (sorted, so it is reproducible)."""
        if kind not in TOKENIZERS:
            raise BpttError(f"unknown tokenizer {kind!r}; use one of {', '.join(TOKENIZERS)}")
        if kind == "byte":
            return cls("byte", [])
        if kind == "char":
            points = np.flatnonzero(np.bincount(_code_points(text)))
            return cls("char", [chr(p) for p in points.tolist()])
        words = pd.unique(pd.Series(_WORD.findall(text), dtype=object))
        return cls("word", sorted(words.tolist()))

    @property
    def size(self) -> int:
        return 256 if self.kind == "byte" else len(self.vocab)

    def encode(self, text: str | bytes) -> tuple[np.ndarray, int]:
        """Return the ids of the tokens in the vocabulary, and how many were not.

        Tokens outside the vocabulary are dropped from the stream (and counted),
        never mapped to a made-up id.
        """
        if self.kind == "byte":
            data = text if isinstance(text, bytes) else text.encode("utf-8")
            return np.frombuffer(data, dtype=np.uint8).astype(self.dtype), 0
        if self.kind == "char":
            points = _code_points(text)
            lookup = np.full(max(map(ord, self.vocab)) + 2, -1, dtype=np.int64)
            lookup[[ord(c) for c in self.vocab]] = np.arange(len(self.vocab))
            ids = lookup[np.minimum(points, len(lookup) - 1)]  # the last slot is always -1
            known = ids >= 0
        else:
            ids = pd.Index(self.vocab).get_indexer(_WORD.findall(text))
            known = ids >= 0
        return ids[known].astype(self.dtype), int(known.size - known.sum())

    def unknown(self, text: str) -> list[str]:
        """The distinct tokens of ``text`` that are not in the vocabulary."""
        if self.kind == "byte":
            return []
        pieces = list(text) if self.kind == "char" else _WORD.findall(text)
        known = set(self.vocab)
        return sorted({p for p in pieces if p not in known})

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every id."""
        for candidate in (np.uint8, np.uint16, np.uint32):
            if self.size <= np.iinfo(candidate).max + 1:
                return np.dtype(candidate)
        return np.dtype(np.int64)

    def decoder(self):
        """A function from one id to the text it stands for, for streaming output.

        Bytes go through an incremental UTF-8 decoder, so a multi-byte character
        split across tokens comes out whole; words are joined by spaces.
        """
        if self.kind == "byte":
            utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
            return lambda i: utf8.decode(bytes([i]))
        if self.kind == "char":
            return self.vocab.__getitem__
        state = {"line_start": True}

        def word(i: int) -> str:
            token = self.vocab[i]
            out = token if token == "\n" or state["line_start"] else " " + token
            state["line_start"] = token == "\n"
            return out

        return word

    def to_dict(self) -> dict:
        return {"kind": self.kind, "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, data: dict) -> "Tokenizer":
        return cls(str(data["kind"]), [str(t) for t in data["vocab"]])
