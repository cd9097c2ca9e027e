"""The data-kind registry: detection, and resume checks that cover every option of a kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from bptt_cli import kinds
from conftest import SAMPLE_TEXT, TINY
from test_audio import write_npys
from test_series import seasonal_csv


def corpus(folder: Path) -> Path:
    folder.mkdir()
    text = SAMPLE_TEXT.read_text(encoding="utf-8")
    for i in range(2):
        (folder / f"part{i}.txt").write_text(text[i * 3000 : (i + 1) * 3000], encoding="utf-8")
    return folder


def text(folder: Path) -> Path:
    path = folder.parent / "book.txt"
    path.write_text(SAMPLE_TEXT.read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return path


MAKERS = {
    "text": text,
    "corpus": corpus,
    "series": lambda folder: seasonal_csv(folder.parent / "s.csv"),
    "audio": lambda folder: write_npys(folder),
}

CHANGED = [  # (kind, the option changed on --resume, how the refusal names it)
    ("text", ["--tokenizer", "word"], "tokenizer"),
    ("corpus", ["--tokenizer", "byte"], "tokenizer"),
    ("series", ["--loss", "huber"], "loss"),
    ("series", ["--missing", "ffill"], "missing"),
    ("series", ["--season", "12"], "season"),
    ("audio", ["--loss", "huber"], "loss"),
    ("audio", ["--n-mels", "20"], "n-mels"),
]


def test_every_kind_is_in_the_registry_and_detected(tmp_path):
    assert list(kinds.KINDS) == ["series", "audio", "corpus", "text"]
    for name, make in MAKERS.items():
        assert kinds.detect(make(tmp_path / name)).name == name


@pytest.mark.parametrize("kind,change,named", CHANGED, ids=[f"{k} {c[0]}" for k, c, _ in CHANGED])
def test_resume_refuses_a_changed_option_of_the_kind_and_names_it(tmp_path, run, kind, change, named):
    data = MAKERS[kind](tmp_path / kind)
    out = tmp_path / "m.pt"
    code, _, err = run("train", data, "-o", out, "--max-steps", "2", *TINY)
    assert code == 0, err
    code, _, err = run("train", data, "-o", out, "--max-steps", "4", "--resume", *TINY, *change)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and errors[0].startswith(f"error: --resume: {named} is "), err
    code, _, err = run("train", data, "-o", out, "--max-steps", "4", "--resume", *TINY)
    assert code == 0, err  # the same options resume
