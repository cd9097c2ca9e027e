"""What series (CSV) and feature-sequence (audio) data share: a list of sequences with their
normalisation and task, trained, scored and continued the same way.

``SeriesKind`` and ``AudioKind`` differ only in how they read their files into
``Sequences``; everything after that lives here (and forecasting in ``forecast``).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bptt_cli import baselines, distributed, forecast
from bptt_cli.audio import list_files
from bptt_cli.augment import Augmentation, parse_augment
from bptt_cli.autoregression import LinearStart, default_lags
from bptt_cli.choices import ANCHORS
from bptt_cli.errors import BpttError
from bptt_cli.kinds.base import DataKind, Prepared, Request
from bptt_cli.losses import IGNORE_LABEL, PROBABILISTIC, OutputHead, class_loss, lead_weights, regression_loss
from bptt_cli.modelfile import ModelFile
from bptt_cli.models import RecurrentModel, State
from bptt_cli.scoring import ranked_sums, scored_figures, scored_sums, stream_pass
from bptt_cli.series import (Normaliser, SequenceBatches, Streams, check_window, pack, season_of,
                             split_pieces)
from bptt_cli.streams import plan_windows, tail_cut
from bptt_cli.token_cache import sha256
from bptt_cli.trainer import WHOLE_SEQUENCES_HAVE_NO_WINDOW, seed_everything

MIN_UPDATES_PER_EPOCH = 20  # without a given --batch-size, a short series gets fewer streams to reach this
SCORING_STREAMS = 64  # sequences scored side by side by ``evaluate``
# Held-out sequences below which a validation figure moves in steps too coarse to choose a model on: with 2 the
# saved model was one at validation accuracy 0 (issue 15: test 46 %, against 56 % for the last model)
MIN_CHOOSING_SEQUENCES = 10
REPLICATION_NEEDS_SEQUENCE_LABELS = ("--target-replication copies one label per sequence onto its frames: give --labels "
                                     "(or a .ts file with classes), or leave it out")


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
    leads: int = 1  # steps ahead a forecast target holds (the model's direct head), lead-major
    start: LinearStart | None = None  # the linear forecast a model starts from: its targets are relative to it

    @property
    def classifies(self) -> bool:
        return self.task != "forecast"

    def subset(self, keep: list[int]) -> "Sequences":
        picked = {k: [getattr(self, k)[i] for i in keep] if getattr(self, k) is not None else None
                  for k in ("names", "values", "labels", "times")}
        return Sequences(**{**self.__dict__, **picked})

    def frames(self, norm: Normaliser, i: int, end: int | None = None) -> np.ndarray:
        """The model's inputs of sequence i up to ``end``, normalised: (L, F)."""
        return norm.apply(self.values[i][:end])[:, self.features]

    def pairs(self, norm: Normaliser, i: int, scored_from: int = 0, end: int | None = None):
        """Inputs and targets of sequence i up to ``end``: next-step targets (NaN before ``scored_from``) or labels."""
        x = self.frames(norm, i, end)
        if self.task == "forecast":
            values = norm.apply(self.values[i][:end])[:, self.targets]
            y = ahead(values, self.leads)
            if self.start is not None:  # the model predicts what the linear start misses
                y -= self.start.offsets_along(values).astype(y.dtype)
            y[: max(0, scored_from - 1)] = np.nan
            return x[:-1], y
        if self.task == "sequence":
            y = np.full(len(x), IGNORE_LABEL, dtype=np.int64)
            y[-1] = self.labels[i][0]
            return x, y
        y = self.labels[i][:end].copy()
        y[:scored_from] = IGNORE_LABEL
        return x, y

    def describe(self, norm: Normaliser | None, season: int | None) -> dict:
        """What the model file keeps about the data: enough to read, score and continue it later."""
        return {
            "kind": self.kind, "task": self.task, "columns": self.columns, "features": self.features,
            "targets": self.targets, "target_names": [self.columns[i] for i in self.targets],
            "classes": self.classes, "norm": norm.to_dict() if norm is not None else None,
            "time_column": self.time_column, "group_column": self.group_column, "freq": self.freq,
            "season": season, "settings": self.settings,
        }


def ahead(values: np.ndarray, leads: int) -> np.ndarray:
    """Targets (L - 1, leads * C) of each step of ``values`` (L, C): the next ``leads`` rows, NaN past the end."""
    padded = np.concatenate([values, np.full((leads - 1, values.shape[1]), np.nan, values.dtype)])
    steps = np.arange(1, len(values))[:, None] + np.arange(leads)[None, :]  # (L - 1, leads)
    return padded[steps].reshape(len(values) - 1, -1)


def scoring_streams(seq: Sequences, norm: Normaliser, starts: list[int], batch: int,
                    bidirectional: bool = False) -> Streams:
    """Every sequence whole, scored from ``starts[i]`` on; series end-aligned so final states are theirs."""
    pairs = [seq.pairs(norm, i, starts[i]) for i in range(len(seq.values))]
    return pack([p[0] for p in pairs], [p[1] for p in pairs], batch, align_end=seq.task in ("forecast", "tag"),
                mark_padding=bidirectional)


def split(seq: Sequences, fraction: float, seed: int) -> tuple[list[int], list[int] | None, list[int]]:
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


def data_hash(data: str | Path) -> str:
    """SHA-256 of DATA's file, or of the sorted list of its files' hashes for a directory or a glob."""
    path = Path(data)
    if path.is_file():
        return sha256(path)
    digest = hashlib.sha256()
    for file in list_files(data):
        digest.update(f"{file.name}:{sha256(file)}\n".encode())
    return digest.hexdigest()


def rows_hash(values: list[np.ndarray], rows: list[int]) -> str:
    """SHA-256 of the first ``rows[i]`` rows of each sequence's values as read: the same rows in a longer
    file (new rows appended) hash the same, whatever else the file holds after them."""
    digest = hashlib.sha256()
    for v, n in zip(values, rows):
        digest.update(np.ascontiguousarray(v[:n], dtype=np.float64).tobytes())
    return digest.hexdigest()


def rows_read(seq: Sequences) -> dict:
    """What a forecast model's summary keeps of the rows it was trained on (their count per sequence and their
    hash), so that ``evaluate`` on a file that extends them scores only the new rows; {} for other tasks."""
    if seq.task != "forecast":
        return {}
    rows = [len(v) for v in seq.values]
    return {"rows_read": rows, "rows_sha256": rows_hash(seq.values, rows)}


def extends_training(summary: dict, seq: Sequences) -> bool:
    """Whether ``seq`` holds every sequence's training rows (``rows_read``) and at least one row more in each."""
    read = summary.get("rows_read")
    return bool(seq.task == "forecast" and read and len(read) == len(seq.values)
                and all(len(v) > n for v, n in zip(seq.values, read))
                and rows_hash(seq.values, read) == summary.get("rows_sha256"))


@dataclass
class _Training:
    """The training side of sequence data, read and split: what ``prepare`` builds the run from."""

    seq: Sequences
    val_seq: Sequences | None
    ends: list[int]
    val_starts: list[int] | None
    val_keep: list[int]
    norm: Normaliser
    train_ids: list[int]


def forecast_leads(seq: Sequences, options, init_from) -> int:
    """How many steps ahead a series model decodes at once: --leads, else a season (a default horizon without
    one); a warm start keeps its model's; 1 for other data and for probabilistic losses (one step, rolled out).

    A direct head decodes a block from the state alone, so it never reads the future values of inputs such as a
    holiday flag or a temperature: when every input other than the targets and the calendar is known ahead
    (--future), the default is one step, rolled out over those values; an input whose future nobody knows is
    read up to the origin only, by the direct head.
    """
    if init_from is not None:
        return init_from.model.config.leads
    if seq.task != "forecast" or not hasattr(options, "leads") or getattr(options, "loss", "mse") in PROBABILISTIC:
        return 1
    if options.leads:
        return options.leads
    described = {"columns": seq.columns, "features": seq.features, "targets": seq.targets, "settings": seq.settings}
    if forecast.outside_inputs(described) and not forecast.unknown_inputs(described):
        return 1
    return getattr(options, "season", None) or season_of(seq.freq) or forecast.DEFAULT_HORIZON


def linear_start(split_data: _Training, options, run, season: int | None,
                 head: OutputHead) -> LinearStart | None:
    """The linear forecast a model starts from: a warm start's own, else fitted on the training rows for
    ``--anchor linear`` (None for other anchors, for labels and probabilistic heads, and for series too short)."""
    if run.init_from is not None:
        return run.init_from.model.linear_start
    seq = split_data.seq
    if getattr(options, "anchor", "none") != "linear" or not anchor_inputs(seq, "linear", head):
        return None
    norm, held = split_data.norm, split_data.val_seq
    history = [norm.apply(seq.values[i][: split_data.ends[i], seq.targets], seq.targets) for i in split_data.train_ids]
    scored = [] if held is None else [(norm.apply(held.values[i][:, held.targets], held.targets), split_data.val_starts[i])
                                      for i in split_data.val_keep]
    return LinearStart.fit(history, seq.leads, default_lags(season, max(len(h) for h in history)), scored)


def anchor_inputs(seq: Sequences, anchor: str, head: OutputHead) -> list[int]:
    """The input feature each target continues, for a model that predicts the change from the last value;
    [] (no anchor) when asked for none, for labels, for a probabilistic head (its scales are no change of a
    value), or when a target is not among the inputs."""
    if anchor not in ANCHORS:
        raise BpttError(f"--anchor is one of {', '.join(ANCHORS)}, got {anchor!r}")
    if (anchor == "none" or seq.task != "forecast" or head.probabilistic
            or not set(seq.targets) <= set(seq.features)):
        return []
    return [seq.features.index(t) for t in seq.targets]


def stream_count(steps: int, run) -> int:
    """How many streams the training steps are cut into: --batch-size, or fewer when it was not given and
    the data is short, so that an epoch still has about MIN_UPDATES_PER_EPOCH updates.

    A default --batch-size 32 left a series of 1,800 steps 17 streams of 106 steps: 3 updates per epoch.
    """
    config = run.train_config
    stride = config.stride or config.window
    if run.batch_size_given or not stride:  # full BPTT has one update per epoch however many streams
        return config.batch_size
    world = distributed.world()  # every process takes the same share of the streams
    fitting = max(1, steps // (stride * MIN_UPDATES_PER_EPOCH))
    return max(world, min(config.batch_size, fitting) // world * world)


def whole_sequence_batches(pairs: list, run, bidirectional: bool,
                           augmentation: Augmentation = Augmentation()) -> SequenceBatches:
    """Labelled sequences under full BPTT: --batch-size whole sequences per update, several updates an epoch.

    Packed into --batch-size streams instead, 243 utterances made one update per epoch.
    """
    config, world = run.train_config, distributed.world()
    size = max(world, min(config.batch_size, len(pairs)) // world * world)
    batches = SequenceBatches([x for x, _ in pairs], [y for _, y in pairs], size, config.seed, bidirectional,
                              augmentation)
    if size < config.batch_size:
        run.reporter.note(f"{len(pairs)} training sequence(s): batches of {size}, not --batch-size "
                          f"{config.batch_size}, so {len(batches)} update(s) per epoch")
    return batches


def too_few_to_choose(held: Sequences) -> str | None:
    """Why held-out labelled sequences cannot choose the model (one line naming what is kept instead), or None."""
    if held.task not in ("sequence", "frame"):  # forecasts and tags hold out the tail of every sequence
        return None
    count, classes = len(held.values), len(held.classes)
    least = max(MIN_CHOOSING_SEQUENCES, 2 * classes)
    if count >= least:
        return None
    return (f"{count} validation sequence(s) for {classes} classes are too few to choose the model on (fewer than "
            f"{least}): the model file keeps the last epoch's model, not the best on validation; give --val FILE "
            "or a larger --val-fraction to choose")


def augmentation_of(options) -> Augmentation:
    """--augment as parsed; with --deltas the features are two blocks of the same bands, which a warp moves alike."""
    augmentation = parse_augment(getattr(options, "augment", None))
    return replace(augmentation, blocks=2) if getattr(options, "deltas", False) else augmentation


def replicated(labels: np.ndarray) -> np.ndarray:
    """--target-replication: a sequence's label (on its last frame) on every frame, so each step is trained to
    tell the class from what it has read so far; the model still answers from the last frame."""
    return np.full_like(labels, labels[-1])


def refuse_bidirectional(task: str, window: int) -> None:
    """A backward direction reads each sequence from its end: only where the whole sequence is given and labelled."""
    if task == "forecast":
        raise BpttError("--bidirectional would let a forecast read the future it predicts; it is for labelled "
                        "sequences (--labels, .npz labels, --task tag)")
    if window:
        raise BpttError(f"--bidirectional reads each sequence backwards from its end, so it needs the whole "
                        f"sequence: use --window 0 (full BPTT per sequence), not --window {window}")


class SequenceKind(DataKind):
    """Series and feature sequences: subclasses read their files, this class does the rest."""

    def read(self, data: Path, options, stored: dict | None = None, labels: Path | None = None) -> Sequences:
        """DATA as sequences; ``stored`` (a model file's data description) fixes how it is read."""
        raise NotImplementedError

    def head(self, options) -> OutputHead:
        """How the model's outputs read, from --loss and --quantiles (feature data has no --quantiles)."""
        return OutputHead.of(getattr(options, "loss", "mse"), getattr(options, "quantiles", None))

    # ------------------------------------------------------------ training

    def _split_data(self, data: Path, options, run) -> _Training:
        stored = run.init_from.data if run.init_from is not None else None  # a warm start reads as the model did
        seq = self.read(data, options, stored, labels=getattr(options, "labels", None))
        seq.leads = forecast_leads(seq, options, run.init_from)
        for note in seq.notes:
            run.reporter.note(note)
        if run.val is not None:
            val_seq = self.read(run.val, options, seq.describe(None, None), labels=getattr(options, "labels", None))
            val_seq.leads = seq.leads
            ends, val_starts = [len(v) for v in seq.values], [0] * len(val_seq.values)
            val_keep = list(range(len(val_seq.values)))
        else:
            ends, val_starts, val_keep = split(seq, run.val_fraction, run.train_config.seed)
            val_seq = seq if val_starts is not None else None
        train_ids = [i for i, end in enumerate(ends) if end > 0]
        norm = (Normaliser.from_dict(stored["norm"]) if stored is not None
                else Normaliser.fit([seq.values[i][: ends[i]] for i in train_ids]))
        return _Training(seq, val_seq, ends, val_starts, val_keep, norm, train_ids)

    def tie_to_data(self, split_data: _Training, season: int | None, run) -> None:
        """Set the defaults that depend on the data read (``run.train_config`` and ``run.run_config`` alike)."""

    def _streams(self, split_data: _Training, run, bidirectional: bool, augmentation: Augmentation,
                 replicate: bool = False) -> tuple[list, Streams | SequenceBatches]:
        seq, config = split_data.seq, run.train_config
        pairs = [seq.pairs(split_data.norm, i, 0, split_data.ends[i]) for i in split_data.train_ids]
        if replicate:
            if seq.task != "sequence":
                raise BpttError(REPLICATION_NEEDS_SEQUENCE_LABELS)
            pairs = [(x, replicated(y)) for x, y in pairs]
        check_window(config.window, max(len(x) for x, _ in pairs), "sequence" if seq.kind == "audio" else "series")
        if seq.classifies and not config.window:
            return pairs, whole_sequence_batches(pairs, run, bidirectional, augmentation)
        if augmentation:
            raise BpttError("--augment changes whole labelled sequences trained with --window 0 (--labels, .npz labels); "
                            "leave it out for forecasts and for a finite --window")
        splittable = seq.task in ("forecast", "tag")
        wanted = stream_count(sum(len(x) for x, _ in pairs), run)
        pieces = split_pieces([len(x) for x, _ in pairs], wanted,
                              2 * config.window if splittable and config.window else 0)
        streams = pack([pairs[i][0][a:b] for i, a, b in pieces], [pairs[i][1][a:b] for i, a, b in pieces], wanted)
        length, count = streams.inputs.shape[:2]
        if wanted < config.batch_size:
            updates = len(plan_windows(length, config.window, config.stride))
            run.reporter.note(f"{count} stream(s) of {length:,} steps instead of --batch-size {config.batch_size}, "
                              f"so that an epoch has {updates:,} updates, not a handful; give --batch-size to choose")
        elif count < wanted:
            run.reporter.note(f"{len(pieces)} sequence piece(s) fill {count} of the "
                              f"{wanted} streams (--batch-size); each piece starts from a zero state")
        return pairs, streams

    @contextlib.contextmanager
    def prepare(self, data: Path, options, run):
        head = self.head(options)  # an unknown --loss or bad --quantiles fails before the data is read
        augmentation = augmentation_of(options)  # and a bad --augment
        bidirectional = bool(run.init_from.model.config.bidirectional if run.init_from is not None
                             else options.bidirectional)
        split_data = self._split_data(data, options, run)
        seq, norm, device = split_data.seq, split_data.norm, run.device
        season = getattr(options, "season", None) or season_of(seq.freq)
        seq.start = linear_start(split_data, options, run, season, head)
        if split_data.val_seq is not None:
            split_data.val_seq.start = seq.start
        self.tie_to_data(split_data, season, run)
        if bidirectional:
            refuse_bidirectional(seq.task, run.train_config.window)
        if run.train_config.auto_window and seq.classifies:  # trained in whole-sequence batches: refused before the plan
            raise BpttError(WHOLE_SEQUENCES_HAVE_NO_WINDOW)
        pairs, streams = self._streams(split_data, run, bidirectional, augmentation,
                                       bool(getattr(options, "target_replication", False)))
        seed_everything(run.train_config.seed)
        if run.init_from is not None:
            model = run.init_from.model.train()
            theirs = OutputHead.stored(run.init_from.data, run.init_from.config)
            if not seq.classifies and (theirs.probabilistic or head.probabilistic) and theirs != head:
                raise BpttError(f"--loss {head.loss}: the --init-from model was trained with --loss {theirs.loss} "
                                "and has other outputs; keep its loss or train without --init-from")
        else:
            config = run.model_config
            config.tokens, config.input_size, config.bidirectional = False, len(seq.features), bidirectional
            config.output_size = len(seq.classes) if seq.classifies else len(seq.targets) * head.per_target
            config.anchor, config.leads = anchor_inputs(seq, getattr(options, "anchor", "none"), head), seq.leads
            if seq.start is not None:
                config.linear, config.linear_lags = seq.start.stored()
            model = RecurrentModel(config)
        described = seq.describe(norm, season)
        if seq.classifies:  # what evaluate's majority-class and nearest-neighbour baselines compare with
            labels = [y[-1:] if seq.task == "sequence" else y for _, y in pairs]
            described["baseline"] = baselines.label_reference([x for x, _ in pairs], labels, len(seq.classes),
                                                              seq.task == "sequence")
        per_lead = None  # weights of a direct head's leads in the loss (losses.lead_weights)
        if seq.task == "forecast":
            described.update(head.describe())
            history = [seq.values[i][: split_data.ends[i], seq.targets] for i in split_data.train_ids]
            if not head.probabilistic:
                per_lead = lead_weights([norm.apply(h, seq.targets) for h in history], seq.leads, season)
            described["mase_scale"] = forecast.naive_scale(history).tolist()
            if season and any(len(h) > season for h in history):
                described["mase_seasonal_scale"] = forecast.naive_scale(history, season).tolist()
        described["val_fraction"] = run.val_fraction if run.val is None else 0.0
        summary = {"data_file": Path(data).name, "data_sha256": data_hash(data), "sequences": len(seq.values),
                   "train_steps": int(sum(len(x) for x, _ in pairs)), **rows_read(seq)}
        width = streams.size if isinstance(streams, SequenceBatches) else streams.inputs.shape[1]
        validate, ends_here, score_other = self._validation(split_data, summary, width, bidirectional, options, run,
                                                             per_lead)

        def make_file(record: dict) -> ModelFile:
            best = {"best_step": record["step"], "best_epoch": record["epoch"], "best_val_loss": record.get("val_loss")}
            tail = (_tail(model, seq, norm, season, device, ends_here.pop("state", None))
                    if seq.task == "forecast" else None)
            return ModelFile(model, None, run.run_config, {**summary, **best}, {**described, "tail": tail})

        def finish(file: ModelFile) -> ModelFile | None:
            """The best model's intervals, calibrated once on its own weights when the run ends: a rollout of the
            validation tail costs more than a save, and a run improving at many epochs would repeat it."""
            if "residual_quantiles" in file.data:
                return None
            residual = _residual_quantiles(file.model.to(device), split_data, head, season, device,
                                          forecast.unknown_inputs(file.data))
            return ModelFile(file.model, None, file.config, file.summary,
                             {**file.data, "residual_quantiles": residual}) if residual else None

        if isinstance(streams, SequenceBatches):  # each batch is shared out over the ranks as it is drawn
            inputs, targets, resets = streams, None, None
        else:
            inputs, targets, resets = (distributed.shard_streams(s) for s in (streams.inputs, streams.targets,
                                                                               streams.resets))
        chosen = summary.get("model_selection")  # why the last model is kept, when validation cannot choose
        yield Prepared(model, inputs, targets, resets,
                       class_loss if seq.classifies else regression_loss(head, per_lead),
                       validate, make_file, summary["data_sha256"], score_other,
                       result={"task": seq.task, "sequences": len(seq.values), "streams": width,
                               "train_steps": summary["train_steps"], "val_steps": summary.get("val_steps", 0),
                               **({"model_selection": chosen} if chosen else {})},
                       closing_notes=[chosen] if chosen else [],
                       finish=finish if seq.task == "forecast" else None)

    def _validation(self, split_data: _Training, summary: dict, batch: int, bidirectional: bool, options, run,
                    weights: torch.Tensor | None):
        """The validation pass over the held-out data (None without any), and where it leaves the tail's state;
        its loss weighs a direct head's leads as training's does."""
        ends_here: dict = {}  # the validation pass's final states are the tail's when it ran over the training data
        if split_data.val_seq is None:
            return None, ends_here, lambda file: (None, "this run has no validation data")
        seq = split_data.seq
        held = split_data.val_seq.subset(split_data.val_keep)
        starts = [split_data.val_starts[i] for i in split_data.val_keep]
        scoring = scoring_streams(held, split_data.norm, starts, batch, bidirectional)
        summary["val_steps"] = int((~torch.isnan(scoring.targets)).any(-1).sum() if not seq.classifies
                                   else (scoring.targets != IGNORE_LABEL).sum())
        own_tail = run.val is None and seq.task == "forecast" and not distributed.active()
        too_few = too_few_to_choose(held)
        if too_few:
            run.reporter.note(too_few)
            summary["model_selection"] = too_few

        def validate(model: RecurrentModel) -> dict:
            sums, state = ranked_sums(model, scoring, run.device, seq, self.head(options), weights)
            if own_tail:  # with several ranks the model file's tail state is computed anew
                ends_here["state"] = state
            return {**scored_figures(seq, sums), **({"chooses": False} if too_few else {})}

        def score_other(file: ModelFile) -> tuple[float | None, str]:
            """Another model's loss on these points: it reads them in its own units, scored in this run's."""
            stored = file.data
            same = all(stored.get(k) == v for k, v in seq.describe(None, None).items()
                       if k in ("kind", "task", "columns", "features", "targets", "classes"))
            if not same:
                return None, "it reads other columns, targets or classes"
            if file.model.config.leads != seq.leads:
                return None, f"it forecasts {file.model.config.leads} step(s) at once, this run {seq.leads}"
            if file.model.linear_start != seq.start:
                return None, "it starts its forecasts from another linear forecast (--anchor)"
            head, theirs = self.head(options), OutputHead.stored(stored, file.config)
            distributions = {head.loss, theirs.loss} & set(PROBABILISTIC)
            if not seq.classifies and distributions and theirs != head:
                return None, "it forecasts with another --loss or --quantiles"
            own = Normaliser.from_dict(stored["norm"])
            if distributions and own.to_dict() != split_data.norm.to_dict():
                return None, "its scales are in another normalisation"
            their_streams = scoring_streams(held, own, starts, batch, file.model.config.bidirectional)
            outputs, _ = stream_pass(file.model.to(run.device), their_streams, run.device)
            if not seq.classifies and not distributions:  # its predictions, back to original units, then in this run's
                wanted, by_lead = seq.targets, outputs.double().numpy().reshape(*outputs.shape[:-1], seq.leads, -1)
                outputs = torch.from_numpy(split_data.norm.apply(own.invert(by_lead, wanted), wanted)
                                           .reshape(outputs.shape))
            return scored_figures(seq, scored_sums(seq, outputs, scoring, head, weights))["loss"], ""

        return validate, ends_here, score_other

    # ------------------------------------------------------------ using a model

    def check_request(self, file: ModelFile, request: Request, command: str) -> None:
        if command == "generate":
            if request.prime:
                raise BpttError("--prime is for text models; a series or audio model takes --context and --horizon")
            if file.data["task"] != "forecast":
                raise BpttError(f"this model labels data ({file.data['task']}); score it with 'bptt evaluate', "
                                "it does not forecast")
        if command == "evaluate" and request.precision == "bf16":
            raise BpttError("--precision bf16 is for text models (their streams' recurrence); a series or audio "
                            "model is scored in fp32: leave --precision out")
        if request.plot is not None and file.data.get("task") != "forecast":
            raise BpttError(f"--plot draws forecasts; this model labels data ({file.data.get('task')}), "
                            "it does not forecast")

    def evaluate(self, file: ModelFile, data: Path, device, request: Request) -> dict:
        """Forecast errors against the baselines, or classification figures, of a model on DATA.

        On the very data the model was trained on, only the held-out tail is scored
        (the state still warms up on everything before it).
        """
        stored = file.data
        horizon = request.horizon or 1
        if horizon < 1:
            raise BpttError(f"--horizon must be at least 1, got {horizon}")
        seq = self.read(data, self.Options(), stored, request.labels)
        norm = Normaliser.from_dict(stored["norm"])
        model = file.model.to(device).eval()
        starts, notes = _scored_starts(file, seq, data)
        result: dict = {"notes": [*seq.notes, *notes]}
        if seq.classifies:
            streams = scoring_streams(seq, norm, starts, SCORING_STREAMS, model.config.bidirectional)
            outputs, _ = stream_pass(model, streams, device)
            scored = streams.targets != IGNORE_LABEL
            truth = streams.targets[scored].numpy()
            figures = forecast.classification(truth, outputs.argmax(-1)[scored].numpy(), seq.classes)
            figures["sequences" if seq.task == "sequence" else "frames"] = int(scored.sum())
            reference = stored.get("baseline") or {}
            if "summaries" in reference and "frames" not in reference:
                result["notes"].append(f"no DTW baseline: the training frames were more than the "
                                       f"{baselines.REFERENCE_BUDGET:,} values a model file keeps for it")
            return {**result, "task": seq.task, **figures, "baselines": _label_baselines(stored, seq, norm, truth)}
        figures = forecast.evaluate_forecasts(model, seq, norm, starts, horizon, request.season or stored.get("season"),
                                              stored, data, device, request.origins or forecast.OriginPlan())
        return {**figures, "notes": [*result["notes"], *figures["notes"]]}

    def generate(self, file: ModelFile, device, request: Request) -> dict:
        context = None
        if request.context is not None:
            context = self.read(request.context, self.Options(), file.data)
        return forecast.generate_forecast(file, device, context, request.horizon, request.future,
                                          request.assume_seasonal)

    def gradcheck_problem(self, file: ModelFile, data: Path, request: Request):
        """The longest sequence of DATA, normalised as in training, for gradcheck's single stream."""
        from bptt_cli import gradcheck

        stored = file.data
        seq = self.read(data, self.Options(), stored, labels=request.labels)
        seq.leads, seq.start = file.model.config.leads, file.model.linear_start
        norm = Normaliser.from_dict(stored["norm"])
        longest = max(range(len(seq.values)), key=lambda i: len(seq.values[i]))
        inputs, targets = seq.pairs(norm, longest)
        return gradcheck.feature_problem(inputs, targets, seq.task, OutputHead.stored(stored, file.config),
                                         source=f"{data} (sequence {seq.names[longest]})")


def _residual_quantiles(model: RecurrentModel, split_data: _Training, head: OutputHead, season: int | None,
                        device, unknown: list[int]) -> dict | None:
    """A point forecaster's error quantiles on its validation data, which its intervals come from; None for
    probabilistic heads (their own intervals), labels, and runs without validation data."""
    held = split_data.val_seq
    if held is None or held.task != "forecast" or head.probabilistic:
        return None
    held = held.subset(split_data.val_keep)
    starts = [split_data.val_starts[i] for i in split_data.val_keep]
    return forecast.residual_quantiles(model, held, split_data.norm, starts, season, device, unknown)


def _label_baselines(stored: dict, seq: Sequences, norm: Normaliser, truth: np.ndarray) -> list[dict]:
    """The baselines on the points the model was scored on: each sequence's label in order beside its frames,
    or the scored frames' labels (``truth``) for per-frame labels."""
    if seq.task != "sequence":
        return baselines.label_baselines(stored.get("baseline"), [], truth, seq.classes)
    frames = [seq.frames(norm, i) for i in range(len(seq.values))]
    labels = np.array([y[0] for y in seq.labels], dtype=np.int64)
    return baselines.label_baselines(stored.get("baseline"), frames, labels, seq.classes)


def _scored_starts(file: ModelFile, seq: Sequences, data: Path) -> tuple[list[int], list[str]]:
    """Where scoring starts in each sequence: the held-out tail on the training data itself, the first new row
    in a file that extends the training data (its rows, then more), else 0."""
    stored = file.data
    same = file.summary.get("data_sha256") == data_hash(data) and stored.get("val_fraction", 0) > 0
    tail_only = same and seq.task in ("forecast", "tag")  # chronological splits: the tail was never trained on
    fraction = stored["val_fraction"] if tail_only else 0.0
    notes = []
    if tail_only:
        notes.append(f"{Path(data).name} is the training data: scoring its held-out tail "
                     f"(the last {fraction:.0%} of each sequence), the state warmed up on the rest")
    elif same:
        notes.append(f"{Path(data).name} is the training data: every sequence is scored, training ones "
                     "included; score held-out files for a fair figure")
    elif extends_training(file.summary, seq):
        read = file.summary["rows_read"]
        new = sum(len(v) - n for v, n in zip(seq.values, read))
        notes.append(f"{Path(data).name} extends the training data: scoring its {new:,} new row(s), "
                     "the state warmed up on the rows trained on")
        return list(read), notes
    return [tail_cut(len(v), fraction) if tail_only else 0 for v in seq.values], notes


def _tail(model: RecurrentModel, seq: Sequences, norm: Normaliser, season: int | None, device,
          state: State | None = None) -> dict:
    """The state before each series' last row, and the rows a forecast from its end needs.

    Kept for every series of a CSV, and for the last sequence of feature files.
    ``state`` is the end state of every sequence when a validation pass just computed it.
    """
    keep = list(range(len(seq.values))) if seq.kind == "series" else [len(seq.values) - 1]
    picked = seq.subset(keep)
    rows = forecast.PLOT_HORIZONS * (season or forecast.DEFAULT_HORIZON)  # a season to forecast, more to draw
    rows = max(rows, model.config.linear_lags)  # and every value a linear start reads
    if state is None:
        frames = [picked.frames(norm, i)[:-1] for i in range(len(keep))]
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
