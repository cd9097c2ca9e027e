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
    paths.update(hostile_files(folder, tiny_model))
    paths["missing"] = folder / "missing.txt"
    paths["nodir"] = folder / "no" / "such" / "m.pt"
    paths["out"] = folder / "out.pt"
    paths["proc"] = Path("/proc/bptt-test/m.pt")
    return paths


def hours(values: str, n: int = 24, header: str = "time,a,b") -> str:
    """A small hourly CSV; ``values`` is a format with {h} for the hour."""
    return header + "\n" + "\n".join(f"2024-01-01 {h:02d}:00," + values.format(h=h, m=h % 3) for h in range(n)) + "\n"


def hours_with(row: int, value: str, column: int = 1, n: int = 24) -> str:
    """The small hourly CSV with one field of one row replaced."""
    lines = hours("{h},{m}", n).splitlines()
    fields = lines[row + 1].split(",")
    fields[column] = value
    lines[row + 1] = ",".join(fields)
    return "\n".join(lines) + "\n"


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
    "onetext_csv": hours_with(5, "oops"),
    "baddate_csv": hours_with(7, "2024-13-45 99:00", column=0),
    "huge_csv": "time,a,b\n" + "".join(f"2024-01-01 {h:02d}:00,{(-1) ** h * 1.7e308},{h}\n" for h in range(24)),
    "zones_csv": "time,a\n" + "".join(f"2024-03-01 {h:02d}:00{'+01:00' if h < 12 else '+02:00'},{h}\n" for h in range(24)),
    "oneclass_csv": hours("{h},x", header="time,a,label"),
}
FEATURE_FILES = {
    "nan_npy": np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]]),
    "nofeatures_npz": np.zeros((5, 2)),
}


def crafted_model(folder: Path, tiny_model: Path, name: str, change) -> Path:
    """The tiny model's payload with one field damaged by ``change(payload)``."""
    payload = torch.load(tiny_model, weights_only=True)
    change(payload)
    torch.save(payload, folder / name)
    return folder / name


def first_nan(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.clone()
    tensor.view(-1)[0] = float("nan")
    return tensor


def flipped(source: bytes) -> bytes:
    """The file with one bit flipped inside its first tensor: a finite number still, only the CRC-32 tells."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(source)) as archive:
        part = next(i for i in archive.infolist() if "/data/" in i.filename)
    raw, at = bytearray(source), part.header_offset
    raw[at + 30 + int.from_bytes(raw[at + 26 : at + 28], "little") + int.from_bytes(raw[at + 28 : at + 30], "little") + 1] ^= 0x10
    return bytes(raw)


def crafted_checkpoint(folder: Path, tiny_model: Path, name: str, change) -> Path:
    """``name``.pt.ckpt: the tiny run's own checkpoint with its training state damaged by ``change``."""
    payload = torch.load(tiny_model.with_name(tiny_model.name + ".ckpt"), weights_only=True)
    change(payload["training"])
    torch.save(payload, folder / f"{name}.pt.ckpt")
    return folder / f"{name}.pt"


def hostile_files(folder: Path, tiny_model: Path) -> dict[str, Path]:
    """Files a hostile user makes: non-regular files, degenerate data, crafted models and checkpoints."""
    import os

    paths = {"fifo": folder / "fifo.txt", "fifo_csv": folder / "fifo.csv", "devzero": Path("/dev/zero")}
    os.mkfifo(paths["fifo"])
    os.mkfifo(paths["fifo_csv"])
    texts = {"onechar": "a" * 3000, "oneword": "word " * 600, "precious": "keep me"}
    for name, text in texts.items():
        paths[name] = folder / f"{name}.txt"
        paths[name].write_text(text)
    paths["usermodel"] = folder / "usermodel.pt"  # its checkpoint path holds the user's own file
    (folder / "usermodel.pt.ckpt").write_text("my own file, not a checkpoint")
    paths["locked"] = folder / "locked.pt"
    (folder / "locked.pt.lock").symlink_to(paths["precious"])
    paths["badmetrics_csv"] = folder / "badmetrics.csv"
    paths["badmetrics_csv"].write_bytes(b"kind,step\ntrain,\xff\xfe\n")
    paths["sparse_csv"] = folder / "sparse.csv"
    with open(paths["sparse_csv"], "wb") as sparse:
        sparse.truncate(1 << 22)  # a file of NUL bytes, as a sparse file reads
    paths["longfield_csv"] = folder / "longfield.csv"
    paths["longfield_csv"].write_text("time,a" + "x" * 200_000 + "\n" + "2024-01-01,1\n2024-01-02,2\n")
    paths["object_npz"] = folder / "object.npz"
    np.savez(paths["object_npz"], features=np.array([[1, "a"], [2, "b"]], dtype=object))
    paths["zerofeat_npy"] = folder / "zerofeat.npy"
    np.save(paths["zerofeat_npy"], np.zeros((5, 0)))
    paths["huge_npy"] = folder / "huge.npy"
    np.save(paths["huge_npy"], np.array([[1.7e308], [-1.7e308], [1.7e308]]))
    paths["notwav_wav"] = folder / "notwav.wav"
    paths["notwav_wav"].write_text("hello, this is text and not a recording " * 10)
    paths["truncated_wav"] = folder / "truncated.wav"
    paths["truncated_wav"].write_bytes(b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00")
    paths["oneclass"] = folder / "oneclass"
    paths["oneclass"].mkdir()
    for i in range(3):
        np.save(paths["oneclass"] / f"s{i}.npy", np.arange(12.0).reshape(6, 2) * (i + 1))
    (paths["oneclass"] / "labels.csv").write_text("file,label\ns0.npy,a\ns1.npy,a\ns2.npy,a\n")
    paths["oneclass_labels"] = paths["oneclass"] / "labels.csv"
    paths["png"] = folder / "curves.png"  # never created: every plot case fails first
    paths["textpng"] = folder / "notes.png"
    paths["textpng"].write_text("my notes, not a picture")
    paths["metrics_jsonl"] = folder / "m.jsonl"
    paths["metrics_jsonl"].write_text("".join(f'{{"kind": "train", "step": {s}, "train_loss": {4 - s / 10}}}\n'
                                              for s in range(1, 6)))
    paths["badrecord_jsonl"] = folder / "bad.jsonl"
    paths["badrecord_jsonl"].write_text('{"kind": "train", "step": 1, "train_loss": 2}\n{"kind": "train", "step": \n')
    paths["oneclass_ts"] = folder / "oneclass.ts"
    paths["oneclass_ts"].write_text("@problemName x\n@classLabel true a b\n@data\n1,2,3,4:a\n2,3,4,1:a\n3,1,2,4:a\n")
    weights = lambda change: lambda p: p["weights"].update(change(p["weights"]))  # noqa: E731
    models = {
        "nanweights_pt": weights(lambda w: {"decoder.bias": first_nan(w["decoder.bias"])}),
        "hidden6000_pt": lambda p: p["model_config"].update(hidden=6000),
        "hiddentext_pt": lambda p: p["model_config"].update(hidden="16"),
        "nomodelconfig_pt": lambda p: p.pop("model_config"),
        "longtokenizer_pt": lambda p: p["tokenizer"]["vocab"].append("\u20ac"),
        "nowidth_pt": weights(lambda w: {"rnn.weight_hh_l0": w["rnn.weight_hh_l0"][:, :3]}),
        "badcell_pt": lambda p: p["model_config"].update(cell="transformer"),
        "listweights_pt": lambda p: p.update(weights=[1, 2, 3]),
    }
    for name, change in models.items():
        paths[name] = crafted_model(folder, tiny_model, name.replace("_pt", ".pt"), change)
    paths["flipped_pt"] = folder / "flipped.pt"
    paths["flipped_pt"].write_bytes(flipped(tiny_model.read_bytes()))
    position = lambda **values: lambda t: t["position"].update(values)  # noqa: E731
    checkpoints = {
        "negstep": position(step=-1),
        "farwindow": position(window_index=10**9),
        "nanckpt": lambda t: t["weights"].update({"decoder.bias": first_nan(t["weights"]["decoder.bias"])}),
        "narrowstate": lambda t: t.update(carried_state=[s[:, :, :3] for s in t["carried_state"]]),
        "noposition": lambda t: t.pop("position"),
    }
    for name, change in checkpoints.items():
        paths[f"{name}_run"] = crafted_checkpoint(folder, tiny_model, name, change)
    return paths


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
    ("evaluate {model} {text} --precision bf16", 2, "no bf16 arithmetic"),
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
    # data that is not a regular file: a clear line, never a hang, never "no such file"
    ("train {fifo}", 2, "is a FIFO"),
    ("train {fifo_csv}", 2, "is a FIFO"),
    ("train {devzero}", 2, "is a character device"),
    ("evaluate {model} {fifo}", 2, "is a FIFO"),
    ("evaluate {model} {devzero}", 2, "is a character device"),
    ("generate {fifo}", 2, "is a FIFO"),
    ("gradcheck {model} {fifo}", 2, "is a FIFO"),
    ("train {nan_npy} --labels {fifo}", 2, "is a FIFO"),
    # degenerate data: nothing to learn
    ("train {onechar}", 2, "one char ('a') repeated"),
    ("train {onechar} --tokenizer byte", 2, "one byte (b'a') repeated"),
    ("train {oneword} --tokenizer word", 2, "one word ('word') repeated"),
    ("train {oneclass} --labels {oneclass_labels}", 2, "every label is 'a'"),
    ("train {oneclass_ts}", 2, "every label is 'a'"),
    ("train {oneclass_csv} --task tag --target label", 2, "holds one class only"),
    # CSVs read wrongly before
    ("train {onetext_csv}", 2, "holds numbers but also 'oops'"),
    ("train {baddate_csv}", 2, "holds dates, but 1 value(s) are not"),
    ("train {huge_csv}", 2, "too large to normalise"),
    ("train {zones_csv}", 2, "mixes time zones"),
    ("train {sparse_csv}", 2, "holds NUL bytes"),
    ("train {longfield_csv}", 2, "not a readable CSV header"),
    # feature files read wrongly before
    ("train {object_npz}", 2, "not a readable numpy file"),
    ("train {zerofeat_npy}", 2, "no features"),
    ("train {huge_npy}", 2, "too large to normalise"),
    ("train {notwav_wav}", 2, "not a WAV file"),
    ("train {truncated_wav}", 2, "not a readable WAV file"),
    # outputs that must never be written
    ("train {text} -o {usermodel}", 2, "not a bptt checkpoint"),
    ("train {text} -o {locked}", 2, "is a symbolic link"),
    ("train {text} -o {text}", 2, "is the input"),
    ("train {text} -o {fifo}", 2, "not a regular file"),
    ("train {text} -o {nothing}", 2, "is a directory"),
    ("train {text} --metrics {text}", 2, "is the input"),
    ("train {text} --metrics {model}", 2, "is a bptt model file"),
    ("train {text} --metrics {nothing}", 2, "is a directory"),
    ("train {text} --metrics {ok_csv}", 2, "not CSV metrics"),
    ("train {text} --metrics {badmetrics_csv}", 2, "not a readable UTF-8 CSV"),
    ("train {text} --cache-dir {text}", 2, "is a file, not a directory"),
    # crafted model files: one "damaged" line, whatever the command
    ("generate {nanweights_pt}", 2, "holds NaN or infinite values"),
    ("evaluate {hidden6000_pt} {text}", 2, "the declared model needs"),
    ("generate {hiddentext_pt}", 2, "hidden is '16'"),
    ("gradcheck {nomodelconfig_pt}", 2, "model_config is not a mapping"),
    ("generate {longtokenizer_pt}", 2, "the tokenizer has"),
    ("evaluate {nowidth_pt} {text}", 2, "has shape"),
    ("generate {badcell_pt}", 2, "cell 'transformer'"),
    ("generate {listweights_pt}", 2, "weights are not a mapping"),
    ("evaluate {flipped_pt} {text}", 2, "do not match their checksum"),
    # plot
    ("plot {missing} -o {png}", 2, "no such metrics file"),
    ("plot {fifo} -o {png}", 2, "is a FIFO"),  # it hung, waiting for a writer
    ("plot {binary} -o {png}", 2, "not a text file"),
    ("plot {empty} -o {png}", 2, "is empty"),
    ("plot {text} -o {png}", 2, "neither JSON lines nor CSV"),
    ("plot {metrics_jsonl} -o {metrics_jsonl}", 2, "end the name in .png or .svg"),
    ("plot {nothing} -o {png}", 2, "is a directory"),
    ("plot {badrecord_jsonl} -o {png}", 2, "bad.jsonl"),
    ("plot {metrics_jsonl} -o {nothing}", 2, "-o"),
    ("plot {metrics_jsonl} -o {model}", 2, "end the name in .png or .svg"),
    ("plot {metrics_jsonl} -o {png} --size 5x5", 2, "picture size"),
    # crafted checkpoints: refused before the run resumes
    ("train {text} -o {negstep_run} --resume", 2, "position step is -1"),
    ("train {text} -o {farwindow_run} --resume", 2, "window_index 1000000000 is beyond"),
    ("train {text} -o {nanckpt_run} --resume", 2, "weight decoder.bias holds NaN"),
    ("train {text} -o {narrowstate_run} --resume", 2, "wide in hidden"),
    ("train {text} -o {noposition_run} --resume", 2, "lacks position"),
]

CASES += [  # checks the commands make before any work
    ("generate {model} --temperature nan", 2, "--temperature"),
    ("generate {model} --temperature 1e-45", 2, "--temperature"),
    ("generate {model} --seed -1", 2, "--seed"),
    ("train {text} --seed 1180591620717411303424", 2, "--seed"),
    ("train {text} --labels {labels_csv}", 2, "--labels"),
    ("gradcheck --plot {model}", 2, "bptt model file"),
    ("plot {metrics_jsonl} -o {textpng}", 2, "not a PNG picture"),
]


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    """The table's bf16 cases are about a CPU without bf16, whatever CPU runs the tests."""
    import bptt_cli.device

    monkeypatch.setattr(bptt_cli.device, "cpu_has_bf16", lambda: False)


@pytest.mark.parametrize("command, code, needle", CASES, ids=[c[0] if isinstance(c, tuple) else c.id for c in CASES])
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
    ("generate {series_model} --horizon 1000000000", "1,000,000,000-step forecast"),
    ("generate {series_model} -o {nodir}", "not a writable file path"),
    ("generate {series_model} --prime hello", "--prime"),
    ("evaluate {series_model} {ok_csv} --precision bf16", "--precision bf16 is for text models"),
    ("gradcheck {series_model} {ok_csv} --window 500", "longer than the data"),
    ("gradcheck {series_model} {text}", "not a readable CSV"),
    ("evaluate {series_model} {baddate_csv}", "1 value(s) are not dates (rows 9)"),
    ("generate {series_model} --context {zones_csv}", "mixes time zones"),
    ("evaluate {series_model} {fifo_csv}", "is a FIFO"),
    ("generate {series_model} -o {series_model}", "is the input"),
    ("generate {series_model} -o {model}", "is a bptt model file"),
    ("generate {series_model} -o {ok_csv} --context {ok_csv}", "is the input"),
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


@pytest.mark.parametrize("command, needle", SERIES_MODEL_CASES,
                         ids=[c[0] if isinstance(c, tuple) else c.id for c in SERIES_MODEL_CASES])
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
