"""Crafted checkpoints: every field checked before a run resumes from one, with one "damaged" line."""

from __future__ import annotations

import pytest
import torch

from bptt_cli.errors import BpttError
from bptt_cli.runfiles import RunFiles
from conftest import TINY


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The payload of a real checkpoint, from two updates of a tiny LSTM run."""
    from typer.testing import CliRunner

    from bptt_cli.cli import app

    folder = tmp_path_factory.mktemp("ckpt")
    text = folder / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 60)
    result = CliRunner().invoke(app, ["train", str(text), "-o", str(folder / "m.pt"), *TINY, "--max-steps", "2"])
    assert result.exit_code == 0, result.stderr
    return torch.load(folder / "m.pt.ckpt", weights_only=True)


def nan_first(tensor):
    tensor = tensor.clone()
    tensor.view(-1)[0] = float("nan")
    return tensor


def set_position(name, value):
    return lambda training: training["position"].update({name: value})


CRAFTED = [
    ("negative step", set_position("step", -1), "position step is -1"),
    ("window_index 10^9", set_position("window_index", 10**9), "window_index 1000000000 is beyond"),
    ("epoch 0", set_position("epoch", 0), "position epoch is 0"),
    ("step as text", set_position("step", "2"), "position step is '2'"),
    ("seconds NaN", set_position("seconds", float("nan")), "position seconds is nan"),
    ("no position", lambda t: t.pop("position"), "it lacks position"),
    ("no carried state", lambda t: t.pop("carried_state"), "it lacks carried_state"),
    ("NaN weights", lambda t: t["weights"].update({"decoder.bias": nan_first(t["weights"]["decoder.bias"])}),
     "weight decoder.bias holds NaN"),
    ("weights as a list", lambda t: t.update(weights=[1]), "weights are not a mapping"),
    ("NaN optimizer state", lambda t: t["optimizer"]["state"][0].update(exp_avg=nan_first(t["optimizer"]["state"][0]["exp_avg"])),
     "optimizer state 0 exp_avg holds NaN"),
    ("optimizer without groups", lambda t: t["optimizer"].pop("param_groups"), "optimizer state is damaged"),
    ("rng of floats", lambda t: t.update(torch_rng=torch.zeros(3)), "random generator state is damaged"),
    ("wrong state width", lambda t: t.update(carried_state=[s[:, :, :3] for s in t["carried_state"]]),
     "the carried state is 3 wide in hidden"),
    ("wrong layer count", lambda t: t.update(carried_state=[torch.cat([s, s]) for s in t["carried_state"]]),
     "the carried state is 2 wide in layers"),
    ("GRU state for an LSTM", lambda t: t.update(carried_state=t["carried_state"][:1]), "has 1 part(s), a lstm has 2"),
    ("NaN carried state", lambda t: t.update(carried_state=[nan_first(s) for s in t["carried_state"]]),
     "carried state 0 holds NaN"),
]


@pytest.mark.parametrize("name, damage, needle", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_a_crafted_checkpoint_is_one_damaged_line(tmp_path, checkpoint, name, damage, needle):
    import copy

    payload = copy.deepcopy(checkpoint)
    damage(payload["training"])
    torch.save(payload, tmp_path / "m.pt.ckpt")
    with pytest.raises(BpttError) as err:
        RunFiles(tmp_path / "m.pt").load_checkpoint(payload["run"], ())
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'm.pt.ckpt'}: damaged bptt checkpoint (") and needle in message, message
    assert message.endswith("start the run without --resume") and "\n" not in message


def test_the_real_checkpoint_passes(tmp_path, checkpoint):
    torch.save(checkpoint, tmp_path / "m.pt.ckpt")
    training = RunFiles(tmp_path / "m.pt").load_checkpoint(checkpoint["run"], ())
    assert training["position"]["step"] == 2


def test_a_damaged_checkpoint_stops_resume_with_exit_2(tmp_path, checkpoint, run):
    import copy

    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 60)
    payload = copy.deepcopy(checkpoint)
    payload["training"]["position"]["window_index"] = 10**9
    torch.save(payload, tmp_path / "m.pt.ckpt")
    before = (tmp_path / "m.pt.ckpt").read_bytes()
    code, _, stderr = run("train", text, "-o", tmp_path / "m.pt", *TINY, "--max-steps", "4", "--resume")
    assert code == 2 and "damaged bptt checkpoint" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert (tmp_path / "m.pt.ckpt").read_bytes() == before
