"""The model file: round trip, plain-data loading, and refusal of anything else."""

import os
import numpy as np

import pytest
import torch

from bptt_cli.errors import BpttError
from bptt_cli.modelfile import FORMAT_VERSION, ModelFile, load_model_file, save_model_file
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.text import Tokenizer


def small_file() -> ModelFile:
    tokenizer = Tokenizer.fit("char", "hello world")
    model = RecurrentModel(ModelConfig("gru", tokenizer.size, tokenizer.size, embed=4, hidden=6, layers=2))
    return ModelFile(model, tokenizer, {"window": 7}, {"best_val_loss": 1.5}, {"mean": [0.5, 1.0]})


def test_round_trip_keeps_weights_tokenizer_config_and_summary(tmp_path):
    original = small_file()
    path = tmp_path / "m.pt"
    save_model_file(path, original)
    loaded = load_model_file(path)
    assert loaded.tokenizer == original.tokenizer
    assert loaded.config == {"window": 7} and loaded.summary == {"best_val_loss": 1.5}
    assert loaded.data == {"mean": [0.5, 1.0]}
    assert loaded.model.config == original.model.config
    for (name, a), (_, b) in zip(original.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_a_file_carrying_code_is_refused_and_the_code_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "bptt-model", "x": Payload(str(marker))}, path)
    with pytest.raises(BpttError, match="not plain data"):
        load_model_file(path)
    assert not marker.exists()


def test_truncated_random_and_foreign_files_are_refused(tmp_path):
    good = tmp_path / "good.pt"
    save_model_file(good, small_file())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    foreign = tmp_path / "foreign.pt"
    torch.save({"some": torch.zeros(3)}, foreign)
    for path in (truncated, noise, foreign):
        with pytest.raises(BpttError, match="not a bptt model file"):
            load_model_file(path)


def test_a_newer_format_version_asks_for_an_upgrade(tmp_path):
    path = tmp_path / "new.pt"
    save_model_file(path, small_file())
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(BpttError, match="upgrade bptt"):
        load_model_file(path)


def test_a_tensor_of_the_wrong_shape_is_refused(tmp_path):
    path = tmp_path / "bad.pt"
    save_model_file(path, small_file())
    payload = torch.load(path, weights_only=True)
    payload["weights"]["decoder.weight"] = torch.zeros(3, 3)
    torch.save(payload, path)
    with pytest.raises(BpttError, match="damaged"):
        load_model_file(path)


def test_a_failed_write_leaves_the_old_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_model_file(path, small_file())
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(BpttError, match="No space left on device"):
        save_model_file(path, small_file())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_files_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        save_model_file(tmp_path / "m.pt", small_file())
    finally:
        os.umask(old)
    assert (tmp_path / "m.pt").stat().st_mode & 0o777 == 0o644
