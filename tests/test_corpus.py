"""The text-corpus kind: a directory of text files, one document each, one vocabulary over all."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from bptt_cli import kinds
from bptt_cli.kinds.text import TextOptions
from bptt_cli.modelfile import load_model_file
from bptt_cli.models import ModelConfig
from bptt_cli.scoring import stream_pass
from bptt_cli.trainer import SilentReporter, TrainConfig
from conftest import SAMPLE_TEXT, TINY


def write_corpus(folder: Path, texts: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def plays(n: int = 3, size: int = 2000) -> dict[str, str]:
    text = SAMPLE_TEXT.read_text(encoding="utf-8")
    return {f"doc{i}.txt": text[i * size : (i + 1) * size] for i in range(n)}


def setup(batch: int = 4, window: int = 10) -> kinds.RunSetup:
    return kinds.RunSetup(ModelConfig("lstm", embed=8, hidden=16, layers=1),
                          TrainConfig(window=window, batch_size=batch, epochs=1, max_steps=2),
                          torch.device("cpu"), SilentReporter(), val_fraction=0.1)


def test_a_directory_of_text_files_is_a_corpus_and_a_file_is_text(tmp_path):
    folder = write_corpus(tmp_path / "notes", plays(2))
    assert kinds.detect(folder).name == "corpus"
    assert kinds.detect(folder / "doc0.txt").name == "text"
    assert kinds.detect(str(folder / "*.txt")).name == "corpus"
    np.save(tmp_path / "clips.npy", np.zeros((4, 2)))
    assert kinds.detect(tmp_path / "clips.npy").name == "audio"


def test_one_vocabulary_covers_every_file(tmp_path, run):
    folder = write_corpus(tmp_path / "notes", {"a.txt": "abab abab\n" * 30, "b.txt": "xyzzy xyz\n" * 30})
    out = tmp_path / "m.pt"
    code, _, err = run("train", folder, "-o", out, "--max-steps", "2", *TINY)
    assert code == 0, err
    file = load_model_file(out)
    assert file.data["kind"] == "corpus"
    assert file.tokenizer.vocab == sorted(set("abab abab\n") | set("xyzzy xyz\n"))
    assert file.summary["documents"] == 2


def test_each_document_starts_from_a_zero_state(tmp_path):
    """Changing one file (same characters, other order) never changes the loss of another's first window."""
    kind = kinds.KINDS["corpus"]

    def first_window_losses(texts: dict[str, str], folder: Path) -> dict[str, tuple[int, float]]:
        write_corpus(folder, texts)
        with kind.prepare(folder, TextOptions(no_cache=True), setup(batch=2)) as prepared:
            streams = SimpleNamespace(inputs=prepared.inputs, resets=prepared.resets)
            outputs, _ = stream_pass(prepared.model, streams, torch.device("cpu"))  # the same seeded model
            vocab = sorted(set("".join(texts.values())))
            found = {}
            for name in ("doc1.txt", "doc2.txt"):
                first = [vocab.index(c) for c in texts[name][:10]]
                starts = [(t, b) for t, b in np.argwhere(prepared.resets)
                          if prepared.inputs[t : t + 10, b].tolist() == first]
                assert len(starts) == 1  # the document begins exactly once, with a reset
                t, b = starts[0]
                found[name] = (int(t), float(F.cross_entropy(outputs[t : t + 10, b], prepared.targets[t : t + 10, b])))
            return found

    texts = plays(3)
    before = first_window_losses(texts, tmp_path / "one")
    assert max(t for t, _ in before.values()) > 0  # one of them follows doc0 in the same stream
    changed = {**texts, "doc0.txt": "".join(reversed(texts["doc0.txt"]))}
    assert first_window_losses(changed, tmp_path / "two") == before


def test_a_corpus_trains_evaluates_and_generates(tmp_path, run):
    folder = write_corpus(tmp_path / "notes", plays(3))
    out = tmp_path / "m.pt"
    code, _, err = run("train", folder, "-o", out, "--max-steps", "4", "--tokenizer", "word", *TINY)
    assert code == 0, err
    code, stdout, err = run("evaluate", out, folder, "--json")
    assert code == 0, err
    figures = json.loads(stdout)
    assert figures["documents"] == 3 and figures["tokenizer"] == "word"
    words = sum(len(t.split()) + t.count("\n") for t in plays(3).values())
    assert 0 < figures["tokens"] <= words - 3  # each document's first token is never predicted
    assert figures["bits_per_token"] == pytest.approx(figures["loss"] / np.log(2))
    code, stdout, err = run("evaluate", out, folder / "doc0.txt", "--json")
    assert code == 0 and json.loads(stdout)["documents"] == 1, err
    code, stdout, err = run("generate", out, "--length", "20", "--seed", "1")
    assert code == 0 and len(stdout.split()) >= 10, err


@pytest.mark.parametrize("case", ["empty directory", "binary file among text files", "one distinct character"])
def test_bad_corpora_get_one_line_and_exit_2(tmp_path, run, case):
    folder = tmp_path / "notes"
    folder.mkdir()
    if case == "binary file among text files":
        write_corpus(folder, plays(2))
        (folder / "image.bin").write_bytes(b"\x89PNG\x00\x00\x01" * 100)
        needle = "image.bin: looks like a binary file"
    elif case == "one distinct character":
        write_corpus(folder, {"a.txt": "a" * 500, "b.txt": "a" * 300})
        needle = "cannot learn anything"
    else:
        needle = "holds no .npy, .npz, .wav or text file"
    out = tmp_path / "m.pt"
    code, stdout, stderr = run("train", folder, "-o", out, *TINY)
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and needle in stderr, stderr
    assert not out.exists()


def test_options_of_another_kind_are_refused_by_name(tmp_path, run, tiny_text):
    folder = write_corpus(tmp_path / "notes", plays(2))
    code, _, err = run("train", folder, "--target", "x", *TINY)
    assert code == 2 and "--target is for CSV data; " in err and "holds a text corpus" in err
    code, _, err = run("train", tiny_text, "--labels", tmp_path / "l.csv", *TINY)
    assert code == 2 and "--labels is for feature files" in err
