"""How a training run looks: a live progress bar and tables on a terminal, one-line records otherwise."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bptt_cli.render.console import fmt, info, plain, print_json, print_table, stderr_console
from bptt_cli.render.sparkline import sparkline, trend
from bptt_cli.schedule import PLATEAU_FLOOR

STOPS = {
    "completed": "all epochs done",
    "max_steps": "--max-steps reached",
    "max_time": "--max-time reached",
    "early_stopping": "early stopping (--patience)",
    "signal": "interrupted (SIGINT/SIGTERM)",
}
TEST_ROWS = {"loss": "loss", "perplexity": "perplexity", "bits_per_token": "bits/token", "accuracy": "accuracy",
             "macro_f1": "macro F1", "mae": "MAE (1 step)", "rmse": "RMSE (1 step)", "smape": "sMAPE % (1 step)",
             "mase": "MASE (1 step)"}
TREND_WIDTH = 30  # characters of an epoch's sparklines; a longer run is averaged into this many buckets


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _norm_rows(record: dict) -> list[list]:
    rows = [
        ["global (pre-clip) mean", record["grad_norm_mean"]],
        ["global (pre-clip) max", record["grad_norm_max"]],
        ["share of steps clipped", record["clip_share"]],
    ]
    if "value_clip_share" in record:
        rows.append(["share of entries clipped (--clip-value)", record["value_clip_share"]])
    return rows + [[f"{name} (mean)", v] for name, v in record["layer_grad_norms"].items()]


def window_choice_line(choice: dict) -> str:
    """--window auto's choice in one line: the window, its cosine, the memory, and what the check cost."""
    if choice.get("resumed"):
        return (f"--window auto: {choice['window']} steps, as chosen when the run began (gradient cosine "
                f"{choice['cosine']:.3f} against full BPTT then)")
    if choice["reached"]:
        why = f"the shortest window whose gradient reaches cosine {choice['cosine']:.3f} (--min-cosine {choice['min_cosine']:g})"
    elif choice["bounded_by_memory"]:
        why = f"the longest that fits in memory, cosine {choice['cosine']:.3f} (below --min-cosine {choice['min_cosine']:g})"
    else:
        why = f"no shorter window reaches --min-cosine {choice['min_cosine']:g}; cosine {choice['cosine']:.3f}"
    available = f" of {_bytes(choice['available_bytes'])} available" if choice.get("available_bytes") else ""
    return (f"--window auto: {choice['window']} steps, {why} against full BPTT over {choice['sample_steps']} steps "
            f"of {choice['sample_streams']} training streams; activations {_bytes(choice['activation_bytes'])} per "
            f"update, {_bytes(choice['memory_bytes'])} in all{available}; the check took {choice['passes']} "
            f"forward/backward passes over the sample, {choice['seconds']:.1f} s")


def window_check_line(record: dict) -> str:
    """The epoch-end cosine of --window auto's window, and what to do when it has fallen below --min-cosine."""
    line = (f"window {record['window']} after epoch {record['epoch']}: gradient cosine {record['cosine']:.3f} "
            f"against full BPTT over {record['sample_steps']} steps")
    if record["below_min_cosine"]:
        line += (f", below --min-cosine {record['min_cosine']:g}: the model now uses dependencies longer than the "
                 "window lets the gradient reach; a longer --window (or --window auto in a new run) reaches them")
    return line


def best_mark(record: dict) -> str:
    """What became of this run's best model, in the words of the closing line about the file at -o."""
    if not record.get("best"):
        return ""
    if record.get("saved", True):
        return "best of this run, saved"
    kept, score = record.get("kept_model", "-o"), record.get("kept_val_loss")
    if score is None:
        why = record.get("kept_why")
        return f"best of this run; kept the existing {kept}" + (f" ({why})" if why else "")
    return f"best of this run; kept the existing {kept}, which scores {fmt(score)} here"


def _window_and_rate(plan: dict) -> str:
    """The plan line's end: the window each update back-propagates through and the learning-rate schedule."""
    if "window" not in plan:
        return ""
    window = f"windows of {plan['window']:,} steps" if plan["window"] else "full BPTT"
    schedule = plan["schedule"]
    rate = {"constant": "a constant learning rate", "cosine": "a cosine learning rate to 0 at the last update",
            "plateau": f"the learning rate halved after {schedule['wait']} validation(s) in a row without a better "
                       f"loss (to 1/{round(1 / PLATEAU_FLOOR)} at least)"}[schedule["kind"]]
    warmup = f" after {schedule['warmup']:,} warm-up updates" if schedule["warmup"] else ""
    return f"; {window}, {rate}{warmup}"


class TrainReporter:
    """Receives the trainer's plain records and shows them to a person."""

    def __init__(self, unit: str = "token", quiet: bool = False):
        self.plain = plain()
        self.quiet = quiet
        self.unit = unit
        self.progress: Progress | None = None
        self.task = None
        self.last_loss = "-"
        self.last_rate = "-"
        self.losses: list[float] = []  # train loss and pre-clip gradient norm (mean) of every interval so far:
        self.norms: list[float] = []  # the trend the epoch summary draws

    # -- the trainer's Reporter protocol
    def start(self, plan: dict) -> None:
        if self.quiet:
            return
        if plan.get("resumed_at_step") is not None:
            info(f"resuming from the checkpoint at update {plan['resumed_at_step']:,}")
        info(
            f"training {plan['parameters']:,} parameters on {plan['streams']} streams"
            f"{' over ' + str(plan['processes']) + ' processes' if plan.get('processes', 1) > 1 else ''} of "
            f"{plan['steps_per_stream']:,} steps: {plan['updates_per_epoch']:,} updates per epoch, "
            f"{plan['total_updates']:,} at most{_window_and_rate(plan)}"
        )
        if "window_choice" in plan:
            info(window_choice_line(plan["window_choice"]))
        if "full_bptt_activation_bytes" in plan:
            info(
                f"full BPTT (--window 0) back-propagates through whole streams: about "
                f"{_bytes(plan['full_bptt_activation_bytes'])} of activations per update, growing with the data"
            )
        if not self.plain:
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[rate]} tok/s"),
                TimeRemainingColumn(),
                console=stderr_console(),
                transient=True,
            )
            self.task = self.progress.add_task("train", total=plan["total_updates"], epoch=1, loss="-", rate="-")
            self.progress.start()

    def step(self, step: int, epoch: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, epoch=epoch)

    def log(self, record: dict) -> None:
        if self.quiet:
            return
        self.losses.append(record["train_loss"])
        self.norms.append(record["grad_norm_mean"])
        self.last_loss = fmt(record["train_loss"])
        self.last_rate = f"{record['tokens_per_second']:,.0f}"
        if self.progress is not None:
            self.progress.update(self.task, loss=self.last_loss, rate=self.last_rate)
            self.progress.console.print(
                f"step {record['step']} epoch {record['epoch']}: train loss {self.last_loss}, "
                f"lr {fmt(record['lr'])}, {self.last_rate} tok/s"
            )
            print_table(f"gradient norms, steps to {record['step']}", ["gradient norm", "value"],
                        _norm_rows(record), console=self.progress.console)
            return
        layers = " ".join(f"norm[{k}]={fmt(v)}" for k, v in record["layer_grad_norms"].items())
        info(
            f"step={record['step']} epoch={record['epoch']} train_loss={self.last_loss} "
            f"grad_norm_mean={fmt(record['grad_norm_mean'])} grad_norm_max={fmt(record['grad_norm_max'])} "
            f"clip_share={fmt(record['clip_share'])} "
            f"{'value_clip_share=' + fmt(record['value_clip_share']) + ' ' if 'value_clip_share' in record else ''}"
            f"lr={fmt(record['lr'])} "
            f"tokens_per_s={record['tokens_per_second']:.0f} {layers}"
        )

    def validation(self, record: dict) -> None:
        """The epoch summary: validation figures beside the trend of the train loss and of the pre-clip
        gradient norm over the run so far, so a stalled loss or a growing norm shows at a glance."""
        if self.quiet:
            return
        figures = self.validation_figures(record)
        saved = best_mark(record)
        mark = f" ({saved})" if saved else ""
        losses, norms = self.losses, self.norms
        span = f"{len(losses)} interval{'s' if len(losses) != 1 else ''} to update {record['step']}"
        if self.plain:
            shown = (f"; train loss {trend(losses, width=TREND_WIDTH)}; grad norm (pre-clip) "
                     f"{trend(norms, log=True, width=TREND_WIDTH)} over {span}" if losses else "")
            self._print(f"validation after epoch {record['epoch']} (step {record['step']}): "
                        f"{', '.join(f'{name} {fmt(value)}' for name, value in figures)}{mark}{shown}")
            return
        rows = [["train loss", sparkline(losses, width=TREND_WIDTH), losses[-1] if losses else None],
                ["grad norm, pre-clip (log)", sparkline(norms, log=True, width=TREND_WIDTH), norms[-1] if norms else None]]
        rows += [[f"validation {name}", "", value] for name, value in figures]
        print_table(f"epoch {record['epoch']} (step {record['step']})", ["", f"trend, {span}", "last"], rows,
                    caption=saved or None,
                    console=self.progress.console if self.progress is not None else None)

    def sample(self, record: dict) -> None:
        """The model's text at this update (--sample-every), verbatim between two rules, on stderr."""
        if self.quiet:
            return
        head = f"--- sample at update {record['step']:,} (temperature {record['temperature']:g}) ---"
        if self.progress is None:
            info(f"{head}\n{record['text']}\n---")
            return
        console = self.progress.console
        console.print(head)
        console.print(record["text"], markup=False, highlight=False, emoji=False)
        console.print("---")

    def validation_figures(self, record: dict) -> list[tuple[str, float]]:
        """What the validation measured, by name, in the order shown: perplexity and bits for token
        models, accuracy for classifiers."""
        figures = [("loss", record["val_loss"])]
        if "val_perplexity" in record:
            figures += [("perplexity", record["val_perplexity"]), (f"bits/{self.unit}", record["val_bits_per_token"])]
        if "val_accuracy" in record:
            figures.append(("accuracy", record["val_accuracy"]))
        return figures

    def window_check(self, record: dict) -> None:
        if not self.quiet:
            self._print(window_check_line(record))

    def note(self, message: str) -> None:
        if not self.quiet:
            self._print(message)

    # -- the end of the run
    def finish(self, result: dict, as_json: bool = False, resume_command: str = "") -> None:
        """The final result: a summary table (or one JSON object on stdout), and how to resume."""
        self.close()
        if as_json:
            print_json(result)
        else:
            rows = [
                ["stopped because", STOPS.get(result["stop_reason"], result["stop_reason"])],
                ["updates", result["steps"]],
                ["epochs", result["epochs"]],
                ["best validation loss", result["best_val_loss"]],
                ["time (s)", result["seconds"]],
                ["tokens/s", result["tokens_per_second"]],
                ["model file", result["model_file"] if result["model_written"] else f"{result['model_file']} (kept)"],
            ]
            if "window_choice" in result:
                rows.insert(2, ["window (--window auto)", result["window_choice"]["window"]])
                if result.get("window_cosine") is not None:
                    rows.insert(3, ["its gradient cosine at the last epoch end", result["window_cosine"]])
            if result.get("skipped_updates"):
                rows.insert(2, ["updates skipped (NaN/inf)", result["skipped_updates"]])
            rows += self.test_rows(result)
            print_table("training summary", ["", "value"], rows)
        if result["resumable"]:
            info(f"checkpoint saved to {result['checkpoint']}; resume with: {resume_command}")

    def test_rows(self, result: dict) -> list[list]:
        """The figures of --test FILE, named as ``bptt evaluate`` names them; a forecast's are one step ahead."""
        if "test_file" not in result:
            return []
        names = {**TEST_ROWS, "bits_per_token": f"bits/{self.unit}"}
        baselines = [[f"test {names['bits_per_token']}, {b['name']}", b["bits_per_token"]] if "bits_per_token" in b
                     else [f"test accuracy, {b['name']}", b["accuracy"]] for b in result.get("test_baselines", [])]
        return [["test file", result["test_file"]]] + [
            [f"test {label}", result[f"test_{name}"]] for name, label in names.items() if f"test_{name}" in result
        ] + baselines

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _print(self, line: str) -> None:
        if self.progress is not None:
            self.progress.console.print(line)
        else:
            info(line)

