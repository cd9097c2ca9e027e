"""Baselines beside every evaluation: hand-computed unigram/bigram bits, majority-class, 1-NN and DTW 1-NN
accuracies, and the table in ``bptt evaluate`` on the same points as the model's figures."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from test_audio import SMALL, separable_set, write_tagged_npzs

from bptt_cli import baselines
from bptt_cli.baselines import BIGRAM, DTW, MAJORITY, NEAREST, UNIGRAM
from bptt_cli.modelfile import atomic_save, load_model_file, read_payload


def test_unigram_and_bigram_bits_equal_the_hand_computed_figures():
    counts = baselines.token_counts([np.array([0, 1, 0, 1, 2], dtype=np.uint8)], vocab=3)  # a b a b c
    assert counts["unigram"].tolist() == [2, 2, 1]
    assert counts["bigram_pairs"].tolist() == [0 * 3 + 1, 1 * 3 + 0, 1 * 3 + 2] and counts["bigram_counts"].tolist() == [2, 1, 1]
    rows = {r["name"]: r for r in baselines.token_baselines(counts, [np.array([0, 1, 2, 2])])}  # predicts b|a c|b c|c
    unigram = [3 / 8, 2 / 8, 2 / 8]  # add-one: (count + 1) / (5 tokens + 3 types)
    # c(a)=2 with 1 distinct follower, c(b)=2 with 2; c was never followed: its row falls back to the unigram
    bigram = [(2 - 0.75) / 2 + 0.75 * 1 / 2 * 3 / 8, (1 - 0.75) / 2 + 0.75 * 2 / 2 * 2 / 8, 2 / 8]
    assert rows[UNIGRAM]["tokens"] == rows[BIGRAM]["tokens"] == 3
    assert rows[UNIGRAM]["bits_per_token"] == pytest.approx(-sum(math.log2(p) for p in unigram) / 3, rel=1e-12)
    assert rows[BIGRAM]["bits_per_token"] == pytest.approx(-sum(math.log2(p) for p in bigram) / 3, rel=1e-12)
    assert rows[BIGRAM]["perplexity"] == pytest.approx(2 ** rows[BIGRAM]["bits_per_token"])


def test_bigrams_never_cross_documents_and_a_long_text_counts_in_chunks(monkeypatch):
    counts = baselines.token_counts([np.array([0, 1]), np.array([2, 0])], vocab=3)
    assert counts["bigram_pairs"].tolist() == [1, 6]  # a b and c a, never b c
    ids = np.random.default_rng(0).integers(0, 50, size=1000)
    whole = baselines.token_counts([ids], vocab=50)
    monkeypatch.setattr(baselines, "CHUNK", 64)  # 16 chunks, each one token of overlap
    monkeypatch.setattr(baselines, "DENSE_PAIRS", 10)  # the sparse counting path
    chunked = baselines.token_counts([ids], vocab=50)
    assert all(torch.equal(whole[k], chunked[k]) for k in whole)
    monkeypatch.setattr(baselines, "MAX_BIGRAMS", 5)
    assert set(baselines.token_counts([ids], vocab=50)) == {"unigram"}  # too many pairs: the unigram alone


def test_dtw_distance_of_two_short_sequences_equals_the_hand_computation():
    query = np.array([[0.0], [1.0], [2.0]])
    references = np.array([[[0.0], [2.0]], [[5.0], [0.0]]])  # the second is one frame long, then padding
    # |0-0| -> |1-0| or |1-2| -> |2-2|: cost 0 + 1 + 0 = 1 over 3 + 2 frames; the lone 5 pairs with all three: 5+4+3
    assert baselines.dtw_distances(query, references, np.array([2, 1])) == pytest.approx([1 / 5, 12 / 4])
    two_d = baselines.dtw_distances(np.array([[0.0, 0.0], [3.0, 4.0]]), np.zeros((1, 1, 2)), np.array([1]))
    assert two_d == pytest.approx([5 / 3])  # Euclidean frame distances: 0 + 5


def test_majority_nearest_and_dtw_accuracies_equal_the_hand_computed_ones():
    train = [np.array([[0.0], [0.0]]), np.array([[0.0], [2.0]]), np.array([[10.0], [10.0]])]
    reference = baselines.label_reference(train, [np.array([0]), np.array([1]), np.array([1])], 2, per_sequence=True)
    assert reference["class_counts"].tolist() == [1, 2] and reference["lengths"].tolist() == [2, 2, 2]
    queries = [np.array([[0.0], [0.2]]), np.array([[0.5], [2.5]]), np.array([[9.0], [9.0], [9.0]])]
    rows = {r["name"]: r for r in baselines.label_baselines(reference, queries, np.array([0, 1, 0]), ["a", "b"])}
    # majority b: right once; both 1-NN pick the first, second and third training sequence: right twice
    assert rows[MAJORITY]["accuracy"] == pytest.approx(1 / 3)
    assert rows[NEAREST]["accuracy"] == rows[DTW]["accuracy"] == pytest.approx(2 / 3)
    assert {r["points"] for r in rows.values()} == {3}
    per_frame = baselines.label_reference([], [np.array([0, 0, 1]), np.array([0, -100])], 2, per_sequence=False)
    assert set(per_frame) == {"class_counts"} and per_frame["class_counts"].tolist() == [3, 1]  # unlabelled skipped
    tagged = baselines.label_baselines(per_frame, [], np.array([0, 1, 1, 0]), ["a", "b"])
    assert [(r["name"], r["accuracy"]) for r in tagged] == [(MAJORITY, 0.5)]


def test_training_frames_beyond_the_budget_leave_the_dtw_out(monkeypatch):
    monkeypatch.setattr(baselines, "REFERENCE_BUDGET", 3)
    reference = baselines.label_reference([np.zeros((2, 1)), np.ones((2, 1))], [np.array([0]), np.array([1])], 2, True)
    assert "frames" not in reference and "summaries" in reference
    names = [r["name"] for r in baselines.label_baselines(reference, [np.zeros((3, 1))], np.array([0]), ["a", "b"])]
    assert names == [MAJORITY, NEAREST]


def test_evaluate_says_why_the_dtw_row_is_missing(tmp_path, run, monkeypatch):
    monkeypatch.setattr(baselines, "REFERENCE_BUDGET", 10)
    data = separable_set(tmp_path / "set", count=8)
    out = tmp_path / "m.pt"
    code, _, err = run("train", data, "--labels", data / "labels.csv", "--window", "0", "-o", out, "--epochs", "1",
                       "--val-fraction", "0", *SMALL)
    assert code == 0, err
    code, stdout, err = run("evaluate", out, data, "--labels", data / "labels.csv", "--json")
    assert code == 0 and [r["name"] for r in json.loads(stdout)["baselines"]] == [MAJORITY, NEAREST]
    assert "no DTW baseline: the training frames were more than the 10 values a model file keeps" in err


def table_rows(stderr: str, title: str) -> list[str]:
    """The rows of a plain-text table on stderr, after its header line."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# {title}"))
    rows = []
    for line in lines[start + 2:]:
        if not line.strip() or line.startswith("#"):
            break
        rows.append(line)
    return rows


def test_evaluate_shows_the_text_baselines_on_the_model_s_tokens(tiny_model, tiny_text, run):
    code, _, err = run("evaluate", tiny_model, tiny_text)
    assert code == 0, err
    rows = table_rows(err, "baselines")
    assert [r.split("  ")[0] for r in rows] == ["this model", UNIGRAM, BIGRAM]
    assert len({r.split()[-1] for r in rows}) == 1  # every row scored the same number of tokens
    code, stdout, err = run("evaluate", tiny_model, tiny_text, "--json")
    figures = json.loads(stdout)
    assert [r["name"] for r in figures["baselines"]] == [UNIGRAM, BIGRAM]
    assert {r["tokens"] for r in figures["baselines"]} == {figures["tokens"]}
    stored = load_model_file(tiny_model).data["baseline"]
    assert int(stored["unigram"].sum()) == load_model_file(tiny_model).summary["train_tokens"]
    assert figures["baselines"][1]["bits_per_token"] < figures["baselines"][0]["bits_per_token"]  # text has bigrams


def test_a_corpus_is_scored_by_the_baselines_document_by_document(tmp_path, tiny_text, run):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    text = tiny_text.read_text()
    (corpus / "a.txt").write_text(text[:3000])
    (corpus / "b.txt").write_text(text[3000:])
    out = tmp_path / "c.pt"
    code, _, err = run("train", corpus, "-o", out, "--max-steps", "3", *TINY)
    assert code == 0, err
    code, stdout, err = run("evaluate", out, corpus, "--json")
    figures = json.loads(stdout)
    assert code == 0 and {r["tokens"] for r in figures["baselines"]} == {figures["tokens"]} == {len(text) - 2}


def without_baseline(model: Path, tmp_path: Path) -> Path:
    """The model file as bptt wrote it before baselines were stored."""
    payload = read_payload(model)
    del payload["data"]["baseline"]
    older = tmp_path / "older.pt"
    atomic_save(payload, older)
    return older


def test_older_model_files_without_stored_baselines_still_evaluate(tiny_model, tiny_text, tmp_path, run):
    older = without_baseline(tiny_model, tmp_path)
    code, stdout, err = run("evaluate", older, tiny_text, "--json")
    assert code == 0, err
    assert json.loads(stdout)["baselines"] == []
    code, _, err = run("evaluate", older, tiny_text)
    assert code == 0 and "# baselines" not in err and "bits per char" in err


def test_damaged_baseline_counts_are_refused_in_one_line(tiny_model, tmp_path, run, tiny_text):
    payload = read_payload(tiny_model)
    payload["data"]["baseline"]["unigram"] = payload["data"]["baseline"]["unigram"][:-1]
    bad = tmp_path / "bad.pt"
    atomic_save(payload, bad)
    code, _, err = run("evaluate", bad, tiny_text)
    assert code == 2 and "damaged bptt model file (the baseline unigram does not hold" in err
    assert len(err.strip().splitlines()) == 1


def test_evaluate_shows_the_label_baselines_on_the_model_s_sequences(tmp_path, run):
    data = separable_set(tmp_path / "set")
    out = tmp_path / "m.pt"
    code, _, err = run("train", data, "--labels", data / "labels.csv", "--window", "0", "-o", out, "--epochs", "3",
                       "--batch-size", "8", "--val-fraction", "0.25", *SMALL)
    assert code == 0, err
    stored = load_model_file(out).data["baseline"]
    assert stored["class_counts"].sum() == 30 and tuple(stored["summaries"].shape) == (30, 4)  # 10 held out
    other = separable_set(tmp_path / "other", count=9, seed=1)  # 5 down, 4 up
    code, stdout, err = run("evaluate", out, other, "--labels", other / "labels.csv", "--json")
    assert code == 0, err
    figures = json.loads(stdout)
    rows = {r["name"]: r for r in figures["baselines"]}
    assert list(rows) == [MAJORITY, NEAREST, DTW] and {r["points"] for r in rows.values()} == {figures["sequences"]}
    majority = int(np.argmax(stored["class_counts"].numpy()))  # whichever class the training share holds more of
    assert rows[MAJORITY]["accuracy"] == pytest.approx((5, 4)[majority] / 9)
    assert rows[DTW]["accuracy"] >= 0.8  # a ramp up against a ramp down: the frames tell them apart
    code, _, err = run("evaluate", out, other, "--labels", other / "labels.csv")
    rows = table_rows(err, "baselines")
    assert [r.split("  ")[0] for r in rows] == ["this model", MAJORITY, NEAREST, DTW]
    assert {r.split()[-1] for r in rows} == {"9"}
    older = without_baseline(out, tmp_path)
    code, stdout, err = run("evaluate", older, other, "--labels", other / "labels.csv", "--json")
    assert code == 0 and json.loads(stdout)["baselines"] == []


def test_train_s_test_summary_carries_the_baselines(tmp_path, tiny_text, run):
    out = tmp_path / "t.pt"
    code, stdout, err = run("train", tiny_text, "-o", out, "--max-steps", "3", "--test", tiny_text, "--json", *TINY)
    assert code == 0, err
    summary = json.loads(stdout)
    assert [b["name"] for b in summary["test_baselines"]] == [UNIGRAM, BIGRAM]
    code, _, err = run("train", tiny_text, "-o", tmp_path / "u.pt", "--max-steps", "3", "--test", tiny_text, *TINY)
    assert code == 0 and f"test bits/char, {UNIGRAM}" in err


def test_per_frame_labels_get_the_majority_class_per_frame(tmp_path, run):
    folder = write_tagged_npzs(tmp_path / "frames", threshold=0.5)  # mostly off
    out = tmp_path / "m.pt"
    code, _, err = run("train", folder, "-o", out, "--epochs", "1", "--batch-size", "2", "--window", "10",
                       "--val-fraction", "0", *SMALL)
    assert code == 0, err
    other = tmp_path / "other"
    other.mkdir()
    labels = np.array(["on"] * 10 + ["off"] * 30)  # 30 of 40 frames are the training majority, off
    np.savez(other / "g.npz", features=np.random.default_rng(1).standard_normal((40, 2)).astype(np.float32), labels=labels)
    code, stdout, err = run("evaluate", out, other, "--json")
    assert code == 0, err
    figures = json.loads(stdout)
    assert figures["baselines"] == [{"name": MAJORITY, "accuracy": 0.75, "macro_f1": pytest.approx(3 / 7),
                                     "points": figures["frames"]}] and figures["frames"] == 40
