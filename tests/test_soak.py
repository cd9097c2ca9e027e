"""Many runs at once, a disk that fills, a signal during validation: every promise holds (issue 14's soak)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from bptt_cli.modelfile import load_model_file
from conftest import SAMPLE_TEXT, TINY, wait_until
from test_scripts import bptt

QUICK = [*TINY, "--threads", "1", "--max-steps", "40", "--log-every", "10"]


def text_file(folder: Path, chars: int = 6000) -> Path:
    path = folder / "tiny.txt"
    path.write_text(SAMPLE_TEXT.read_text(encoding="utf-8")[:chars], encoding="utf-8")
    return path


@pytest.mark.slow
def test_three_runs_at_once_and_two_on_one_output(tmp_path):
    text = text_file(tmp_path)
    runs = [bptt(text, "-o", tmp_path / f"own{i}.pt", *QUICK) for i in range(3)]
    shared = tmp_path / "shared.pt"
    holder = bptt(text, "-o", shared, *QUICK, "--max-steps", "1000000", "--epochs", "100000")  # runs until stopped
    lock = tmp_path / "shared.pt.lock"
    assert wait_until(lock.exists, holder), holder.stderr.read()  # the event: the first run holds the output
    second = bptt(text, "-o", shared, *QUICK)
    assert second.wait() == 2 and "another bptt train is writing it" in second.stderr.read()
    holder.send_signal(signal.SIGTERM)
    assert holder.wait() == 3, holder.stderr.read()  # stopped cleanly, resumable
    for process in runs:
        assert process.wait() == 0, process.stderr.read()
    for path in [*(tmp_path / f"own{i}.pt" for i in range(3)), shared]:
        assert load_model_file(path).summary["best_step"] > 0
    assert not list(tmp_path.glob(".*.tmp")) and not lock.exists()


@pytest.mark.slow
def test_a_disk_that_fills_leaves_one_line_and_no_half_file(tmp_path):
    text = text_file(tmp_path)
    disk = tmp_path / "small"
    disk.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode != 0:
        pytest.skip("no tmpfs can be mounted here (needs root and a kernel that allows it)")
    try:
        run = bptt(text, "-o", disk / "m.pt", *QUICK, "--no-cache")
        code, err = run.wait(), run.stderr.read()
        assert code == 2 and err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err, err
        assert "space" in err.splitlines()[-1]
        left = [p.name for p in disk.iterdir()]
        assert all(not name.endswith(".tmp") for name in left), left  # nothing half-written stays
        for name in left:
            if name == "m.pt":
                load_model_file(disk / name)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.slow
def test_sigterm_during_validation_stops_with_a_checkpoint_that_resumes(tmp_path):
    text = text_file(tmp_path)
    held_out = tmp_path / "val.txt"
    held_out.write_text(SAMPLE_TEXT.read_text(encoding="utf-8")[:600_000], encoding="utf-8")  # a slow validation
    out = tmp_path / "m.pt"
    args = [*TINY, "--threads", "1", "--val", held_out, "--epochs", "3", "--log-every", "1"]
    run = bptt(text, "-o", out, *args)
    epoch = None
    for line in run.stderr:  # the line for an epoch's last update comes just before its validation starts,
        found = re.search(r"([0-9,]+) updates per epoch", line)  # and validating 600 kB takes seconds
        epoch = int(found.group(1).replace(",", "")) if found else epoch
        if epoch and line.startswith(f"step={epoch} "):
            run.send_signal(signal.SIGTERM)
            break
    code, err = run.wait(), run.stderr.read()
    assert code == 3 and "resume with: bptt " in err, err
    assert "validation after epoch 1" in err  # the validation the signal came in finished, and was reported
    stopped = torch.load(out.with_name("m.pt.ckpt"), weights_only=True)["training"]["position"]["step"]
    assert epoch <= stopped <= epoch + 1  # at the validation's end, or after the update then under way
    again = bptt(text, "-o", out, *args, "--resume")
    assert again.wait() == 0, again.stderr.read()
    assert load_model_file(out).summary["best_step"] > epoch
