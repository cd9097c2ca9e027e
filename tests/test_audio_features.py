"""--cmvn, --deltas and --trim-db: per-sequence normalisation, frame slopes and trimmed silence, stored in the model file and used again."""

import json

import numpy as np
import pytest
from test_audio import DIGITS, SMALL, separable_set

from bptt_cli.audio import FeatureSettings, per_sequence, read_wav
from bptt_cli.modelfile import load_model_file


def test_cmvn_gives_each_sequence_zero_mean_and_unit_variance_and_only_centres_a_constant_feature():
    frames = np.stack([np.arange(6.0) * 3 + 10, np.full(6, 7.0)], axis=1)
    out = per_sequence(frames, FeatureSettings(cmvn=True))
    assert out[:, 0] == pytest.approx((np.arange(6.0) - 2.5) / np.arange(6.0).std())
    assert out[:, 1] == pytest.approx(np.zeros(6))
    assert per_sequence(frames, FeatureSettings()) is frames  # off by default: the frames as read


def test_deltas_append_each_feature_s_slope():
    frames = np.array([[0.0, 1.0], [2.0, 1.0], [6.0, 1.0]])
    out = per_sequence(frames, FeatureSettings(deltas=True))
    assert out.shape == (3, 4)
    assert out[:, 2].tolist() == [2.0, 3.0, 4.0] and out[:, 3].tolist() == [0.0, 0.0, 0.0]  # central differences


def test_a_cmvn_model_scores_a_louder_shifted_copy_of_the_data_alike(tmp_path, run):
    data = separable_set(tmp_path / "set")
    out = tmp_path / "m.pt"
    code, _, err = run("train", data, "--labels", data / "labels.csv", "--window", "0", "-o", out, "--epochs", "5",
                       "--batch-size", "8", "--val-fraction", "0", "--cmvn", "--deltas", *SMALL)
    assert code == 0, err
    file = load_model_file(out)
    assert file.data["settings"]["cmvn"] and file.data["settings"]["deltas"]
    assert file.model.config.input_size == 4  # 2 features and their slopes
    other = separable_set(tmp_path / "other", count=10, seed=1)
    louder = tmp_path / "louder"
    louder.mkdir()
    for path in other.glob("*.npy"):  # every feature scaled and shifted: CMVN takes it out again
        np.save(louder / path.name, np.load(path) * np.array([3.0, 0.5], np.float32) + np.array([5.0, -2.0], np.float32))
    (louder / "labels.csv").write_text((other / "labels.csv").read_text())
    scores = []
    for folder in (other, louder):
        code, stdout, err = run("evaluate", out, folder, "--labels", folder / "labels.csv", "--json")
        assert code == 0, err
        scores.append(json.loads(stdout))
    assert scores[0]["confusion"] == scores[1]["confusion"] and scores[0]["sequences"] == 10


def test_trim_db_cuts_the_silence_after_a_spoken_word(run, tmp_path):
    wav = DIGITS / "7_seven_en-us_s130.wav"
    whole = read_wav(wav, FeatureSettings())
    trimmed = read_wav(wav, FeatureSettings(trim_db=30))
    assert len(trimmed) < 0.8 * len(whole) and trimmed.shape[1] == whole.shape[1]  # espeak-ng ends on ~0.3 s of quiet
    code, _, err = run("train", DIGITS, "--labels", DIGITS / "labels.csv", "--trim-db", "-3", "-o", tmp_path / "m.pt")
    assert code == 2 and "--trim-db must be positive" in err and not (tmp_path / "m.pt").exists()
