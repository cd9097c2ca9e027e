"""Forecast quality with the defaults: bptt against persistence, seasonal naive, AutoETS and MSTL.

For each series given, ``bptt train`` runs with its defaults under a fixed ``--max-time`` (a subprocess,
as a user runs it), then ``bptt evaluate`` scores the held-out tail (the last ``--val-fraction`` of the
series, which training never saw) at one step and over one season. statsforecast's AutoETS (one season)
and MSTL (every season that fits: a day and a week of sub-daily data) are fitted once on the same
training part and forecast from exactly the same origins with their parameters fixed, as bptt's weights
are; every MASE divides by the same in-sample one-step naive error. Prints one table, the machine line
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

BASELINES = {"persistence": "persistence", "seasonal_naive": "seasonal naive"}
WEEK = 7  # days: MSTL's second season on sub-daily data


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


def mstl_forecasts(y: np.ndarray, train_end: int, origins: np.ndarray, horizon: int, seasons: list[int]) -> np.ndarray:
    """(N, H) MSTL forecasts: decomposed on y[:train_end], each seasonal component continued by repeating its
    last season (as MSTL forecasts it); its trend model (ETS, no season) runs forward over the seasonally
    adjusted series to each origin with its parameters fixed. The decomposition is not redone per origin."""
    from statsforecast.models import MSTL, AutoETS

    fitted = MSTL(season_length=seasons, trend_forecaster=AutoETS(model="ZZN")).fit(y[:train_end])
    parts = fitted.model_.filter(regex="seasonal")
    seasonal = np.zeros(len(y) + horizon)
    seasonal[:train_end] = parts.sum(axis=1).to_numpy()
    after = np.arange(len(y) + horizon - train_end)
    for period, column in zip(sorted(seasons), parts.columns):
        last = parts[column].to_numpy()[-period:]
        seasonal[train_end:] += last[after % period]
    adjusted = y - seasonal[: len(y)]
    return np.stack([fitted.trend_forecaster.forward(adjusted[: o + 1], horizon)["mean"]
                     + seasonal[o + 1 : o + 1 + horizon] for o in origins])


def peers(season: int | None, freq: str | None) -> dict:
    """The classical models users pick, as forecasters (y, train_end, origins, horizon) -> (N, H): AutoETS on one
    season, MSTL on a day and a week of sub-daily data."""
    found = {"AutoETS": lambda *a: ets_forecasts(*a, season)}
    if season and season > 1:
        seasons = [season, season * WEEK] if freq and _sub_daily(freq) else [season]
        found["MSTL"] = lambda *a: mstl_forecasts(*a, seasons)
    return found


def _sub_daily(freq: str) -> bool:
    import pandas as pd

    return pd.Timedelta(pd.tseries.frequencies.to_offset(freq)) < pd.Timedelta("1D")


def score_peers(model_path: Path, data: Path, horizons: list[int]) -> dict[str, dict[int, float]]:
    """MASE of each peer at each horizon, on the origins ``bptt evaluate`` scores, averaged over targets."""
    file = load_model_file(model_path)
    stored = file.data
    kind = of_model(file)
    seq = kind.read(data, kind.Options(), stored)
    season, scale = stored.get("season"), np.asarray(stored["mase_scale"])
    found: dict[str, dict[int, float]] = {}
    for name, forecaster in peers(season, stored.get("freq")).items():
        for horizon in horizons:
            errors = []
            for values in seq.values:
                start = tail_cut(len(values), stored["val_fraction"])
                origins = forecast.origins_for(len(values), horizon, season, max(0, start - 1))
                lead = np.arange(1, horizon + 1)
                per_target = []
                for j, column in enumerate(seq.targets):
                    y = values[:, column].astype(np.float64)
                    predicted = forecaster(y, start, origins, horizon)
                    per_target.append(np.abs(predicted - y[origins[:, None] + lead[None, :]]).ravel())
                errors.append(np.stack(per_target, axis=-1))
            mae = np.concatenate(errors).mean(axis=0)
            found.setdefault(name, {})[horizon] = float(np.nanmean(mae / scale))
    return found


def run_series(spec: str, max_time: str, workdir: Path, number: int) -> dict:
    """Train, evaluate and score the peers on one series; its row of figures."""
    path, *flags = shlex.split(spec)
    model = workdir / f"{number}-{Path(path).stem}.pt"  # one file per spec: the same CSV may come with other flags
    began = time.perf_counter()
    trained = bptt("train", path, "-o", str(model), "--max-time", max_time, "--quiet", *flags)
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
        for key, name in BASELINES.items():
            if key in figures:
                row["mase"].setdefault(name, {})[h] = figures[key]["mase"]
    for name, by_h in score_peers(model, Path(path), horizons).items():
        row["mase"][name] = by_h
    return row


def table(rows: list[dict]) -> str:
    """One markdown table: MASE at 1 step and over the season for bptt and each peer, and bptt / best other."""
    names = list(dict.fromkeys(n for r in rows for n in r["mase"] if n != "bptt"))
    head = ["series (season)", "h", "bptt", *names, "bptt / best other"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        for h in sorted(r["mase"]["bptt"]):
            others = {n: r["mase"][n][h] for n in names if h in r["mase"].get(n, {})}
            best = min(others, key=others.get)
            ratio = r["mase"]["bptt"][h] / others[best]
            cells = [f"{r['series']} ({r['season']})", "1" if h == 1 else f"1..{h}", f"{r['mase']['bptt'][h]:.3f}",
                     *[f"{others[n]:.3f}" if n in others else "" for n in names],
                     f"{ratio:.2f} ({best}){'' if ratio <= 1 else ' **misses**'}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("series", nargs="+", help='a CSV path, optionally followed by its bptt train flags, quoted: '
                                                  '"data.csv --target temp --missing interpolate"')
    parser.add_argument("--max-time", default="3m", help="bptt train's --max-time for each series")
    parser.add_argument("--install", action="store_true", help="pip install statsforecast into this interpreter")
    args = parser.parse_args()
    require_statsforecast(args.install)
    rows = []
    with tempfile.TemporaryDirectory(prefix="forecast-quality-") as workdir:
        for number, spec in enumerate(args.series):
            rows.append(run_series(spec, args.max_time, Path(workdir), number))
            r = rows[-1]
            print(f"{r['series']} {r['flags']}: trained {r['train_seconds']:.0f} s, {r['steps']} updates, "
                  f"stopped by {r['stop']}", file=sys.stderr)
    print(machine_line())
    print(f"bptt train DATA [flags] --max-time {args.max_time}, all else default; MASE on the held-out tail, "
          "origins a horizon apart, scaled by the in-sample one-step naive MAE")
    print(table(rows))


if __name__ == "__main__":
    main()
