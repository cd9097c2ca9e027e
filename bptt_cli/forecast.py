"""Forecasting from the carried state, scored against the baselines a model has to beat.

A forecast from origin o feeds row o to the state that has read rows 0..o-1,
then feeds the model's own predictions for the target columns (and the real,
or assumed, values of the other input columns) for H steps. The persistence
(last value) and seasonal-naive (same step one season ago) forecasts are
scored on exactly the same points, so the table shows whether the model earns
its keep. MASE divides by the one-step naive error on the training data.

``evaluate_forecasts`` scores a model this way; ``generate_forecast`` continues
a series into the future. How the results look is ``render.forecast``'s job.
"""

from __future__ import annotations

from pathlib import Path

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from bptt_cli.errors import BpttError
from bptt_cli.losses import OutputHead, level_name, pinball
from bptt_cli.memory import require_rollout_fits
from bptt_cli.models import RecurrentModel, State, next_step
from bptt_cli.residuals import ResidualBands, calibrate
from bptt_cli.series import Normaliser, calendar_names, calendar_values, read_future, stored_calendar

DEFAULT_HORIZON = 24
SAMPLED_PATHS = 200  # paths per origin behind a gaussian model's intervals beyond one step
ROLLOUT_BATCH = 8192  # rows rolled out at once when sampling paths: bounds the state's memory
PLOT_HORIZONS = 3  # a forecast picture shows this many horizons of context before the forecast
PLOT_TARGETS = 6  # panels at most: audio frames have dozens of features, a picture shows the first few


def stack_states(states: list[State]) -> State:
    """Per-sequence states, each (layers, 1, hidden) or (layers, n, hidden), joined along the batch."""
    return tuple(torch.cat(parts, dim=1) for parts in zip(*states))


@torch.no_grad()
def states_at(model: RecurrentModel, x: torch.Tensor, origins: np.ndarray, device: torch.device) -> State:
    """The state that has read x[0 .. o-1], for each origin o (ascending); x is (L, F) normalised.

    One fused recurrent call per gap between origins, not one per step.
    """
    state = model.init_state(1, device)
    found, done = [], 0
    for origin in origins.tolist():
        if origin > done:
            _, state = model.recur(x[done:origin].unsqueeze(1), state)
            done = origin
        found.append(state)
    return stack_states(found)


@torch.no_grad()
def rollout(
    model: RecurrentModel,
    state: State,
    first: torch.Tensor,
    known: torch.Tensor | None,
    feed: list[tuple[int, int]],
    horizon: int,
    head: OutputHead = OutputHead(),
    choose=None,
    trail: torch.Tensor | None = None,
) -> torch.Tensor:
    """The model's outputs (N, H, K*O) from N states, starting by reading ``first`` (N, F).

    ``known`` (N, H - 1, F) holds the inputs of the following steps; for each
    (target, feature) pair in ``feed`` the model's point forecast (the mean or
    the median of a probabilistic ``head``; or what ``choose`` makes of the
    outputs, e.g. a draw) replaces that feature, so targets are the model's own
    and other features are given. A model with a direct head decodes ``leads``
    steps at once: it reads those steps back (one fused call) only when the
    horizon is longer. A model with a linear start adds its offsets, read from ``trail`` (N, lags, O), the last
    target values up to the origin (``LinearStart.trail``), which the forecasts then extend.
    """
    choose = choose or head.point
    start = model.linear_start
    x, predictions, done = first.unsqueeze(0), [], 0
    while True:  # over every origin at once: one decode per block of leads
        out, state = model.recur(x, state)  # (steps, N, hidden)
        block = decoded(model, out[-1], x[-1], trail).unflatten(-1, (model.config.leads, -1))[:, : horizon - done]
        predictions.append(block)  # (N, take, K*O)
        done += block.shape[1]
        if done == horizon:
            return torch.cat(predictions, dim=1)
        x = known[:, done - block.shape[1] : done].transpose(0, 1).clone()  # (take, N, F): the block's steps
        point = choose(block.flatten(0, 1)).unflatten(0, block.shape[:2]).transpose(0, 1)  # (take, N, O)
        if start is not None:
            trail = start.advance(trail, point.transpose(0, 1))
        for target, feature in feed:
            x[:, :, feature] = point[:, :, target]


@torch.no_grad()
def sampled_bands(model: RecurrentModel, state: State, first: torch.Tensor, known: torch.Tensor | None,
                  feed: list[tuple[int, int]], horizon: int, head: OutputHead, paths: int = SAMPLED_PATHS,
                  seed: int = 0) -> torch.Tensor:
    """A gaussian model's forecast at each level (N, H, L, O), normalised, from ``paths`` sampled paths per origin.

    Each path feeds back a draw from the predicted normal instead of the mean, so the errors of the early
    leads carry into the later ones; the predicted scale alone is the one-step scale at every lead, and its
    intervals cover far less than their nominal share after a few steps. Lead 1 keeps the exact quantiles.
    Origins go in chunks, so memory stays that of ``ROLLOUT_BATCH`` rows.
    """
    generator = torch.Generator(device=first.device).manual_seed(seed)
    found = []
    for begin in range(0, first.shape[0], max(1, ROLLOUT_BATCH // paths)):
        end = min(first.shape[0], begin + max(1, ROLLOUT_BATCH // paths))
        repeated = [s[:, begin:end].repeat_interleave(paths, dim=1) for s in state]
        draws = []

        def draw(step: torch.Tensor) -> torch.Tensor:
            value = head.point(step) + head.scale(step) * torch.randn(
                step.shape[0], step.shape[1] // 2, generator=generator, device=step.device, dtype=step.dtype)
            draws.append(value)
            return value

        outputs = rollout(model, tuple(repeated), first[begin:end].repeat_interleave(paths, 0),
                          None if known is None else known[begin:end].repeat_interleave(paths, 0), feed, horizon,
                          head, draw)
        draw(outputs[:, -1])  # the last lead is drawn too, though nothing reads it
        samples = torch.stack(draws, dim=1).unflatten(0, (end - begin, paths))  # (n, S, H, O)
        levels = torch.tensor(head.levels, dtype=samples.dtype, device=samples.device)
        bands = torch.quantile(samples, levels, dim=1).permute(1, 2, 0, 3)  # (n, H, L, O)
        bands[:, 0] = head.bands(outputs.unflatten(0, (end - begin, paths))[:, 0, 0])  # the same at every path
        found.append(bands)
    return torch.cat(found)


def seasonal_rows(origins: np.ndarray, horizon: int, season: int | None) -> np.ndarray:
    """The rows (N, H) whose values a forecast from each origin reuses at leads 1..H: the same step one season
    earlier, or the origin's own row where there is no season or less than a season up to the origin."""
    origins = np.asarray(origins)[:, None]
    if not season:
        return np.repeat(origins, horizon, axis=1)
    lead = np.arange(1, horizon + 1)
    back = season * np.ceil(lead / season).astype(int) - lead  # steps back from the origin
    return np.where(origins + 1 >= season, origins - back, origins)


def seasonal_fill(history: np.ndarray, horizon: int, season: int | None) -> np.ndarray:
    """Values (H, C) after ``history`` (L, C): the same step one season earlier, or the last value."""
    return history[seasonal_rows(np.array([len(history) - 1]), horizon, season)[0]]


def future_inputs(history: np.ndarray, horizon: int, season: int | None, columns: list[str], calendar: list[str],
                  times, given: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The input rows (H - 1, C) read after ``history`` (L, C), in original units: the same step one season
    earlier (or the last value), but the calendar columns computed from the future ``times`` (H,) and the
    ``given`` columns' known future values (H,) from a future file."""
    rows = seasonal_fill(history, horizon, season)[: horizon - 1].copy()
    if calendar:
        rows[:, [columns.index(n) for n in calendar_names(calendar)]] = calendar_values(times[: horizon - 1], calendar)
    for name, values in (given or {}).items():
        rows[:, columns.index(name)] = values[: horizon - 1]
    return rows


def baselines(truth: np.ndarray, origins: np.ndarray, horizon: int, season: int | None) -> dict[str, np.ndarray]:
    """Persistence and seasonal-naive forecasts (N, H, O) from each origin of a series ``truth`` (L, O)."""
    lead = np.arange(1, horizon + 1)
    persistence = truth[origins][:, None, :].repeat(horizon, axis=1)
    found = {"persistence": persistence}
    if season:
        back = season * np.ceil(lead / season).astype(int) - lead  # (H,) steps before the origin
        found["seasonal_naive"] = truth[origins[:, None] - back[None, :]]
    return found


@dataclass(frozen=True)
class OriginPlan:
    """Where rolling forecasts start: ``count`` evenly spaced origins (--origins N), one every ``every``
    steps (--every K), or by default one every horizon, so each point is forecast once."""

    count: int | None = None
    every: int | None = None

    def __post_init__(self):
        if self.count is not None and self.every is not None:
            raise BpttError(f"--origins {self.count} and --every {self.every} both pick the origins; give one of them")
        for option, value in (("--origins", self.count), ("--every", self.every)):
            if value is not None and value < 1:
                raise BpttError(f"{option} must be at least 1, got {value}")


def check_backtest(stored: dict, forecasts: Path | None, plan: OriginPlan) -> None:
    """--forecasts, --origins and --every are for forecasting models: refuse them for any other, before work."""
    given = [name for name, value in (("--forecasts", forecasts), ("--origins", plan.count), ("--every", plan.every))
             if value is not None]
    if given and stored.get("task") != "forecast":
        what = stored.get("task") or "text"
        raise BpttError(f"{' and '.join(given)}: for forecasting models; this one is a {what} model")


def origins_for(length: int, horizon: int, season: int | None, start: int = 0,
                plan: OriginPlan = OriginPlan()) -> np.ndarray:
    """Forecast origins from which every baseline exists and the whole horizon is inside the data.

    By default origins are ``horizon`` apart, so each point is forecast once per horizon.
    """
    first = max(start, (season - 1) if season else 0)
    if plan.count is None:
        return np.arange(first, length - horizon, plan.every or horizon, dtype=np.int64)
    last = length - horizon - 1
    if last - first + 1 < plan.count:
        raise BpttError(f"--origins {plan.count}: only {max(0, last - first + 1)} origin(s) fit in a series of "
                        f"{length} rows at --horizon {horizon}; give fewer --origins or more rows")
    return np.linspace(first, last, plan.count).round().astype(np.int64)


def errors(truth: np.ndarray, forecast: np.ndarray, scale: np.ndarray, seasonal_scale: np.ndarray | None = None) -> dict:
    """MAE, RMSE, sMAPE (percent) and MASE over points (..., O), averaged over targets, and per target.

    MASE divides by the in-sample one-step naive MAE (Hyndman's); with ``seasonal_scale``,
    ``mase_seasonal`` divides by the in-sample seasonal-naive MAE instead (the M4 competition's).
    """
    error = forecast - truth
    flat = error.reshape(-1, error.shape[-1])
    denominator = np.abs(truth) + np.abs(forecast)
    ratio = np.divide(2 * np.abs(error), denominator, out=np.zeros_like(error), where=denominator > 0)
    per = {
        "mae": np.abs(flat).mean(axis=0),
        "rmse": np.sqrt((flat**2).mean(axis=0)),
        "smape": 100 * ratio.reshape(-1, error.shape[-1]).mean(axis=0),
    }
    per["mase"] = per["mae"] / np.where(scale > 0, scale, np.nan)
    if seasonal_scale is not None:
        per["mase_seasonal"] = per["mae"] / np.where(seasonal_scale > 0, seasonal_scale, np.nan)
    return {name: float(np.nanmean(values)) for name, values in per.items()} | {
        "per_target": [{name: float(values[i]) for name, values in per.items()} for i in range(error.shape[-1])]
    }


def naive_scale(series: list[np.ndarray], lag: int = 1) -> np.ndarray:
    """The in-sample MAE of the naive forecast ``lag`` steps back (1: the last value; a season: the same
    step one season ago), per column: the MASE denominator."""
    diffs = np.concatenate([np.abs(s[lag:] - s[:-lag]) for s in series if len(s) > lag])
    return diffs.mean(axis=0)


def classification(truth: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro-F1 and the confusion matrix (rows: true class, columns: predicted)."""
    n = len(classes)
    confusion = np.bincount(truth * n + predicted, minlength=n * n).reshape(n, n)
    hits = np.diag(confusion).astype(np.float64)
    precision = np.divide(hits, confusion.sum(axis=0), out=np.zeros(n), where=confusion.sum(axis=0) > 0)
    recall = np.divide(hits, confusion.sum(axis=1), out=np.zeros(n), where=confusion.sum(axis=1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=precision + recall > 0)
    present = confusion.sum(axis=1) > 0  # classes absent from the data would drag macro-F1 down for nothing
    return {
        "accuracy": float(hits.sum() / max(1, len(truth))),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "confusion": confusion.tolist(),
        "classes": list(classes),
    }


# ---------------------------------------------------------------- scoring a model's forecasts


@dataclass
class Scored:
    """Every forecast scored at one horizon, in original units: what the tables and a backtest file hold."""

    truth: np.ndarray  # (N, H, O) what happened after each of N origins
    point: np.ndarray  # (N, H, O) the model's point forecast
    baselines: dict[str, np.ndarray]  # name -> (N, H, O)
    sequence: np.ndarray  # (N,) the sequence of each origin
    origin: np.ndarray  # (N,) the origin: the last row read before the forecast
    bands: np.ndarray | None = None  # (N, H, L, O) the model's forecast at each level of a probabilistic head
    sigma: np.ndarray | None = None  # (N, H, O) a gaussian head's standard deviation
    baseline_bands: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N, H, L, O)
    names: list[str] = field(default_factory=list)  # of the sequences
    times: list[np.ndarray] | None = None  # of the sequences' rows, when the data has times


def evaluate_forecasts(model: RecurrentModel, seq, norm: Normaliser, starts: list[int], horizon: int,
                       season: int | None, stored: dict, data: Path, device, plan: OriginPlan = OriginPlan()) -> dict:
    """Errors of the model and the baselines at one step and at ``horizon`` steps, on the same points; with a
    probabilistic model, also pinball loss (CRPS for a gaussian) and the coverage of every interval."""
    scale = np.asarray(stored["mase_scale"])
    # the seasonal scale was measured at the model's season: another --season has none
    seasonal = stored.get("mase_seasonal_scale") if season == stored.get("season") else None
    seasonal = None if seasonal is None else np.asarray(seasonal)
    head = OutputHead.stored(stored, None)
    residual = None if head.probabilistic else ResidualBands.stored(stored)
    banded = residual or head  # what the levels and intervals come from
    offsets, notes = (baseline_offsets(seq, starts, horizon, season, banded.levels) if banded.levels
                      else ({}, []))
    unknown = unknown_inputs(stored)
    if unknown and horizon > model.config.leads:  # a direct head reads nothing after the origin
        names = ", ".join(stored["columns"][stored["features"][p]] for p in unknown)
        how = reused_values(season)
        notes = [*notes, f"inputs {names} are not marked --future: after each origin the forecasts read {how}, "
                         "as generate --assume-seasonal does, not their real values"]
    out: dict = {}
    for h in sorted({1, horizon}):
        scored = _forecasts(model, seq, norm, starts, h, season, device, head,
                            plan if h == horizon else OriginPlan(), {k: v[:h] for k, v in offsets.items()}, residual,
                            unknown)
        if len(scored.truth) == 0:
            raise BpttError(f"{data}: too short to score a {h}-step forecast"
                            + (f" after a season of {season}" if season else "") + "; give more rows or a smaller --horizon")
        out[str(h)] = {name: errors(scored.truth, values, scale, seasonal)
                       | interval_scores(scored.truth, bands, banded, sigma)
                       for name, values, bands, sigma in _forecasters(scored)}
        out[str(h)]["points"] = int(scored.truth.shape[0] * scored.truth.shape[1])
    return {"task": "forecast", "horizons": out, "targets": stored["target_names"], "points": out["1"]["points"],
            "season": season, "notes": notes, "levels": list(banded.levels), "intervals": interval_names(banded),
            "plot": _last_picture(seq, scored, horizon, banded), "backtest": scored}


def residual_quantiles(model: RecurrentModel, seq, norm: Normaliser, starts: list[int], season: int | None,
                       device, unknown: list[int] = ()) -> dict | None:
    """A point model's error quantiles per lead over a season (or ``DEFAULT_HORIZON``) on the validation tail
    that starts at ``starts``, rolled out as ``evaluate`` does (``residuals.calibrate``); None if too short."""
    training = model.training
    model.eval()
    try:
        return calibrate(lambda plan, h: _forecasts(model, seq, norm, starts, h, season, device, OutputHead(), plan,
                                                    {}, unknown=unknown), seq, starts, season or DEFAULT_HORIZON, season)
    finally:
        model.train(training)


def _forecasters(scored: Scored):
    """(name, point forecasts, bands, gaussian sigma) of the model, then of each baseline."""
    yield "model", scored.point, scored.bands, scored.sigma
    for name, values in scored.baselines.items():
        yield name, values, scored.baseline_bands.get(name), None


def _last_picture(seq, scored: Scored, horizon: int, head: OutputHead | ResidualBands) -> dict:
    """What --plot draws: the last window scored at the longest horizon, with the outermost interval."""
    i, origin = int(scored.sequence[-1]), int(scored.origin[-1])
    times = seq.times[i] if seq.times else None
    after = slice(origin + 1, origin + 1 + horizon)
    lines = {"forecast_values": scored.point[-1], "actual_values": scored.truth[-1],
             "persistence_values": scored.baselines["persistence"][-1]}
    if scored.bands is not None:
        lines |= {"band_low": scored.bands[-1][:, 0], "band_high": scored.bands[-1][:, -1]}
    plot = picture(seq, i, seq.values[i][: origin + 1], None if times is None else times[: origin + 1],
                   None if times is None else times[after], horizon, f"the last {horizon}-step window scored", **lines)
    return plot | band_label(head)


def band_label(head: OutputHead | ResidualBands) -> dict:
    """The legend entry of a picture's band, when the head has one."""
    if not head.intervals:
        return {}
    low, high, nominal = head.intervals[0]
    return {"band_label": f"{nominal:.0%} interval ({level_name(head.levels[low])}-{level_name(head.levels[high])})"}


def interval_names(head: OutputHead | ResidualBands) -> list[dict]:
    """Each interval a head forecasts: its levels and nominal coverage."""
    return [{"low": head.levels[lo], "high": head.levels[hi], "nominal": round(nominal, 10)}
            for lo, hi, nominal in head.intervals]


def interval_scores(truth: np.ndarray, bands: np.ndarray | None, head: OutputHead,
                    sigma: np.ndarray | None = None) -> dict:
    """Pinball loss (mean over points, levels and targets), the share of points inside each interval (overall
    and at each lead: a rollout's later leads may be covered less), and for a gaussian forecast its CRPS;
    nothing for a point forecast."""
    if bands is None:
        return {}
    levels = np.asarray(head.levels)[:, None]
    found = {"pinball": float(pinball(bands, truth[..., None, :], levels).mean())}
    if sigma is not None:
        found["crps"] = float(gaussian_crps(truth, bands[..., len(head.levels) // 2, :], sigma).mean())
    inside = [(bands[..., lo, :] <= truth) & (truth <= bands[..., hi, :]) for lo, hi, _ in head.intervals]
    found["coverage"] = [float(x.mean()) for x in inside]
    found["coverage_by_lead"] = [x.mean(axis=(0, 2)).tolist() for x in inside]  # per interval, leads 1..H
    return found


def gaussian_crps(actual: np.ndarray, mean: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The continuous ranked probability score of N(mean, sigma) at ``actual``, in the data's units."""
    z = (actual - mean) / sigma
    cdf = torch.special.ndtr(torch.from_numpy(z)).numpy()
    pdf = np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)
    return sigma * (z * (2 * cdf - 1) + 2 * pdf - 1 / np.sqrt(np.pi))


def baseline_offsets(seq, starts: list[int], horizon: int, season: int | None,
                     levels: tuple[float, ...]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Each baseline's empirical interval: the quantiles at ``levels`` of its in-sample errors at every lead
    (H, L, O), measured on the rows before scoring starts (the training part); a note when there are none."""
    history = [v[:s, seq.targets] for v, s in zip(seq.values, starts)]
    notes = []
    if not any(len(h) > _lag(horizon, season) for h in history):
        history = [v[:, seq.targets] for v in seq.values]
        notes.append("the baselines' intervals come from their errors on DATA itself (it has no training part "
                     "before the scored rows): optimistic")
    lags = {"persistence": list(range(1, horizon + 1))}
    if season:
        lags["seasonal_naive"] = [_lag(lead, season) for lead in range(1, horizon + 1)]
    found = {}
    for name, per_lead in lags.items():
        rows = []
        for lag in per_lead:
            residuals = [h[lag:] - h[:-lag] for h in history if len(h) > lag]
            if not residuals:
                return {}, [f"too few rows before the scored part to measure the baselines' {horizon}-step errors"]
            rows.append(np.quantile(np.concatenate(residuals), levels, axis=0))  # (L, O)
        found[name] = np.stack(rows)
    return found, notes


def _lag(lead: int, season: int | None) -> int:
    """How far back from the forecast point a baseline's value lies: the lead itself for persistence, the
    whole seasons covering it for seasonal naive."""
    return season * int(np.ceil(lead / season)) if season else lead


def _forecasts(model, seq, norm: Normaliser, starts: list[int], horizon: int, season: int | None, device,
               head: OutputHead, plan: OriginPlan, offsets: dict[str, np.ndarray],
               residual: ResidualBands | None = None, unknown: list[int] = ()) -> Scored:
    """Truth, model and baseline forecasts (N, H, O) in original units, from every origin of every sequence;
    a point model's bands from its ``residual`` quantiles. The ``unknown`` inputs take last season's values
    after the origin, as ``generate --assume-seasonal`` gives them."""
    feed = feedback(seq.features, seq.targets)
    lead = np.arange(1, horizon + 1)
    parts: dict[str, list] = {}
    for i, values in enumerate(seq.values):  # one iteration per series
        origins = origins_for(len(values), horizon, season, max(0, starts[i] - 1), plan)
        if len(origins) == 0:
            continue
        outputs, bands = _model_outputs(model, torch.from_numpy(seq.frames(norm, i)).to(device), origins, horizon,
                                        feed, head, device, seasonal_rows(origins, horizon, season), unknown)
        outputs = outputs.double().cpu()
        target_values = values[:, seq.targets]
        found = {"truth": target_values[origins[:, None] + lead[None, :]],
                 "point": norm.invert(head.point(outputs).numpy(), seq.targets),
                 "sequence": np.full(len(origins), i), "origin": origins}
        if bands is not None:
            found["bands"] = norm.invert(bands.double().cpu().numpy(), seq.targets)
        elif residual is not None:
            found["bands"] = residual.around(found["point"])
        if head.loss == "gaussian" and horizon == 1:  # CRPS of the predicted normal: exact at one step only
            found["sigma"] = head.scale(outputs).numpy() * norm.std[seq.targets]
        for name, forecast_values in baselines(target_values, origins, horizon, season).items():
            found[name] = forecast_values
            if name in offsets:
                found[f"{name} bands"] = forecast_values[:, :, None, :] + offsets[name][None]
        for key, value in found.items():
            parts.setdefault(key, []).append(value)
    if not parts:
        empty = np.zeros((0, horizon, len(seq.targets)))
        return Scored(empty, empty, {}, np.zeros(0, np.int64), np.zeros(0, np.int64), names=seq.names)
    joined = {key: np.concatenate(value) for key, value in parts.items()}
    names = [n for n in ("persistence", "seasonal_naive") if n in joined]
    return Scored(joined["truth"], joined["point"], {n: joined[n] for n in names}, joined["sequence"],
                  joined["origin"], joined.get("bands"), joined.get("sigma"),
                  {n: joined[f"{n} bands"] for n in names if f"{n} bands" in joined}, seq.names, seq.times)


@torch.no_grad()
def _model_outputs(model, x: torch.Tensor, origins: np.ndarray, horizon: int, feed, head: OutputHead,
                   device, reused: np.ndarray, unknown: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's outputs (N, H, K*O) from each origin of one normalised series x (L, F), and its
    forecast at each level (N, H, L, O) for a probabilistic head; the ``unknown`` inputs after the origin are
    read from the ``reused`` rows (N, H) instead of their real future."""
    trail = trail_at(model, x, origins)
    if horizon == 1:  # one pass gives every one-step forecast
        out, _ = model.recur(x.unsqueeze(1), model.init_state(1, device))
        outputs = next_step(decoded(model, out[origins, 0], x[origins], trail), model.config).unsqueeze(1)
        return outputs, head.bands(outputs) if head.probabilistic else None
    lead = np.arange(1, horizon + 1)
    state = states_at(model, x, origins, device)
    known = x[origins[:, None] + lead[None, :-1]]  # (N, H-1, F): the real inputs after the origin
    if unknown:
        known[:, :, unknown] = x[reused[:, :-1]][:, :, unknown]
    outputs = rollout(model, state, x[origins], known, feed, horizon, head, trail=trail)
    return outputs, rollout_bands(model, state, x[origins], known, feed, horizon, head, outputs)


def decoded(model: RecurrentModel, out: torch.Tensor, x: torch.Tensor, trail: torch.Tensor | None) -> torch.Tensor:
    """The forecasts (N, leads * K*O) decoded from the outputs ``out`` (N, hidden) after reading x (N, F): with
    a linear start, plus its offsets from each row's ``trail`` (``trail_at``)."""
    decoded_outputs = model.decode(out, x)
    if trail is None:
        return decoded_outputs
    return decoded_outputs + model.linear_start.offsets(trail).to(decoded_outputs.dtype)


def trail_at(model: RecurrentModel, x: torch.Tensor, origins: np.ndarray) -> torch.Tensor | None:
    """The last target values (N, lags, O) up to each origin of the normalised inputs x (L, F) that a model's
    linear start reads (its anchor inputs are the targets); None for a model without one."""
    start = model.linear_start
    return None if start is None else start.trail(x[:, model.config.anchor], origins)


def rollout_bands(model, state, first, known, feed, horizon: int, head: OutputHead,
                  outputs: torch.Tensor) -> torch.Tensor | None:
    """The levels of a rolled-out forecast: sampled paths for a gaussian head, the levels the model
    gives at each lead for a quantile head (fed its medians), None for a point forecast."""
    if head.loss == "gaussian":
        return sampled_bands(model, state, first, known, feed, horizon, head)
    return head.bands(outputs) if head.probabilistic else None


def known_future(stored: dict, names: list[str], times, horizon: int, future: Path | None,
                 assume_seasonal: bool, leads: int = 1) -> tuple[dict[str, np.ndarray], list[str]]:
    """The future values (G, H) of the inputs that are neither targets nor calendar, from ``future``, and
    notes; an input without them is refused unless ``assume_seasonal`` (then last season's, said in a note).
    A model that decodes ``leads`` steps at once reads no future input up to that horizon."""
    season, others = stored.get("season"), outside_inputs(stored)
    if horizon <= leads or not others:  # the forecast reads only the rows already there
        return {}, ([f"--future {future}: not read; this model forecasts {leads} step(s) at once from the rows "
                     "already read"] if future is not None and others else [])
    marked = (stored.get("settings") or {}).get("future", [])
    given = read_future(future, stored, names, times, others, marked) if future is not None else {}
    unknown = [c for c in others if c not in given]
    if unknown and not assume_seasonal:
        raise BpttError(f"inputs {', '.join(unknown)} are not forecast and their future is unknown: give their "
                        f"values at the {horizon} forecast times with --future FILE (a CSV with "
                        f"{', '.join(([stored['time_column']] if stored.get('time_column') else []) + unknown)}), "
                        "or --assume-seasonal to reuse last season's")
    if not unknown:
        return given, []
    how = reused_values(season)
    return given, [f"--assume-seasonal: inputs {', '.join(unknown)} are not forecast; the future uses {how}"]


def reused_values(season: int | None) -> str:
    """What a forecast takes for inputs whose future it has no values of (``seasonal_rows``), in words."""
    return f"their values one season ({season} steps) earlier" if season else "their last values"


def outside_inputs(stored: dict) -> list[str]:
    """The input columns a forecast neither predicts nor computes: their future comes from outside."""
    columns, computed = stored["columns"], set(calendar_names(stored_calendar(stored)))
    return [columns[f] for f in stored["features"] if f not in stored["targets"] and columns[f] not in computed]


def unknown_inputs(stored: dict) -> list[int]:
    """Positions among the model's inputs of the columns whose future is not known ahead (not marked
    ``--future``): a rollout scored on past data must not read their real future, which ``generate`` has not."""
    marked = set((stored.get("settings") or {}).get("future", []))
    unknown = {c for c in outside_inputs(stored) if c not in marked}
    return [p for p, f in enumerate(stored["features"]) if stored["columns"][f] in unknown]


def feedback(features: list[int], targets: list[int]) -> list[tuple[int, int]]:
    """(target output, feature input) pairs: where a rollout feeds the model's predictions back."""
    return [(j, features.index(c)) for j, c in enumerate(targets) if c in features]


def picture(seq, i: int, history: np.ndarray, times, future_times, horizon: int, what: str,
            **lines: np.ndarray) -> dict:
    """What a forecast picture shows of sequence i: the last rows of ``history`` (L, C) up to the
    forecast origin, in original units, then ``lines`` (H, O) after it, at their times when the data
    has them, else at steps counted from the origin (context -k+1..0, forecast 1..H).
    """
    keep = min(len(history), PLOT_HORIZONS * horizon)
    shown = seq.targets[:PLOT_TARGETS]
    names = [seq.columns[c] for c in shown]
    label = None
    if times is not None and future_times is not None:
        context_time, forecast_time = np.asarray(times)[-keep:], np.asarray(future_times)
    else:
        context_time, forecast_time = np.arange(1 - keep, 1), np.arange(1, horizon + 1)
        label = "steps from the forecast origin (0 = the last row read)"
    title = f"{seq.names[i]}: {what}" if len(seq.names) > 1 or seq.group_column else what
    if len(seq.targets) > len(shown):
        title += f" (the first {len(shown)} of {len(seq.targets)} targets)"
    return {"context_time": context_time, "context_values": np.asarray(history)[-keep:][:, shown],
            "forecast_time": forecast_time, "target_names": names, "title": title, "time_label": label,
            **{k: np.asarray(v)[:, : len(shown)] for k, v in lines.items()}}


# ---------------------------------------------------------------- forecasting the future


@torch.no_grad()
def generate_forecast(file, device, context=None, horizon: int | None = None, future: Path | None = None,
                      assume_seasonal: bool = False) -> dict:
    """H future steps after the ``context`` sequences (or after the training data), in original units.

    Calendar inputs are computed at the future times. Other inputs that are not
    targets come from the ``future`` CSV; without it they are refused, unless
    ``assume_seasonal`` takes them from one season earlier (or holds their last
    value), which a note says.
    """
    from types import SimpleNamespace

    stored = file.data
    season = stored.get("season")
    horizon = horizon or season or DEFAULT_HORIZON
    if horizon < 1:
        raise BpttError(f"--horizon must be at least 1, got {horizon}")
    norm = Normaliser.from_dict(stored["norm"])
    model = file.model.to(device).eval()
    features, targets, columns = stored["features"], stored["targets"], stored["columns"]
    calendar = stored_calendar(stored)
    if context is not None:
        names, histories = context.names, context.values
        last_time = [str(pd.Timestamp(t[-1])) for t in context.times] if context.times else None
        freq = context.freq or stored.get("freq")
        state = stack_states([states_at(model, torch.from_numpy(context.frames(norm, i)).to(device),
                                        np.array([len(v) - 1]), device) for i, v in enumerate(histories)])
    else:
        tail = stored.get("tail")
        if not tail:
            raise BpttError("this model file keeps no state to continue from; give --context FILE")
        names, histories, last_time = tail["names"], [np.asarray(r) for r in tail["rows"]], tail["last_time"]
        freq = stored.get("freq")
        state = tuple(s.to(device) for s in tail["state"])
    require_rollout_fits(model.config, horizon, len(names))
    times = None
    if last_time and freq:
        step = pd.tseries.frequencies.to_offset(freq)
        times = [pd.date_range(pd.Timestamp(t), periods=horizon + 1, freq=step)[1:] for t in last_time]
    elif calendar:
        raise BpttError("this model reads calendar inputs, but the data has no regular time step to continue "
                        "its times with; give --context rows at a regular step")
    given, notes = known_future(stored, names, times, horizon, future, assume_seasonal, model.config.leads)
    first = np.concatenate([norm.apply(h[-1:])[:, features] for h in histories])
    known = np.concatenate([norm.apply(future_inputs(h, horizon, season, columns, calendar,
                                                     None if times is None else times[i],
                                                     {c: v[i] for c, v in given.items()}))[None, :, features]
                            for i, h in enumerate(histories)])  # (G, H-1, F) the future inputs
    head = OutputHead.stored(stored, file.config)
    first, known, feed = torch.from_numpy(first).to(device), torch.from_numpy(known).to(device), feedback(features, targets)
    trails = [trail_at(model, torch.from_numpy(norm.apply(h)[:, features]).to(device), np.array([len(h) - 1]))
              for h in histories]
    outputs = rollout(model, state, first, known, feed, horizon, head,
                      trail=None if trails[0] is None else torch.cat(trails))  # (G, H, K*O)
    values = norm.invert(head.point(outputs).cpu().double().numpy(), targets)  # (G, H, O)
    bands = rollout_bands(model, state, first, known, feed, horizon, head, outputs)  # (G, H, L, O)
    bands = None if bands is None else norm.invert(bands.cpu().double().numpy(), targets)
    residual = None if head.probabilistic else ResidualBands.stored(stored)
    if residual is not None:
        bands = residual.around(values)
    banded = residual or head
    past = None
    if times is not None:
        past = (context.times[-1] if context is not None
                else pd.date_range(end=pd.Timestamp(last_time[-1]), periods=len(histories[-1]), freq=step))
    shown = SimpleNamespace(targets=targets, columns=columns, names=names,
                            group_column=stored.get("group_column"))
    band = {} if bands is None else {"band_low": bands[-1][:, 0], "band_high": bands[-1][:, -1]}
    plot = picture(shown, len(names) - 1, histories[-1], past, None if times is None else times[-1], horizon,
                   f"{horizon}-step forecast", forecast_values=values[-1], **band) | band_label(banded)
    return {"kind": stored["kind"], "names": names, "values": values, "times": times, "notes": notes,
            "bands": bands, "levels": list(banded.levels),
            "targets": stored["target_names"], "time_column": stored.get("time_column"),
            "group_column": stored.get("group_column"), "horizon": horizon, "plot": plot}
