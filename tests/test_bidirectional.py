"""Bidirectional layers for labelled sequences, whole-sequence batches, and validation too small to choose on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_audio import SMALL, separable_set, write_npys
from test_scripts import weights_of_checkpoint

from bptt_cli.modelfile import load_model_file, read_payload
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.series import SequenceBatches, pack

CELLS = ("lstm", "gru", "rnn")


def two_sets(root: Path, train: int, val: int) -> tuple[Path, Path, Path]:
    """Training and validation folders of separable sequences, and the one labels.csv that lists both."""
    rows = ["file,label"]
    for name, count, seed in (("train", train, 0), ("val", val, 5)):
        folder = separable_set(root / name, count=count, seed=seed)
        rows += [f"{name}/{line}" for line in (folder / "labels.csv").read_text().splitlines()[1:]]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "train", root / "val", root / "labels.csv"


def bidirectional_model(cell: str = "lstm", layers: int = 2, seed: int = 0) -> RecurrentModel:
    torch.manual_seed(seed)
    config = ModelConfig(cell=cell, tokens=False, input_size=3, output_size=2, hidden=5, layers=layers,
                         bidirectional=True)
    return RecurrentModel(config).double()


@pytest.mark.parametrize("cell", CELLS)
def test_both_directions_equal_torchs_bidirectional_layer(cell):
    model = bidirectional_model(cell)
    reference = type(model.rnn)(3, 5, 2, bidirectional=True).double()
    reference.load_state_dict(model.rnn.state_dict())
    x = torch.randn(9, 4, 3, dtype=torch.double)
    ours, _ = model.recur(x, model.init_state(4))
    theirs, _ = reference(x)
    assert ours.shape == (9, 4, 10)
    assert torch.equal(ours, theirs)


def test_sequences_packed_in_one_stream_with_padding_read_as_if_alone():
    """Each sequence is reversed within itself: neither its neighbour nor the padding after it reaches it."""
    model = bidirectional_model()
    rng = np.random.default_rng(0)
    first, second = rng.standard_normal((4, 3)), rng.standard_normal((3, 3))
    longer = rng.standard_normal((9, 3))  # a second stream, so that the first one ends in padding
    labels = [np.zeros(len(s), dtype=np.int64) for s in (first, second, longer)]
    streams = pack([longer, first, second], labels, 2, mark_padding=True)
    assert streams.inputs.shape == (9, 2, 3)
    resets = torch.as_tensor(streams.resets)
    cuts = np.flatnonzero(streams.resets.any(axis=1)).tolist()
    outputs, _ = model.recur(streams.inputs.double(), model.init_state(2), resets, cuts)
    for sequence, (stream, start, length) in zip((longer, first, second), streams.where):
        alone, _ = model.recur(torch.from_numpy(sequence.astype(np.float32)).double()[:, None], model.init_state(1))
        assert torch.allclose(outputs[start : start + length, stream], alone[:, 0], atol=1e-12, rtol=0)


def test_the_output_at_a_step_depends_on_later_inputs_and_the_reverse_gradient_reaches_the_first_step():
    model = bidirectional_model(layers=1)
    x = torch.randn(12, 1, 3, dtype=torch.double, requires_grad=True)
    outputs, _ = model(x, model.init_state(1))
    outputs[0].sum().backward()  # the loss sits at the first step only
    reaching = x.grad.abs().sum(dim=(1, 2))
    assert (reaching > 0).all()  # the last input reaches the first output, through the backward direction
    groups = {name: torch.stack([p.grad.norm() for p in ps]).norm() for name, ps in model.param_groups().items()}
    assert set(groups) == {"lstm layer 1", "lstm layer 1 (reverse)", "decoder"}
    assert groups["lstm layer 1 (reverse)"] > 0
    # the reverse direction's gradient reaches the first step: every step of the backward pass contributes
    single = bidirectional_model(layers=1)
    y = torch.randn(12, 1, 3, dtype=torch.double, requires_grad=True)
    out, _ = single.recur(y, single.init_state(1))
    out[0, :, 5:].sum().backward()  # the reverse half at step 0 has read every step down from the last
    assert (y.grad.abs().sum(dim=(1, 2)) > 0).all()

    forward_only = RecurrentModel(ModelConfig(tokens=False, input_size=3, output_size=2, hidden=5, layers=1)).double()
    z = torch.randn(12, 1, 3, dtype=torch.double, requires_grad=True)
    forward_only(z, forward_only.init_state(1))[0][0].sum().backward()
    assert (z.grad[1:] == 0).all()  # a one-way model's first output never sees what follows


def test_bidirectional_is_refused_with_a_window_for_forecasts_and_for_text(tmp_path, run, tiny_text):
    clips = write_npys(tmp_path / "clips")
    labelled = separable_set(tmp_path / "set", count=12)
    for args, reason in (
        ([labelled, "--labels", labelled / "labels.csv", "--window", "5"], "--window 0"),
        ([clips, "--window", "0"], "forecast"),
        ([tiny_text, "--window", "0"], "is for CSV data and feature files"),
    ):
        out = tmp_path / "m.pt"
        code, _, err = run("train", *args, "--bidirectional", "-o", out, *SMALL)
        assert code == 2, err
        assert reason in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_a_bidirectional_model_file_scores_as_it_validated_and_older_files_still_load(tmp_path, run):
    data, held, labels = two_sets(tmp_path, 24, 12)
    out = tmp_path / "m.pt"
    code, stdout, err = run("train", data, "--labels", labels, "--val", held, "--window", "0",
                            "--bidirectional", "--epochs", "3", "--batch-size", "6", "--metrics", tmp_path / "m.jsonl",
                            "-o", out, *SMALL)
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    saved = [r for r in records if r.get("saved")][-1]
    file = load_model_file(out)
    assert file.model.config.bidirectional and file.model.decoder.in_features == 32
    assert {"rnn.weight_ih_l0_reverse", "rnn.weight_hh_l0_reverse"} <= set(file.model.state_dict())
    code, stdout, err = run("evaluate", out, held, "--labels", labels, "--json")
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] == saved["val_accuracy"]
    code, stdout, err = run("gradcheck", out, data, "--labels", labels, "--window", "8", "--json")
    assert code == 0, err
    checked = json.loads(stdout)
    assert checked["passed"] and "rnn.weight_hh_l0_reverse" in {t["name"] for t in checked["finite_difference"]["tensors"]}
    assert "bidirectional" in checked["flow"]["skipped"]
    code, _, err = run("export", out, "-o", tmp_path / "m.pt2")
    assert code == 2 and "bidirectional" in err and len(err.strip().splitlines()) == 1

    unidirectional = tmp_path / "one-way.pt"
    code, _, err = run("train", data, "--labels", labels, "--window", "0", "--epochs", "1",
                       "-o", unidirectional, *SMALL)
    assert code == 0, err
    payload = read_payload(unidirectional)  # as a file written before --bidirectional existed
    del payload["model_config"]["bidirectional"]
    older = tmp_path / "older.pt"
    torch.save(payload, older)
    assert load_model_file(older).model.config.bidirectional is False
    code, _, err = run("evaluate", older, held, "--labels", labels)
    assert code == 0, err


def test_sequence_batches_are_whole_shuffled_per_epoch_and_the_same_for_the_same_epoch():
    lengths = [3, 5, 4, 6, 2, 7, 5]
    inputs = [np.full((n, 1), i, dtype=np.float32) for i, n in enumerate(lengths)]
    targets = [np.full(n, i, dtype=np.int64) for i, n in enumerate(lengths)]
    batches = SequenceBatches(inputs, targets, 3, seed=4)
    assert len(batches) == 3
    seen = []
    for index in range(len(batches)):
        streams = batches.batch(1, index)
        assert streams.inputs.shape[1] == 3 and streams.resets[0].all()
        ids = streams.inputs[0, :, 0].long().tolist()
        for stream, i in enumerate(ids):  # every stream holds one sequence, whole, from step 0
            assert (streams.inputs[: lengths[i], stream, 0] == i).all()
        seen += ids
    assert set(seen) == set(range(7)) and len(seen) == 9  # the last batch is filled up from the first
    assert torch.equal(batches.batch(2, 0).inputs, batches.batch(2, 0).inputs)
    orders = {tuple(batches.batch(epoch, 0).inputs[0, :, 0].tolist()) for epoch in range(1, 6)}
    assert len(orders) > 1


def test_a_sequence_task_takes_one_update_per_batch_and_resumes_mid_epoch_bit_identically(tmp_path, run):
    data = separable_set(tmp_path / "set", count=20)
    common = [data, "--labels", data / "labels.csv", "--window", "0", "--batch-size", "4", "--val-fraction", "0",
              "--epochs", "3", "--dropout", "0.2", "--layers", "2", "--hidden", "8", "--threads", "1", "--seed", "3"]
    whole = tmp_path / "whole.pt"
    code, stdout, err = run("train", *common, "-o", whole, "--json")
    assert code == 0, err
    assert json.loads(stdout)["steps"] == 15  # 20 sequences, 4 per update: 5 updates an epoch

    out = tmp_path / "stopped.pt"
    code, stdout, err = run("train", *common, "-o", out, "--max-steps", "7", "--json")  # inside epoch 2
    assert code == 0 and json.loads(stdout)["steps"] == 7, err
    code, stdout, err = run("train", *common, "-o", out, "--resume", "--json")
    assert code == 0 and json.loads(stdout)["steps"] == 15, err
    expected, got = weights_of_checkpoint(Path(f"{whole}.ckpt")), weights_of_checkpoint(Path(f"{out}.ckpt"))
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.parametrize("held, warned", [(2, True), (50, False)])
def test_a_validation_set_too_small_to_choose_on_is_named_and_the_last_model_kept(tmp_path, run, held, warned):
    data, val, labels = two_sets(tmp_path, 16, held)
    out = tmp_path / "m.pt"
    code, stdout, err = run("train", data, "--labels", labels, "--val", val, "--window", "0",
                            "--epochs", "3", "--batch-size", "8", "--json", "-o", out, *SMALL)
    assert code == 0, err
    summary = json.loads(stdout)
    line = "too few to choose the model on"
    assert (line in err) is warned and ("model_selection" in summary) is warned
    if warned:
        assert "2 validation sequence(s) for 2 classes" in err and "keeps the last epoch's model" in err
        kept = load_model_file(out).summary
        assert kept["best_step"] == summary["steps"]  # the last model, whatever it scored
        assert "too few" in kept["model_selection"]


def test_per_frame_labels_that_depend_on_the_next_frame_are_learned_only_both_ways(tmp_path, run):
    def frames(folder: Path, seed: int) -> Path:
        folder.mkdir()
        rng = np.random.default_rng(seed)
        for i in range(16):
            x = rng.standard_normal((30, 2)).astype(np.float32)
            upcoming = np.append(x[1:, 0] > 0, False)  # the label says what the next frame will be
            np.savez(folder / f"f{i:02d}.npz", features=x, labels=np.where(upcoming, "rise", "fall"))
        return folder

    folder, unseen = frames(tmp_path / "frames", 0), frames(tmp_path / "unseen", 1)
    accuracy = {}
    for name, extra in (("one way", []), ("both ways", ["--bidirectional"])):
        out = tmp_path / f"{name}.pt"
        code, _, err = run("train", folder, "--window", "0", "--batch-size", "4", "--epochs", "40", "--lr", "0.01",
                           "--val-fraction", "0", "-o", out, *SMALL, *extra)
        assert code == 0, err
        code, stdout, err = run("evaluate", out, unseen, "--json")
        assert code == 0, err
        accuracy[name] = json.loads(stdout)["accuracy"]
    assert accuracy["both ways"] > 0.9 and accuracy["one way"] < 0.7, accuracy
