"""Sequences of feature frames: .npy, .npz, .wav, sktime/aeon .ts, a directory or a glob of them.

Each file (each case of a .ts file) is one sequence of frames (L, F). WAV
files become log-mel or MFCC frames through librosa, an optional extra
(``pip install 'bptt[audio]'``), rather than hand-written signal processing.
Labels come from ``--labels labels.csv`` (one per file), from a .ts file (one
per case) or from an .npz ``labels`` array (one per frame).
"""

from __future__ import annotations

import glob
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bptt_cli.errors import BpttError
from bptt_cli.feature_cache import cached_frames
from bptt_cli.input_paths import check_input
from bptt_cli.series import check_scale

SUFFIXES = (".npy", ".npz", ".wav")  # what a directory or a glob yields; a .ts file is named on its own
FEATURES = ("logmel", "mfcc")


@dataclass
class FeatureSettings:
    """How WAV files become frames; stored in the model file so later files get the same features."""

    kind: str = "logmel"  # logmel | mfcc
    n_mels: int = 40  # mel bands (also the bands MFCCs are computed from)
    n_mfcc: int = 13  # coefficients per frame (mfcc only)
    hop_ms: float = 10.0  # frame step
    win_ms: float = 25.0  # analysis window
    sample_rate: int | None = None  # resample to this rate; None: the first file's rate (then fixed)
    cmvn: bool = False  # each sequence's frames to zero mean, unit variance per feature (any feature file)
    deltas: bool = False  # append each feature's change from frame to frame: twice the features
    trim_db: float | None = None  # WAV: cut leading and trailing audio this many dB below the peak; 0 or None: keep it

    def __post_init__(self) -> None:
        if self.trim_db == 0:  # --trim-db 0 turns off a kind's default: one spelling of "no trimming", kept as None
            self.trim_db = None

    def validate(self) -> None:
        if self.kind not in FEATURES:
            raise BpttError(f"--features for WAV files is one of {', '.join(FEATURES)}, got {self.kind!r}")
        if self.trim_db is not None and not self.trim_db > 0:
            raise BpttError(f"--trim-db must be positive (dB below the loudest frame), or 0 to keep the silence, got {self.trim_db}")
        if self.n_mels < 1 or self.n_mfcc < 1:
            raise BpttError(f"--n-mels must be at least 1, got {self.n_mels}")
        if not 0 < self.hop_ms <= self.win_ms:
            raise BpttError(f"--hop-ms must be positive and at most --win-ms ({self.win_ms}), got {self.hop_ms}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AudioData:
    """Sequences read from feature files, with whatever labels came with them."""

    names: list[str]  # a file name, or "file.ts#case" for .ts cases
    frames: list[np.ndarray]  # per sequence (L, F) float64
    task: str  # forecast (next frame) | frame (a label per frame) | sequence (one label per sequence)
    labels: list[np.ndarray] | None  # per sequence: (L,) int64 for frame labels, (1,) int64 for a sequence label
    classes: list[str] | None
    notes: list[str]


def is_audio_path(text: str | Path) -> bool:
    """True for what the audio loader reads: feature files, a directory, or a glob pattern."""
    path = Path(text)
    return path.suffix.lower() in (*SUFFIXES, ".ts") or path.is_dir() or any(c in str(text) for c in "*?[")


def list_files(text: str | Path) -> list[Path]:
    """The files a DATA argument names, sorted so every run sees them in the same order."""
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
        if not files:
            raise BpttError(f"{path}: the directory holds no .npy, .npz or .wav file; name a .ts file directly")
        return files
    if any(c in str(text) for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(text), recursive=True)
                       if Path(p).suffix.lower() in (*SUFFIXES, ".ts") and Path(p).is_file())
        if not files:
            raise BpttError(f"{text}: the pattern matches no .npy, .npz, .wav or .ts file; check it")
        return files
    if not path.exists():
        raise BpttError(f"{path}: no such file or directory; check the path")
    return [check_input(path)]


def _need_librosa():
    try:
        import librosa
    except ImportError:
        raise BpttError("reading .wav files needs the audio extra: pip install 'bptt[audio]'") from None
    return librosa


def read_wav(path: Path, settings: FeatureSettings, cache: Path | None = None) -> np.ndarray:
    """Log-mel or MFCC frames (L, F) of a WAV file, at the settings' sample rate (the file's own when none is set,
    which then becomes the settings'); kept in and read from the feature cache ``cache`` (None: computed)."""
    frames, rate = cached_frames(path, settings.to_dict(), cache, lambda: _wav_frames(path, settings))
    if settings.sample_rate is None:  # kept under the rate it fixes too, which the model file stores
        settings.sample_rate = rate
        cached_frames(path, settings.to_dict(), cache, lambda: (frames, rate))
    return frames.astype(np.float64)


def _wav_frames(path: Path, settings: FeatureSettings) -> tuple[np.ndarray, int]:
    """``read_wav``'s frames computed with librosa, and the rate they were computed at."""
    librosa = _need_librosa()
    with open(path, "rb") as handle:
        head = handle.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        raise BpttError(f"{path}: not a WAV file (no RIFF/WAVE header); give PCM .wav recordings or .npy frames")
    try:
        with warnings.catch_warnings():  # soundfile's fallback to audioread warns on stderr: one error line only
            warnings.simplefilter("ignore")
            signal, rate = librosa.load(path, sr=settings.sample_rate, mono=True)
    except Exception as err:  # soundfile and audioread raise many types for a bad file
        reason = str(err).splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise BpttError(f"{path}: not a readable WAV file ({reason}); it may be truncated") from None
    if settings.trim_db is not None:  # silence after a word is frames a label-on-the-last-frame model must wait out
        signal, _ = librosa.effects.trim(signal, top_db=settings.trim_db)
    n_fft = max(16, int(round(settings.win_ms * rate / 1000)))
    hop = max(1, int(round(settings.hop_ms * rate / 1000)))
    if len(signal) < n_fft:
        raise BpttError(f"{path}: {len(signal)} samples is shorter than one {settings.win_ms} ms window; "
                        "give a longer recording or a smaller --win-ms")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. empty mel bands for a low sample rate: the frames still come
            if settings.kind == "mfcc":
                frames = librosa.feature.mfcc(y=signal, sr=rate, n_mfcc=settings.n_mfcc, n_fft=n_fft, hop_length=hop,
                                              n_mels=settings.n_mels, center=False)
            else:
                power = librosa.feature.melspectrogram(y=signal, sr=rate, n_fft=n_fft, hop_length=hop,
                                                       n_mels=settings.n_mels, center=False)
                frames = np.log(power + 1e-10)
    except (IndexError, ValueError) as err:  # what the decoder's odd output makes the feature code raise
        raise BpttError(f"{path}: no {settings.kind} features from this recording ({str(err)[:100]}); "
                        "check the file and --n-mels / --hop-ms") from None
    return np.ascontiguousarray(frames.T), int(rate)  # (L, F) as librosa computes them (float32): the cache keeps these


def per_sequence(frames: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """``--cmvn`` and ``--deltas`` on one sequence's frames (L, F).

    Mean and variance normalisation per sequence takes out what a voice or a channel
    adds to every frame alike (a louder recording, another vocal tract's spectral
    tilt); a feature that does not vary in the sequence is only centred. Deltas
    (numpy's central differences) give the model the frames' slopes directly.
    """
    if settings.cmvn:
        spread = frames.std(axis=0)
        frames = (frames - frames.mean(axis=0)) / np.where(spread > 1e-8 * (1 + np.abs(frames).max(axis=0)), spread, 1.0)
    if settings.deltas:
        frames = np.concatenate([frames, np.gradient(frames, axis=0)], axis=1)
    return frames


def read_array(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Frames (L, F) of a .npy file, or of an .npz file's ``features`` with its optional per-frame ``labels``."""
    unreadable = BpttError(f"{path}: not a readable numpy file; save the frames with numpy.save "
                           "(an array of frames x features, no Python objects)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception:
        raise unreadable from None
    labels = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if "features" not in loaded.files:
                raise BpttError(f"{path}: the .npz file has no 'features' array (it has: {', '.join(loaded.files)}); "
                                "save the frames as features=")
            try:  # members are only read here: an object array (pickled Python) is refused now
                frames = loaded["features"]
                labels = loaded["labels"] if "labels" in loaded.files else None
            except Exception:
                raise unreadable from None
    else:
        frames = loaded
    if frames.ndim == 1:
        frames = frames[:, None]
    if frames.ndim != 2 or frames.dtype.kind not in "iuf":
        raise BpttError(f"{path}: features must be a numeric array of frames x features, got shape {frames.shape} "
                        f"of {frames.dtype}")
    if frames.shape[1] == 0:
        raise BpttError(f"{path}: the frames have no features (shape {frames.shape}); save frames x features")
    if labels is not None and (labels.ndim != 1 or len(labels) != len(frames)):
        raise BpttError(f"{path}: 'labels' must hold one label per frame ({len(frames)}), got shape {labels.shape}")
    return frames.astype(np.float64), labels


def read_ts(path: Path) -> tuple[list[np.ndarray], list[str] | None]:
    """The cases of an sktime/aeon .ts file: frames (L, D) each, and their class labels if it has them."""
    header: dict[str, str] = {}
    cases: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    with path.open(encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    for number, line in enumerate(lines, 1):  # one iteration per case: each line holds a whole sequence
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if line.lower().startswith("@data"):
                in_data = True
            elif line.startswith("@"):
                key, _, value = line[1:].partition(" ")
                header[key.lower()] = value.strip()
            continue
        has_label = header.get("classlabel", "false").lower().startswith("true")
        parts = line.split(":")
        if has_label:
            labels.append(parts.pop().strip())
        if "(" in line:
            raise BpttError(f"{path}: line {number}: timestamped .ts values are not supported; export them without times")
        try:
            dims = [np.array(d.split(","), dtype=np.float64) for d in parts]
        except ValueError:
            raise BpttError(f"{path}: line {number}: values must be numbers separated by ',' and ':'") from None
        if len({len(d) for d in dims}) != 1:
            raise BpttError(f"{path}: line {number}: the dimensions have different lengths; pad them to one length")
        cases.append(np.stack(dims, axis=1))
    if not in_data:
        raise BpttError(f"{path}: not a .ts file (no @data line); see the sktime/aeon .ts format")
    if not cases:
        raise BpttError(f"{path}: the .ts file has no cases after @data; add data")
    return cases, (labels if labels else None)


def read_labels(path: str | Path) -> dict[str, str]:
    """``file,label`` rows; ``file`` is relative to the CSV's folder or absolute. Keys are resolved paths."""
    path = Path(path)
    if not path.exists():
        raise BpttError(f"--labels {path}: no such file; give a CSV with columns file,label")
    check_input(path, "--labels")
    try:
        table = pd.read_csv(path, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise BpttError(f"--labels {path}: not a readable CSV ({str(err).splitlines()[0][:120]})") from None
    table.columns = [c.strip().lower() for c in table.columns]
    if not {"file", "label"} <= set(table.columns):
        raise BpttError(f"--labels {path}: needs columns 'file' and 'label', has {', '.join(table.columns)}")
    if table.empty or table[["file", "label"]].isna().any().any():
        raise BpttError(f"--labels {path}: every row needs a file and a label; fill the empty cells")
    files = [str((path.parent / f).resolve()) for f in table["file"].str.strip()]
    twice = pd.Series(files)[pd.Series(files).duplicated()]
    if len(twice):
        raise BpttError(f"--labels {path}: file {twice.iloc[0]} is listed twice; give each file one label")
    return dict(zip(files, table["label"].str.strip()))


def _class_ids(values: list[str] | np.ndarray, classes: list[str] | None, where: str) -> tuple[np.ndarray, list[str]]:
    """Labels to ids in ``classes`` (when training: sorted, numbers in numeric order)."""
    text = np.asarray(values).astype(str)
    unique = np.unique(text).tolist()
    if classes is None:
        if len(unique) < 2:
            raise BpttError(f"{where}: every label is {unique[0]!r}; a classifier cannot learn from one class: "
                            "give sequences of 2 or more classes")
        classes = sorted(unique, key=lambda v: (0, float(v), v) if _is_number(v) else (1, 0.0, v))
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = [u for u in unique if u not in lookup]
    if unknown:
        raise BpttError(f"{where}: label(s) {', '.join(unknown[:5])} were not seen in training; "
                        f"the model knows {', '.join(classes[:10])}")
    return pd.Series(text).map(lookup).to_numpy(dtype=np.int64), classes


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _labelled(files: list[Path], label_of: dict[str, str], labels, data, notes: list[str]) -> list[Path]:
    """The files that ``--labels`` lists (a note says how many are left out)."""
    listed = [f for f in files if str(f.resolve()) in label_of]
    if not listed:
        raise BpttError(f"--labels {labels}: none of the {len(files)} file(s) of {data} is listed; "
                        "the file column is relative to the labels CSV's folder")
    if len(files) > len(listed):
        notes.append(f"{len(files) - len(listed)} file(s) of {data} have no label in {labels} and are left out")
    return listed


def _check_frames(names: list[str], frames: list[np.ndarray]) -> None:
    """One width for all, at least 2 frames each, every value finite and of a scale that can be normalised."""
    widths = {f.shape[1] for f in frames}
    if len(widths) > 1:
        first = frames[0].shape[1]
        odd = next(i for i, f in enumerate(frames) if f.shape[1] != first)
        raise BpttError(f"{names[odd]}: {frames[odd].shape[1]} features per frame, but {names[0]} has {first}; "
                        "every file needs the same features")
    for name, array in zip(names, frames):
        if len(array) < 2:
            raise BpttError(f"{name}: {len(array)} frame(s); a sequence needs at least 2")
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
        if len(bad):
            raise BpttError(f"{name}: frame {int(bad[0])} holds NaN or infinite values ({len(bad)} frame(s) in all); "
                            "fix the features")
        check_scale(array, [f"feature {i}" for i in range(array.shape[1])], name)


def load_audio(data: str | Path, labels: str | Path | None = None, settings: FeatureSettings | None = None,
               classes: list[str] | None = None, cache: Path | None = None) -> AudioData:
    """Read every sequence DATA names, check it, and attach its labels; WAV frames through the feature cache
    folder ``cache`` (None: computed every time)."""
    settings = settings or FeatureSettings()
    files = list_files(data)
    notes: list[str] = []
    label_of = read_labels(labels) if labels is not None else None
    if label_of is not None:
        files = _labelled(files, label_of, labels, data, notes)
    names, frames, frame_labels, sequence_labels = [], [], [], []
    for path in files:  # one iteration per file
        suffix = path.suffix.lower()
        if suffix == ".ts":
            cases, ts_labels = read_ts(path)
            names += [f"{path.name}#{i}" for i in range(len(cases))]
            frames += cases
            if ts_labels is not None and label_of is None:
                sequence_labels += ts_labels
            continue
        if suffix == ".wav":
            settings.validate()
            frames.append(read_wav(path, settings, cache))
        elif suffix in (".npy", ".npz"):
            array, per_frame = read_array(path)
            frames.append(array)
            if per_frame is not None:
                frame_labels.append((path, per_frame))
        else:
            raise BpttError(f"{path}: unknown feature file type {suffix!r}; use .npy, .npz, .wav or .ts")
        names.append(path.name)
        if label_of is not None:
            sequence_labels.append(label_of[str(path.resolve())])
    _check_frames(names, frames)
    frames = [per_sequence(f, settings) for f in frames]  # one call per sequence, vectorised over its frames
    if sequence_labels and len(sequence_labels) != len(frames):
        raise BpttError(f"{data}: some sequences have labels and some do not; label all of them or none")
    if frame_labels and (sequence_labels or len(frame_labels) != len(frames)):
        raise BpttError(f"{data}: mix of .npz files with and without per-frame 'labels'; give all or none")
    if sequence_labels:
        ids, classes = _class_ids(sequence_labels, classes, str(labels or data))
        return AudioData(names, frames, "sequence", [ids[i : i + 1] for i in range(len(ids))], classes, notes)
    if frame_labels:
        text = np.concatenate([per_frame.astype(str) for _, per_frame in frame_labels])
        ids, classes = _class_ids(text, classes, str(data))
        return AudioData(names, frames, "frame", np.split(ids, np.cumsum([len(f) for f in frames])[:-1]), classes, notes)
    return AudioData(names, frames, "forecast", None, None, notes)
