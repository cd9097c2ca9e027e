"""Reading text files and tokenizing them."""

import numpy as np
import pytest

from bptt_cli.errors import BpttError
from bptt_cli.text import Tokenizer, read_text


@pytest.mark.parametrize("kind", ["char", "byte", "word"])
def test_encode_then_decode_gives_the_text_back(kind):
    text = "To be, or not to be:\nthat is the question.\nWhether 'tis nobler\n"
    tokenizer = Tokenizer.fit(kind, text)
    ids, unknown = tokenizer.encode(text)
    decode = tokenizer.decoder()
    back = "".join(decode(int(i)) for i in ids)
    expected = text if kind != "word" else "To be, or not to be:\nthat is the question.\nWhether 'tis nobler\n"
    assert unknown == 0 and back == expected


def test_char_vocabulary_is_sorted_and_ids_are_the_smallest_type():
    tokenizer = Tokenizer.fit("char", "banana")
    assert tokenizer.vocab == ["a", "b", "n"]
    ids, _ = tokenizer.encode("banana")
    assert ids.tolist() == [1, 0, 2, 0, 2, 0] and ids.dtype == np.uint8


def test_unknown_tokens_are_dropped_and_counted():
    tokenizer = Tokenizer.fit("char", "abc")
    ids, unknown = tokenizer.encode("axbyéc")
    assert ids.tolist() == [0, 1, 2] and unknown == 3
    assert tokenizer.unknown("axbyé") == ["x", "y", "é"]
    words = Tokenizer.fit("word", "the cat sat")
    ids, unknown = words.encode("the dog sat")
    assert [words.vocab[i] for i in ids] == ["the", "sat"] and unknown == 1


def test_byte_tokenizer_keeps_multibyte_characters_whole_when_decoding():
    tokenizer = Tokenizer.fit("byte", "é€".encode())
    ids, _ = tokenizer.encode("é€".encode())
    decode = tokenizer.decoder()
    assert "".join(decode(int(i)) for i in ids) == "é€"


def test_tokenizer_survives_a_round_trip_through_plain_data():
    tokenizer = Tokenizer.fit("word", "a b\nc")
    assert Tokenizer.from_dict(tokenizer.to_dict()) == tokenizer


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"abc\x00\x01\x02", "binary"),
        (b"caf\xe9 au lait", "not UTF-8"),
    ],
)
def test_files_that_are_not_text_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(BpttError, match=message):
        read_text(path, "char")


def test_byte_tokenizer_reads_any_bytes(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"caf\xe9\x00")
    assert read_text(path, "byte") == b"caf\xe9\x00"


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(BpttError, match="no such file"):
        read_text(tmp_path / "nope.txt")
