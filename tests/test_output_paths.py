"""The output-path guard and the files that use it: model, checkpoint, lock, metrics, stale temporaries."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
import torch

from bptt_cli import metrics_file
from bptt_cli.atomic import remove_stale_temporaries, stale_temporaries
from bptt_cli.errors import BpttError
from bptt_cli.metrics_file import MetricsFile
from bptt_cli.modelfile import atomic_save
from bptt_cli.output_paths import check_output, file_kind, suffix_kind
from bptt_cli.runfiles import RunFiles
from conftest import TINY


def snapshot(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- what a file is, from its first bytes ----------------------------------------------------------------------


def test_file_kind_tells_models_checkpoints_and_other_files_apart(tmp_path, tiny_model):
    torch.save({"format": "bptt-checkpoint", "training": {}}, tmp_path / "c.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "m.jsonl").write_text('{"kind": "train", "step": 1}\n')
    (tmp_path / "m.csv").write_text("kind,step\ntrain,1\n")
    (tmp_path / "data.csv").write_text("time,a\n2024-01-01,1\n")
    (tmp_path / "blob").write_bytes(bytes(range(256)))
    (tmp_path / "empty").write_bytes(b"")
    kinds = {name: file_kind(tmp_path / name) for name in
             ("c.ckpt", "other.pt", "a.npy", "m.jsonl", "m.csv", "data.csv", "blob", "empty")}
    assert file_kind(tiny_model) == "bptt-model"
    assert kinds == {"c.ckpt": "bptt-checkpoint", "other.pt": "zip", "a.npy": "npy", "m.jsonl": "metrics",
                     "m.csv": "metrics-csv", "data.csv": "text", "blob": "binary", "empty": "empty"}


def test_file_kind_never_unpickles(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    torch.save({"format": "bptt-model", "x": Payload()}, tmp_path / "evil.pt")
    assert file_kind(tmp_path / "evil.pt") == "bptt-model" and not marker.exists()


# -- the guard ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, existing, needle", [
    ("csv", "model", "is a bptt model file, not CSV"),
    ("npy", "model", "is a bptt model file, not a .npy array"),
    ("csv", "npy", "is a numpy array file, not CSV"),
    ("png", "text", "not a PNG picture"),
    ("model", "text", "not a bptt model file"),
    ("model", "checkpoint", "is a bptt checkpoint, not a bptt model file"),
    ("checkpoint", "text", "not a bptt checkpoint"),
    ("metrics", "text", "not JSON-lines metrics"),
    ("metrics", "model", "is a bptt model file, not JSON-lines metrics"),
    ("metrics-csv", "text", "not CSV metrics"),
])
def test_a_file_of_another_kind_is_refused_unless_forced(tmp_path, tiny_model, kind, existing, needle):
    path = tmp_path / "out"
    if existing == "model":
        path.write_bytes(tiny_model.read_bytes())
    elif existing == "checkpoint":
        torch.save({"format": "bptt-checkpoint"}, path)
    elif existing == "npy":
        with open(path, "wb") as out:
            np.save(out, np.zeros(2))
    else:
        path.write_text("time,a\n1,2\n")
    with pytest.raises(BpttError, match="it is not overwritten") as err:
        check_output(path, kind, "-o")
    assert needle in str(err.value) and str(err.value).startswith(f"-o {path}: exists and is")
    assert check_output(path, kind, "-o", force=True) == path


def test_the_input_data_is_refused_by_any_name(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    (tmp_path / "sub").mkdir()
    for name in (data, tmp_path / "sub" / ".." / "data.csv"):
        with pytest.raises(BpttError, match=f"is the input {data}; it is never overwritten"):
            check_output(name, "csv", "-o", inputs=[None, data])
    (tmp_path / "link.csv").symlink_to(data)
    with pytest.raises(BpttError, match="symbolic link"):
        check_output(tmp_path / "link.csv", "csv", "-o", inputs=[data], force=True)


def test_places_that_can_never_be_written_are_refused_even_when_forced(tmp_path, monkeypatch):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.symlink("/dev/null", tmp_path / "dev")
    cases = [(tmp_path, "is a directory"), (tmp_path / "no" / "m.pt", "does not exist"),
             (fifo, "not a regular file"), (tmp_path / "dev", "symbolic link"), (tmp_path / "sub", "is a directory")]
    (tmp_path / "sub").mkdir()
    for path, needle in cases:
        with pytest.raises(BpttError, match=needle):
            check_output(path, "csv", "-o", force=True)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(BpttError, match="is not writable"):
        check_output(tmp_path / "new.csv", "csv", "-o")


def test_a_new_file_and_an_earlier_file_of_the_same_kind_pass(tmp_path, tiny_model):
    assert check_output(tmp_path / "new.csv", "csv") == tmp_path / "new.csv"
    (tmp_path / "old.csv").write_text("step,a\n1,2\n")
    assert check_output(tmp_path / "old.csv", "csv") == tmp_path / "old.csv"
    assert check_output(tiny_model, "model") == tiny_model


def test_the_kind_follows_the_extension_for_forecasts_and_pictures(tmp_path, tiny_model):
    assert [suffix_kind(n) for n in ("f.csv", "f.NPY", "p.png", "p.svg", "f.txt")] == ["csv", "npy", "png", "svg", "csv"]
    with pytest.raises(BpttError, match="is a bptt model file, not a PNG picture"):
        check_output(tiny_model, suffix_kind("x.png"), "--plot")


# -- the files of a run -------------------------------------------------------------------------------------------


def test_a_users_file_at_the_checkpoint_path_is_never_overwritten(tmp_path, tiny_text, run):
    out = tmp_path / "m.pt"
    mine = tmp_path / "m.pt.ckpt"
    mine.write_text("my own notes")
    code, _, stderr = run("train", tiny_text, "-o", out, "--max-steps", "2", *TINY)
    assert code == 2 and "m.pt.ckpt: exists and is" in stderr and "not a bptt checkpoint" in stderr, stderr
    assert mine.read_text() == "my own notes" and not out.exists()


def test_force_lets_o_replace_a_foreign_file_but_never_the_checkpoint_path(tmp_path):
    (tmp_path / "m.pt").write_text("an old file the user means to replace")
    with RunFiles(tmp_path / "m.pt", force=True) as files:
        assert files.best_on_disk is None  # so the first model replaces it
    (tmp_path / "m.pt.ckpt").write_text("the user's own file")
    with pytest.raises(BpttError, match="not a bptt checkpoint"):
        RunFiles(tmp_path / "m.pt", force=True)


def test_runfiles_refuse_to_write_over_their_input(tmp_path, tiny_model):
    with pytest.raises(BpttError, match="is the input"):
        RunFiles(tiny_model, inputs=(tiny_model,))


def test_a_lock_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path, tiny_text, run):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (tmp_path / "m.pt.lock").symlink_to(precious)
    code, _, stderr = run("train", tiny_text, "-o", tmp_path / "m.pt", "--max-steps", "2", *TINY)
    assert code == 2 and "m.pt.lock: is a symbolic link" in stderr, stderr
    assert precious.read_text() == "keep me" and not (tmp_path / "m.pt").exists()


def test_a_lock_that_is_a_fifo_is_refused_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "m.pt.lock")
    with pytest.raises(BpttError, match="not a regular file"), RunFiles(tmp_path / "m.pt"):
        pass


def test_the_next_run_removes_the_stale_temporaries_of_its_own_files_only(tmp_path, tiny_text, run):
    ours = [tmp_path / ".m.pt.ckpt.ab12_x9z.tmp", tmp_path / ".m.pt.k3j4h5g6.tmp"]  # mkstemp's 8 characters
    others = [tmp_path / ".m.pt.x.abcdefgh.tmp", tmp_path / ".other.pt.abcdefgh.tmp", tmp_path / ".m.pt.short.tmp"]
    for leftover in ours + others:  # what kill -9 during atomic_write leaves
        leftover.write_bytes(b"torn")
    assert stale_temporaries(tmp_path / "m.pt.ckpt") == [ours[0]]
    code, _, stderr = run("train", tiny_text, "-o", tmp_path / "m.pt", "--max-steps", "2", *TINY)
    assert code == 0, stderr
    assert not any(p.exists() for p in ours) and all(p.read_bytes() == b"torn" for p in others)


def test_a_kill_9_during_a_checkpoint_write_leaves_a_temporary_that_the_next_run_removes(tmp_path, tiny_text, run):
    import subprocess
    import sys

    out = tmp_path / "m.pt"
    child = ("import sys, threading, torch\n"
             "real = torch.save\n"
             "def stuck(obj, f, *args, **kwargs):\n"
             "    if isinstance(obj, dict) and obj.get('format') == 'bptt-checkpoint':\n"
             "        f.write(b'half a checkpoint'); f.flush(); print('writing', flush=True); threading.Event().wait()\n"
             "    return real(obj, f, *args, **kwargs)\n"
             "torch.save = stuck\n"
             "from bptt_cli.cli import main\n"
             f"sys.argv = ['bptt', 'train', {str(tiny_text)!r}, '-o', {str(out)!r}, *{TINY!r}, '--max-steps', '3']\n"
             "main()\n")
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "writing", process.stderr.read()  # an event, not a clock
    finally:
        process.kill()
        process.wait()
    left = stale_temporaries(out.with_name("m.pt.ckpt"))
    assert len(left) == 1 and left[0].read_bytes() == b"half a checkpoint"
    code, _, stderr = run("train", tiny_text, "-o", out, "--max-steps", "3", *TINY)
    assert code == 0, stderr
    assert not left[0].exists() and not list(tmp_path.glob(".m.pt*.tmp"))


def test_stale_temporaries_are_only_removed_by_the_lock_holder(tmp_path):
    leftover = tmp_path / ".m.pt.abcdefgh.tmp"
    leftover.write_bytes(b"live")
    with RunFiles(tmp_path / "m.pt", owner=False):  # a rank that does not own the files
        assert leftover.exists()
    with RunFiles(tmp_path / "m.pt"):
        assert not leftover.exists()
    assert remove_stale_temporaries(tmp_path / "m.pt") == []


def test_a_real_full_disk_error_from_torch_save_is_one_clear_line(tmp_path, monkeypatch):
    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(BpttError) as err:
        atomic_save({"a": 1}, tmp_path / "m.pt.ckpt")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'm.pt.ckpt'}: cannot write it (the write failed, is the disk full?")
    assert "inline_container.cc" in message and message.endswith("free some space or choose another path")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_during_a_checkpoint_ends_the_run_with_exit_2(tmp_path, tiny_text, run, monkeypatch):
    real_save = torch.save

    def full_for_checkpoints(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("format") == "bptt-checkpoint":
            raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_for_checkpoints)
    code, _, stderr = run("train", tiny_text, "-o", tmp_path / "m.pt", "--max-steps", "2", *TINY)
    assert code == 2 and "m.pt.ckpt: cannot write it (the write failed, is the disk full?" in stderr, stderr
    assert "unexpected" not in stderr and not list(tmp_path.glob(".*.tmp"))


# -- --metrics ----------------------------------------------------------------------------------------------------------


def test_metrics_never_go_into_the_training_data_or_a_model(tmp_path, tiny_text, tiny_model, run):
    before = snapshot(tmp_path)
    for target in (tiny_text, tiny_model, tmp_path):
        code, _, stderr = run("train", tiny_text, "-o", tmp_path / "m.pt", "--max-steps", "2", *TINY,
                              "--metrics", target)
        assert code == 2 and stderr.startswith(f"error: --metrics {target}: "), stderr
    assert snapshot(tmp_path) == before


def test_a_metrics_file_is_only_created_by_its_first_record(tmp_path):
    path = tmp_path / "m.jsonl"
    metrics = MetricsFile(path)
    assert not path.exists()
    metrics.log({"step": 1, "train_loss": 2.0})
    assert json.loads(path.read_text()) == {"kind": "train", "step": 1, "train_loss": 2.0}


def test_a_bad_input_run_leaves_no_metrics_file(tmp_path, run):
    data = tmp_path / "short.txt"
    data.write_text("ab" * 15)
    code, _, _ = run("train", data, "-o", tmp_path / "m.pt", *TINY, "--batch-size", "100",
                     "--metrics", tmp_path / "m.jsonl")
    assert code == 2 and not (tmp_path / "m.jsonl").exists()


def test_a_metrics_csv_that_is_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"kind,step\ntrain,\xff\xfe\n")
    with pytest.raises(BpttError, match="not a readable UTF-8 CSV"):
        MetricsFile(path)


def test_a_full_disk_never_leaves_half_a_metrics_line(tmp_path, monkeypatch):
    path = tmp_path / "m.jsonl"
    metrics = MetricsFile(path)
    metrics.log({"step": 1})
    whole = path.read_bytes()
    real_write = os.write

    def half_then_full(handle, data):
        if len(data) > 4:
            return real_write(handle, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(metrics_file.os, "write", half_then_full)
    with pytest.raises(BpttError, match="No space left on device"):
        metrics.log({"step": 2, "train_loss": 1.5})
    assert path.read_bytes() == whole
