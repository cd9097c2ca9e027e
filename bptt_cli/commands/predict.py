"""``bptt predict``: a prediction per record as the records arrive on stdin."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from bptt_cli.commands.options import Device, OnBadRow, OutputFormat, Threads
from bptt_cli.errors import BpttError


def predict(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL", help="A model file written by 'bptt train'.", show_default=False)],
    frames: Annotated[Optional[Path], typer.Argument(metavar="FRAMES", help="For a feature model: the .npy file of frames to read (others read stdin).", show_default=False)] = None,
    horizon: Annotated[int, typer.Option("--horizon", min=1, help="Steps to forecast after each row (series models).")] = 1,
    state: Annotated[Optional[Path], typer.Option("--state", help="Carry the stream's state across invocations: loaded at start if it exists, saved (atomically) at the end.", show_default=False)] = None,
    save_every: Annotated[int, typer.Option("--save-every", min=0, help="With --state: also save it every N rows (0: only at the end).")] = 0,
    on_bad_row: Annotated[OnBadRow, typer.Option("--on-bad-row", help="A row that cannot be read: skip it (one line on stderr) or stop (exit 2).")] = OnBadRow.skip,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="csv (a header line, then a line per row) or json lines; auto: json for JSON input.")] = OutputFormat.auto,
    assume_seasonal: Annotated[bool, typer.Option("--assume-seasonal", help="With --horizon above 1: inputs that are not targets take their values one season earlier (or their last ones).")] = False,
    device: Device = "cpu",
    threads: Threads = None,
) -> None:
    """Predict as rows arrive: after each CSV row (under a header) or JSON line on stdin, write the next-step
    forecast of a series model (or --horizon steps); a text model scores each line (bits per token, surprise).

    Each row costs one recurrent step: the state is carried, never recomputed.

    Example: tail -n +1 -f sensor.csv | bptt predict model.pt --state sensor.state;
    bptt predict shakespeare.pt < log.txt --format json
    """
    from bptt_cli import kinds
    from bptt_cli.device import resolve_device, set_threads
    from bptt_cli.modelfile import load_model_file
    from bptt_cli.predict import BadRow, Records
    from bptt_cli.render.console import error_line, info
    from bptt_cli.render.predict import PredictionWriter

    set_threads(threads)
    file = load_model_file(model_file)
    kind = kinds.of_model(file)
    predictor = kind.predictor(file, model_file, resolve_device(device), horizon)
    for note in predictor.future_notes(assume_seasonal):
        info(note)
    if state is not None and state.is_file():
        predictor.load_state(state)
    if kind.reads_frames:
        if frames is None:
            raise BpttError("a feature model reads its frames from a file: bptt predict MODEL FRAMES.npy")
        stream = enumerate(_frames(frames), start=1)
    elif frames is not None:
        raise BpttError(f"{frames}: this model reads its records from stdin; drop the file argument")
    else:
        stream = Records(iter(sys.stdin.readline, ""), file.tokenizer is not None,
                         predictor.needed(), predictor.stream.header)
    writer = None
    for number, record in stream:
        try:
            if isinstance(record, BadRow):
                raise record
            result = predictor.step(record)
        except BadRow as err:
            error_line(f"row {number}: {err}" + ("" if on_bad_row is OnBadRow.skip else "; stopped (--on-bad-row stop)"))
            if on_bad_row is OnBadRow.stop:
                _save(predictor, state)
                raise typer.Exit(2)
            continue
        if writer is None:
            as_json = output_format is OutputFormat.json or (output_format is OutputFormat.auto
                                                             and getattr(stream, "json_lines", False))
            writer = PredictionWriter(predictor.columns(), as_json)
        writer.write(result)
        predictor.stream.header = getattr(stream, "header", None)  # kept in --state for the next invocation
        if state is not None and save_every and predictor.stream.rows % save_every == 0:
            predictor.save_state(state)
    _save(predictor, state)


def _save(predictor, state: Optional[Path]) -> None:
    if state is not None:
        predictor.save_state(state)


def _frames(path: Path):
    import numpy as np

    from bptt_cli.audio import read_array

    values, _ = read_array(path)
    return iter(np.asarray(values))
