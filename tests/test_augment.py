"""--augment: stretched, time-masked and band-masked training batches of labelled sequences, seeded per update."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_audio import separable_set, write_npys
from test_scripts import weights_of_checkpoint

from bptt_cli.augment import Augmentation, masked, parse_augment, stretched, warped
from bptt_cli.errors import BpttError
from bptt_cli.kinds.sequences import augmentation_of
from bptt_cli.losses import IGNORE_LABEL
from bptt_cli.series import SequenceBatches


def labelled(count: int = 6, width: int = 5, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sequences of 10-30 frames whose frame t holds t + 1 in every feature (so a frame's origin can be read
    back), with a class on the last frame."""
    rng = np.random.default_rng(seed)
    inputs, targets = [], []
    for i in range(count):
        length = int(rng.integers(10, 31))
        inputs.append(np.repeat(np.arange(1, length + 1, dtype=np.float32)[:, None], width, axis=1))
        y = np.full(length, IGNORE_LABEL, dtype=np.int64)
        y[-1] = i % 3
        targets.append(y)
    return inputs, targets


def test_the_spec_names_each_augmentation_with_its_default_or_given_amount():
    assert parse_augment(None) == Augmentation() and not parse_augment("")
    assert parse_augment("stretch,time-mask,freq-mask") == Augmentation(0.15, 10, 8)
    assert parse_augment(" stretch=0.3 , freq-mask=2") == Augmentation(0.3, 0, 2)
    assert parse_augment("warp") == Augmentation(warp=0.1) and parse_augment("warp=0.25").warp == 0.25
    for spec, said in (("speed", "unknown augmentation 'speed'"), ("stretch=1.5", "must lie in (0, 1)"),
                       ("warp=1", "warp=1: the share of the feature axis must lie in (0, 1)"),
                       ("time-mask=0", "at least 1"), ("freq-mask=2.5", "whole number"),
                       ("time-mask=many", "must be a number")):
        with pytest.raises(BpttError, match=f"--augment.*{said.replace('(', '[(]').replace(')', '[)]')}"):
            parse_augment(spec)


def test_a_stretched_sequence_keeps_its_order_its_last_frame_and_one_copy_of_its_label():
    inputs, targets = labelled(count=40)
    out_x, out_y = stretched(inputs, targets, 0.3, np.random.default_rng(0))
    ratios = np.array([len(b) / len(a) for a, b in zip(inputs, out_x)])
    assert ((ratios > 0.65) & (ratios < 1.35)).all() and ratios.min() < 0.9 and ratios.max() > 1.1  # both ways
    for x, y, old_x, old_y in zip(out_x, out_y, inputs, targets):
        origin = x[:, 0]
        assert (np.diff(origin) >= 0).all() and origin[0] == 1 and origin[-1] == len(old_x)  # in order, end kept
        assert (x == origin[:, None]).all()  # whole frames, features together
        assert y[-1] == old_y[-1] and (y[:-1] == IGNORE_LABEL).all()  # the label once, on the last frame


def test_stretched_frame_labels_follow_their_frames():
    x = np.arange(12, dtype=np.float32)[:, None]
    y = np.arange(12) % 4
    (out_x,), (out_y,) = stretched([x], [y], 0.5, np.random.default_rng(3))
    assert len(out_x) != len(x)
    kept = out_y != IGNORE_LABEL
    assert (out_y[kept] == out_x[kept, 0].astype(np.int64) % 4).all()
    assert len(np.unique(out_x[kept, 0])) == kept.sum()  # a repeated frame is trained on once


def test_masks_blank_one_run_of_frames_within_each_sequence_and_one_band_of_features():
    rng = np.random.default_rng(0)
    lengths = np.array([6, 20, 13, 2])
    inputs = np.ones((20, 4, 9), dtype=np.float32)
    for b, n in enumerate(lengths):
        inputs[n:, b] = 7.0  # padding, never masked by the time mask
    masked(inputs, lengths, Augmentation(time_mask=5), rng)
    for b, n in enumerate(lengths):
        blank = np.flatnonzero((inputs[:n, b] == 0).all(axis=1))
        assert len(blank) <= min(5, n - 1) and (len(blank) == 0 or np.ptp(blank) == len(blank) - 1)  # one run
        assert (inputs[n:, b] == 7.0).all()
    inputs = np.ones((8, 4, 9), dtype=np.float32)
    masked(inputs, np.full(4, 8), Augmentation(freq_mask=3), rng)
    for b in range(4):
        blank = np.flatnonzero((inputs[:, b] == 0).all(axis=0))
        assert len(blank) <= 3 and (len(blank) == 0 or np.ptp(blank) == len(blank) - 1)
        assert ((inputs[:, b] == 0).any(axis=0) == (inputs[:, b] == 0).all(axis=0)).all()  # at every step alike


def test_a_warp_scales_each_sequences_bands_by_one_factor_in_every_block_and_frame():
    bands, blocks = 10, 2
    inputs = np.zeros((7, 50, bands * blocks))
    inputs[:5] = np.tile(np.arange(bands, dtype=float), blocks)  # feature f of each block holds f; 2 padded steps
    before = inputs.copy()
    warped(inputs, Augmentation(warp=0.3, blocks=blocks), np.random.default_rng(0))
    assert (inputs[5:] == 0).all()  # padding stays zero
    first, second = inputs[:5, :, :bands], inputs[:5, :, bands:]
    assert np.array_equal(first, second) and (first == first[:1]).all()  # both blocks, every frame alike
    factors = first[0, :, 1]  # where band 1 now reads from: the sequence's factor
    assert ((factors >= 0.7) & (factors <= 1.3)).all() and factors.min() < 0.9 and factors.max() > 1.1
    expected = np.minimum(np.arange(bands)[None, :] * factors[:, None], bands - 1)
    assert np.allclose(first[0], expected)  # bands read from band f x factor, the top band past the end
    assert not np.array_equal(inputs, before)


def test_with_deltas_the_warp_moves_both_halves_of_the_features_alike():
    assert augmentation_of(SimpleNamespace(augment="warp", deltas=True)) == Augmentation(warp=0.1, blocks=2)
    assert augmentation_of(SimpleNamespace(augment="warp", deltas=False)).blocks == 1


def test_augmented_batches_are_drawn_from_the_seed_epoch_and_update_and_plain_ones_stay_plain():
    inputs, targets = labelled(count=9)
    plain = SequenceBatches(inputs, targets, 4, seed=1)
    same = SequenceBatches(inputs, targets, 4, seed=1, augmentation=Augmentation())
    augmented = SequenceBatches(inputs, targets, 4, seed=1, augmentation=Augmentation(0.2, 4, 2))
    assert torch.equal(plain.batch(2, 1).inputs, same.batch(2, 1).inputs)
    first, again = augmented.batch(2, 1), augmented.batch(2, 1)  # a resumed run draws this update again
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)
    assert not torch.equal(augmented.batch(3, 1).inputs[:, :, 0] != 0, augmented.batch(4, 1).inputs[:, :, 0] != 0)
    assert (first.inputs == 0).any() and first.inputs.shape[1] == 4
    labels = first.targets[first.targets != IGNORE_LABEL]
    assert len(labels) == 4  # one label per sequence, still on its last frame
    assert inputs[0].sum() == labelled(count=9)[0][0].sum()  # the stored sequences are never changed


def test_augment_trains_and_resumes_mid_epoch_bit_identically(tmp_path, run):
    data = separable_set(tmp_path / "set", count=20)
    common = [data, "--labels", data / "labels.csv", "--window", "0", "--batch-size", "4", "--val-fraction", "0",
              "--epochs", "3", "--layers", "1", "--hidden", "8", "--threads", "1", "--seed", "3",
              "--augment", "stretch=0.2,time-mask=3,freq-mask=1"]
    whole = tmp_path / "whole.pt"
    code, stdout, err = run("train", *common, "-o", whole, "--json")
    assert code == 0, err
    out = tmp_path / "stopped.pt"
    code, stdout, err = run("train", *common, "-o", out, "--max-steps", "7", "--json")
    assert code == 0 and json.loads(stdout)["steps"] == 7, err
    code, stdout, err = run("train", *common, "-o", out, "--resume", "--json")
    assert code == 0 and json.loads(stdout)["steps"] == 15, err
    expected, got = weights_of_checkpoint(Path(f"{whole}.ckpt")), weights_of_checkpoint(Path(f"{out}.ckpt"))
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    plain = tmp_path / "plain.pt"
    code, _, err = run("train", *common[:-2], "-o", plain, "--json")
    assert code == 0, err
    other = weights_of_checkpoint(Path(f"{plain}.ckpt"))
    assert not all(torch.equal(expected[k], other[k]) for k in expected)  # the batches did change
    code, _, err = run("train", *common[:-2], "-o", out, "--resume")  # another --augment: not the same run
    assert code == 2 and "augment" in err


@pytest.mark.parametrize("options", [["--window", "5"], []], ids=["finite window", "forecast"])
def test_augment_is_refused_where_sequences_are_not_trained_whole(tmp_path, run, options):
    if options:
        data = separable_set(tmp_path / "set", count=8)
        options = [*options, "--labels", data / "labels.csv"]
    else:
        data = write_npys(tmp_path / "clips")
        options = ["--window", "0"]
    out = tmp_path / "m.pt"
    code, _, err = run("train", data, *options, "--augment", "stretch", "--epochs", "1", "--hidden", "8",
                       "--layers", "1", "-o", out)
    assert code == 2 and "--augment changes whole labelled sequences trained with --window 0" in err
    assert "Traceback" not in err and not out.exists()


def test_augment_is_refused_for_text(tiny_text, tmp_path, run):
    code, _, err = run("train", tiny_text, "--augment", "stretch", "-o", tmp_path / "m.pt")
    assert code == 2 and "--augment" in err
