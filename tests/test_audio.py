"""Feature sequences: .npy/.npz/.ts/.wav reading, labels, sequence classification, and bad files in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bptt_cli.audio import FeatureSettings, load_audio, read_ts, read_wav
from bptt_cli.errors import BpttError
from bptt_cli.modelfile import load_model_file
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.series import Normaliser
from bptt_cli.kinds import KINDS
from bptt_cli.kinds.audio import AudioOptions
from bptt_cli.kinds.sequences import scoring_streams
from bptt_cli.scoring import stream_pass

ROOT = Path(__file__).resolve().parents[1]
VOWELS = ROOT / "sample_data" / "vowels"
DIGITS = ROOT / "sample_data" / "digits"
SMALL = ["--hidden", "16", "--layers", "1", "--log-every", "5"]


def write_npys(folder: Path, count: int = 6, frames: int = 30, width: int = 3, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(frames)
    for i in range(count):
        wave = np.sin(2 * np.pi * (t[:, None] + i) / 10 + np.arange(width)) + 0.05 * rng.standard_normal((frames, width))
        np.save(folder / f"clip{i}.npy", wave.astype(np.float32))
    return folder


def write_tagged_npzs(folder: Path, count: int = 4, frames: int = 40, threshold: float = 0.0) -> Path:
    """.npz files of two features, each frame labelled "on" where the first exceeds ``threshold``, else "off"."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        x = rng.standard_normal((frames, 2)).astype(np.float32)
        np.savez(folder / f"f{i}.npz", features=x, labels=np.where(x[:, 0] > threshold, "on", "off"))
    return folder


def separable_set(folder: Path, count: int = 40, seed: int = 0) -> Path:
    """Rising versus falling sequences of 8-16 frames, labelled in labels.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["file,label"]
    for i in range(count):
        label = "up" if i % 2 else "down"
        length = int(rng.integers(8, 17))
        ramp = np.linspace(0, 1, length) * (1 if label == "up" else -1)
        frames = np.stack([ramp, rng.standard_normal(length) * 0.3], axis=1)
        np.save(folder / f"s{i:02d}.npy", frames.astype(np.float32))
        rows.append(f"s{i:02d}.npy,{label}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_a_directory_of_npy_files_trains_a_next_frame_model_that_writes_npy(tmp_path, run):
    data = write_npys(tmp_path / "clips")
    out = tmp_path / "m.pt"
    code, _, err = run("train", data, "-o", out, "--epochs", "2", "--batch-size", "4", "--window", "5", *SMALL)
    assert code == 0, err
    frames = tmp_path / "next.npy"
    code, _, err = run("generate", out, "--context", data / "clip0.npy", "--horizon", "9", "-o", frames)
    assert code == 0, err
    assert np.load(frames).shape == (9, 3)
    code, _, err = run("generate", out, "--horizon", "4", "-o", tmp_path / "tail.npy")  # from the last training file
    assert code == 0 and np.load(tmp_path / "tail.npy").shape == (4, 3)
    code, stdout, err = run("evaluate", out, tmp_path / "clips" / "*.npy", "--horizon", "3", "--json")
    assert code == 0 and set(json.loads(stdout)["horizons"]) == {"1", "3"}


def test_no_state_leaks_across_files(tmp_path):
    """Two files packed into one stream: changing the first never changes the second's outputs."""
    data = write_npys(tmp_path / "clips", count=2, frames=12)
    seq = KINDS["audio"].read(data, AudioOptions())
    norm = Normaliser.fit(seq.values)
    model = RecurrentModel(ModelConfig(input_size=3, output_size=3, tokens=False, hidden=8, layers=1))

    def second_outputs():
        streams = scoring_streams(seq, norm, [0, 0], batch=1)
        stream, start, length = streams.where[1]
        return stream_pass(model, streams, torch.device("cpu"))[0][start : start + length, stream]

    before = second_outputs()
    seq.values[0] = seq.values[0] * 5 + 2
    assert torch.equal(before, second_outputs())


def test_sequence_classification_learns_a_separable_task(tmp_path, run):
    data = separable_set(tmp_path / "set")
    out = tmp_path / "m.pt"
    code, _, err = run("train", data, "--labels", data / "labels.csv", "--window", "0", "-o", out, "--epochs", "60",
                       "--batch-size", "8", "--lr", "0.01", "--val-fraction", "0.2", *SMALL)
    assert code == 0, err
    other = separable_set(tmp_path / "other", seed=1)
    code, stdout, err = run("evaluate", out, other, "--labels", other / "labels.csv", "--json")
    assert code == 0, err
    figures = json.loads(stdout)
    assert set(figures) >= {"accuracy", "macro_f1", "confusion", "sequences"}
    assert figures["sequences"] == 40 and figures["accuracy"] >= 0.9


def test_npz_per_frame_labels(tmp_path, run):
    folder = write_tagged_npzs(tmp_path / "frames")
    found = load_audio(folder)
    assert found.task == "frame" and found.classes == ["off", "on"] and len(found.labels[0]) == 40
    out = tmp_path / "m.pt"
    code, _, err = run("train", folder, "-o", out, "--epochs", "2", "--batch-size", "2", "--window", "10", *SMALL)
    assert code == 0, err
    code, stdout, _ = run("evaluate", out, folder, "--json")
    assert code == 0 and json.loads(stdout)["frames"] == 160


def test_ts_files_are_read_with_their_labels():
    cases, labels = read_ts(VOWELS / "JapaneseVowels_TRAIN.ts")
    assert len(cases) == 270 and cases[0].shape == (20, 12) and set(labels) == {str(i) for i in range(1, 10)}
    found = load_audio(VOWELS / "JapaneseVowels_TEST.ts")
    assert found.task == "sequence" and len(found.frames) == 370 and found.classes[:3] == ["1", "2", "3"]
    listed = load_audio(VOWELS, VOWELS / "labels.csv")  # the per-utterance .npy files made from the TRAIN file
    assert len(listed.frames) == 270 and np.allclose(listed.frames[5], cases[5], atol=1e-6)


def test_the_sample_vowels_commands_run(tmp_path, run):
    out = tmp_path / "speaker.pt"
    code, _, err = run("train", VOWELS, "--labels", VOWELS / "labels.csv", "--window", "0", "-o", out,
                       "--max-steps", "2", *SMALL)
    assert code == 0, err
    code, stdout, err = run("evaluate", out, VOWELS / "JapaneseVowels_TEST.ts", "--json")
    assert code == 0 and json.loads(stdout)["sequences"] == 370


def test_sequences_with_one_label_each_train_whole_unless_a_window_is_given(tmp_path, run):
    """The vowels' longest utterance has 26 frames: the default --window 50 once refused the plain command."""
    code, _, err = run("train", VOWELS, "--labels", VOWELS / "labels.csv", "-o", tmp_path / "m.pt", "--epochs", "1", *SMALL)
    assert code == 0, err
    assert load_model_file(tmp_path / "m.pt").config["window"] == 0
    code, _, err = run("train", VOWELS / "JapaneseVowels_TRAIN.ts", "-o", tmp_path / "w.pt", "--window", "13",
                       "--epochs", "1", *SMALL)
    assert code == 0, err
    assert load_model_file(tmp_path / "w.pt").config["window"] == 13  # a window given is kept
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):  # unlabelled: next-frame forecasting keeps the streamed default
        np.save(frames / f"f{i}.npy", np.random.default_rng(i).standard_normal((80, 2)).astype(np.float32))
    code, _, err = run("train", frames, "-o", tmp_path / "f.pt", "--epochs", "1", *SMALL)
    assert code == 0, err
    assert load_model_file(tmp_path / "f.pt").config["window"] == 50


def test_wav_files_become_logmel_or_mfcc_frames(tmp_path, run):
    pytest.importorskip("librosa")
    wav = DIGITS / "3_three_en-us_s130.wav"
    logmel = read_wav(wav, FeatureSettings(kind="logmel", n_mels=20))
    settings = FeatureSettings(kind="mfcc", n_mfcc=13, hop_ms=20)
    mfcc = read_wav(wav, settings)
    assert logmel.shape[1] == 20 and mfcc.shape[1] == 13 and settings.sample_rate == 22050
    assert abs(len(logmel) - 2 * len(mfcc)) <= 2 and np.isfinite(logmel).all()
    out = tmp_path / "digits.pt"
    code, _, err = run("train", DIGITS, "--labels", DIGITS / "labels.csv", "--features", "mfcc", "--window", "0",
                       "-o", out, "--max-steps", "1", *SMALL)
    assert code == 0, err
    from bptt_cli.modelfile import load_model_file

    assert load_model_file(out).data["settings"]["kind"] == "mfcc"


def test_a_missing_audio_extra_names_the_install_command(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_librosa(name, *args, **kwargs):
        if name == "librosa":
            raise ImportError("no librosa")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_librosa)
    with pytest.raises(BpttError, match=r"pip install 'bptt\[audio\]'"):
        read_wav(DIGITS / "0_zero_en-us_s130.wav", FeatureSettings())


def _npy(folder: Path, name: str, array) -> None:
    np.save(folder / name, np.asarray(array))


def bad_nan(folder):
    _npy(folder, "a.npy", [[1.0, np.nan], [2.0, 3.0], [1.0, 1.0]])


def bad_shape(folder):
    _npy(folder, "a.npy", np.zeros((3, 4, 2)))


def bad_npz(folder):
    np.savez(folder / "a.npz", frames=np.zeros((5, 2)))


def bad_widths(folder):
    _npy(folder, "a.npy", np.zeros((5, 2)) + np.arange(5)[:, None])
    _npy(folder, "b.npy", np.zeros((5, 3)))


def bad_one_frame(folder):
    _npy(folder, "a.npy", np.ones((1, 2)))


def bad_empty_dir(folder):
    """No file at all (a folder of text files is a text corpus since the corpus kind came)."""


def bad_labels_columns(folder):
    _npy(folder, "a.npy", np.random.default_rng(0).normal(size=(5, 2)))
    (folder / "labels.csv").write_text("name,class\na.npy,x\n")


def bad_labels_unlisted(folder):
    _npy(folder, "a.npy", np.random.default_rng(0).normal(size=(5, 2)))
    (folder / "labels.csv").write_text("file,label\nother.npy,x\n")


def bad_ts(folder):
    (folder / "x.ts").write_text("@problemName x\n@classLabel true a b\n@data\n1,2,3:4,5:a\n")


def bad_window(folder):
    _npy(folder, "a.npy", np.random.default_rng(0).normal(size=(6, 2)))


BAD_FILES = {
    "NaN in features": (bad_nan, [], "frame 0 holds NaN"),
    "3-D array": (bad_shape, [], "frames x features"),
    "npz without features": (bad_npz, [], "no 'features' array"),
    "files of different widths": (bad_widths, [], "every file needs the same features"),
    "a one-frame file": (bad_one_frame, [], "at least 2"),
    "no feature files": (bad_empty_dir, [], "holds no .npy"),
    "labels without the columns": (bad_labels_columns, ["--labels", "labels.csv"], "needs columns 'file' and 'label'"),
    "labels naming no file": (bad_labels_unlisted, ["--labels", "labels.csv"], "none of the 1 file(s)"),
    "ragged .ts case": (bad_ts, ["x.ts"], "different lengths"),
    "window longer than the data": (bad_window, ["--window", "50"], "longer than the data"),
    "csv options on feature files": (bad_window, ["--target", "x"], "--target is for CSV data"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_every_bad_feature_file_gives_one_error_line_and_exit_2(tmp_path, run, case):
    make, extra, message = BAD_FILES[case]
    folder = tmp_path / "data"
    folder.mkdir()
    make(folder)
    extra = [str(folder / e) if e.endswith((".csv", ".ts")) else e for e in extra]
    data = extra.pop(0) if extra and extra[0].endswith(".ts") else folder
    out = tmp_path / "m.pt"
    code, stdout, stderr = run("train", data, "-o", out, "--hidden", "8", "--layers", "1",
                               *(["--window", "2"] if "--window" not in extra else []), *extra)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr
    assert "Traceback" not in stderr and stdout == "" and not list(tmp_path.glob("m.pt*"))
