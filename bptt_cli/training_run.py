"""One training run from data to files on disk, the same for every data kind.

The kind prepares the streams, the model and its loss (``kinds``); this module
owns what is not about the data: the lock on the output, keeping only a better
model, checkpoints and exact resume, and stopping cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bptt_cli import distributed
from bptt_cli.kinds import DataKind, RunSetup, resume_keys
from bptt_cli.choices import REPLACE_RULES
from bptt_cli.errors import BpttError
from bptt_cli.modelfile import ModelFile, load_model_file, save_model_file
from bptt_cli.models import RecurrentModel
from bptt_cli.runfiles import RunFiles
from bptt_cli.trainer import RESUMABLE, Reporter, TrainConfig, Trainer

# Options that change what a run computes, whatever the data: a checkpoint only resumes a run made with the
# same ones (and with the same options of the data's kind, ``kinds.resume_keys``).
RESUME_KEYS = (
    "data_sha256", "val", "val_sha256", "val_fraction", "model", "layers", "hidden", "embed", "dropout",
    "tie_weights", "window", "stride", "window_jitter", "stateless", "batch_size", "clip", "optimizer", "lr",
    "weight_decay", "schedule", "warmup", "precision", "seed", "on_nan", "dropout_kind", "weight_drop",
    "embed_dropout", "ar", "tar", "average", "nonmono",
)


def train(kind: DataKind, data: str | Path, output: str | Path, options, setup: RunSetup, resume: bool = False,
          replace: str = "better", test: str | Path | None = None) -> dict:
    """Train on DATA of ``kind`` and keep the best model (on validation) in ``output``; returns the summary.

    Everything about the data is read and checked before any file is written. A model already at
    ``output`` is scored on this run's validation points first, and ``replace`` decides on those figures.
    ``test`` is scored at the end by the model at ``output`` (the best there is), as ``bptt evaluate`` does.
    """
    from bptt_cli.token_cache import sha256

    if replace not in REPLACE_RULES:
        raise BpttError(f"--replace is one of {', '.join(REPLACE_RULES)}, got {replace!r}")
    setup.train_config.validate()
    if test is not None and not Path(test).exists() and not any(c in str(test) for c in "*?["):
        raise BpttError(f"--test {test}: no such file; give the test data to score the model on")
    if setup.train_config.sample_every and not kind.tokens:
        raise BpttError(f"--sample-every is for text and corpus models; {data} holds {kind.holds}")
    if setup.train_config.embed_dropout and not kind.tokens:
        raise BpttError(f"--embed-dropout drops words of text and corpus models; {data} holds {kind.holds}")
    with kind.prepare(Path(data), options, setup) as prepared:
        run = {**setup.run_config, "data_sha256": prepared.data_sha256,
               "val_sha256": sha256(setup.val) if setup.val is not None and Path(setup.val).is_file() else None}
        with RunFiles(output, inputs=(data, setup.val), force=setup.force) as files:
            existing = _bar_for_existing(files, prepared, replace)
            result = run_training(files, prepared.model, prepared.make_file, setup.train_config, setup.device,
                                  setup.reporter, prepared.validate, prepared.inputs, prepared.targets, run,
                                  resets=prepared.resets, loss_fn=prepared.loss_fn, resume=resume,
                                  must_match=RESUME_KEYS + tuple(resume_keys(options)), existing=existing,
                                  sample=_sampler(prepared, setup.train_config))
            if prepared.finish is not None and files.owner and (result["model_written"] or result["already_complete"]):
                _finish_model(files.output, prepared.finish)
    for note in prepared.closing_notes:
        setup.reporter.note(note)
    if existing is not None and not result["already_complete"]:
        existing["replaced"] = result["model_written"]
        setup.reporter.note(_replacement_line(files.output, existing, result.get("best_val_loss")))
    if files.refused_checkpoint:
        setup.reporter.note(_kept_checkpoint_line(files, result["stop_reason"]))
    scored = _score_test(files.output, test, options, setup) if test is not None and distributed.is_main() else {}
    return {**result, **prepared.result, **scored, **({"existing_model": existing} if existing else {})}


TEST_FIGURES = ("loss", "perplexity", "bits_per_token", "accuracy", "macro_f1", "mae", "rmse", "smape", "mase",
                "baselines")


def _score_test(output: Path, test: str | Path, options, setup: RunSetup) -> dict:
    """``test_*`` figures of the model at -o on TEST (a forecast's are its one-step errors), for the summary."""
    from bptt_cli.kinds import Request, of_model

    file = load_model_file(output)
    try:
        figures = of_model(file).evaluate(file, Path(test), setup.device, Request(labels=getattr(options, "labels", None)))
    except BpttError as err:
        raise BpttError(f"--test {test}: {err} (the trained model is in {output})") from None
    for note in figures.get("notes", []):
        setup.reporter.note(f"--test {test}: {note}")
    figures = {**figures, **figures.get("horizons", {}).get("1", {}).get("model", {})}
    return {"test_file": str(test), **{f"test_{name}": figures[name] for name in TEST_FIGURES if name in figures}}


def _finish_model(output: Path, finish: Callable[[ModelFile], ModelFile | None]) -> None:
    """Complete the kept model file once (``Prepared.finish``), rewriting it whole; a run killed before this
    leaves a file without that part, which its resumed run completes."""
    done = finish(load_model_file(output))
    if done is not None:
        save_model_file(output, done)


def _sampler(prepared, config: TrainConfig) -> Callable[[RecurrentModel, int], str] | None:
    """The kind's sampler at --sample-length and --sample-temperature; only the process that prints samples."""
    if prepared.sample is None or not distributed.is_main():
        return None
    return functools.partial(prepared.sample, length=config.sample_length, temperature=config.sample_temperature)


def _bar_for_existing(files: RunFiles, prepared, replace: str) -> dict | None:
    """Score the model already at -o on this run's validation points and set the loss a new model must beat.

    Every rank scores (a validation pass may be shared out over ranks); only the owner writes.
    """
    if not files.output.exists():
        return None
    if replace == "always":
        files.best_on_disk = None
        return {"rule": replace, "val_loss": None, "why": ""}
    loss, why = (None, "--replace never") if replace == "never" else prepared.score_other(load_model_file(files.output))
    files.best_on_disk = -math.inf if loss is None else loss  # what cannot be compared is never replaced
    return {"rule": replace, "val_loss": loss, "why": why}


def _replacement_line(output: Path, existing: dict, new_loss: float | None) -> str:
    """One line that says what happened to the model file that was at -o, with both figures on the same points."""
    new = f"{new_loss:.4g}" if new_loss is not None else "none"
    if existing["rule"] == "always":
        return f"replaced {output} (--replace always)"
    if existing["val_loss"] is None:
        return (f"kept the existing {output}: it cannot be scored on this run's validation data ({existing['why']}); "
                "--replace always replaces it")
    old = f"{existing['val_loss']:.4g}"
    if existing["replaced"]:
        return f"replaced {output}: on this run's validation data the new model scores {new}, the old one {old}"
    return (f"kept the existing {output}: on this run's validation data it scores {old}, the new model {new} "
            "(--replace always replaces it)")


def _kept_checkpoint_line(files: RunFiles, stop_reason: str) -> str:
    """Why this run wrote no checkpoint: the one beside -o is the resume point of the kept model's run."""
    line = (f"kept {files.checkpoint_path} too: it is the checkpoint of the run that made {files.output}, "
            "and this run wrote none")
    if stop_reason in RESUMABLE:
        line += "; this run cannot be resumed: train into another -o to stop and resume it"
    return line


def _kept_model(files: RunFiles, existing: dict | None) -> dict:
    """What a validation record says of the model file kept instead of this run's best: which, and its score."""
    score = existing["val_loss"] if existing else files.best_on_disk
    return {"kept_model": str(files.output), "kept_val_loss": score if score is not None and math.isfinite(score)
            else None, "kept_why": existing["why"] if existing else ""}


def run_training(
    files: RunFiles,
    model: RecurrentModel,
    make_file: Callable[[dict], ModelFile],
    train_config: TrainConfig,
    device: torch.device,
    reporter: Reporter,
    validate: Callable[[RecurrentModel], dict] | None,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    run_config: dict,
    resets: np.ndarray | None = None,
    loss_fn: Callable | None = None,
    resume: bool = False,
    must_match: tuple[str, ...] = RESUME_KEYS,
    existing: dict | None = None,
    sample: Callable[[RecurrentModel, int], str] | None = None,
) -> dict:
    """Train, keep the best model in ``files.output`` and a checkpoint beside it; returns the summary.

    ``make_file(record)`` builds the model file for a validation record (its
    summary says which step and loss it holds). ``existing`` is what ``_bar_for_existing``
    found at -o: a record whose best is not saved names that model and its score.
    """

    def save_best(record: dict) -> bool:
        written = files.save_model(make_file(record), record.get("val_loss"))
        if not written:
            record.update(_kept_model(files, existing))
        return written

    # the checkpoint holds (and a resume compares) the run as it computes: --precision auto as the precision
    # it chose here, --window auto as the trainer's window (which the trainer checks on resume)
    run_config = {**run_config, "precision": train_config.precision}
    auto = train_config.auto_window
    if auto:
        must_match = tuple(key for key in must_match if key != "window")

    def save_checkpoint(training: dict) -> bool:
        return files.save_checkpoint(training, {**run_config, **({"window": training["window"]} if auto else {})})

    trainer = Trainer(model, train_config, device, reporter, validate, save_best, loss_fn,
                      save_checkpoint=save_checkpoint, sample=sample)
    saved = files.load_checkpoint(run_config, must_match) if resume else None
    with trainer.stop_on_signals():
        result = trainer.fit(inputs, targets, resets, saved)
    result.update(model_file=str(files.output), checkpoint=str(files.checkpoint_path),
                  model_written=files.output.exists() and not files.kept_existing and not result["already_complete"])
    if result["already_complete"]:
        reporter.note(f"the run in {files.checkpoint_path} is already complete (update {result['steps']:,}); "
                      "nothing was trained or written")
    return result
