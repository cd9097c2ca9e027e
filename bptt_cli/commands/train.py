"""``bptt train``: declare the options, hand them to the library, render the run."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Optional

import typer

from bptt_cli.choices import SERIES_PATIENCE, TEXT_DEFAULTS
from bptt_cli.commands.options import (
    Cell,
    Config,
    Device,
    DropoutKind,
    Anchor,
    Missing,
    OnNan,
    OptimizerKind,
    option_names,
    Precision,
    ScheduleKind,
    Seed,
    SeriesLoss,
    SeriesTask,
    Threads,
    TokenizerKind,
    ReplaceRule,
    given_options,
    kind_note,
)

DATA = "Data"
MODEL = "Model"
BPTT = "Truncated BPTT"
OPTIM = "Optimisation"
RUN = "Run"
SCRIPTS = "Scripts and cron"
SERIES = "Series and audio"
FEATURES = "Feature files and labels"
AUTO = "auto"  # --window auto


def window_steps(value) -> int | str:
    """--window: a number of steps (0 for full BPTT), or auto."""
    if value == AUTO or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    try:
        return int(str(value))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither a number of steps nor auto") from None


def train(
    ctx: typer.Context,
    data: Annotated[Optional[Path], typer.Argument(help="Training data: a UTF-8 text file, a CSV time series, or feature files (.npy, .npz, .wav, .ts; a directory or a glob). Required, unless --config gives it or --print-config only prints.", show_default=False)] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Model file; always holds the best model on validation.", rich_help_panel=DATA)] = Path("model.pt"),
    val: Annotated[Optional[Path], typer.Option("--val", help="Validation text (default: the tail of DATA).", rich_help_panel=DATA)] = None,
    test: Annotated[Optional[Path], typer.Option("--test", help="After training, score the model at -o on this data (as 'bptt evaluate' does); the figures go in the summary and the JSON.", rich_help_panel=DATA, show_default=False)] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help=f"Share of DATA's tail kept for validation, never shuffled{kind_note('val_fraction')}.", rich_help_panel=DATA)] = 0.1,
    tokenizer: Annotated[TokenizerKind, typer.Option("--tokenizer", help="How text becomes tokens.", rich_help_panel=DATA)] = TokenizerKind.char,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Where the token cache and WAV features go (default: $BPTT_CACHE_DIR, else $XDG_CACHE_HOME/bptt or ~/.cache/bptt); a text is encoded and a recording's frames computed once, later runs reuse them.", rich_help_panel=DATA)] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Keep no cache: encode text into a temporary file deleted after the run, compute WAV features every time.", rich_help_panel=DATA)] = False,
    target_columns: Annotated[Optional[list[str]], typer.Option("--target", help="CSV column to predict (repeatable; default: every numeric column).", rich_help_panel=SERIES)] = None,
    features: Annotated[Optional[list[str]], typer.Option("--features", help="CSV input column (repeatable; default: every numeric column); for WAV files: logmel or mfcc.", rich_help_panel=SERIES)] = None,
    task: Annotated[Optional[SeriesTask], typer.Option("--task", help="forecast (numeric targets, next step) or tag (a class label at every step: --task tag --target COL).", rich_help_panel=SERIES)] = None,
    time_column: Annotated[Optional[str], typer.Option("--time-column", help="Column of times, parsed and sorted (default: the one column that parses as dates).", rich_help_panel=SERIES)] = None,
    group_column: Annotated[Optional[str], typer.Option("--group-column", help="Column naming the series: each is its own stream, state never flows between them.", rich_help_panel=SERIES)] = None,
    missing: Annotated[Missing, typer.Option("--missing", help="Missing values: error, ffill, interpolate or drop the rows.", rich_help_panel=SERIES)] = Missing.error,
    loss: Annotated[SeriesLoss, typer.Option("--loss", help="Loss on numeric targets: mse or huber for a point forecast; gaussian (a mean and a scale per target) or quantile (one output per --quantiles level) for forecasts with intervals.", rich_help_panel=SERIES)] = SeriesLoss.mse,
    quantiles: Annotated[Optional[str], typer.Option("--quantiles", help="With --loss quantile: the levels to forecast, comma-separated in (0, 1) (default 0.1,0.5,0.9); the point forecast is the median, or the middle level.", rich_help_panel=SERIES, show_default=False)] = None,
    season: Annotated[Optional[int], typer.Option("--season", min=1, help="Steps per season (default: from the time step, e.g. 48 for half-hours).", rich_help_panel=SERIES)] = None,
    calendar: Annotated[str, typer.Option("--calendar", help="Calendar inputs from the time column, as sin/cos pairs: auto (each of hour of day, day of week, day of year whose cycle is longer than the time step and seen twice in the data), none, or parts such as hour,week.", rich_help_panel=SERIES)] = "auto",
    resample: Annotated[Optional[str], typer.Option("--resample", help="Put each series on a regular grid first: a pandas offset (5min, 1h) or auto (the most common step); rows in one slot are averaged, and --missing fills the slots without a row.", rich_help_panel=SERIES, show_default=False)] = None,
    future: Annotated[Optional[list[str]], typer.Option("--future", help="Input column whose future values are known, e.g. a holiday flag (repeatable): 'bptt generate --future FILE' supplies them.", rich_help_panel=SERIES)] = None,
    leads: Annotated[Optional[int], typer.Option("--leads", min=1, help="Steps ahead the model forecasts at once from each state, a direct multi-step head (default: a season, else 24; 1 when every input besides the targets and the calendar is marked --future, so a rollout reads their known values); 1: the next step only, rolled out.", rich_help_panel=SERIES)] = None,
    anchor: Annotated[Anchor, typer.Option("--anchor", help="What a forecast starts from, the model predicting the rest. linear: a linear autoregression on the last week of values (seven seasons, 48 steps without one; at most 1,024 and a quarter of the series), fitted by ridge least squares on the training rows, its penalty chosen on the validation tail: an untrained model is that linear forecast; last: the last value (an untrained model is persistence); none: nothing, the model predicts the value itself. Probabilistic losses have none.", rich_help_panel=SERIES)] = Anchor.linear,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="CSV with columns file,label: one class per feature file (loss on its last frame).", rich_help_panel=FEATURES)] = None,
    n_mels: Annotated[int, typer.Option("--n-mels", min=1, help="Mel bands of WAV features.", rich_help_panel=FEATURES)] = 40,
    n_mfcc: Annotated[int, typer.Option("--n-mfcc", min=1, help="Coefficients per frame with --features mfcc.", rich_help_panel=FEATURES)] = 13,
    hop_ms: Annotated[float, typer.Option("--hop-ms", help="WAV frame step in milliseconds.", rich_help_panel=FEATURES)] = 10.0,
    win_ms: Annotated[float, typer.Option("--win-ms", help="WAV analysis window in milliseconds.", rich_help_panel=FEATURES)] = 25.0,
    cmvn: Annotated[bool, typer.Option("--cmvn/--no-cmvn", help=f"Feature files: normalise each sequence's frames to zero mean and unit variance per feature (takes out what a voice or channel adds to every frame){kind_note('cmvn')}.", rich_help_panel=FEATURES)] = False,
    trim_db: Annotated[Optional[float], typer.Option("--trim-db", help=f"WAV files: cut leading and trailing audio quieter than the loudest part by this many dB (e.g. 30), so the last frame is the word's end; 0 keeps it{kind_note('trim_db')}.", rich_help_panel=FEATURES, show_default=False)] = None,
    augment: Annotated[Optional[str], typer.Option("--augment", help=f"Feature files with labels, --window 0: change each training batch at random, e.g. stretch,time-mask,freq-mask,warp (or stretch=0.15,time-mask=10,freq-mask=8,warp=0.1): each sequence faster or slower, a run of frames and a band of features blanked, the feature axis scaled (another vocal tract's formants; with --deltas both halves alike); seeded, so a resumed run repeats it; none: no change{kind_note('augment')}.", rich_help_panel=FEATURES, show_default=False)] = None,
    target_replication: Annotated[bool, typer.Option("--target-replication/--no-target-replication", help=f"One label per sequence (--labels, .ts): train every frame to predict the sequence's label, not only the last (target replication); the model still answers from the last frame. Helped spoken digits from unseen voices (README){kind_note('target_replication')}.", rich_help_panel=FEATURES)] = False,
    deltas: Annotated[bool, typer.Option("--deltas/--no-deltas", help=f"Feature files: append each feature's change from frame to frame (twice the inputs){kind_note('deltas')}.", rich_help_panel=FEATURES)] = False,
    model: Annotated[Cell, typer.Option("--model", help="Recurrent cell.", rich_help_panel=MODEL)] = Cell.lstm,
    layers: Annotated[int, typer.Option("--layers", help=f"Stacked recurrent layers{kind_note('layers')}.", rich_help_panel=MODEL)] = 2,
    hidden: Annotated[int, typer.Option("--hidden", help=f"Hidden state width{kind_note('hidden')}.", rich_help_panel=MODEL)] = 256,
    embed: Annotated[int, typer.Option("--embed", help="Token embedding width.", rich_help_panel=MODEL)] = 128,
    dropout: Annotated[float, typer.Option("--dropout", help=f"Dropout on embeddings, between layers and before the decoder{kind_note('dropout')}.", rich_help_panel=MODEL)] = 0.0,
    dropout_kind: Annotated[DropoutKind, typer.Option("--dropout-kind", help="standard: a new --dropout mask at every step; locked: one mask per window, shared by its steps (variational dropout).", rich_help_panel=MODEL)] = DropoutKind.standard,
    weight_drop: Annotated[float, typer.Option("--weight-drop", help="DropConnect on the hidden-to-hidden weights: a share masked once per update (the fused kernel is kept); 0 turns it off.", rich_help_panel=MODEL)] = 0.0,
    embed_dropout: Annotated[float, typer.Option("--embed-dropout", help="Drop whole words: this share of the embedding matrix's rows, once per update; 0 turns it off.", rich_help_panel=MODEL)] = 0.0,
    ar: Annotated[float, typer.Option("--ar", help=f"Activation regularisation: add this times the mean square of the dropped last-layer output to the loss trained on (AWD-LSTM's alpha); 0 turns it off{kind_note('ar')}.", rich_help_panel=MODEL)] = 0.0,
    tar: Annotated[float, typer.Option("--tar", help=f"Temporal activation regularisation: add this times the mean square of the last-layer output's change from step to step (AWD-LSTM's beta); 0 turns it off{kind_note('tar')}.", rich_help_panel=MODEL)] = 0.0,
    tie_weights: Annotated[bool, typer.Option("--tie-weights", help="Share the embedding and decoder matrices (needs --embed = --hidden).", rich_help_panel=MODEL)] = False,
    bidirectional: Annotated[bool, typer.Option("--bidirectional", help="Each layer also reads every sequence backwards; the decoder sees both directions. For labelled sequences (--labels, --task tag, .npz labels) with --window 0.", rich_help_panel=SERIES)] = False,
    window: Annotated[str, typer.Option("--window", "-k", parser=window_steps, metavar="K|auto", help=f"K: steps back-propagated per update; 0 = full BPTT over each stream; auto = the shortest window whose gradient reaches --min-cosine of full BPTT's on a sample of the data, within the memory, checked again at each epoch end{kind_note('window')}; a series whose season is known takes two seasons; feature sequences with one label each (--labels, .ts classes) train whole, 0.", rich_help_panel=BPTT)] = 50,
    min_cosine: Annotated[float, typer.Option("--min-cosine", help="With --window auto: the gradient cosine against full BPTT the window must reach.", rich_help_panel=BPTT)] = 0.9,
    stride: Annotated[Optional[int], typer.Option("--stride", help="New steps per update (default: K); < K overlaps windows, TBPTT(k1=stride, k2=K).", rich_help_panel=BPTT)] = None,
    window_jitter: Annotated[float, typer.Option("--window-jitter", help="Vary each update's length at random (std as a fraction of the stride) so cut points move.", rich_help_panel=BPTT)] = 0.0,
    stateless: Annotated[bool, typer.Option("--stateless", help="Start every window from zeros instead of the carried, detached state.", rich_help_panel=BPTT)] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="B parallel streams the data is cut into; for labelled sequences with --window 0, whole sequences per update.", rich_help_panel=BPTT)] = 32,
    clip: Annotated[float, typer.Option("--clip", help="Global gradient-norm clipping; 0 turns it off.", rich_help_panel=OPTIM)] = 1.0,
    clip_value: Annotated[Optional[float], typer.Option("--clip-value", help="Clip each gradient entry to +-this (char-rnn's 5), after --clip; off unless given.", rich_help_panel=OPTIM, show_default=False)] = None,
    optimizer: Annotated[OptimizerKind, typer.Option("--optimizer", help="AdamW (decoupled weight decay), Adam, plain SGD, or nt-asgd (AWD-LSTM's: SGD, then the average of the weights after --nonmono validations without improvement; give it an SGD --lr such as 20).", rich_help_panel=OPTIM)] = OptimizerKind.adamw,
    average: Annotated[Optional[str], typer.Option("--average", help=f"ema:DECAY (e.g. ema:0.999): validation, the model file and --test use an exponential moving average of the weights, updated after every update{kind_note('average')}.", rich_help_panel=OPTIM, show_default=False)] = None,
    nonmono: Annotated[int, typer.Option("--nonmono", help="With --optimizer nt-asgd: validations without improvement before averaging begins.", rich_help_panel=OPTIM)] = 5,
    lr: Annotated[float, typer.Option("--lr", help=f"Learning rate{kind_note('lr')}.", rich_help_panel=OPTIM)] = 2e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help=f"Weight decay: decoupled with adamw, an L2 term in the gradient with adam and sgd; 0 turns it off (text trained with adamw: {TEXT_DEFAULTS['weight_decay']} unless given).", rich_help_panel=OPTIM)] = 0.0,
    schedule: Annotated[ScheduleKind, typer.Option("--schedule", help="Learning-rate schedule after warm-up; plateau halves the rate after a quarter of --patience validations without a better loss (every one without --patience); text trained with Adam(W) takes plateau unless given.", rich_help_panel=OPTIM)] = ScheduleKind.constant,
    warmup: Annotated[int, typer.Option("--warmup", help="Steps of linear learning-rate warm-up.", rich_help_panel=OPTIM)] = 0,
    epochs: Annotated[int, typer.Option("--epochs", help=f"Passes over the data{kind_note('epochs')}.", rich_help_panel=RUN)] = 10,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many updates.", rich_help_panel=RUN)] = None,
    max_time: Annotated[Optional[str], typer.Option("--max-time", help="Wall-clock budget (90, 90s, 10m, 2h); stops cleanly and keeps the best model.", rich_help_panel=RUN)] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help=f"Stop after this many validations without improvement (CSV series with a validation tail: {SERIES_PATIENCE} unless given).", rich_help_panel=RUN)] = None,
    log_every: Annotated[int, typer.Option("--log-every", help="Updates between gradient-norm reports.", rich_help_panel=RUN)] = 100,
    sample_every: Annotated[Optional[int], typer.Option("--sample-every", min=1, help="Every N updates, print a sample of the model's text to stderr (text and corpus models; seeded, training's random numbers untouched).", rich_help_panel=RUN, show_default=False)] = None,
    sample_length: Annotated[int, typer.Option("--sample-length", min=1, help="Tokens per --sample-every sample.", rich_help_panel=RUN)] = 200,
    sample_temperature: Annotated[float, typer.Option("--sample-temperature", help="Sampling temperature of --sample-every samples.", rich_help_panel=RUN)] = 0.8,
    device: Device = "auto",
    threads: Threads = None,
    precision: Annotated[Precision, typer.Option("--precision", help="fp32; bf16 autocast (only where the hardware has bf16); auto: bf16 where the hardware has it and the cell was measured faster in it (the LSTM on a CPU), else fp32.", rich_help_panel=RUN)] = Precision.fp32,
    seed: Seed = 0,
    on_nan: Annotated[OnNan, typer.Option("--on-nan", help="A NaN or infinite loss: stop (keep the last good model, exit 1) or skip that update.", rich_help_panel=RUN)] = OnNan.stop,
    max_skips: Annotated[int, typer.Option("--max-skips", help="With --on-nan skip: fail after this many skipped updates.", rich_help_panel=RUN)] = 10,
    checkpoint_every: Annotated[Optional[int], typer.Option("--checkpoint-every", help="Updates between checkpoints (MODEL.ckpt; also at every epoch end).", rich_help_panel=SCRIPTS)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue exactly where the checkpoint beside -o stopped.", rich_help_panel=SCRIPTS)] = False,
    init_from: Annotated[Optional[Path], typer.Option("--init-from", help="Start from this model's weights, keeping its vocabulary or normalisation and its shape (may be the -o file).", rich_help_panel=SCRIPTS, show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Try a model the memory estimate says will not fit, and write -o or --metrics over a file of another kind.", rich_help_panel=SCRIPTS)] = False,
    replace: Annotated[ReplaceRule, typer.Option("--replace", help="When to replace a model already at -o: better (scored on this run's validation data), always, never.", rich_help_panel=SCRIPTS)] = ReplaceRule.better,
    metrics: Annotated[Optional[Path], typer.Option("--metrics", help="Append one record per log interval and validation: JSON lines, or CSV for *.csv.", rich_help_panel=SCRIPTS)] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the run summary as one JSON object on stdout.", rich_help_panel=SCRIPTS)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors and the final result.", rich_help_panel=SCRIPTS)] = False,
    nproc: Annotated[int, typer.Option("--nproc", min=1, help="Train in this many processes on this machine (torch.distributed; a shortcut for torchrun --nproc-per-node N -m bptt_cli train ...).", rich_help_panel=RUN)] = 1,
    config: Config = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved configuration as YAML and exit.", rich_help_panel=SCRIPTS)] = False,
) -> None:
    """Train a model with truncated BPTT and keep the best one, on text, a CSV time series or feature files.

    Example: bptt train sample_data/shakespeare.txt --model lstm --window 50 --clip 1.0 -o shakespeare.pt
    """
    options = dict(locals())  # first, before any other name exists here
    from bptt_cli.run_config import plain_values, to_yaml

    run_config = plain_values({k: v for k, v in options.items() if k != "ctx"})
    if data is not None:  # the kind's own defaults, e.g. a small model for a CSV series
        from bptt_cli.kinds import detect

        untouched = {name for name in run_config if ctx.get_parameter_source(name).name == "DEFAULT"}
        run_config.update(detect(data).defaults(run_config, untouched))
    chosen = SimpleNamespace(**run_config)  # every option with the kind's defaults in place: the run reads these
    if print_config:
        from bptt_cli.memory import plan
        from bptt_cli.run_config import plan_comment

        typer.echo(to_yaml(run_config, "train", option_names(ctx)), nl=False)
        shape = SimpleNamespace(cell=chosen.model, embed=chosen.embed, hidden=chosen.hidden, layers=chosen.layers,
                                dropout=chosen.dropout, tie_weights=False, tokens=True, input_size=0,
                                output_size=0)  # the data is not read
        planned = 0 if chosen.window == AUTO else chosen.window  # auto: chosen from the data, which is not read here
        typer.echo(plan_comment(plan(shape, chosen.optimizer, planned, chosen.batch_size, chosen.precision)), nl=False)
        return
    if data is None:  # optional only so that --print-config needs none
        from bptt_cli.errors import BpttError

        raise BpttError("missing argument DATA: give the training data file, or a --config that names it "
                        "(see 'bptt train --help')")

    from bptt_cli import distributed, kinds
    from bptt_cli.device import resolve_device, resolve_precision, set_threads
    from bptt_cli.durations import parse_duration
    from bptt_cli.metrics_file import Fanout, MetricsFile
    from bptt_cli.models import ModelConfig
    from bptt_cli.render.training import TrainReporter
    from bptt_cli.trainer import TrainConfig
    from bptt_cli.training_run import train as train_on

    if nproc > 1 and not distributed.launched():
        distributed.check_split(chosen.batch_size, nproc)
        raise typer.Exit(distributed.launch(nproc, sys.argv[1:]))
    kind = kinds.detect(data)
    kinds.refuse_foreign_options(kind, given_options(ctx), data)
    data_options = kind.options(run_config)
    start = None
    if init_from is not None:
        from bptt_cli.modelfile import load_model_file

        start = load_model_file(init_from)
        run_config.update(kinds.warm_start_shape(kind, start, given_options(ctx), run_config, init_from))
        data_options = kind.options(run_config)
    set_threads(threads)
    target = distributed.start(resolve_device(device))
    chosen_precision = resolve_precision(target, chosen.precision, chosen.model)
    c = chosen
    model_config = ModelConfig(cell=c.model, embed=c.embed, hidden=c.hidden, layers=c.layers, dropout=c.dropout,
                               tie_weights=c.tie_weights, force=c.force)
    train_config = TrainConfig(
        window=0 if c.window == AUTO else c.window, auto_window=c.window == AUTO, min_cosine=c.min_cosine,
        stride=c.stride, window_jitter=c.window_jitter, stateless=c.stateless, batch_size=c.batch_size,
        epochs=c.epochs, max_steps=c.max_steps, max_time=parse_duration(c.max_time) if c.max_time else None,
        patience=c.patience, optimizer=c.optimizer, lr=c.lr, weight_decay=c.weight_decay, schedule=c.schedule,
        warmup=c.warmup, clip=c.clip, clip_value=c.clip_value or 0.0, log_every=c.log_every,
        precision=chosen_precision, seed=c.seed, checkpoint_every=c.checkpoint_every, on_nan=c.on_nan,
        max_skips=c.max_skips, sample_every=c.sample_every, sample_length=c.sample_length,
        sample_temperature=c.sample_temperature, dropout_kind=c.dropout_kind, weight_drop=c.weight_drop,
        embed_dropout=c.embed_dropout, ar=c.ar, tar=c.tar, average=c.average, nonmono=c.nonmono,
    )
    model_config.validate()
    main = distributed.is_main()  # under torchrun only rank 0 prints and writes
    screen = TrainReporter(unit=kind.unit_for(data_options), quiet=quiet or not main)
    reporter = Fanout(screen, MetricsFile(metrics, inputs=(data, val), force=force) if metrics and main else None)
    setup = kinds.RunSetup(model_config, train_config, target, reporter, val, chosen.val_fraction, run_config, start,
                           chosen.force,
                           batch_size_given=ctx.get_parameter_source("batch_size").name != "DEFAULT",
                           untouched=frozenset(untouched))
    try:
        result = train_on(kind, data, output, data_options, setup, resume, replace.value, test)
        distributed.finish()  # not on failure: the other ranks may never arrive
    finally:
        screen.close()
        distributed.stop()
    if not main:
        return
    again = [a for a in sys.argv[1:] if a != "--resume"]
    screen.finish(result, as_json=json, resume_command=shlex.join(["bptt", *again, "--resume"]))
    if result["resumable"]:
        raise typer.Exit(3)
