"""Bad input, all of it: one line on stderr naming the problem, the right exit code, no traceback, nothing written.

Each case names the files it needs; the test makes them in a fresh folder, runs
the command in-process, and checks that no file in that folder was created or
changed.
"""

import errno
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY

SHAKESPEARE = (Path(__file__).parents[1] / "sample_data" / "shakespeare.txt").read_text()[:6000]


def make_files(folder: Path, tiny_model: Path) -> dict[str, Path]:
    """Every input a case may name, keyed by the name used in the cases below."""
    files = {
        "text": SHAKESPEARE.encode(),
        "empty": b"",
        "binary": bytes(range(256)) * 4,
        "latin1": "caf\u00e9 au lait ".encode("latin-1") * 50,
        "short": b"ab" * 15,
        "random_pt": np.random.default_rng(0).bytes(4096),
    }
    paths = {}
    for name, content in files.items():
        paths[name] = folder / (f"{name[:-3]}.pt" if name.endswith("_pt") else f"{name}.txt")
        paths[name].write_bytes(content)
    paths["model"] = folder / "model.pt"
    paths["model"].write_bytes(tiny_model.read_bytes())
    payload = torch.load(tiny_model, weights_only=True)
    paths["truncated_pt"] = folder / "truncated.pt"
    paths["truncated_pt"].write_bytes(tiny_model.read_bytes()[:300])
    newer = dict(payload, format_version=99)
    torch.save(newer, folder / "newer.pt")
    paths["newer_pt"] = folder / "newer.pt"
    wrong = dict(payload, weights=dict(payload["weights"], **{"decoder.bias": torch.zeros(3)}))
    torch.save(wrong, folder / "wrong_shape.pt")
    paths["wrong_shape_pt"] = folder / "wrong_shape.pt"
    torch.save({"format": "bptt-model", "x": Evil()}, folder / "evil.pt")
    paths["evil_pt"] = folder / "evil.pt"
    for name, content in SERIES_FILES.items():
        paths[name] = folder / name.replace("_csv", ".csv")
        paths[name].write_text(content)
    for name, array in FEATURE_FILES.items():
        paths[name] = folder / name.replace("_npy", ".npy").replace("_npz", ".npz")
        np.save(paths[name], array) if name.endswith("_npy") else np.savez(paths[name], other=array)
    paths["garbage_npy"] = folder / "garbage.npy"
    paths["garbage_npy"].write_bytes(b"not numpy at all")
    paths["broken_ts"] = folder / "broken.ts"
    paths["broken_ts"].write_text("@problemName x\n@data\n1,2,3:oops\n")
    paths["labels_csv"] = folder / "labels.csv"
    paths["labels_csv"].write_text("file,label\nelsewhere.npy,1\n")
    (folder / "nothing").mkdir()
    paths["nothing"] = folder / "nothing"
    paths["missing"] = folder / "missing.txt"
    paths["nodir"] = folder / "no" / "such" / "m.pt"
    paths["out"] = folder / "out.pt"
    paths["proc"] = Path("/proc/bptt-test/m.pt")
    return paths


def hours(values: str, n: int = 24, header: str = "time,a,b") -> str:
    """A small hourly CSV; ``values`` is a format with {h} for the hour."""
    return header + "\n" + "\n".join(f"2024-01-01 {h:02d}:00," + values.format(h=h, m=h % 3) for h in range(n)) + "\n"


SERIES_FILES = {
    "ok_csv": hours("{h},{m}"),
    "empty_csv": "",
    "header_csv": "time,a,b\n",
    "onerow_csv": "time,a,b\n2024-01-01 00:00,1,2\n",
    "twice_csv": hours("{h},{h}", header="time,a,a"),
    "gaps_csv": hours("{h},{m}").replace(",5,2\n", ",,2\n"),
    "inf_csv": hours("{h},{m}").replace(",7,1\n", ",inf,1\n"),
    "constant_csv": hours("{h},1"),
    "allmissing_csv": hours("{h},"),
    "words_csv": hours("w{h}", header="time,a"),
}
FEATURE_FILES = {
    "nan_npy": np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]]),
    "nofeatures_npz": np.zeros((5, 2)),
}


class Evil:
    """Unpickling it would run code: it must never be unpickled."""

    def __reduce__(self):
        return (exec, ("raise SystemExit('the payload ran')",))


CASES = [
    # text training data
    ("train {missing}", 2, "no such file"),
    ("train {empty}", 2, "empty"),
    ("train {binary}", 2, "binary"),
    ("train {latin1}", 2, "not UTF-8"),
    ("train {short} --batch-size 100", 2, "cannot fill"),
    ("train {text} --window 100000", 2, "longer than"),
    ("train {text} --val {empty}", 2, "empty"),
    # option values
    ("train {text} --batch-size 0", 2, "--batch-size"),
    ("train {text} --lr -1", 2, "--lr"),
    ("train {text} --clip -1", 2, "--clip"),
    ("train {text} --epochs 0", 2, "--epochs"),
    ("train {text} --model transformer", 2, "--model"),
    ("train {text} --max-time soon", 2, "--max-time"),
    ("train {text} --stride 99 --window 10", 2, "--stride"),
    ("train {text} --tie-weights", 2, "--tie-weights"),
    ("train {text} --val-fraction 1.5", 2, "--val-fraction"),
    ("train {text} --dropout 1.5", 2, "--dropout"),
    ("train {text} --precision bf16", 2, "bf16"),
    ("train {text} --val-fraction 0 --patience 2", 2, "no validation data"),
    ("train {text} --val-fraction 0 --schedule plateau", 2, "no validation data"),
    # devices
    ("train {text} --device cuda", 2, "not available"),
    ("train {text} --device cuda:3", 2, "not available"),
    ("train {text} --device mps", 2, "not available"),
    ("train {text} --device tpu", 2, "unknown device"),
    ("evaluate {model} {text} --device cuda", 2, "not available"),
    # where the output goes
    ("train {text} -o {nodir}", 2, "does not exist"),
    ("train {text} -o {proc}", 2, "does not exist"),
    ("train {text} -o {empty}", 2, "not a bptt model file"),
    ("train {text} --metrics {nodir}", 2, "--metrics"),
    # CSV time series
    ("train {empty_csv}", 2, "the file is empty"),
    ("train {header_csv}", 2, "no data rows"),
    ("train {onerow_csv}", 2, "only one data row"),
    ("train {twice_csv}", 2, "named 2 times"),
    ("train {gaps_csv}", 2, "missing value(s) (rows"),
    ("train {inf_csv}", 2, "infinite values"),
    ("train {constant_csv}", 2, "is constant"),
    ("train {allmissing_csv}", 2, "every value is missing"),
    ("train {words_csv}", 2, "no numeric column"),
    ("train {ok_csv} --target nope", 2, "--target 'nope' is not a column"),
    ("train {ok_csv} --features nope", 2, "--features 'nope' is not a column"),
    ("train {ok_csv} --group-column nope", 2, "--group-column 'nope' is not a column"),
    ("train {ok_csv} --window 500", 2, "longer than the data"),
    ("train {ok_csv} --missing sideways", 2, "--missing"),
    ("train {ok_csv} --batch-size 0", 2, "--batch-size"),
    # feature files
    ("train {nan_npy}", 2, "NaN or infinite"),
    ("train {nofeatures_npz}", 2, "no 'features' array"),
    ("train {garbage_npy}", 2, "not a readable numpy file"),
    ("train {broken_ts}", 2, "values must be numbers"),
    ("train {nothing}", 2, "holds no .npy"),
    ("train {nothing}/*.npy", 2, "matches no"),
    ("train {nan_npy} --labels {labels_csv}", 2, "--labels"),
    ("train {nan_npy} --labels {missing}", 2, "--labels"),
    # model files from elsewhere
    ("generate {missing}", 2, "no such model file"),
    ("generate {text}", 2, "not a bptt model file"),
    ("generate {random_pt}", 2, "not a bptt model file"),
    ("generate {truncated_pt}", 2, "not a bptt model file"),
    ("generate {newer_pt}", 2, "upgrade bptt"),
    ("generate {wrong_shape_pt}", 2, "damaged"),
    ("generate {evil_pt}", 2, "not plain data"),
    ("evaluate {evil_pt} {text}", 2, "not plain data"),
    ("evaluate {model} {binary}", 2, "binary"),
    ("evaluate {model} {missing}", 2, "no such file"),
    ("evaluate {model} {empty}", 2, "empty"),
    # generation
    ("generate {model} --length -1", 2, "--length"),
    ("generate {model} --top-p 2", 2, "--top-p"),
    ("generate {model} --temperature -0.5", 2, "--temperature"),
    # gradcheck
    ("gradcheck {model} {short} --window 500", 2, "window"),
    ("gradcheck {evil_pt}", 2, "not plain data"),
    ("gradcheck --hidden 0", 2, "--hidden"),
    ("gradcheck --windows 1,x", 2, "--windows"),
]


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    """The table's bf16 case is about a CPU without bf16, whatever CPU runs the tests."""
    import bptt_cli.device

    monkeypatch.setattr(bptt_cli.device, "cpu_has_bf16", lambda: False)


@pytest.mark.parametrize("command, code, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, tiny_model, run, cpu_without_bf16, command, code, needle):
    files = make_files(tmp_path, tiny_model)
    args = [a.format(**files) for a in command.split()]
    if args[0] == "train":  # a tiny run, with the case's own options last so that they win
        args = [*args[:2], *TINY, "--max-steps", "2", "-o", str(files["out"]), *args[2:]]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    exit_code, stdout, stderr = run(*args)
    assert exit_code == code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in stderr and "the payload ran" not in stdout + stderr
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing created, nothing changed


def test_a_full_disk_leaves_no_model_file_and_says_so(tmp_path, tiny_text, run, monkeypatch):
    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "m.pt"
    code, _, stderr = run("train", tiny_text, "-o", out, *TINY, "--max-steps", "2", "--no-cache")
    assert code == 2 and stderr.strip().splitlines()[-1].endswith(
        "cannot write it (No space left on device); free some space or choose another path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.txt"]


def test_a_prime_outside_the_vocabulary_fails_before_any_output(tiny_model, run):
    code, stdout, stderr = run("generate", tiny_model, "--prime", "ROMEO\u20ac")
    assert code == 2 and stdout == "" and "not in the model's vocabulary: '\u20ac'" in stderr


SERIES_MODEL_CASES = [
    ("evaluate {series_model} {other_csv}", "not a column"),
    ("evaluate {series_model} {empty_csv}", "the file is empty"),
    ("generate {series_model} --context {other_csv}", "not a column"),
    ("generate {series_model} --horizon 0", "--horizon"),
    ("generate {series_model} -o {nodir}", "not a writable file path"),
    ("generate {series_model} --prime hello", "--prime"),
    ("gradcheck {series_model} {ok_csv} --window 500", "longer than the data"),
    ("gradcheck {series_model} {text}", "not a readable CSV"),
]


@pytest.fixture(scope="module")
def series_model(tmp_path_factory):
    """A forecaster trained for two updates on the small hourly CSV."""
    from typer.testing import CliRunner

    from bptt_cli.cli import app

    folder = tmp_path_factory.mktemp("series")
    data = folder / "ok.csv"
    data.write_text(SERIES_FILES["ok_csv"])
    out = folder / "series.pt"
    result = CliRunner().invoke(app, ["train", str(data), "-o", str(out), "--hidden", "8", "--layers", "1",
                                      "--batch-size", "2", "--window", "5", "--max-steps", "2"])
    assert result.exit_code == 0, result.stderr
    return out


@pytest.mark.parametrize("command, needle", SERIES_MODEL_CASES, ids=[c[0] for c in SERIES_MODEL_CASES])
def test_bad_input_for_a_series_model(tmp_path, tiny_model, series_model, run, command, needle):
    files = make_files(tmp_path, tiny_model)
    files["series_model"] = tmp_path / "series.pt"
    files["series_model"].write_bytes(series_model.read_bytes())
    files["other_csv"] = tmp_path / "other.csv"
    files["other_csv"].write_text(hours("{h}", header="time,x"))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    exit_code, stdout, stderr = run(*[a.format(**files) for a in command.split()])
    assert exit_code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
