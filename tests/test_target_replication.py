"""--target-replication: one label per sequence trained on every frame, the answer still read from the last."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from test_audio import separable_set, write_npys
from test_scripts import weights_of_checkpoint

from bptt_cli.kinds.sequences import replicated
from bptt_cli.modelfile import load_model_file
from bptt_cli.losses import IGNORE_LABEL

SMALL = ["--layers", "1", "--hidden", "8", "--threads", "1", "--seed", "3", "--val-fraction", "0"]


def test_the_last_frames_label_is_copied_onto_every_frame():
    labels = np.full(6, IGNORE_LABEL, dtype=np.int64)
    labels[-1] = 2
    assert replicated(labels).tolist() == [2] * 6 and labels[0] == IGNORE_LABEL  # a copy: the stored one is kept


def test_a_replicated_model_trains_otherwise_and_still_answers_from_the_last_frame(tmp_path, run):
    data = separable_set(tmp_path / "set", count=24)
    common = [data, "--labels", data / "labels.csv", "--window", "0", "--batch-size", "6", "--epochs", "30",
              "--lr", "0.01", *SMALL]
    replicated_out, plain_out = tmp_path / "replicated.pt", tmp_path / "plain.pt"
    code, _, err = run("train", *common, "--target-replication", "-o", replicated_out)
    assert code == 0, err
    code, _, err = run("train", *common, "-o", plain_out)
    assert code == 0, err
    ours, theirs = (weights_of_checkpoint(Path(f"{p}.ckpt")) for p in (replicated_out, plain_out))
    assert not all(torch.equal(ours[k], theirs[k]) for k in ours)  # every frame's loss changed the updates
    code, stdout, err = run("evaluate", replicated_out, data, "--labels", data / "labels.csv", "--json")
    assert code == 0, err
    figures = json.loads(stdout)
    assert figures["sequences"] == 24 and figures["accuracy"] >= 0.9  # one answer per sequence, and a right one


def test_target_replication_is_refused_where_there_is_no_label_per_sequence(tmp_path, run, tiny_text):
    clips = write_npys(tmp_path / "clips")
    for args, reason in (([clips, "--window", "0"], "--target-replication copies one label per sequence"),
                         ([tiny_text, "--window", "5"], "is for")):
        out = tmp_path / "m.pt"
        code, _, err = run("train", *args, "--target-replication", "-o", out, *SMALL)
        assert code == 2, err
        assert reason in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_the_sample_digits_config_trains_on_the_bundled_words_and_keeps_its_choices(tmp_path, run, monkeypatch):
    pytest.importorskip("librosa")
    monkeypatch.chdir(ROOT)  # the config names its data relative to the repository
    out = tmp_path / "digits.pt"
    code, stdout, err = run("train", "--config", ROOT / "sample_data" / "digits.yaml", "--epochs", "2",
                            "--threads", "1", "-o", out, "--json")
    assert code == 0, err
    assert json.loads(stdout)["steps"] == 4  # 20 words in batches of 10, two epochs
    stored = load_model_file(out).config
    assert stored["target_replication"] is True and stored["augment"] == "stretch,time-mask,freq-mask,warp=0.3"
    assert stored["trim_db"] == 40 and stored["hidden"] == 128 and stored["lr"] == 0.005
