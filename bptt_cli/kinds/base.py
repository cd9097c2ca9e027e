"""What every data kind provides, so that one training glue and every command serve them all.

A kind owns everything that depends on the data: recognising it, its options,
turning it into streams with their resets and loss, scoring and continuing a
model trained on it, and the arrays gradcheck runs on. Nothing outside
``bptt_cli/kinds/`` tests which kind a run or a model file is.
"""

from __future__ import annotations

import contextlib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np



def kind_option(default: Any = None, *, resume: bool = True, shape: bool = False, **extra) -> Any:
    """A field of a kind's options: ``resume=False`` for options that change where files go, not what a run
    computes; ``shape=True`` for options that fix the model's shape (a warm start keeps the stored model's)."""
    factory = extra.pop("default_factory", None)
    metadata = {"resume": resume, "shape": shape}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Prepared:
    """A kind's training data made ready for the trainer: the model, its streams, its loss and its files."""

    model: Any  # RecurrentModel, built for this data
    inputs: Any  # (T, B[, F]) streams: a tensor or a mapped view
    targets: Any
    resets: np.ndarray | None  # (T, B) new-sequence mask, or None where every stream is one sequence
    loss_fn: Callable | None  # None: next-token cross-entropy
    validate: Callable | None  # model -> validation figures, None without validation data
    make_file: Callable[[dict], Any]  # validation record -> ModelFile
    data_sha256: str
    score_other: Callable[[Any], tuple[float | None, str]] | None = None  # another ModelFile's validation loss
    # on these very points, or (None, why it cannot read them)
    sample: Callable[..., str] | None = None  # (model, seed, length, temperature) -> its text; token kinds only
    result: dict = field(default_factory=dict)  # what the kind adds to the run summary
    finish: Callable[[Any], Any] | None = None  # ModelFile -> the same file completed once, when the run ends
    # (a forecaster's interval calibration on its best weights), or None when it needs nothing
    closing_notes: list[str] = field(default_factory=list)  # said after the run, so bad input stays one line


@dataclass
class Request:
    """What ``evaluate``, ``generate`` and ``gradcheck`` ask of a model, whatever its kind."""

    labels: Path | None = None
    horizon: int | None = None
    season: int | None = None
    prime: str = ""
    length: int = 500
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    context: Path | None = None
    output: Path | None = None
    plot: Path | None = None
    exact: bool = False  # evaluate text in one stream from the first token to the last
    future: Path | None = None  # generate: a CSV of the known future values of a series model's inputs
    assume_seasonal: bool = False  # generate: inputs without known future values take last season's
    origins: Any = None  # forecast.OriginPlan: where evaluate's rolling forecasts start
    precision: str = "auto"  # evaluate (and train --test): the text recurrence's --precision


@dataclass
class RunSetup:
    """What ``prepare`` needs to know of the run besides the data and its options."""

    model_config: Any  # ModelConfig, completed by the kind (input and output sizes)
    train_config: Any  # TrainConfig, validated
    device: Any
    reporter: Any  # the trainer's Reporter
    val: Path | None = None
    val_fraction: float = 0.1
    run_config: dict = field(default_factory=dict)  # the resolved options, stored in the model file
    init_from: Any = None  # a ModelFile to start from: its weights, vocabulary or normalisation and shape
    force: bool = False  # write where a file of another kind is, and try a model the memory estimate refuses
    batch_size_given: bool = True  # False: the user left --batch-size at its default; a short series may use fewer
    untouched: frozenset = frozenset()  # the options left at their defaults: a kind may tie them to the data it read


ADAM_FAMILY = ("adamw", "adam")  # optimizers a kind's --lr and --schedule defaults are for (SGD is another scale)


def table_defaults(table: dict, values: dict, untouched: set[str]) -> dict:
    """A kind's ``table`` of defaults for the options left ``untouched``, less those the chosen optimizer does not
    use: a rate and a schedule are for the Adam family, decoupled weight decay for AdamW, and nt-asgd averages its
    own weights."""
    found = {name: value for name, value in table.items() if name in untouched}
    optimizer = values.get("optimizer", "adamw")
    if optimizer not in ADAM_FAMILY:
        found.pop("lr", None)
        found.pop("schedule", None)
    if optimizer != "adamw":
        found.pop("weight_decay", None)
    if optimizer == "nt-asgd":
        found.pop("average", None)
    return found

class DataKind:
    """The interface of a data kind. A subclass names itself in its class line and implements the methods::

        class SeriesKind(SequenceKind, name="series", what="CSV data", holds="a CSV time series",
                         options=SeriesOptions): ...
    """

    name: ClassVar[str]  # the model file's ``kind``
    what: ClassVar[str]  # what an option "is for": "text", "CSV data", ...
    holds: ClassVar[str]  # what DATA "holds", in an error message
    Options: ClassVar[type]  # a dataclass of this kind's ``bptt train`` options, named as the CLI names them
    unit: ClassVar[str] = "step"  # what the training reporter counts
    tokens: ClassVar[bool] = False  # its models read token ids (embedded), not feature vectors
    reads_frames: ClassVar[bool] = False  # ``bptt predict`` reads frames from a file rather than records from stdin

    def __init_subclass__(cls, name: str = "", what: str = "", holds: str = "", options: type | None = None, **rest):
        super().__init_subclass__(**rest)
        if name:
            cls.name, cls.what, cls.holds, cls.Options = name, what, holds, options

    def claims(self, data: Path) -> bool:
        """True when DATA is of this kind (kinds are asked in registry order)."""
        raise NotImplementedError

    def options(self, values: dict) -> Any:
        """This kind's options from a command's plain values (the other kinds' options are refused by the CLI)."""
        picked = {}
        for option in fields(self.Options):
            if option.name in values:
                value = values[option.name]
                empty = value is None and option.default_factory is not MISSING
                picked[option.name] = option.default_factory() if empty else value
        return self.Options(**picked)

    def unit_for(self, options: Any) -> str:
        return self.unit

    def defaults(self, values: dict, untouched: set[str]) -> dict:
        """This kind's own defaults of ``bptt train`` options the user left ``untouched`` (``values``: all of them);
        the command builds the run from the options with these in place, so any option may have one."""
        return {}

    @contextlib.contextmanager
    def prepare(self, data: Path, options: Any, run) -> Iterator[Prepared]:
        """Read and check DATA, build the model and its streams; nothing is written before this succeeds."""
        raise NotImplementedError
        yield

    def evaluate(self, file, data: Path, device, request: Request) -> dict:
        raise NotImplementedError

    def generate(self, file, device, request: Request) -> Any:
        raise NotImplementedError

    def gradcheck_problem(self, file, data: Path, request: Request):
        raise NotImplementedError

    def predictor(self, file, model_path: Path, device, horizon: int = 1):
        """A ``predict.Predictor`` for a stream of this kind's records."""
        raise NotImplementedError

    def check_request(self, file, request: Request, command: str) -> None:
        """Refuse, before any work, what ``command`` cannot do with a model of this kind."""


def shape_keys(options: Any) -> list[str]:
    """The options of a kind that fix the model's shape, which a warm start takes from the stored model."""
    return [f.name for f in fields(options) if f.metadata.get("shape", False)]


def resume_keys(options: Any) -> dict:
    """The options of a kind that a checkpoint must have been made with to be resumed."""
    return {f.name: getattr(options, f.name) for f in fields(options) if f.metadata.get("resume", True)}
