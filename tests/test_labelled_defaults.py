"""Defaults for sequences with one label each: trained whole for about 1,000 updates; WAV words get the speech recipe."""

from __future__ import annotations

import pytest
import yaml
from test_audio import DIGITS, SMALL, VOWELS, write_tagged_npzs

from bptt_cli.audio import FeatureSettings
from bptt_cli.augment import parse_augment
from bptt_cli.choices import LABELLED_WAV_DEFAULTS
from bptt_cli.errors import BpttError
from bptt_cli.modelfile import load_model_file

RECIPE = {"cmvn": True, "deltas": True, "trim-db": 40.0, "target-replication": True,
          "augment": "stretch,time-mask,freq-mask,warp=0.3", "average": "ema:0.99"}


def printed_config(run, *args) -> dict:
    code, out, err = run("train", *args, "--print-config")
    assert code == 0, err
    return yaml.safe_load(out)


def test_wav_files_with_labels_take_the_speech_recipe_and_a_flag_given_wins(run):
    assert set(RECIPE) == {name.replace("_", "-") for name in LABELLED_WAV_DEFAULTS}
    labelled = printed_config(run, DIGITS, "--labels", DIGITS / "labels.csv")
    assert {name: labelled[name] for name in RECIPE} == RECIPE
    unlabelled = printed_config(run, DIGITS)  # next-frame models of the recordings keep the plain defaults
    assert unlabelled["cmvn"] is False and unlabelled["augment"] is None and unlabelled["trim-db"] is None
    assert unlabelled["average"] is None and unlabelled["target-replication"] is False
    given = printed_config(run, DIGITS, "--labels", DIGITS / "labels.csv", "--no-cmvn", "--no-deltas", "--trim-db", "0",
                           "--no-target-replication", "--average", "none", "--deltas")
    assert given["cmvn"] is False and given["deltas"] is True and given["trim-db"] == 0
    assert given["target-replication"] is False and given["average"] == "none"
    windowed = printed_config(run, DIGITS, "--labels", DIGITS / "labels.csv", "--window", "20")
    assert windowed["augment"] is None and windowed["cmvn"] is True  # augmentation changes whole sequences only
    asgd = printed_config(run, DIGITS, "--labels", DIGITS / "labels.csv", "--optimizer", "nt-asgd")
    assert asgd["average"] is None  # nt-asgd averages its own weights


def test_a_plain_run_on_labelled_wav_files_trains_with_the_recipe(tmp_path, run):
    out = tmp_path / "m.pt"
    code, _, err = run("train", DIGITS, "--labels", DIGITS / "labels.csv", "-o", out, "--max-steps", "3", *SMALL)
    assert code == 0, err
    file = load_model_file(out)
    settings = file.data["settings"]
    assert settings["cmvn"] and settings["deltas"] and settings["trim_db"] == 40.0
    assert len(file.data["columns"]) == 80  # 40 mel bands and their deltas
    assert file.config["window"] == 0 and file.config["target_replication"] is True
    code, _, err = run("train", DIGITS, "--labels", DIGITS / "labels.csv", "-o", tmp_path / "quiet.pt",
                       "--max-steps", "1", "--trim-db", "0", "--no-deltas", *SMALL)
    assert code == 0, err
    plain = load_model_file(tmp_path / "quiet.pt").data
    assert plain["settings"]["trim_db"] is None and len(plain["columns"]) == 40  # 0 keeps the silence


@pytest.mark.parametrize("given, epochs", [([], 125), (["--epochs", "3"], 3), (["--batch-size", "2"], 10)])
def test_whole_labelled_sequences_train_for_about_a_thousand_updates(tmp_path, run, given, epochs):
    """243 training utterances in batches of 32 are 8 updates an epoch: 125 epochs; 122 an epoch keep the ten."""
    out = tmp_path / "m.pt"
    code, _, err = run("train", VOWELS / "JapaneseVowels_TRAIN.ts", "-o", out, "--max-steps", "2", *SMALL, *given)
    assert code == 0, err
    assert load_model_file(out).config["epochs"] == epochs


def test_a_windowed_run_keeps_its_epochs(tmp_path, run):
    out = tmp_path / "m.pt"
    code, _, err = run("train", VOWELS / "JapaneseVowels_TRAIN.ts", "-o", out, "--window", "13", "--max-steps", "2", *SMALL)
    assert code == 0, err
    assert load_model_file(out).config["epochs"] == 10


def test_trim_db_0_is_no_trimming_in_the_settings_themselves():
    assert FeatureSettings(trim_db=0).trim_db is None and FeatureSettings(trim_db=0) == FeatureSettings()
    with pytest.raises(BpttError, match="or 0 to keep the silence, got -3"):
        FeatureSettings(trim_db=-3).validate()


def test_augment_none_is_no_augmentation():
    assert not parse_augment("none") and parse_augment("none") == parse_augment(None)


def test_frame_labels_keep_the_streamed_defaults(tmp_path, run):
    folder = write_tagged_npzs(tmp_path / "frames", count=3, frames=60)
    out = tmp_path / "m.pt"
    code, _, err = run("train", folder, "-o", out, "--max-steps", "2", "--batch-size", "2", *SMALL)
    assert code == 0, err
    assert load_model_file(out).config["window"] == 50 and load_model_file(out).config["epochs"] == 10
