"""The token cache round-trips: chunked encoding equals whole-text encoding, and a cache is reused, never trusted stale."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bptt_cli.errors import BpttError
from bptt_cli.text import Tokenizer, read_text
from bptt_cli.streams import mapped_streams
from bptt_cli.token_cache import load_tokens, text_chunks

TEXT = "Näh, the cat sat\n on the mat.\r\n\tcafé\u00a0au lait — 猫 " * 40


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_chunks_split_neither_characters_nor_words(text_file):
    chunks = list(text_chunks(text_file, chunk_bytes=7))
    assert "".join(chunks) == TEXT and len(chunks) > 10
    assert all(c[-1].isspace() for c in chunks[:-1])


@pytest.mark.parametrize("kind", ["char", "word", "byte"])
def test_cached_ids_and_vocabulary_equal_encoding_the_whole_text(text_file, tmp_path, kind, monkeypatch):
    monkeypatch.setattr("bptt_cli.token_cache.CHUNK_BYTES", 16)  # many chunks
    cache = load_tokens(text_file, kind, tmp_path / "cache")
    whole = Tokenizer.fit(kind, read_text(text_file, kind))
    expected, _ = whole.encode(read_text(text_file, kind))
    assert cache.tokenizer == whole
    assert cache.ids.dtype == whole.dtype
    np.testing.assert_array_equal(cache.ids, expected)


def test_a_second_run_reuses_the_cache_and_a_changed_file_replaces_it(text_file, tmp_path):
    folder = tmp_path / "cache"
    first = load_tokens(text_file, "word", folder)
    again = load_tokens(text_file, "word", folder)
    assert first.built and not again.built and again.path == first.path
    assert again.tokenizer == first.tokenizer
    np.testing.assert_array_equal(again.ids, first.ids)
    text_file.write_text(TEXT + " dog", encoding="utf-8")
    changed = load_tokens(text_file, "word", folder)
    assert changed.built and "dog" in changed.tokenizer.vocab
    assert sorted(p.suffix for p in folder.iterdir()) == [".ids", ".json"]  # the stale cache is gone


def test_a_truncated_cache_is_rebuilt(text_file, tmp_path):
    first = load_tokens(text_file, "char", tmp_path)
    first.path.write_bytes(first.path.read_bytes()[:-1])
    assert load_tokens(text_file, "char", tmp_path).built


def test_no_cache_leaves_nothing_behind(text_file, tmp_path):
    cache = load_tokens(text_file, "char", keep=False)
    assert len(cache.ids) == len(TEXT) and not cache.path.exists()
    assert not (text_file.parent / ".bptt-cache").exists()


def test_the_default_cache_is_the_users_never_beside_the_data(text_file, tmp_path, monkeypatch):
    monkeypatch.delenv("BPTT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load_tokens(text_file, "char").path.parent == tmp_path / "xdg" / "bptt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_tokens(text_file, "char").path.parent == tmp_path / "home" / ".cache" / "bptt"
    monkeypatch.setenv("BPTT_CACHE_DIR", str(tmp_path / "mine"))
    assert load_tokens(text_file, "char").path.parent == tmp_path / "mine"
    assert load_tokens(text_file, "char", tmp_path / "given").path.parent == tmp_path / "given"
    assert not (text_file.parent / ".bptt-cache").exists()


def test_two_files_of_one_name_keep_their_own_caches(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "train.txt").write_text("one text, one cache " * 20)
    (tmp_path / "b" / "train.txt").write_text("another text entirely " * 20)
    first = load_tokens(tmp_path / "a" / "train.txt", "char", tmp_path / "cache")
    second = load_tokens(tmp_path / "b" / "train.txt", "char", tmp_path / "cache")
    assert first.path != second.path and first.path.exists() and second.path.exists()
    assert not load_tokens(tmp_path / "a" / "train.txt", "char", tmp_path / "cache").built


def test_a_cache_dir_that_is_a_file_is_a_clear_error(text_file, tmp_path, run):
    (tmp_path / "c").write_text("not a folder")
    with pytest.raises(BpttError, match="--cache-dir .*: is a file, not a directory"):
        load_tokens(text_file, "char", tmp_path / "c")
    code, _, stderr = run("train", text_file, "-o", tmp_path / "m.pt", "--cache-dir", tmp_path / "c", "--max-steps", "1")
    assert code == 2 and "is a file, not a directory" in stderr and not (tmp_path / "m.pt").exists()


def test_the_tests_never_write_to_the_users_cache():
    import os

    assert Path(os.environ["BPTT_CACHE_DIR"]).name.startswith("bptt-cache") and "pytest" in os.environ["BPTT_CACHE_DIR"]


def test_binary_and_non_utf8_files_are_refused(tmp_path):
    binary, latin = tmp_path / "b.bin", tmp_path / "l.txt"
    binary.write_bytes(b"ab\x00cd")
    latin.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(BpttError, match="binary"):
        load_tokens(binary, "char", tmp_path)
    with pytest.raises(BpttError, match="offset 3"):
        load_tokens(latin, "char", tmp_path)


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_mapped_streams_slice_like_a_copied_tensor(batch):
    ids = np.random.randint(0, 200, size=500).astype(np.uint8)
    length = (len(ids) - 1) // batch
    streams = torch.from_numpy(ids[: batch * length + 1].astype(np.int64)).unfold(0, length + 1, length).t()
    inputs, targets = mapped_streams(ids, batch)
    assert inputs.shape == streams[:-1].shape and targets.shape == streams[1:].shape
    for start, end in [(0, 10), (13, 50), (40, len(inputs))]:
        torch.testing.assert_close(inputs[start:end], streams[:-1][start:end])
        torch.testing.assert_close(targets[start:end], streams[1:][start:end])
