"""Feature sequences: .npy/.npz frames, WAV files as log-mel or MFCC frames, and .ts cases.

Each file (or .ts case) is one sequence; tasks are next-frame forecasting,
per-frame labels (.npz) and one label per sequence (--labels or .ts).
"""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass
from pathlib import Path

from bptt_cli.audio import SUFFIXES, FeatureSettings, list_files, load_audio
from bptt_cli.choices import LABELLED_WAV_DEFAULTS, WHOLE_SEQUENCE_UPDATES
from bptt_cli.errors import BpttError
from bptt_cli.kinds.base import kind_option, table_defaults
from bptt_cli.kinds.sequences import SequenceKind, Sequences
from bptt_cli.token_cache import cache_folder

FEATURE_SUFFIXES = (*SUFFIXES, ".ts")


@dataclass
class AudioOptions:
    """The options of ``bptt train`` for feature files (named as the command names its parameters)."""

    features: list[str] = kind_option(default_factory=list, shape=True)  # [logmel] or [mfcc], WAV files only
    labels: Path | None = None  # labels.csv: one class per file
    loss: str = "mse"  # next-frame loss
    season: int | None = None
    n_mels: int = kind_option(40, shape=True)
    n_mfcc: int = kind_option(13, shape=True)
    hop_ms: float = 10.0
    win_ms: float = 25.0
    cmvn: bool = False  # per-sequence mean and variance normalisation of the frames
    deltas: bool = kind_option(False, shape=True)  # frames' slopes appended: twice the inputs
    trim_db: float | None = None  # WAV: leading and trailing silence cut
    bidirectional: bool = kind_option(False, shape=True)  # labelled sequences only, with --window 0
    augment: str | None = None  # training batches of labelled sequences: stretch, time-mask, freq-mask, warp
    target_replication: bool = False  # one label per sequence: trained on every frame, not only the last
    cache_dir: Path | None = kind_option(None, resume=False)  # where WAV features are kept (feature_cache.py)
    no_cache: bool = kind_option(False, resume=False)  # compute WAV features every time, keep none


def holds_wav(data: str | Path) -> bool:
    """Whether DATA names WAV recordings; a path that names nothing is left to the read to report."""
    try:
        return any(p.suffix.lower() == ".wav" for p in list_files(data))
    except (BpttError, OSError):
        return False


def is_pattern(data: str | Path) -> bool:
    return any(c in str(data) for c in "*?[")


def pattern_files(pattern: str | Path) -> list[Path]:
    """The regular files a glob pattern matches (``**`` reaches into folders), sorted."""
    return sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())


class AudioKind(SequenceKind, name="audio", what="feature files", holds="feature sequences", options=AudioOptions):
    reads_frames = True  # ``bptt predict`` takes its frames from a file, not from stdin

    def defaults(self, values: dict, untouched: set[str]) -> dict:
        """WAV recordings with one label each take LABELLED_WAV_DEFAULTS (choices.py) where they are left untouched."""
        if not values.get("labels") or not holds_wav(values["data"]):
            return {}
        found = table_defaults(LABELLED_WAV_DEFAULTS, values, untouched)
        if "window" not in untouched and values.get("window") not in (0, "0"):  # augmentation is for whole sequences
            found.pop("augment", None)
        return found

    def tie_to_data(self, split_data, season: int | None, run) -> None:
        """Sequences with one label each train whole (``--window 0``) unless --window is given: the label sits on
        the last frame, and a window cut through a recording would train most windows on no label at all. Whole,
        they take epochs enough for about WHOLE_SEQUENCE_UPDATES updates unless --epochs is given."""
        config = run.train_config
        if split_data.seq.task != "sequence":
            return
        if "window" in run.untouched:
            config.window = run.run_config["window"] = 0
        if "epochs" in run.untouched and not config.window:
            per_epoch = math.ceil(len(split_data.train_ids) / config.batch_size)
            config.epochs = run.run_config["epochs"] = max(config.epochs, math.ceil(WHOLE_SEQUENCE_UPDATES / per_epoch))

    def predictor(self, file, model_path: Path, device, horizon: int = 1):
        from bptt_cli.predict import FramePredictor

        return FramePredictor(file, model_path, device, horizon)

    def claims(self, data: Path) -> bool:
        """Feature files by suffix; a directory holding any; a glob matching any (or nothing, to say so)."""
        path = Path(data)
        if path.suffix.lower() in FEATURE_SUFFIXES:
            return True
        if path.is_dir():
            return any(p.suffix.lower() in FEATURE_SUFFIXES and p.is_file() for p in path.rglob("*"))
        matches = pattern_files(data) if is_pattern(data) else None
        return matches is not None and (not matches or any(p.suffix.lower() in FEATURE_SUFFIXES for p in matches))

    def read(self, data: Path, options: AudioOptions, stored: dict | None = None,
             labels: Path | None = None) -> Sequences:
        wavs = holds_wav(data)
        if stored:
            settings = FeatureSettings(**stored["settings"])
        else:
            if len(options.features) > 1:
                raise BpttError("--features for feature files is one of logmel or mfcc (WAV files only)")
            if options.features and not wavs:
                raise BpttError("--features logmel|mfcc is for WAV files; .npy, .npz and .ts files bring their own features")
            settings = FeatureSettings(options.features[0] if options.features else "logmel", options.n_mels,
                                       options.n_mfcc, options.hop_ms, options.win_ms, cmvn=options.cmvn,
                                       deltas=options.deltas, trim_db=options.trim_db)
        cache = None if options.no_cache or not wavs else cache_folder(options.cache_dir)  # only WAVs are cached
        found = load_audio(data, labels, settings, stored.get("classes") if stored else None, cache)
        width = found.frames[0].shape[1]
        if stored and width != len(stored["columns"]):
            raise BpttError(f"{data}: {width} features per frame, but the model was trained on {len(stored['columns'])}")
        if stored and stored["task"] != found.task:
            hint = "give --labels" if stored["task"] == "sequence" else "use data of the kind it was trained on"
            raise BpttError(f"{data}: the model's task is {stored['task']} but this data gives {found.task}; {hint}")
        columns = [f"f{i}" for i in range(width)]
        return Sequences("audio", found.task, found.names, found.frames, found.labels, columns, list(range(width)),
                         list(range(width)) if found.task == "forecast" else [], found.classes, notes=found.notes,
                         settings=settings.to_dict())

