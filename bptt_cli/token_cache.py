"""The token cache: a text encoded once into a memory-mapped array of ids that later runs reuse.

Tokenising a large text builds Python objects (strings, words) only chunk by
chunk, and training then reads the ids from the page cache a window at a time,
so the memory a run needs beyond the cache stays flat however large the text.
A cache is keyed by the file's resolved path, its SHA-256 and the tokenizer,
and keeps the vocabulary with the ids::

    <cache dir>/<file name>.<tokenizer>-<path hash[:8]>-<sha256[:16]>.ids    the ids, raw, smallest unsigned type
    <cache dir>/<file name>.<tokenizer>-<path hash[:8]>-<sha256[:16]>.json   format, sha256, dtype, count, vocabulary

The cache directory is the user's (``$XDG_CACHE_HOME/bptt``, else
``~/.cache/bptt``; ``$BPTT_CACHE_DIR`` or ``--cache-dir`` override it), never
the data's folder, which may be under version control, read-only or shared.
When a file changes, its older cache is removed; another file of the same name
elsewhere keeps its own. The ``byte`` tokenizer needs no cache: its ids are the
file's bytes, mapped as they are.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from bptt_cli.errors import BpttError
from bptt_cli.input_paths import check_input
from bptt_cli.text import TOKENIZERS, Tokenizer

FORMAT = "bptt-token-cache"
VERSION = 1
CHUNK_BYTES = 8 << 20  # text decoded and tokenised at once: bounds the memory of encoding
_SPACES = b" \n\t\r\f\v"  # ASCII whitespace never occurs inside a UTF-8 character or a word


def sha256(path: str | Path) -> str:
    """The file's SHA-256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """The text of ``path`` in pieces cut just after an ASCII whitespace byte.

    So no piece splits a UTF-8 character or a word, and each piece tokenises
    exactly as it would inside the whole text.
    """
    offset, rest = 0, b""
    with open(path, "rb") as source:
        while True:
            block = source.read(chunk_bytes)
            data = rest + block
            if not data:
                return
            if offset == 0 and b"\x00" in data[:65536]:
                raise BpttError(f"{path}: looks like a binary file (it holds NUL bytes); give a UTF-8 text file "
                                "or use --tokenizer byte")
            cut = len(data) if not block else max(data.rfind(bytes([s])) for s in _SPACES) + 1
            if cut <= 0:  # no whitespace yet: read on
                rest = data
                continue
            try:
                yield data[:cut].decode("utf-8")
            except UnicodeDecodeError as err:
                raise BpttError(f"{path}: not UTF-8 text (bad byte at offset {offset + err.start}); convert it "
                                "to UTF-8 or use --tokenizer byte") from None
            offset, rest = offset + cut, data[cut:]


@dataclass
class TokenCache:
    """A text's token ids, mapped from disk, with the tokenizer that made them."""

    tokenizer: Tokenizer
    ids: np.ndarray  # (N,) read-only memmap of the smallest unsigned type that holds the vocabulary
    sha256: str  # of the data file
    path: Path | None  # the .ids file (None for bytes, which map the data file itself)
    built: bool  # encoded by this run rather than reused

    def discard(self) -> None:
        """Remove the cache files (and an emptied cache directory)."""
        if self.path is None:
            return
        for part in (self.path, self.path.with_suffix(".json")):
            part.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()


def default_cache_dir() -> Path:
    """``$BPTT_CACHE_DIR``, else ``$XDG_CACHE_HOME/bptt``, else ``~/.cache/bptt``."""
    if os.environ.get("BPTT_CACHE_DIR"):
        return Path(os.environ["BPTT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bptt"


def cache_folder(cache_dir: str | Path | None) -> Path:
    """The folder the cache goes to (``cache_dir`` if given), refusing one that is a file."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if folder.exists() and not folder.is_dir():
        option = "--cache-dir" if cache_dir is not None else "BPTT_CACHE_DIR"
        raise BpttError(f"{option} {folder}: is a file, not a directory; name a directory (it is created if needed)")
    return folder


def load_tokens(data: str | Path, kind: str, cache_dir: str | Path | None = None, keep: bool = True) -> TokenCache:
    """The ids of ``data`` under tokenizer ``kind``: from the cache when it holds them, else encoded now.

    ``keep=False`` encodes into a temporary file that is gone when the run ends
    (the mapping keeps it readable until then) and leaves no cache behind.
    """
    data = Path(data)
    if kind not in TOKENIZERS:
        raise BpttError(f"unknown tokenizer {kind!r}; use one of {', '.join(TOKENIZERS)}")
    check_input(data)
    if data.stat().st_size == 0:
        raise BpttError(f"{data}: the file is empty; give a file with text in it")
    digest = sha256(data)
    if kind == "byte":
        ids = np.memmap(data, dtype=np.uint8, mode="r")
        if ids.min() == ids.max():
            raise one_token(data, "byte", repr(bytes([int(ids[0])])))
        return TokenCache(Tokenizer("byte", []), ids, digest, None, False)
    if not keep:
        with tempfile.TemporaryDirectory(prefix="bptt-tokens-") as scratch:
            return _build(data, kind, digest, Path(scratch))
    folder = cache_folder(cache_dir)
    return _open(data, kind, digest, folder) or _build(data, kind, digest, folder)


def one_token(data: Path, kind: str, token: str) -> BpttError:
    """Training text that is one token repeated: the next token is always known, so nothing can be learnt."""
    return BpttError(f"{data}: the text is one {'char' if kind == 'char' else kind} ({token}) repeated; a model "
                     "cannot learn anything from it (its loss is 0 from the start): give varied text")


@contextlib.contextmanager
def cached_tokens(data: str | Path, kind: str, cache_dir: str | Path | None = None, keep: bool = True):
    """``load_tokens`` for the length of a run: a cache the run built is removed again if the run
    then stops on bad input (exit code 2), so bad input leaves nothing behind."""
    cache = load_tokens(data, kind, cache_dir, keep)
    try:
        yield cache
    except BpttError as err:
        if cache.built and err.exit_code == 2:
            cache.discard()
        raise


def _family(data: Path, kind: str) -> str:
    """What every cache of this file (this path) under this tokenizer starts with, whatever its content."""
    where = hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:8]
    return f"{data.name}.{kind}-{where}-"


def _stem(data: Path, kind: str, digest: str) -> str:
    return f"{_family(data, kind)}{digest[:16]}"


def _open(data: Path, kind: str, digest: str, folder: Path) -> TokenCache | None:
    """The cache for this file and tokenizer if it is there and whole; None otherwise."""
    stem = _stem(data, kind, digest)
    try:
        meta = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))
        ids_path = folder / f"{stem}.ids"
        dtype, count = np.dtype(meta["dtype"]), int(meta["tokens"])
        whole = (meta["format"], meta["version"], meta["sha256"], meta["tokenizer"]["kind"]) == (FORMAT, VERSION, digest, kind)
        if not whole or ids_path.stat().st_size != count * dtype.itemsize:
            return None
        tokenizer = Tokenizer.from_dict(meta["tokenizer"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ids = np.memmap(ids_path, dtype=dtype, mode="r", shape=(count,)) if count else np.zeros(0, dtype)
    return TokenCache(tokenizer, ids, digest, ids_path, False)


def _build(data: Path, kind: str, digest: str, folder: Path) -> TokenCache:
    """Encode ``data`` in two passes over its chunks (vocabulary, then ids) into ``folder``.

    Both files are written under temporary names and renamed, the JSON last, so
    a cache is either whole or ignored.
    """
    vocab: set[str] = set()
    for chunk in text_chunks(data):
        vocab.update(Tokenizer.fit(kind, chunk).vocab)
    if len(vocab) < 2:
        raise one_token(data, kind, repr(next(iter(vocab), "")))
    tokenizer = Tokenizer(kind, sorted(vocab))  # the order Tokenizer.fit gives the whole text
    stem = _stem(data, kind, digest)
    ids_path, meta_path = folder / f"{stem}.ids", folder / f"{stem}.json"
    scratch = folder / f"{stem}.ids.tmp{os.getpid()}"
    count = 0
    try:
        folder.mkdir(parents=True, exist_ok=True)  # only now: bad input leaves nothing behind
        with open(scratch, "wb") as out:
            for chunk in text_chunks(data):
                ids, _ = tokenizer.encode(chunk)
                ids.tofile(out)
                count += len(ids)
        os.replace(scratch, ids_path)
        meta = {"format": FORMAT, "version": VERSION, "sha256": digest, "data_file": data.name,
                "dtype": tokenizer.dtype.str, "tokens": count, "tokenizer": tokenizer.to_dict()}
        scratch.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
        os.replace(scratch.with_suffix(".json"), meta_path)
    except OSError as err:
        raise BpttError(f"{folder}: cannot write the token cache ({err.strerror}); use --cache-dir or --no-cache") from None
    finally:
        for leftover in (scratch, scratch.with_suffix(".json")):
            leftover.unlink(missing_ok=True)
    for old in folder.glob(f"{glob.escape(_family(data, kind))}*.*"):  # caches of earlier versions of this file
        if not old.name.startswith(stem):
            old.unlink(missing_ok=True)
    ids = np.memmap(ids_path, dtype=tokenizer.dtype, mode="r", shape=(count,)) if count else np.zeros(0, tokenizer.dtype)
    return TokenCache(tokenizer, ids, digest, ids_path, True)
