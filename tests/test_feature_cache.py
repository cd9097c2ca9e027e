"""The WAV feature cache: a recording's frames computed once, found again by content and settings, never wrong."""

import shutil

import numpy as np
import pytest
from test_audio import DIGITS, SMALL

from bptt_cli import audio
from bptt_cli.audio import FeatureSettings, load_audio, read_wav
from bptt_cli.feature_cache import entry

WAV = DIGITS / "3_three_en-us_s130.wav"


@pytest.fixture
def counted(monkeypatch):
    """How many times librosa's frames were computed."""
    calls = []
    compute = audio._wav_frames

    def counting(path, settings):
        calls.append(path.name)
        return compute(path, settings)

    monkeypatch.setattr(audio, "_wav_frames", counting)
    return calls


def test_a_cached_read_gives_the_computed_frames_without_computing_them(tmp_path, counted):
    settings = FeatureSettings(trim_db=40)
    first = read_wav(WAV, settings, tmp_path)
    again = read_wav(WAV, FeatureSettings(trim_db=40), tmp_path)
    assert counted == [WAV.name]  # the second read came from the cache
    assert np.array_equal(first, again) and again.dtype == np.float64
    assert np.array_equal(first, read_wav(WAV, FeatureSettings(trim_db=40)))  # no cache: the same frames
    assert entry(tmp_path, WAV, settings.to_dict()).is_file()


def test_the_file_s_own_rate_comes_back_from_the_cache_too(tmp_path, counted):
    computed, cached = FeatureSettings(), FeatureSettings()
    read_wav(WAV, computed, tmp_path)
    read_wav(WAV, cached, tmp_path)
    assert len(counted) == 1 and cached.sample_rate == computed.sample_rate == 22050  # espeak-ng's rate


def test_other_settings_or_another_recording_are_computed_a_copy_elsewhere_is_found(tmp_path, counted):
    read_wav(WAV, FeatureSettings(), tmp_path)
    read_wav(WAV, FeatureSettings(n_mels=20), tmp_path)  # other frames
    read_wav(WAV, FeatureSettings(cmvn=True, deltas=True), tmp_path)  # applied after: the same frames
    assert len(counted) == 2
    copy = tmp_path / "elsewhere" / WAV.name
    copy.parent.mkdir()
    shutil.copy(WAV, copy)
    read_wav(copy, FeatureSettings(), tmp_path)
    assert len(counted) == 2  # found by its content
    shutil.copy(DIGITS / "2_two_en-us_s130.wav", copy)  # the same name, another recording
    two = read_wav(copy, FeatureSettings(), tmp_path)
    assert len(counted) == 3 and np.array_equal(two, read_wav(DIGITS / "2_two_en-us_s130.wav", FeatureSettings()))


def test_an_unreadable_entry_is_computed_again_and_replaced(tmp_path, counted):
    settings = FeatureSettings()
    frames = read_wav(WAV, settings, tmp_path)
    kept = entry(tmp_path, WAV, FeatureSettings().to_dict())
    kept.write_bytes(b"PK\x03\x04 cut short")  # e.g. a crash before the data reached the disk
    assert np.array_equal(read_wav(WAV, FeatureSettings(), tmp_path), frames) and len(counted) == 2
    assert np.array_equal(read_wav(WAV, FeatureSettings(), tmp_path), frames) and len(counted) == 2  # mended
    assert not [p for p in kept.parent.iterdir() if p.suffix == ".tmp"]  # no temporaries left


def test_a_cache_that_cannot_be_written_only_costs_time(tmp_path, counted):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    frames = read_wav(WAV, FeatureSettings(), blocked)  # features/ cannot be made under a file
    assert np.array_equal(frames, read_wav(WAV, FeatureSettings())) and len(counted) == 2  # no cache either time
    assert blocked.read_text() == "not a folder"


def test_train_fills_the_cache_evaluate_reads_it_and_no_cache_keeps_none(tmp_path, run, counted, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("BPTT_CACHE_DIR", str(cache))
    model = tmp_path / "m.pt"
    common = [DIGITS, "--labels", DIGITS / "labels.csv", "--window", "0", "--epochs", "1", *SMALL]
    code, _, err = run("train", *common, "-o", model)
    assert code == 0, err
    wavs = sorted(p.name for p in DIGITS.glob("*.wav"))
    kept = {p.name.rsplit("-", 1)[0] for p in (cache / "features").glob("*.npz")}  # recordings, whatever the key
    assert sorted(counted) == wavs and len(kept) == len(wavs)
    code, out, err = run("evaluate", model, DIGITS, "--labels", DIGITS / "labels.csv", "--json")
    assert code == 0, err
    assert len(counted) == len(wavs)  # every recording read from the cache
    code, _, err = run("train", *common, "-o", tmp_path / "n.pt", "--cache-dir", tmp_path / "other", "--no-cache")
    assert code == 0, err
    assert len(counted) == 2 * len(wavs) and not (tmp_path / "other").exists()


def test_load_audio_reads_a_folder_through_the_cache(tmp_path, counted):
    settings = FeatureSettings(trim_db=40)
    first = load_audio(DIGITS, DIGITS / "labels.csv", settings, cache=tmp_path)
    again = load_audio(DIGITS, DIGITS / "labels.csv", FeatureSettings(trim_db=40), cache=tmp_path)
    assert len(counted) == len(first.frames) == len(again.frames)
    assert all(np.array_equal(a, b) for a, b in zip(first.frames, again.frames)) and first.labels == again.labels


def test_data_with_no_wav_files_never_looks_at_the_cache_folder(tmp_path, run, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("BPTT_CACHE_DIR", str(blocked))  # a WAV run would refuse it
    vowels = "sample_data/vowels/JapaneseVowels_TRAIN.ts"
    code, _, err = run("train", vowels, "--window", "0", "--epochs", "1", *SMALL, "-o", tmp_path / "m.pt")
    assert code == 0, err
    assert (tmp_path / "m.pt").is_file() and blocked.read_text() == "not a folder"
    code, _, err = run("train", DIGITS, "--labels", DIGITS / "labels.csv", "--window", "0", *SMALL, "-o", tmp_path / "n.pt")
    assert code == 2 and "BPTT_CACHE_DIR" in err and "is a file" in err
