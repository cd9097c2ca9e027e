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


# -- crafted files: every field checked against the others, before anything is allocated -------------------------


def text_payload() -> dict:
    """A good model file's payload, as torch.load gives it back."""
    file = small_file()
    return {"format": "bptt-model", "format_version": FORMAT_VERSION, "bptt_version": "0",
            "model_config": file.model.config.to_dict(), "tokenizer": file.tokenizer.to_dict(), "config": {},
            "summary": {"best_val_loss": 1.5}, "data": {},
            "weights": {k: v.detach().clone() for k, v in file.model.state_dict().items()}}


def series_payload(task: str = "forecast") -> dict:
    outputs = 2 if task == "forecast" else 3
    model = RecurrentModel(ModelConfig("lstm", 2, outputs, tokens=False, hidden=5, layers=1))
    return {"format": "bptt-model", "format_version": FORMAT_VERSION, "model_config": model.config.to_dict(),
            "tokenizer": None, "config": {}, "summary": {},
            "data": {"kind": "series", "task": task, "columns": ["a", "b"], "features": [0, 1],
                     "targets": [0, 1] if task == "forecast" else [], "classes": None if task == "forecast" else
                     ["x", "y", "z"], "norm": {"mean": [0.0, 1.0], "std": [1.0, 2.0]}},
            "weights": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def edit(payload: dict, path: str, value=..., delete: bool = False) -> dict:
    """``payload`` with the field at the dotted ``path`` set to ``value`` (or deleted); weight names keep their dots."""
    *parents, last = path.split(".", 1) if path.startswith("weights.") else path.split(".")
    where = payload
    for key in parents:
        where = where[key]
    if delete:
        del where[last]
    else:
        where[last] = value(where[last]) if callable(value) else value
    return payload


def nan_at_first(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.clone()
    tensor.view(-1)[0] = float("nan")
    return tensor


CRAFTED = [
    ("no model_config", text_payload, "model_config", None, True, "model_config is not a mapping"),
    ("no weights", text_payload, "weights", None, True, "weights are not a mapping"),
    ("model_config lacks hidden", text_payload, "model_config.hidden", None, True, "model_config lacks hidden"),
    ("hidden as text", text_payload, "model_config.hidden", "6", False, "hidden is '6'"),
    ("hidden true", text_payload, "model_config.hidden", True, False, "hidden is True"),
    ("hidden negative", text_payload, "model_config.hidden", -4, False, "hidden is -4"),
    ("unknown cell", text_payload, "model_config.cell", "transformer", False, "cell 'transformer'"),
    ("dropout 1.5", text_payload, "model_config.dropout", 1.5, False, "dropout 1.5"),
    ("tokens as text", text_payload, "model_config.tokens", "yes", False, "tokens is 'yes'"),
    ("tied but unequal", text_payload, "model_config.tie_weights", True, False, "--tie-weights"),
    ("declared hidden 6000", text_payload, "model_config.hidden", 6000, False, "the declared model needs"),
    ("a weight missing", text_payload, "weights.decoder.bias", None, True, "weights lack decoder.bias"),
    ("an extra weight", text_payload, "weights.extra", torch.zeros(2), False, "weights hold extra"),
    ("wrong state width", text_payload, "weights.rnn.weight_hh_l0", torch.zeros(18, 7), False, "has shape (18, 7)"),
    ("NaN weight", text_payload, "weights.decoder.bias", nan_at_first, False, "holds NaN or infinite"),
    ("infinite weight", text_payload, "weights.embedding.weight", lambda t: t / 0, False, "holds NaN or infinite"),
    ("integer weight", text_payload, "weights.decoder.bias", lambda t: t.long(), False, "not floating point"),
    ("weights as a list", text_payload, "weights", [1, 2], False, "weights are not a mapping"),
    ("no tokenizer", text_payload, "tokenizer", None, False, "tokenizer is missing"),
    ("tokenizer longer than the embedding", text_payload, "tokenizer.vocab", lambda v: v + ["#"], False,
     "the tokenizer has 9 tokens but the model 8 inputs"),
    ("tokenizer of unknown kind", text_payload, "tokenizer.kind", "bpe", False, "unknown kind"),
    ("a token twice", text_payload, "tokenizer.vocab", lambda v: v[:-1] + v[:1], False, "lists a token twice"),
    ("char vocabulary of words", text_payload, "tokenizer.vocab", lambda v: ["ab"] + v[1:], False, "longer strings"),
    ("vocabulary of numbers", text_payload, "tokenizer.vocab", lambda v: [1] + v[1:], False, "not a list of strings"),
    ("summary loss as text", text_payload, "summary.best_val_loss", "low", False, "best_val_loss is not a number"),
    ("config not a mapping", text_payload, "config", [1], False, "config is not a mapping"),
    ("a tokenizer on feature inputs", series_payload, "tokenizer", {"kind": "char", "vocab": ["a"]}, False,
     "holds a tokenizer"),
    ("normaliser std 0", series_payload, "data.norm.std", [1.0, 0.0], False, "std holds zero"),
    ("normaliser of the wrong length", series_payload, "data.norm.mean", [0.0], False, "does not hold 2 numbers"),
    ("normaliser NaN", series_payload, "data.norm.mean", [0.0, float("nan")], False, "NaN or infinite"),
    ("no normaliser", series_payload, "data.norm", None, False, "norm is not a mapping"),
    ("feature out of range", series_payload, "data.features", [0, 5], False, "not column numbers below 2"),
    ("targets short of the outputs", series_payload, "data.targets", [0], False, "1 targets but 2 model outputs"),
    ("unknown data kind", series_payload, "data.kind", "video", False, "data kind 'video'"),
    ("classes short of the outputs", lambda: series_payload("tag"), "data.classes", ["x", "y"], False,
     "one output per class"),
]


@pytest.mark.parametrize("name, make, field_path, value, delete, needle", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_a_crafted_model_file_is_one_damaged_line(tmp_path, name, make, field_path, value, delete, needle):
    path = tmp_path / "crafted.pt"
    torch.save(edit(make(), field_path, value, delete), path)
    with pytest.raises(BpttError) as err:
        load_model_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}: damaged bptt model file (") and needle in message, message
    assert "\n" not in message and message.endswith("retrain it with 'bptt train'")


def test_the_crafted_tables_start_from_files_that_load(tmp_path):
    for make in (text_payload, series_payload, lambda: series_payload("tag")):
        torch.save(make(), tmp_path / "good.pt")
        assert load_model_file(tmp_path / "good.pt").model is not None


def test_flipped_bytes_in_the_weights_are_caught_by_the_checksum(tmp_path):
    import zipfile

    path = tmp_path / "m.pt"
    save_model_file(path, small_file())
    with zipfile.ZipFile(path) as archive:
        part = next(i for i in archive.infolist() if "/data/" in i.filename)
    raw = bytearray(path.read_bytes())
    local = part.header_offset  # the local header: 30 bytes, then the name and its own (padding) extra field
    start = local + 30 + int.from_bytes(raw[local + 26 : local + 28], "little") + int.from_bytes(raw[local + 28 : local + 30], "little")
    raw[start + 2] ^= 0x40  # inside the first tensor: still a finite float, only the checksum can tell
    path.write_bytes(bytes(raw))
    with pytest.raises(BpttError, match="damaged bptt model file .*do not match their checksum"):
        load_model_file(path)


def test_a_small_file_declaring_a_huge_model_is_refused_before_allocating_it(tmp_path):
    """43 KB declaring hidden 6000 once took 820 MB before it was refused; the child's peak memory shows it does not."""
    import subprocess
    import sys

    payload = text_payload()
    payload["model_config"].update(hidden=6000, embed=6000)
    path = tmp_path / "huge.pt"
    torch.save(payload, path)
    assert path.stat().st_size < 50_000
    # VmHWM is the child's own peak (ru_maxrss would carry over the peak of this pytest process across exec)
    probe = ("import re\nfrom bptt_cli.modelfile import load_model_file\nfrom bptt_cli.errors import BpttError\n"
             f"try:\n    load_model_file({str(path)!r})\nexcept BpttError as err:\n    print(err)\n"
             "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "damaged bptt model file" in out[0] and "the declared model needs" in out[0]
    assert int(out[1]) < 1_000_000  # KiB: torch itself (~0.35 GB), not the 2.3 GB the declared weights would take
