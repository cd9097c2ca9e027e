"""Training, scoring and forecasting with series (CSV) and feature-sequence (audio) data.

The glue between ``series``/``audio`` (data), ``series.pack`` (streams),
the trainer and the model file, in the spirit of ``text_training``. Both data
kinds become the same thing, a list of sequences with their normalisation and
task, so one path trains, evaluates and generates for both.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from bptt_cli import distributed, forecast
from bptt_cli.atomic import write_bytes
from bptt_cli.audio import FeatureSettings, is_audio_path, list_files, load_audio
from bptt_cli.choices import LOSSES
from bptt_cli.errors import BpttError
from bptt_cli.modelfile import ModelFile
from bptt_cli.models import ModelConfig, RecurrentModel, State
from bptt_cli.runfiles import RunFiles
from bptt_cli.series import (
    IGNORE_LABEL, Normaliser, SeriesSpec, Streams, check_window, load_series, pack, season_of,
    split_pieces,
)
from bptt_cli.streams import tail_cut
from bptt_cli.token_cache import sha256
from bptt_cli.trainer import Reporter, TrainConfig, seed_everything
from bptt_cli.training_run import run_training

CHUNK = 1024  # steps per forward call when scoring: bounds memory, not the context
DEFAULT_HORIZON = 24
PLOT_HORIZONS = 3  # a forecast picture shows this many horizons of context before the forecast
PLOT_TARGETS = 6  # panels at most: audio frames have dozens of features, a picture shows the first few


def data_kind(path: str | Path) -> str:
    """Which loader reads DATA: ``series`` (.csv), ``audio`` (feature files, a directory, a glob) or ``text``."""
    if Path(path).suffix.lower() == ".csv":
        return "series"
    return "audio" if is_audio_path(path) else "text"


@dataclass
class SequenceOptions:
    """The options of ``bptt train`` that only series and audio data have."""

    targets: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)  # CSV columns, or [logmel|mfcc] for WAV files
    task: str | None = None  # forecast | tag; None: follows from the data
    time_column: str | None = None
    group_column: str | None = None
    missing: str = "error"
    loss: str = "mse"  # mse | huber, for numeric targets
    season: int | None = None  # steps per season; None: from the time step when it has a natural one
    labels: str | None = None  # labels.csv for feature files
    n_mels: int = 40
    n_mfcc: int = 13
    hop_ms: float = 10.0
    win_ms: float = 25.0


@dataclass
class Sequences:
    """Any series or feature data, read and checked: what training and scoring work on."""

    kind: str  # series | audio
    task: str  # forecast | tag | frame | sequence
    names: list[str]  # one per sequence: the group value, the file or the .ts case
    values: list[np.ndarray]  # per sequence (L, C) in original units
    labels: list[np.ndarray] | None  # per sequence (L,) frame classes, or (1,) the sequence's class
    columns: list[str]
    features: list[int]  # indices into columns: the model's inputs
    targets: list[int]  # indices into columns: what a forecast predicts
    classes: list[str] | None = None
    times: list[np.ndarray] | None = None
    time_column: str | None = None
    group_column: str | None = None
    freq: str | None = None
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # how to read more of this data: series spec or audio features

    @property
    def classifies(self) -> bool:
        return self.task != "forecast"


def read_sequences(data: str | Path, options: SequenceOptions, stored: dict | None = None,
                   labels: str | None = None) -> Sequences:
    """Read DATA as series or feature sequences; ``stored`` (a model file's data) fixes how."""
    kind = stored["kind"] if stored else data_kind(data)
    if kind == "series":
        if stored:
            spec = SeriesSpec(**stored["settings"])
            need = stored["columns"]
        else:
            task = options.task or "forecast"
            if task not in ("forecast", "tag"):
                raise BpttError(f"--task is forecast or tag, got {task!r}")
            spec = SeriesSpec(list(options.targets), list(options.features), task, options.time_column,
                              options.group_column, options.missing)
            need = None
        found = load_series(data, spec, stored.get("classes") if stored else None, need)
        if stored:  # the model reads the training columns, in the training order
            found = _reorder(found, stored)
        spec.time_column, spec.targets, spec.features = found.time_column, found.targets, found.features
        index = {c: i for i, c in enumerate(found.columns)}
        return Sequences(
            "series", "tag" if spec.task == "tag" else "forecast", found.groups, found.values, found.labels,
            found.columns, [index[c] for c in found.features],
            [index[c] for c in found.targets] if spec.task == "forecast" else [], found.classes, found.times,
            found.time_column, found.group_column, found.freq, found.notes, asdict(spec),
        )
    if options.task not in (None, "forecast") and not stored:
        raise BpttError("--task tag is for CSV data; feature files take labels from --labels, .npz or .ts")
    for option, given in (("--target", options.targets), ("--time-column", options.time_column),
                          ("--group-column", options.group_column)):
        if given and not stored:
            raise BpttError(f"{option} is for CSV data; {data} holds feature sequences")
    if stored:
        settings = FeatureSettings(**stored["settings"])
    else:
        if len(options.features) > 1:
            raise BpttError("--features for feature files is one of logmel or mfcc (WAV files only)")
        if options.features and not any(p.suffix.lower() == ".wav" for p in list_files(data)):
            raise BpttError("--features logmel|mfcc is for WAV files; .npy, .npz and .ts files bring their own features")
        settings = FeatureSettings(options.features[0] if options.features else "logmel", options.n_mels,
                                   options.n_mfcc, options.hop_ms, options.win_ms)
    found = load_audio(data, labels, settings, stored.get("classes") if stored else None)
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


def _reorder(found, stored: dict):
    """Put the columns a model was trained on first, in its order (a later file may order them otherwise)."""
    order = [found.columns.index(c) for c in stored["columns"]]
    found.values = [v[:, order] for v in found.values]
    found.columns = list(stored["columns"])
    found.features = [found.columns[i] for i in stored["features"]]
    if stored["task"] == "forecast":
        found.targets = [found.columns[i] for i in stored["targets"]]
    return found


def data_hash(data: str | Path) -> str:
    """SHA-256 of DATA's file, or of the sorted list of its files' hashes for a directory or a glob."""
    path = Path(data)
    if path.is_file():
        return sha256(path)
    digest = hashlib.sha256()
    for file in list_files(data):
        digest.update(f"{file.name}:{sha256(file)}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- losses and passes


def regression_loss(kind: str):
    """Mean squared (or Huber) error over the targets that are not NaN; no NaN when there are none."""
    if kind not in LOSSES:
        raise BpttError(f"unknown --loss {kind!r}; use one of {', '.join(LOSSES)}")

    def loss(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total, count = _regression_sum(kind, predicted, targets)
        return total / count.clamp(min=1)  # a device-side count: no host sync

    return loss


def _regression_sum(kind: str, predicted: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed error over the targets that are not NaN, and their count."""
    scored = ~torch.isnan(targets)
    error = torch.where(scored, predicted.float() - torch.nan_to_num(targets), 0.0)
    per = error.square() if kind == "mse" else F.huber_loss(error, torch.zeros_like(error), reduction="none")
    return per.sum(), scored.sum()


def class_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled steps only (windows without one give 0, not NaN)."""
    total, count = _class_sum(logits, targets)
    return total / count.clamp(min=1)


def _class_sum(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed cross-entropy over the labelled steps, and their count."""
    total = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_LABEL, reduction="sum")
    return total, (targets != IGNORE_LABEL).sum()


@torch.no_grad()
def stream_pass(model: RecurrentModel, streams: Streams, device: torch.device) -> tuple[torch.Tensor, State]:
    """Run whole streams (never truncated), resetting where sequences begin: outputs (T, B, O), final state."""
    was_training = model.training
    model.eval()
    x = streams.inputs.to(device)
    resets = torch.as_tensor(streams.resets, device=device)
    state = model.init_state(x.shape[1], device)
    outputs = []
    for start in range(0, x.shape[0], CHUNK):
        end = min(start + CHUNK, x.shape[0])
        cuts = np.flatnonzero(streams.resets[start:end].any(axis=1)).tolist()
        out, state = model.recur(x[start:end], state, resets[start:end], cuts)
        outputs.append(model.decode(out).float())
    model.train(was_training)
    return torch.cat(outputs).cpu(), state


def _frames(seq: Sequences, norm: Normaliser, i: int, end: int | None = None) -> np.ndarray:
    return norm.apply(seq.values[i][:end])[:, seq.features]


def _pairs(seq: Sequences, norm: Normaliser, i: int, scored_from: int = 0, end: int | None = None):
    """Inputs and targets of sequence i up to ``end``: next-step targets (NaN before ``scored_from``) or labels."""
    x = _frames(seq, norm, i, end)
    if seq.task == "forecast":
        y = norm.apply(seq.values[i][:end])[1:, seq.targets]
        y[: max(0, scored_from - 1)] = np.nan
        return x[:-1], y
    if seq.task == "sequence":
        y = np.full(len(x), IGNORE_LABEL, dtype=np.int64)
        y[-1] = seq.labels[i][0]
        return x, y
    y = seq.labels[i][:end].copy()
    y[:scored_from] = IGNORE_LABEL
    return x, y


def scoring_streams(seq: Sequences, norm: Normaliser, starts: list[int], batch: int) -> Streams:
    """Every sequence whole, scored from ``starts[i]`` on; series end-aligned so final states are theirs."""
    pairs = [_pairs(seq, norm, i, starts[i]) for i in range(len(seq.values))]
    return pack([p[0] for p in pairs], [p[1] for p in pairs], batch, align_end=seq.task in ("forecast", "tag"))


def scored_sums(seq: Sequences, outputs: torch.Tensor, streams: Streams, loss_name: str) -> torch.Tensor:
    """What validation figures are made of, as sums that add up over ranks: (loss, scored count, hits)."""
    if seq.classifies:
        total, count = _class_sum(outputs, streams.targets)
        hits = ((outputs.argmax(-1) == streams.targets) & (streams.targets != IGNORE_LABEL)).sum()
    else:
        total, count = _regression_sum(loss_name, outputs, streams.targets)
        hits = torch.zeros(())
    return torch.stack([total.double(), count.double(), hits.double()])


def scored_figures(seq: Sequences, sums: torch.Tensor) -> dict:
    """The validation figures from ``scored_sums``: the loss, and the accuracy for a classifier."""
    total, count, hits = sums.tolist()
    figures = {"loss": total / max(count, 1.0)}
    if seq.classifies:
        figures["accuracy"] = hits / max(count, 1.0)
    return figures


def columns_of_this_rank(streams: Streams) -> Streams:
    """This rank's contiguous share of the B streams (all of them in a single process)."""
    begin, end = distributed.shard_range(streams.inputs.shape[1])
    return Streams(streams.inputs[:, begin:end], streams.targets[:, begin:end], streams.resets[:, begin:end],
                   [(stream - begin, *rest) for stream, *rest in streams.where if begin <= stream < end])


# ---------------------------------------------------------------- training


def _split(seq: Sequences, fraction: float, seed: int) -> tuple[list[int], list[int] | None, list[int]]:
    """Training ends per sequence, and the validation start per sequence (or None: no validation).

    Series and next-frame data hold out the last ``fraction`` of every sequence
    (chronological, never shuffled); labelled sequences hold out a seeded share
    of whole sequences, whose training end is then 0.
    """
    tail_cut(0, fraction)  # refuses a bad fraction before anything else
    lengths = [len(v) for v in seq.values]
    if seq.task in ("forecast", "tag"):
        cuts = [tail_cut(n, fraction) for n in lengths]
        if fraction and sum(n - c for n, c in zip(lengths, cuts)) < 1:
            raise BpttError("the validation tail would be empty; use more data or --val-fraction 0")
        short = [seq.names[i] for i, c in enumerate(cuts) if c < 2]
        if short:
            raise BpttError(f"series {short[0]!r} keeps fewer than 2 training steps after the validation split; "
                            "use a smaller --val-fraction or drop it")
        return cuts, (cuts if fraction else None), list(range(len(lengths)))
    if not fraction:
        return lengths, None, list(range(len(lengths)))
    held = max(1, int(round(len(lengths) * fraction)))
    if held >= len(lengths):
        raise BpttError(f"{len(lengths)} sequence(s) cannot be split for validation; use more or --val-fraction 0")
    order = np.random.default_rng(seed).permutation(len(lengths))
    val = set(order[:held].tolist())
    return [0 if i in val else n for i, n in enumerate(lengths)], [0] * len(lengths), sorted(val)


def _subset(seq: Sequences, keep: list[int]) -> Sequences:
    picked = {k: [getattr(seq, k)[i] for i in keep] if getattr(seq, k) is not None else None
              for k in ("names", "values", "labels", "times")}
    return Sequences(**{**seq.__dict__, **picked})


def train_sequences(
    data: str | Path,
    output: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig,
    device: torch.device,
    reporter: Reporter,
    options: SequenceOptions,
    val: str | Path | None = None,
    val_fraction: float = 0.1,
    run_config: dict | None = None,
    resume: bool = False,
) -> dict:
    """Train on series or feature sequences and keep the best model (on validation) in ``output``.

    Everything about the data is read and checked before any file is written.
    """
    train_config.validate()
    regression_loss(options.loss)  # an unknown --loss fails before the data is read
    seq = read_sequences(data, options, labels=options.labels)
    for note in seq.notes:
        reporter.note(note)
    if val is not None:
        val_seq = read_sequences(val, options, _describe(seq, None, None), labels=options.labels)
        ends, val_starts, val_keep = [len(v) for v in seq.values], [0] * len(val_seq.values), list(range(len(val_seq.values)))
    else:
        ends, val_starts, val_keep = _split(seq, val_fraction, train_config.seed)
        val_seq = seq if val_starts is not None else None
    train_ids = [i for i, end in enumerate(ends) if end > 0]
    norm = Normaliser.fit([seq.values[i][: ends[i]] for i in train_ids])
    pairs = [_pairs(seq, norm, i, 0, ends[i]) for i in train_ids]
    longest = max(len(x) for x, _ in pairs)
    check_window(train_config.window, longest, "sequence" if seq.kind == "audio" else "series")
    splittable = seq.task in ("forecast", "tag")
    pieces = split_pieces([len(x) for x, _ in pairs], train_config.batch_size,
                          2 * train_config.window if splittable and train_config.window else 0)
    streams = pack([pairs[i][0][a:b] for i, a, b in pieces], [pairs[i][1][a:b] for i, a, b in pieces],
                   train_config.batch_size)
    batch = streams.inputs.shape[1]
    if batch < train_config.batch_size:
        reporter.note(f"{len(pieces)} sequence piece(s) fill {batch} of the {train_config.batch_size} streams "
                      "(--batch-size); each piece starts from a zero state")

    seed_everything(train_config.seed)
    model_config.tokens, model_config.input_size = False, len(seq.features)
    model_config.output_size = len(seq.classes) if seq.classifies else len(seq.targets)
    model = RecurrentModel(model_config)
    loss_fn = class_loss if seq.classifies else regression_loss(options.loss)
    season = options.season or season_of(seq.freq)
    described = _describe(seq, norm, season)
    if seq.task == "forecast":
        described["mase_scale"] = forecast.naive_scale([seq.values[i][: ends[i], seq.targets] for i in train_ids]).tolist()
    described["val_fraction"] = val_fraction if val is None else 0.0
    summary = {
        "data_file": Path(data).name,
        "data_sha256": data_hash(data),
        "sequences": len(seq.values),
        "train_steps": int(sum(len(x) for x, _ in pairs)),
    }
    scoring = None
    if val_seq is not None:
        scoring = scoring_streams(_subset(val_seq, val_keep), norm, [val_starts[i] for i in val_keep], batch)
        summary["val_steps"] = int((~torch.isnan(scoring.targets)).any(-1).sum() if not seq.classifies
                                   else (scoring.targets != IGNORE_LABEL).sum())

    ends_here = {}  # the validation pass's final states are the tail's when it ran over the training sequences

    def validate(m: RecurrentModel) -> dict:
        mine = columns_of_this_rank(scoring)  # each rank scores its streams; the sums are added up
        outputs, state = stream_pass(m, mine, device)
        if val is None and seq.task == "forecast" and not distributed.active():
            ends_here["state"] = state  # (with several ranks the model file's tail state is computed anew)
        return scored_figures(seq, distributed.all_sum(scored_sums(seq, outputs, mine, options.loss)))

    def make_file(record: dict) -> ModelFile:
        best = {"best_step": record["step"], "best_epoch": record["epoch"], "best_val_loss": record.get("val_loss")}
        tail = _tail(model, seq, norm, season, device, ends_here.pop("state", None)) if seq.task == "forecast" else None
        return ModelFile(model, None, run_config or {}, {**summary, **best}, {**described, "tail": tail})

    run = {**(run_config or {}), "data_sha256": summary["data_sha256"]}
    inputs, targets, resets = (distributed.shard_streams(s) for s in (streams.inputs, streams.targets, streams.resets))
    with RunFiles(output) as files:
        result = run_training(files, model, make_file, train_config, device, reporter,
                              validate if scoring is not None else None, inputs, targets, run,
                              resets=resets, loss_fn=loss_fn, resume=resume)
    result.update(task=seq.task, sequences=len(seq.values), streams=batch, train_steps=summary["train_steps"],
                  val_steps=summary.get("val_steps", 0))
    return result


def _describe(seq: Sequences, norm: Normaliser | None, season: int | None) -> dict:
    """What the model file keeps about the data: enough to read, score and continue it later."""
    return {
        "kind": seq.kind,
        "task": seq.task,
        "columns": seq.columns,
        "features": seq.features,
        "targets": seq.targets,
        "target_names": [seq.columns[i] for i in seq.targets],
        "classes": seq.classes,
        "norm": norm.to_dict() if norm is not None else None,
        "time_column": seq.time_column,
        "group_column": seq.group_column,
        "freq": seq.freq,
        "season": season,
        "settings": seq.settings,
    }


def _tail(model: RecurrentModel, seq: Sequences, norm: Normaliser, season: int | None, device,
          state: State | None = None) -> dict:
    """The state before each series' last row, and the rows a forecast from its end needs.

    Kept for every series of a CSV, and for the last sequence of feature files.
    ``state`` is the end state of every sequence when a validation pass just computed it.
    """
    keep = list(range(len(seq.values))) if seq.kind == "series" else [len(seq.values) - 1]
    picked = _subset(seq, keep)
    rows = PLOT_HORIZONS * (season or DEFAULT_HORIZON)  # a season for the forecast, more for its picture
    if state is None:
        frames = [_frames(picked, norm, i)[:-1] for i in range(len(keep))]
        streams = pack(frames, [np.zeros((len(f), 1), np.float32) for f in frames], len(frames), align_end=True)
        _, state = stream_pass(model, streams, device)
    else:
        state = tuple(s[:, keep] for s in state)
    return {
        "names": picked.names,
        "state": [s.detach().cpu() for s in state],  # each (layers, sequences, hidden)
        "rows": [v[-rows:].tolist() for v in picked.values],
        "last_time": [str(pd.Timestamp(t[-1])) for t in picked.times] if picked.times else None,
    }


# ---------------------------------------------------------------- evaluation


def _stored(file: ModelFile) -> dict:
    data = file.data
    if data.get("kind") not in ("series", "audio"):
        raise BpttError("this model was trained on text; evaluate and generate it with text")
    return data


def check_forecast_plot(file: ModelFile, path: str | Path) -> Path:
    """Before any work, so a long scoring never ends in a failed picture: --plot draws a forecast, so it
    needs a model that forecasts, a picture path that can be written and matplotlib."""
    from bptt_cli.plotting import check_plot

    if file.data.get("kind") not in ("series", "audio"):
        raise BpttError("--plot is for series models (it draws their forecasts); this is a text model")
    if file.data.get("task") != "forecast":
        raise BpttError(f"--plot draws forecasts; this model labels data ({file.data.get('task')}), it does not forecast")
    return check_plot(path)


def evaluate_sequences(file: ModelFile, data: str | Path, device: torch.device, labels: str | None = None,
                       horizon: int = 1, season: int | None = None) -> dict:
    """Forecast errors against the baselines, or classification figures, of a model on DATA.

    On the very data the model was trained on, only the held-out tail is scored
    (the state still warms up on everything before it).
    """
    stored = _stored(file)
    if horizon < 1:
        raise BpttError(f"--horizon must be at least 1, got {horizon}")
    seq = read_sequences(data, SequenceOptions(), stored, labels)
    norm = Normaliser.from_dict(stored["norm"])
    model = file.model.to(device).eval()
    same = file.summary.get("data_sha256") == data_hash(data) and stored.get("val_fraction", 0) > 0
    tail_only = same and seq.task in ("forecast", "tag")  # chronological splits: the tail was never trained on
    fraction = stored["val_fraction"] if tail_only else 0.0
    result: dict = {"notes": list(seq.notes)}
    if tail_only:
        result["notes"].append(f"{Path(data).name} is the training data: scoring its held-out tail "
                               f"(the last {fraction:.0%} of each sequence), the state warmed up on the rest")
    elif same:
        result["notes"].append(f"{Path(data).name} is the training data: every sequence is scored, training ones "
                               "included; score held-out files for a fair figure")
    starts = [tail_cut(len(v), fraction) if tail_only else 0 for v in seq.values]
    if seq.classifies:
        streams = scoring_streams(seq, norm, starts, 64)
        outputs, _ = stream_pass(model, streams, device)
        scored = streams.targets != IGNORE_LABEL
        figures = forecast.classification(streams.targets[scored].numpy(), outputs.argmax(-1)[scored].numpy(), seq.classes)
        figures["sequences" if seq.task == "sequence" else "frames"] = int(scored.sum())
        return {**result, "task": seq.task, **figures}
    season = season or stored.get("season")
    horizons = sorted({1, horizon})
    scale = np.asarray(stored["mase_scale"])
    out: dict = {}
    for h in horizons:
        truth, predicted, base, last = _forecasts(model, seq, norm, starts, h, season, device)
        if len(truth) == 0:
            raise BpttError(f"{data}: too short to score a {h}-step forecast"
                            + (f" after a season of {season}" if season else "") + "; give more rows or a smaller --horizon")
        out[str(h)] = {"model": forecast.errors(truth, predicted, scale)}
        for name, values in base.items():
            out[str(h)][name] = forecast.errors(truth, values, scale)
        points = truth.shape[0] * truth.shape[1]
        out[str(h)]["points"] = int(points)
    i, origin = last  # the last window scored at the longest horizon: what --plot draws
    times = seq.times[i] if seq.times else None
    after = slice(origin + 1, origin + 1 + horizon)
    plot = _picture(seq, i, seq.values[i][: origin + 1], None if times is None else times[: origin + 1],
                    None if times is None else times[after], horizon, f"the last {horizon}-step window scored",
                    forecast_values=predicted[-1], actual_values=truth[-1],
                    persistence_values=base["persistence"][-1])
    return {**result, "task": "forecast", "horizons": out, "targets": stored["target_names"],
            "points": out["1"]["points"], "season": season, "plot": plot}


def _forecasts(model, seq: Sequences, norm: Normaliser, starts: list[int], horizon: int, season: int | None, device):
    """Truth, model and baseline forecasts (N, H, O) in original units, from every origin of every sequence,
    and (sequence, origin) of the last one."""
    feed = _feed(seq)
    truths, predictions, bases, last = [], [], {}, None
    for i, values in enumerate(seq.values):  # one iteration per series
        origins = forecast.origins_for(len(values), horizon, season, max(0, starts[i] - 1))
        if len(origins) == 0:
            continue
        x = torch.from_numpy(_frames(seq, norm, i)).to(device)  # (L, F)
        lead = np.arange(1, horizon + 1)
        if horizon == 1:  # one pass gives every one-step forecast
            out, _ = model.recur(x.unsqueeze(1), model.init_state(1, device))
            predicted = model.decode(out[:, 0])[origins].unsqueeze(1)
        else:
            state = forecast.states_at(model, x, origins, device)
            known = x[origins[:, None] + lead[None, :-1]]  # (N, H-1, F): the real inputs after the origin
            predicted = forecast.rollout(model, state, x[origins], known, feed, horizon)
        predictions.append(norm.invert(predicted.detach().cpu().double().numpy(), seq.targets))
        target_values = values[:, seq.targets]
        truths.append(target_values[origins[:, None] + lead[None, :]])
        for name, forecast_values in forecast.baselines(target_values, origins, horizon, season).items():
            bases.setdefault(name, []).append(forecast_values)
        last = (i, int(origins[-1]))
    if not truths:
        return np.zeros((0, horizon, len(seq.targets))), None, {}, None
    return (np.concatenate(truths), np.concatenate(predictions),
            {name: np.concatenate(parts) for name, parts in bases.items()}, last)


def _picture(seq: Sequences, i: int, history: np.ndarray, times, future_times, horizon: int, what: str,
             **lines: np.ndarray) -> dict:
    """The arguments of ``plotting.plot_forecast`` for sequence i: the last rows of ``history`` (L, C) up to
    the forecast origin, in original units, then ``lines`` (H, O) after it, at their times when the data
    has them, else at steps counted from the origin (context -k+1..0, forecast 1..H).
    """
    keep = min(len(history), PLOT_HORIZONS * horizon)
    shown = seq.targets[:PLOT_TARGETS]
    names = [seq.columns[c] for c in shown]
    label = None
    if times is not None and future_times is not None:
        context_time, forecast_time = np.asarray(times)[-keep:], np.asarray(future_times)
    else:
        context_time, forecast_time = np.arange(1 - keep, 1), np.arange(1, horizon + 1)
        label = "steps from the forecast origin (0 = the last row read)"
    title = f"{seq.names[i]}: {what}" if len(seq.names) > 1 or seq.group_column else what
    if len(seq.targets) > len(shown):
        title += f" (the first {len(shown)} of {len(seq.targets)} targets)"
    return {"context_time": context_time, "context_values": np.asarray(history)[-keep:][:, shown],
            "forecast_time": forecast_time, "target_names": names, "title": title, "time_label": label,
            **{k: np.asarray(v)[:, : len(shown)] for k, v in lines.items()}}


def _feed(seq: Sequences) -> list[tuple[int, int]]:
    """(target output, feature input) pairs: where a rollout feeds the model's predictions back."""
    return [(j, seq.features.index(c)) for j, c in enumerate(seq.targets) if c in seq.features]


# ---------------------------------------------------------------- generation


@torch.no_grad()
def generate_forecast(file: ModelFile, device: torch.device, context: str | Path | None = None,
                      horizon: int | None = None) -> dict:
    """H future steps after the context (or after the training data), in original units.

    Inputs that are not targets are unknown in the future: they are taken from
    one season earlier (or held at their last value), and a note says so.
    """
    stored = _stored(file)
    if stored["task"] != "forecast":
        raise BpttError(f"this model labels data ({stored['task']}); score it with 'bptt evaluate', it does not forecast")
    season = stored.get("season")
    horizon = horizon or season or DEFAULT_HORIZON
    if horizon < 1:
        raise BpttError(f"--horizon must be at least 1, got {horizon}")
    norm = Normaliser.from_dict(stored["norm"])
    model = file.model.to(device).eval()
    seq_features, seq_targets = stored["features"], stored["targets"]
    notes = []
    if context is not None:
        seq = read_sequences(context, SequenceOptions(), stored)
        names, histories = seq.names, seq.values
        last_time = [str(pd.Timestamp(t[-1])) for t in seq.times] if seq.times else None
        freq = seq.freq or stored.get("freq")
        states = [forecast.states_at(model, torch.from_numpy(_frames(seq, norm, i)).to(device),
                                     np.array([len(v) - 1]), device) for i, v in enumerate(histories)]
        state = forecast.stack_states(states)
    else:
        tail = stored.get("tail")
        if not tail:
            raise BpttError("this model file keeps no state to continue from; give --context FILE")
        names, histories, last_time, freq = tail["names"], [np.asarray(r) for r in tail["rows"]], tail["last_time"], stored.get("freq")
        state = tuple(s.to(device) for s in tail["state"])
    shim = Sequences(stored["kind"], "forecast", names, histories, None, stored["columns"], seq_features, seq_targets,
                     group_column=stored.get("group_column"))
    feed = _feed(shim)
    others = [f for f in seq_features if f not in seq_targets]
    if others and horizon > 1:
        how = f"their values one season ({season} steps) earlier" if season else "their last values"
        notes.append(f"inputs {', '.join(stored['columns'][f] for f in others)} are not forecast: the future uses {how}")
    firsts, knowns = [], []
    for history in histories:  # one iteration per series
        fill = forecast.seasonal_fill(history, horizon, season)  # (H, C) assumed future rows
        firsts.append(norm.apply(history[-1:])[:, seq_features])
        knowns.append(norm.apply(fill[: horizon - 1])[None, :, seq_features])
    first = torch.from_numpy(np.concatenate(firsts)).to(device)
    known = torch.from_numpy(np.concatenate(knowns)).to(device)
    predicted = forecast.rollout(model, state, first, known, feed, horizon)  # (G, H, O)
    values = norm.invert(predicted.cpu().double().numpy(), seq_targets)
    times, past = None, None
    if last_time and freq:
        step = pd.tseries.frequencies.to_offset(freq)
        times = [pd.date_range(pd.Timestamp(t), periods=horizon + 1, freq=step)[1:] for t in last_time]
        past = (seq.times[-1] if context is not None
                else pd.date_range(end=pd.Timestamp(last_time[-1]), periods=len(histories[-1]), freq=step))
    plot = _picture(shim, len(names) - 1, histories[-1], past, None if times is None else times[-1], horizon,
                    f"{horizon}-step forecast", forecast_values=values[-1])
    return {"kind": stored["kind"], "names": names, "values": values, "times": times, "notes": notes,
            "targets": stored["target_names"], "time_column": stored.get("time_column"),
            "group_column": stored.get("group_column"), "horizon": horizon, "plot": plot}


def forecast_frame(result: dict) -> pd.DataFrame:
    """The forecast as a table: [group,] [time,] one column per target, H rows per series."""
    values = result["values"]  # (G, H, O)
    groups, horizon = len(result["names"]), result["horizon"]
    frame = pd.DataFrame(values.reshape(groups * horizon, -1), columns=result["targets"])
    if result["times"] is not None:
        frame.insert(0, result["time_column"], np.concatenate([t.astype(str) for t in result["times"]]))
    else:
        frame.insert(0, "step", np.tile(np.arange(1, horizon + 1), groups))
    if result["group_column"]:
        frame.insert(0, result["group_column"], np.repeat(result["names"], horizon))
    return frame


def write_atomic(path: str | Path, payload: bytes) -> None:
    """Write the forecast file atomically, after checking that ``path`` names a file in a real folder."""
    path = Path(path)
    if path.is_dir() or not path.parent.is_dir():
        raise BpttError(f"-o {path}: not a writable file path; give a file in an existing directory")
    write_bytes(path, payload)


def forecast_bytes(result: dict, path: str | Path | None) -> bytes:
    """The forecast as CSV, or as .npy frames (H, O) for feature data written to a .npy path."""
    if path is not None and Path(path).suffix.lower() == ".npy":
        buffer = io.BytesIO()
        values = result["values"]
        np.save(buffer, (values[0] if len(values) == 1 else values).astype(np.float32))
        return buffer.getvalue()
    return forecast_frame(result).to_csv(index=False, float_format="%.6g").encode()


def gradcheck_arrays(file: ModelFile, data: str | Path, labels: str | None = None) -> dict:
    """The longest sequence of DATA, normalised as in training, for gradcheck's single stream.

    Returns plain arrays: ``inputs`` (N, F), ``targets`` (N, O) for forecasts or
    (N,) class ids (IGNORE_LABEL where unlabelled), the ``task`` and the ``loss`` name.
    """
    stored = _stored(file)
    seq = read_sequences(data, SequenceOptions(), stored, labels=labels)
    norm = Normaliser.from_dict(stored["norm"])
    longest = max(range(len(seq.values)), key=lambda i: len(seq.values[i]))
    inputs, targets = _pairs(seq, norm, longest)
    loss = (file.config or {}).get("loss", "mse")
    return {"inputs": inputs, "targets": targets, "task": seq.task, "loss": loss if loss in LOSSES else "mse",
            "ignore": IGNORE_LABEL, "source": f"{data} (sequence {seq.names[longest]})"}
