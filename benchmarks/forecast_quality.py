"""Forecast quality with the defaults: bptt against persistence, seasonal naive, AutoETS and MSTL.

For each series given, ``bptt train`` runs with its defaults under a fixed ``--max-time`` (or
``--max-steps``; a subprocess, as a user runs it) on the first 90 % of the rows (so its early stopping and
its intervals use a validation tail of their own), then ``bptt evaluate`` on the whole file scores the last
10 %, which training never read, at one step and over one season.
statsforecast's AutoETS (one season) is fitted once on the same training part and runs forward to each
origin with its parameters fixed, as bptt's weights are. MSTL (every season that fits: a day and a week
of sub-daily data) is decomposed anew on all the data before each season of origins (``--mstl-refit
season``, the default: at every origin of the one-season horizon, every season's worth of origins at one
step, both horizons sharing the fits), as a user refits it; ``--mstl-refit once`` fits it on the
training part only (one fit instead of about 40 on the demand's tail). Every MASE divides by the same
in-sample one-step naive error. Prints one table, the machine line
and, per row, bptt's MASE over the best other one (at most 1.0 meets the bar of issue 12).

statsforecast is needed by this benchmark only (never by bptt): ``pip install statsforecast``, or pass
``--install`` to have it installed into the running interpreter.

    python benchmarks/forecast_quality.py sample_data/elecdemand.csv \\
        "../shared/data/timeseries/nyc_jfk_weather_2013_hourly.csv --target temp --missing interpolate" \\
        --max-time 3m

Each series is a path followed by the ``bptt train`` flags it needs (which column is the target, how to
fill gaps); everything else is bptt's default.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line

from bptt_cli import forecast
from bptt_cli.kinds import of_model
from bptt_cli.modelfile import load_model_file
from bptt_cli.streams import tail_cut

HELD_OUT = 0.1  # the share of rows scored, never read by training: bptt's default --val-fraction, which
# evaluate's held-out tail follows

BASELINES = {"persistence": "persistence", "seasonal_naive": "seasonal naive"}
WEEK = 7  # days: MSTL's second season on sub-daily data
REFITS = {"season": "every season of origins", "once": "never (fitted on the training part)"}


def require_statsforecast(install: bool) -> None:
    """statsforecast importable, installed with pip into this interpreter when ``install``; else one line and exit 2."""
    try:
        importlib.import_module("statsforecast")
        return
    except ImportError:
        if not install:
            sys.exit("this benchmark compares with statsforecast's AutoETS and MSTL: pip install statsforecast "
                     "(or run it with --install)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "statsforecast"], check=True)


def bptt(*args: str) -> dict:
    """One bptt command with --json, its summary parsed; a failure prints its stderr and stops."""
    done = subprocess.run([sys.executable, "-m", "bptt_cli", *args, "--json"], check=False, capture_output=True,
                          text=True)
    if done.returncode not in (0, 3):  # 3: stopped by --max-time with a model written, resumable
        sys.exit(f"bptt {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout)


def ets_forecasts(y: np.ndarray, train_end: int, origins: np.ndarray, horizon: int, season: int | None) -> np.ndarray:
    """(N, H) AutoETS forecasts: fitted on y[:train_end], then run forward to each origin with its parameters
    fixed (``forward``: the state follows the data, nothing is refitted), as bptt's weights are."""
    from statsforecast.models import AutoETS

    fitted = AutoETS(season_length=season or 1).fit(y[:train_end])
    return np.stack([fitted.forward(y[: o + 1], horizon)["mean"] for o in origins])


class MstlRefits:
    """MSTL forecasts on a series, decomposed anew every ``every`` steps of origins (``every`` None: once, on the
    training part). Each fit is decomposed on y[:end]; each seasonal component is continued past ``end`` by repeating its
    last season (as MSTL forecasts it), and its trend model (ETS, no season) runs forward over the seasonally
    adjusted series to each origin of its block with its parameters fixed. Fits are kept by ``end``, so the
    horizons share them: with ``every`` a season, one step and a season ahead refit at the same origins."""

    def __init__(self, y: np.ndarray, seasons: list[int], every: int | None):
        self.y, self.seasons, self.every, self.fits = y, seasons, every, {}

    def __call__(self, train_end: int, origins: np.ndarray, horizon: int) -> np.ndarray:
        """(N, H) forecasts from ``origins`` (the first is train_end - 1)."""
        if self.every is None:
            return self._block(train_end, origins, horizon)
        blocks = (origins - origins[0]) // self.every
        return np.concatenate([self._block(int(origins[blocks == b][0]) + 1, origins[blocks == b], horizon)
                               for b in np.unique(blocks)])

    def _block(self, end: int, origins: np.ndarray, horizon: int) -> np.ndarray:
        seasonal, trend = self._fit(end)
        seasonal = seasonal(len(self.y) + horizon)
        adjusted = self.y - seasonal[: len(self.y)]
        return np.stack([trend.forward(adjusted[: o + 1], horizon)["mean"] + seasonal[o + 1 : o + 1 + horizon]
                         for o in origins])

    def _fit(self, end: int):
        if end not in self.fits:
            from statsforecast.models import MSTL, AutoETS

            fitted = MSTL(season_length=self.seasons, trend_forecaster=AutoETS(model="ZZN")).fit(self.y[:end])
            parts = fitted.model_.filter(regex="seasonal")

            def seasonal(length: int) -> np.ndarray:
                path = np.zeros(length)
                path[:end] = parts.sum(axis=1).to_numpy()
                after = np.arange(length - end)
                for period, column in zip(sorted(self.seasons), parts.columns):
                    path[end:] += parts[column].to_numpy()[-period:][after % period]
                return path

            self.fits[end] = seasonal, fitted.trend_forecaster
        return self.fits[end]


def peers(season: int | None, freq: str | None, refit_every: int | None) -> dict:
    """The classical models users pick, each as y -> forecaster(train_end, origins, horizon) -> (N, H): AutoETS on
    one season, MSTL on a day and a week of sub-daily data, decomposed anew every ``refit_every`` steps."""
    found = {"AutoETS": lambda y: lambda *a: ets_forecasts(y, *a, season)}
    if season and season > 1:
        seasons = [season, season * WEEK] if freq and _sub_daily(freq) else [season]
        found["MSTL"] = lambda y: MstlRefits(y, seasons, refit_every)
    return found


def _sub_daily(freq: str) -> bool:
    import pandas as pd

    return pd.Timedelta(pd.tseries.frequencies.to_offset(freq)) < pd.Timedelta("1D")


def score_peers(model_path: Path, data: Path, horizons: list[int], refit: str) -> dict[str, dict[int, float]]:
    """MASE of each peer at each horizon, on the origins ``bptt evaluate`` scores, averaged over targets; MSTL
    refitted every season of origins (``refit`` "season") or fitted once on the training part ("once")."""
    file = load_model_file(model_path)
    stored = file.data
    kind = of_model(file)
    seq = kind.read(data, kind.Options(), stored)
    season, scale = stored.get("season"), np.asarray(stored["mase_scale"])
    found: dict[str, dict[int, list]] = {}
    for name, model in peers(season, stored.get("freq"), season if refit == "season" else None).items():
        for values in seq.values:
            start = tail_cut(len(values), stored["val_fraction"])
            forecasters = [model(values[:, column].astype(np.float64)) for column in seq.targets]
            for horizon in horizons:
                origins = forecast.origins_for(len(values), horizon, season, max(0, start - 1))
                actual = values[origins[:, None] + np.arange(1, horizon + 1)[None, :]][..., seq.targets]
                predicted = np.stack([f(start, origins, horizon) for f in forecasters], axis=-1)
                found.setdefault(name, {}).setdefault(horizon, []).append(
                    np.abs(predicted - actual).reshape(-1, len(seq.targets)))
    return {name: {h: float(np.nanmean(np.concatenate(e).mean(axis=0) / scale)) for h, e in by_h.items()}
            for name, by_h in found.items()}


def training_part(path: Path, out: Path) -> Path:
    """The CSV without its last ``HELD_OUT`` of rows, line for line: bptt trains (and early-stops on its own
    validation tail) on this, and ``bptt evaluate`` on the whole file scores the rows it never read."""
    header, *rows = path.read_text().splitlines(keepends=True)
    out.write_text(header + "".join(rows[: tail_cut(len(rows), HELD_OUT)]))
    return out


def run_series(spec: str, budget: list[str], workdir: Path, number: int, refit: str) -> dict:
    """Train, evaluate and score the peers on one series; its row of figures."""
    path, *flags = shlex.split(spec)
    model = workdir / f"{number}-{Path(path).stem}.pt"  # one file per spec: the same CSV may come with other flags
    began = time.perf_counter()
    trained = bptt("train", str(training_part(Path(path), workdir / f"{number}-train.csv")), "-o", str(model),
                   *budget, "--quiet", *flags)
    trained_for = time.perf_counter() - began
    stored = load_model_file(model).data
    season = stored.get("season") or forecast.DEFAULT_HORIZON
    scored = bptt("evaluate", str(model), path, "--horizon", str(season))
    horizons = sorted({1, season})
    row = {"series": Path(path).name + (" (univariate)" if "--features" in flags else ""), "flags": " ".join(flags), "season": season, "train_seconds": trained_for,
           "steps": trained.get("steps"), "stop": trained.get("stop_reason"), "mase": {}}
    for h in horizons:
        figures = scored["horizons"][str(h)]
        row["mase"].setdefault("bptt", {})[h] = figures["model"]["mase"]
        row.setdefault("coverage", {})[h] = (figures["model"].get("coverage") or [None])[0]  # outermost interval
        for key, name in BASELINES.items():
            if key in figures:
                row["mase"].setdefault(name, {})[h] = figures[key]["mase"]
    for name, by_h in score_peers(model, Path(path), horizons, refit).items():
        row["mase"][name] = by_h
    return row


def table(rows: list[dict]) -> str:
    """One markdown table: MASE at 1 step and over the season for bptt and each peer, and bptt / best other."""
    names = list(dict.fromkeys(n for r in rows for n in r["mase"] if n != "bptt"))
    head = ["series (season)", "h", "bptt", *names, "bptt / best other", "bptt 80 % interval coverage"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        for h in sorted(r["mase"]["bptt"]):
            others = {n: r["mase"][n][h] for n in names if h in r["mase"].get(n, {})}
            best = min(others, key=others.get)
            ratio = r["mase"]["bptt"][h] / others[best]
            cells = [f"{r['series']} ({r['season']})", "1" if h == 1 else f"1..{h}", f"{r['mase']['bptt'][h]:.3f}",
                     *[f"{others[n]:.3f}" if n in others else "" for n in names],
                     f"{ratio:.2f} ({best}){'' if ratio <= 1 else ' **misses**'}",
                     "-" if r["coverage"].get(h) is None else f"{r['coverage'][h]:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("series", nargs="+", help='a CSV path, optionally followed by its bptt train flags, quoted: '
                                                  '"data.csv --target temp --missing interpolate"')
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--max-time", default="3m", help="bptt train's --max-time for each series")
    budget.add_argument("--max-steps", type=int, help="bptt train's --max-steps instead: a budget in updates, "
                                                      "which a loaded machine does not change")
    parser.add_argument("--mstl-refit", choices=("season", "once"), default="season",
                        help="season: decompose MSTL anew every season of origins (at each origin of the one-season "
                             "horizon); once: fit it on the training part only (about 40 times faster)")
    parser.add_argument("--install", action="store_true", help="pip install statsforecast into this interpreter")
    args = parser.parse_args()
    require_statsforecast(args.install)
    budget = ["--max-steps", str(args.max_steps)] if args.max_steps else ["--max-time", args.max_time]
    rows = []
    with tempfile.TemporaryDirectory(prefix="forecast-quality-") as workdir:
        for number, spec in enumerate(args.series):
            rows.append(run_series(spec, budget, Path(workdir), number, args.mstl_refit))
            r = rows[-1]
            print(f"{r['series']} {r['flags']}: trained {r['train_seconds']:.0f} s, {r['steps']} updates, "
                  f"stopped by {r['stop']}", file=sys.stderr)
    print(machine_line())
    print(f"bptt train DATA [flags] {' '.join(budget)}, all else default; MASE on the held-out tail, origins a "
          f"horizon apart, scaled by the in-sample one-step naive MAE; MSTL refitted {REFITS[args.mstl_refit]}")
    print(table(rows))


if __name__ == "__main__":
    main()
