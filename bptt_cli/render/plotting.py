"""Pictures of a run: training curves from metrics files, gradient flow from gradcheck, forecasts.

matplotlib is an optional extra (``pip install 'bptt[plot]'``) and is imported
only when a picture is asked for, so ``bptt --help`` stays fast and bptt works
without it. Figures are drawn with the object API on the Agg canvas (no pyplot,
no display, no global state), sized in pixels, and written atomically as PNG or
SVG by the file's extension.

The metrics reader accepts what ``bptt train --metrics`` writes: JSON lines, or
CSV with layer norms flattened into ``grad_norm[NAME]`` columns. Both become the
same flat tables, one for training intervals and one for validations.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from bptt_cli.atomic import write_bytes
from bptt_cli.errors import BpttError
from bptt_cli.input_paths import check_input
from bptt_cli.metrics_file import flatten

MISSING_EXTRA = "plotting needs matplotlib, which is not installed; install the extra: pip install 'bptt[plot]'"
FORMATS = (".png", ".svg")
DPI = 100  # pixels = inches * DPI, so --size is exact in pixels
SIZE_RANGE = (200, 10000)  # pixels per side: smaller is unreadable, larger is a mistake
KINDS = ("train", "validation")
STYLE = {
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "svg.hashsalt": "bptt",  # the same data gives the same SVG bytes
}


# --- reading metrics files -------------------------------------------------------------------------


@dataclass
class Metrics:
    """One run's metrics file as two flat tables, each sorted by ``step`` with one row per step."""

    path: Path
    train: pd.DataFrame  # train_loss, grad_norm_mean, grad_norm_max, clip_share, lr, grad_norm[NAME], ...
    validation: pd.DataFrame  # val_loss, val_perplexity, val_bits_per_token, best, ...


def _bad(path: Path, line: int, what: str) -> BpttError:
    return BpttError(
        f"{path}, line {line}: {what}; give a metrics file written by 'bptt train --metrics' (JSON lines or CSV)"
    )


def _json_records(path: Path, lines: list[str]) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise _bad(path, number, "not a JSON object") from None
        if not isinstance(record, dict) or not isinstance(record.get("layer_grad_norms", {}), dict):
            raise _bad(path, number, "not a metrics record (a JSON object with kind and step)")
        yield number, flatten(record)


def _csv_records(path: Path, lines: list[str]) -> Iterator[tuple[int, dict]]:
    reader = csv.reader(lines)
    header = next(reader)
    if "kind" not in header or "step" not in header:
        raise _bad(path, 1, "neither JSON lines nor CSV with kind and step columns")
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise _bad(path, reader.line_num, f"{len(row)} cells where the header has {len(header)}")
        yield reader.line_num, {k: v for k, v in zip(header, row) if v != ""}  # empty: the record lacks it


def _number(value: Any) -> float:
    """A cell as a float: JSON numbers and null, CSV text and empty cells (missing becomes NaN)."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value)


FLAGS = ("best", "saved")  # the yes/no fields of a validation record; every other field is a number
NAMES = ("kept_model", "kept_why")  # ... or the model file kept instead of this run's best, and why


def _typed(path: Path, line: int, record: dict) -> dict:
    out = {"kind": record.get("kind")}
    for key, value in record.items():
        if key == "kind":
            continue
        if key in FLAGS:  # JSON true/false, CSV True/False
            out[key] = value is True or str(value).lower() == "true"
            continue
        if key in NAMES:
            out[key] = value
            continue
        try:
            out[key] = _number(value)
        except (TypeError, ValueError):
            raise _bad(path, line, f"{key} is {value!r}, not a number") from None
    if not math.isfinite(out.get("step", math.nan)):
        raise _bad(path, line, "a record without a step")
    out["step"] = int(out["step"])
    return out


def _table(rows: list[dict]) -> pd.DataFrame:
    """Rows sorted by step; a step logged twice keeps its last record, the one a resumed run wrote."""
    if not rows:
        return pd.DataFrame({"step": pd.Series(dtype=int)})
    frame = pd.DataFrame(rows).drop(columns="kind")
    return frame.drop_duplicates("step", keep="last").sort_values("step", kind="stable").reset_index(drop=True)


def read_metrics(path: str | Path) -> Metrics:
    """Read a metrics file, JSON lines or CSV (told apart by content, not by name).

    Records of other kinds are skipped, so files from newer versions still plot.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        check_input(path)  # a FIFO or a device would hang the read or feed it forever
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BpttError(f"{path}: no such metrics file; give a file written by 'bptt train --metrics'") from None
    except IsADirectoryError:
        raise BpttError(f"{path}: is a directory; give a metrics file written by 'bptt train --metrics'") from None
    except UnicodeDecodeError:
        raise BpttError(f"{path}: not a text file; give a metrics file written by 'bptt train --metrics'") from None
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise BpttError(f"{path}: is empty; it gets records once 'bptt train --metrics' has logged an interval")
    records = (_json_records if first.lstrip().startswith("{") else _csv_records)(path, lines)
    by_kind: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for line, record in records:
        if record.get("kind") in by_kind:
            by_kind[record["kind"]].append(_typed(path, line, record))
    if not any(by_kind.values()):
        raise BpttError(f"{path}: no train or validation records; give a file written by 'bptt train --metrics'")
    return Metrics(path, _table(by_kind["train"]), _table(by_kind["validation"]))


def run_labels(paths: Sequence[str | Path]) -> list[str]:
    """Legend labels: the file names, with as many parent folders as it takes to tell them apart."""
    parts = [Path(p).parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]  # the same file twice: still one label each


def loss_unit(runs: Sequence[Metrics]) -> str | None:
    """"nats/token" for token models (their validation reports perplexity); None when unknown (series)."""
    return "nats/token" if any("val_perplexity" in run.validation for run in runs) else None


# --- drawing and saving -----------------------------------------------------------------------------


def check_output(path: str | Path, option: str = "-o") -> Path:
    """Fail before any work when the picture cannot be written where asked (``option`` names it)."""
    from bptt_cli.output_paths import check_output as check_path, suffix_kind

    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise BpttError(f"{option} {path}: the format follows the extension; end the name in .png or .svg")
    return check_path(path, suffix_kind(path), option)  # never over a model, the data or another kind of file


def check_plot(path: str | Path, option: str = "--plot") -> Path:
    """For commands that draw after long work: fail at once on a bad path or a missing matplotlib."""
    from bptt_cli.output_paths import check_output as check_path, suffix_kind

    check_path(path, suffix_kind(path), option)  # first: a model given where the picture goes is named as such
    path = check_output(path, option)
    _matplotlib()
    return path


def check_size(width: int, height: int) -> None:
    low, high = SIZE_RANGE
    if not (low <= width <= high and low <= height <= high):
        raise BpttError(f"picture size {width}x{height} px: each side must be from {low} to {high} pixels")


def _matplotlib():
    """The lazily imported pieces of matplotlib, or the one-line error that names the extra."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise BpttError(MISSING_EXTRA) from None
    return matplotlib, Figure, FigureCanvasAgg


@contextlib.contextmanager
def _drawing(path: str | Path, width: int, height: int) -> Iterator[Any]:
    """A blank figure of ``width`` x ``height`` pixels; on leaving the block it is saved to ``path``."""
    path = check_output(path)
    check_size(width, height)
    matplotlib, Figure, Canvas = _matplotlib()
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
        Canvas(figure)
        yield figure
        buffer = io.BytesIO()
        kind = path.suffix.lower()[1:]
        figure.savefig(buffer, format=kind, dpi=DPI, metadata={"Date": None} if kind == "svg" else None)
    write_bytes(path, buffer.getvalue())


def _series(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values) of a column, or None when the run never logged it."""
    if column not in frame or frame[column].isna().all():
        return None
    return frame["step"].to_numpy(), frame[column].to_numpy(dtype=float)


def _plain_log_labels(ax: Any) -> None:
    """Log-axis ticks as 0.2, 0.5, 1, 10 rather than 2×10⁻¹; between decades only when few decades show."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    low, high = ax.get_ylim()  # after plotting: the autoscaled range
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if low > 0 and math.log10(high / low) < 1.5:
        def minor(v: float, _: Any) -> str:  # 2, 3 and 5 of each decade: closer ones would collide
            return f"{v:g}" if round(v / 10 ** math.floor(math.log10(v))) in (2, 3, 5) else ""

        ax.yaxis.set_minor_formatter(FuncFormatter(minor))
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def plot_training(
    runs: Sequence[Metrics],
    path: str | Path,
    labels: Sequence[str] | None = None,
    width: int = 1200,
    height: int = 900,
    title: str | None = None,
) -> Path:
    """Four panels over update steps, runs overlaid in one colour each: loss (train line, validation
    points), gradient norm before clipping (log; mean solid, max dashed), share of clipped updates, lr.
    """
    labels = list(labels) if labels is not None else run_labels([run.path for run in runs])
    unit = loss_unit(runs)
    with _drawing(path, width, height) as figure:
        from matplotlib.lines import Line2D

        axes = figure.subplots(2, 2, sharex=True)
        loss, norm, clip, lr = axes.flat
        for i, (run, label) in enumerate(zip(runs, labels)):
            colour = f"C{i % 10}"
            if (xy := _series(run.train, "train_loss")) is not None:
                loss.plot(*xy, color=colour, label=label)
                label = None  # one legend entry per run
            if (xy := _series(run.validation, "val_loss")) is not None:
                loss.plot(*xy, color=colour, linestyle=":", marker="o", markersize=6, markeredgecolor="white",
                          zorder=3, label=label)  # above every train line, which is noisier and denser
            if (xy := _series(run.train, "grad_norm_mean")) is not None:
                norm.plot(*xy, color=colour)
            if (xy := _series(run.train, "grad_norm_max")) is not None:
                norm.plot(*xy, color=colour, linestyle="--", alpha=0.6)
            if (xy := _series(run.train, "clip_share")) is not None:
                clip.plot(xy[0], 100 * xy[1], color=colour)
            if (xy := _series(run.train, "lr")) is not None:
                lr.plot(*xy, color=colour)

        loss.set(title="loss", ylabel=f"loss ({unit})" if unit else "loss")
        norm.set(title="gradient norm before clipping", ylabel="gradient norm (log)", yscale="log")
        _plain_log_labels(norm)
        clip.set(title="clipped updates", ylabel="clipped (% of updates)", ylim=(-3, 103))
        lr.set(title="learning rate", ylabel="learning rate")
        lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        for ax in axes[1]:
            ax.set_xlabel("update step")
        # the line styles, in grey, below the panels: inside a panel a key would cover the curves
        styles = [("train loss (interval mean)", {}),
                  ("validation loss", {"linestyle": ":", "marker": "o", "markersize": 6}),
                  ("gradient norm: interval mean", {}), ("gradient norm: interval max", {"linestyle": "--"})]
        figure.legend(handles=[Line2D([], [], color="0.35", label=text, **style) for text, style in styles],
                      loc="outside lower center", ncols=4 if width >= 1000 else 2)
        figure.legend(loc="outside upper center", ncols=min(len(runs), 4), title=title)
    return Path(path)


def plot_gradient_flow(result: dict, path: str | Path, width: int = 1200, height: int = 500) -> Path:
    """gradcheck's flow and truncation checks side by side: |dL/dh_t| by steps back (log), with the
    fitted per-step rate, and the truncated gradient's agreement with full BPTT by window.
    """
    flow, truncation = result["flow"], result["truncation"]
    norms = np.asarray(flow["norms"], dtype=float)  # index j = steps back from the loss at t = T
    back = np.arange(len(norms))
    with _drawing(path, width, height) as figure:
        from matplotlib.ticker import NullFormatter

        decay, windows = figure.subplots(1, 2)
        decay.plot(back, norms, marker="o", markersize=3, label="|dL/dh_t|")
        rate = flow.get("rate_per_step")
        positive = norms > 0
        if rate and rate > 0 and positive.any():
            # the least-squares line gradcheck fitted: its intercept follows from the slope and the means
            logs = np.log(norms[positive])
            intercept = logs.mean() - math.log(rate) * back[positive].mean()
            decay.plot(back, np.exp(intercept + math.log(rate) * back), linestyle="--", color="0.4",
                       label=f"fit: ×{rate:.3g} per step")
        fraction, horizon = flow.get("horizon_fraction"), flow.get("horizon_steps")
        if fraction and len(norms) and norms[0] > 0:
            decay.axhline(fraction * norms[0], color="C3", linewidth=0.8, linestyle=":",
                          label=f"{fraction:g} × |dL/dh_T|")
        if horizon is not None and horizon < len(norms):
            decay.axvline(horizon, color="C3", linewidth=0.8, label=f"faded after {horizon} steps")
        decay.set(title=f"gradient flow through time: {flow.get('verdict', '?')}", yscale="log",
                  xlabel="steps back from the loss (t = T − steps)", ylabel="|dL/dh_t| (log)")
        decay.xaxis.get_major_locator().set_params(integer=True)  # whole steps, never 2.5
        decay.legend()

        rows = truncation["windows"]
        ks = [row["window"] for row in rows]
        windows.plot(ks, [row["cosine"] for row in rows], marker="o", label="cosine")
        windows.plot(ks, [row["relative_norm"] for row in rows], marker="s", linestyle="--",
                     label="relative norm")
        if truncation.get("min_cosine") is not None:
            windows.axhline(truncation["min_cosine"], color="0.4", linewidth=0.8, linestyle=":",
                            label=f"cosine {truncation['min_cosine']:g} target")
        best = truncation.get("recommended_window")
        if best is not None:
            windows.axvline(best, color="C2", linewidth=0.8, label=f"recommended window {best}")
        windows.set(title="truncated gradient against full BPTT", xscale="log",
                    xlabel="truncation window K (steps, log)", ylabel="agreement with full BPTT (1 = equal)")
        windows.set_xticks(ks, [str(k) for k in ks])  # the windows measured, as plain numbers, not 10^k
        windows.xaxis.set_minor_formatter(NullFormatter())
        windows.legend()
    return Path(path)


def _as_axis(values: Any) -> np.ndarray:
    """Times for an x axis: numbers and datetimes as they are; date strings parsed."""
    values = np.asarray(values)
    if values.dtype.kind in "OUS":
        try:
            return pd.to_datetime(values).to_numpy()
        except (ValueError, TypeError):
            raise BpttError("forecast times are neither numbers nor dates; give a numeric or date time column") from None
    return values


def _columns(values: Any, rows: int, outputs: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).reshape(rows, -1)
    if array.shape[1] != outputs:
        raise ValueError(f"{name} has {array.shape[1]} columns for {outputs} target(s)")
    return array


def plot_forecast(
    path: str | Path,
    context_time: Any,
    context_values: Any,
    forecast_time: Any,
    forecast_values: Any,
    target_names: Sequence[str],
    actual_values: Any = None,
    persistence_values: Any = None,
    width: int = 1200,
    height: int | None = None,
    title: str | None = None,
    time_label: str | None = None,
    band_low: Any = None,
    band_high: Any = None,
    band_label: str = "interval",
) -> Path:
    """One panel per target: the context the model read, its forecast, and when given what really
    happened, the persistence baseline (the last value held) and the forecast's interval as a shaded
    band (``band_low`` .. ``band_high``), so the forecast is judged by eye.

    Values are (T, targets) arrays, or (T,) for one target; ``height`` defaults to 260 px per target.
    ``time_label`` names the x axis (default: "time" for dates, else "step").
    """
    names = list(target_names)
    context_x, forecast_x = _as_axis(context_time), _as_axis(forecast_time)
    context = _columns(context_values, len(context_x), len(names), "context_values")
    forecast = _columns(forecast_values, len(forecast_x), len(names), "forecast_values")
    actual = None if actual_values is None else _columns(actual_values, len(forecast_x), len(names), "actual_values")
    naive = None if persistence_values is None else _columns(
        persistence_values, len(forecast_x), len(names), "persistence_values")
    low = None if band_low is None else _columns(band_low, len(forecast_x), len(names), "band_low")
    high = None if band_high is None else _columns(band_high, len(forecast_x), len(names), "band_high")
    height = height or min(SIZE_RANGE[1], 120 + 260 * len(names))
    with _drawing(path, width, height) as figure:
        axes = np.atleast_1d(figure.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0])
        for i, (ax, name) in enumerate(zip(axes, names)):
            first = i == 0  # label each line once, for the figure's legend
            ax.plot(context_x, context[:, i], color="0.2", label="context" if first else None)
            if low is not None and high is not None:
                ax.fill_between(forecast_x, low[:, i], high[:, i], color="C1", alpha=0.25, linewidth=0,
                                label=band_label if first else None)
            if naive is not None:
                ax.plot(forecast_x, naive[:, i], color="0.55", linestyle="--",
                        label="persistence (last value)" if first else None)
            ax.plot(forecast_x, forecast[:, i], color="C1", linewidth=2, label="forecast" if first else None)
            if actual is not None:  # drawn last: dotted, it stays visible where the forecast is right
                ax.plot(forecast_x, actual[:, i], color="0.1", linestyle=":", label="actual" if first else None)
            if len(forecast_x):
                ax.axvline(forecast_x[0], color="0.6", linewidth=0.8)
            ax.set_ylabel(name)
        dates = np.issubdtype(context_x.dtype, np.datetime64)
        if dates:  # "Jan-15, 12:00" with the year once at the end, not "01-15 12" on every tick
            from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

            locator = AutoDateLocator()
            axes[-1].xaxis.set_major_locator(locator)
            axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
        axes[-1].set_xlabel(time_label or ("time" if dates else "step"))
        figure.legend(loc="outside upper center", ncols=4, title=title)
    return Path(path)
