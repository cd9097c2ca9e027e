"""``bptt train``: declare the options, hand them to the library, render the run."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from bptt_cli.commands.options import (
    Cell,
    Config,
    OnNan,
    Device,
    OptimizerKind,
    Precision,
    ScheduleKind,
    Seed,
    Threads,
    TokenizerKind,
)

DATA = "Data"
MODEL = "Model"
BPTT = "Truncated BPTT"
OPTIM = "Optimisation"
RUN = "Run"
SCRIPTS = "Scripts and cron"


def train(
    data: Annotated[Path, typer.Argument(help="Training data: a UTF-8 text file.", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model file; always holds the best model on validation.", rich_help_panel=DATA)] = Path("model.pt"),
    val: Annotated[Optional[Path], typer.Option("--val", help="Validation text (default: the tail of DATA).", rich_help_panel=DATA)] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of DATA's tail kept for validation, never shuffled.", rich_help_panel=DATA)] = 0.1,
    tokenizer: Annotated[TokenizerKind, typer.Option("--tokenizer", help="How text becomes tokens.", rich_help_panel=DATA)] = TokenizerKind.char,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Where the token cache goes (default: .bptt-cache beside DATA); the text is encoded once, later runs reuse it.", rich_help_panel=DATA)] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Encode into a temporary file deleted after the run; keep no cache.", rich_help_panel=DATA)] = False,
    model: Annotated[Cell, typer.Option("--model", help="Recurrent cell.", rich_help_panel=MODEL)] = Cell.lstm,
    layers: Annotated[int, typer.Option("--layers", help="Stacked recurrent layers.", rich_help_panel=MODEL)] = 2,
    hidden: Annotated[int, typer.Option("--hidden", help="Hidden state width.", rich_help_panel=MODEL)] = 256,
    embed: Annotated[int, typer.Option("--embed", help="Token embedding width.", rich_help_panel=MODEL)] = 128,
    dropout: Annotated[float, typer.Option("--dropout", help="Dropout on embeddings, between layers and before the decoder.", rich_help_panel=MODEL)] = 0.0,
    tie_weights: Annotated[bool, typer.Option("--tie-weights", help="Share the embedding and decoder matrices (needs --embed = --hidden).", rich_help_panel=MODEL)] = False,
    window: Annotated[int, typer.Option("--window", "-k", help="K: steps back-propagated per update; 0 = full BPTT over each stream.", rich_help_panel=BPTT)] = 50,
    stride: Annotated[Optional[int], typer.Option("--stride", help="New steps per update (default: K); < K overlaps windows, TBPTT(k1=stride, k2=K).", rich_help_panel=BPTT)] = None,
    window_jitter: Annotated[float, typer.Option("--window-jitter", help="Vary each update's length at random (std as a fraction of the stride) so cut points move.", rich_help_panel=BPTT)] = 0.0,
    stateless: Annotated[bool, typer.Option("--stateless", help="Start every window from zeros instead of the carried, detached state.", rich_help_panel=BPTT)] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="B parallel streams the data is cut into.", rich_help_panel=BPTT)] = 32,
    clip: Annotated[float, typer.Option("--clip", help="Global gradient-norm clipping; 0 turns it off.", rich_help_panel=OPTIM)] = 1.0,
    optimizer: Annotated[OptimizerKind, typer.Option("--optimizer", rich_help_panel=OPTIM)] = OptimizerKind.adamw,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.", rich_help_panel=OPTIM)] = 2e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay", rich_help_panel=OPTIM)] = 0.0,
    schedule: Annotated[ScheduleKind, typer.Option("--schedule", help="Learning-rate schedule after warm-up.", rich_help_panel=OPTIM)] = ScheduleKind.constant,
    warmup: Annotated[int, typer.Option("--warmup", help="Steps of linear learning-rate warm-up.", rich_help_panel=OPTIM)] = 0,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the data.", rich_help_panel=RUN)] = 10,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many updates.", rich_help_panel=RUN)] = None,
    max_time: Annotated[Optional[str], typer.Option("--max-time", help="Wall-clock budget (90, 90s, 10m, 2h); stops cleanly and keeps the best model.", rich_help_panel=RUN)] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help="Stop after this many validations without improvement.", rich_help_panel=RUN)] = None,
    log_every: Annotated[int, typer.Option("--log-every", help="Updates between gradient-norm reports.", rich_help_panel=RUN)] = 100,
    device: Device = "auto",
    threads: Threads = None,
    precision: Annotated[Precision, typer.Option("--precision", help="fp32, or bf16 autocast (only where the hardware has bf16).", rich_help_panel=RUN)] = Precision.fp32,
    seed: Seed = 0,
    on_nan: Annotated[OnNan, typer.Option("--on-nan", help="A NaN or infinite loss: stop (keep the last good model, exit 1) or skip that update.", rich_help_panel=RUN)] = OnNan.stop,
    max_skips: Annotated[int, typer.Option("--max-skips", help="With --on-nan skip: fail after this many skipped updates.", rich_help_panel=RUN)] = 10,
    checkpoint_every: Annotated[Optional[int], typer.Option("--checkpoint-every", help="Updates between checkpoints (MODEL.ckpt; also at every epoch end).", rich_help_panel=SCRIPTS)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue exactly where the checkpoint beside -o stopped.", rich_help_panel=SCRIPTS)] = False,
    metrics: Annotated[Optional[Path], typer.Option("--metrics", help="Append one record per log interval and validation: JSON lines, or CSV for *.csv.", rich_help_panel=SCRIPTS)] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the run summary as one JSON object on stdout.", rich_help_panel=SCRIPTS)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors and the final result.", rich_help_panel=SCRIPTS)] = False,
    config: Config = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved configuration as YAML and exit.", rich_help_panel=SCRIPTS)] = False,
) -> None:
    """Train a model with truncated BPTT and keep the best one.

    Example: bptt train sample_data/shakespeare.txt --model lstm --window 50 --clip 1.0 -o shakespeare.pt
    """
    options = dict(locals())  # first, before any other name exists here
    from bptt_cli.run_config import plain_values, to_yaml

    run_config = plain_values(options)
    if print_config:
        typer.echo(to_yaml(run_config, "train"), nl=False)
        return

    from bptt_cli.device import check_precision, resolve_device, set_threads
    from bptt_cli.durations import parse_duration
    from bptt_cli.metrics_file import Fanout, MetricsFile
    from bptt_cli.models import ModelConfig
    from bptt_cli.render.training import TrainReporter
    from bptt_cli.text_training import train_text
    from bptt_cli.trainer import TrainConfig

    set_threads(threads)
    target = resolve_device(device)
    check_precision(target, precision.value)
    model_config = ModelConfig(cell=model.value, embed=embed, hidden=hidden, layers=layers,
                               dropout=dropout, tie_weights=tie_weights)
    train_config = TrainConfig(
        window=window, stride=stride, window_jitter=window_jitter, stateless=stateless, batch_size=batch_size,
        epochs=epochs, max_steps=max_steps, max_time=parse_duration(max_time) if max_time else None,
        patience=patience, optimizer=optimizer.value, lr=lr, weight_decay=weight_decay, schedule=schedule.value,
        warmup=warmup, clip=clip, log_every=log_every, precision=precision.value, seed=seed,
        checkpoint_every=checkpoint_every, on_nan=on_nan.value, max_skips=max_skips,
    )
    model_config.validate()
    screen = TrainReporter(unit="char" if tokenizer is TokenizerKind.char else "token", quiet=quiet)
    reporter = Fanout(screen, MetricsFile(metrics) if metrics else None)
    try:
        result = train_text(data, output, model_config, train_config, target, reporter, tokenizer.value,
                            val, val_fraction, run_config, resume, cache_dir=cache_dir, use_cache=not no_cache)
    finally:
        screen.close()
    again = [a for a in sys.argv[1:] if a != "--resume"]
    screen.finish(result, as_json=json, resume_command=shlex.join(["bptt", *again, "--resume"]))
    if result["resumable"]:
        raise typer.Exit(3)
