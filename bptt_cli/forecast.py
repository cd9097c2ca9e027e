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

import numpy as np
import pandas as pd
import torch

from bptt_cli.errors import BpttError
from bptt_cli.memory import require_rollout_fits
from bptt_cli.models import RecurrentModel, State, next_step
from bptt_cli.series import Normaliser

DEFAULT_HORIZON = 24
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
) -> torch.Tensor:
    """Predictions (N, H, O) from N states, starting by reading ``first`` (N, F).

    ``known`` (N, H - 1, F) holds the inputs of the following steps; for each
    (target, feature) pair in ``feed`` the model's prediction replaces that
    feature, so targets are the model's own and other features are given.
    A model with a direct head decodes ``leads`` steps at once: it reads those
    steps back (one fused call) only when the horizon is longer.
    """
    leads, outputs = model.config.leads, model.config.output_size
    x, predictions, done = first.unsqueeze(0), [], 0
    while True:  # over every origin at once: one decode per block of leads
        out, state = model.recur(x, state)  # (steps, N, hidden)
        block = model.decode(out[-1], x[-1]).unflatten(-1, (leads, outputs))[:, : horizon - done]  # (N, take, O)
        predictions.append(block)
        done += block.shape[1]
        if done == horizon:
            return torch.cat(predictions, dim=1)
        x = known[:, done - block.shape[1] : done].transpose(0, 1).clone()  # (take, N, F): the block's steps
        for target, feature in feed:
            x[:, :, feature] = block[:, :, target].transpose(0, 1)


def seasonal_fill(history: np.ndarray, horizon: int, season: int | None) -> np.ndarray:
    """Values (H, C) after ``history`` (L, C): the same step one season earlier, or the last value."""
    lead = np.arange(1, horizon + 1)
    if season and len(history) >= season:
        back = season * np.ceil(lead / season).astype(int) - lead  # steps back from the last row
        return history[len(history) - 1 - back]
    return np.repeat(history[-1:], horizon, axis=0)


def baselines(truth: np.ndarray, origins: np.ndarray, horizon: int, season: int | None) -> dict[str, np.ndarray]:
    """Persistence and seasonal-naive forecasts (N, H, O) from each origin of a series ``truth`` (L, O)."""
    lead = np.arange(1, horizon + 1)
    persistence = truth[origins][:, None, :].repeat(horizon, axis=1)
    found = {"persistence": persistence}
    if season:
        back = season * np.ceil(lead / season).astype(int) - lead  # (H,) steps before the origin
        found["seasonal_naive"] = truth[origins[:, None] - back[None, :]]
    return found


def origins_for(length: int, horizon: int, season: int | None, start: int = 0) -> np.ndarray:
    """Forecast origins from which every baseline exists and the whole horizon is inside the data.

    Origins are ``horizon`` apart, so each point is forecast once per horizon.
    """
    first = max(start, (season - 1) if season else 0)
    return np.arange(first, length - horizon, horizon, dtype=np.int64)


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


def evaluate_forecasts(model: RecurrentModel, seq, norm: Normaliser, starts: list[int], horizon: int,
                       season: int | None, stored: dict, data: Path, device) -> dict:
    """Errors of the model and the baselines at one step and at ``horizon`` steps, on the same points."""
    scale = np.asarray(stored["mase_scale"])
    # the seasonal scale was measured at the model's season: another --season has none
    seasonal = stored.get("mase_seasonal_scale") if season == stored.get("season") else None
    seasonal = None if seasonal is None else np.asarray(seasonal)
    out: dict = {}
    for h in sorted({1, horizon}):
        truth, predicted, base, last = _forecasts(model, seq, norm, starts, h, season, device)
        if len(truth) == 0:
            raise BpttError(f"{data}: too short to score a {h}-step forecast"
                            + (f" after a season of {season}" if season else "") + "; give more rows or a smaller --horizon")
        out[str(h)] = {"model": errors(truth, predicted, scale, seasonal)}
        for name, values in base.items():
            out[str(h)][name] = errors(truth, values, scale, seasonal)
        out[str(h)]["points"] = int(truth.shape[0] * truth.shape[1])
    i, origin = last  # the last window scored at the longest horizon: what --plot draws
    times = seq.times[i] if seq.times else None
    after = slice(origin + 1, origin + 1 + horizon)
    plot = picture(seq, i, seq.values[i][: origin + 1], None if times is None else times[: origin + 1],
                   None if times is None else times[after], horizon, f"the last {horizon}-step window scored",
                   forecast_values=predicted[-1], actual_values=truth[-1], persistence_values=base["persistence"][-1])
    return {"task": "forecast", "horizons": out, "targets": stored["target_names"], "points": out["1"]["points"],
            "season": season, "plot": plot}


def _forecasts(model, seq, norm: Normaliser, starts: list[int], horizon: int, season: int | None, device):
    """Truth, model and baseline forecasts (N, H, O) in original units, from every origin of every sequence,
    and (sequence, origin) of the last one."""
    feed = feedback(seq.features, seq.targets)
    truths, predictions, bases, last = [], [], {}, None
    for i, values in enumerate(seq.values):  # one iteration per series
        origins = origins_for(len(values), horizon, season, max(0, starts[i] - 1))
        if len(origins) == 0:
            continue
        x = torch.from_numpy(seq.frames(norm, i)).to(device)  # (L, F)
        lead = np.arange(1, horizon + 1)
        if horizon == 1:  # one pass gives every one-step forecast
            out, _ = model.recur(x.unsqueeze(1), model.init_state(1, device))
            predicted = next_step(model.decode(out[:, 0], x), model.config)[origins].unsqueeze(1)
        else:
            state = states_at(model, x, origins, device)
            known = x[origins[:, None] + lead[None, :-1]]  # (N, H-1, F): the real inputs after the origin
            predicted = rollout(model, state, x[origins], known, feed, horizon)
        predictions.append(norm.invert(predicted.detach().cpu().double().numpy(), seq.targets))
        target_values = values[:, seq.targets]
        truths.append(target_values[origins[:, None] + lead[None, :]])
        for name, forecast_values in baselines(target_values, origins, horizon, season).items():
            bases.setdefault(name, []).append(forecast_values)
        last = (i, int(origins[-1]))
    if not truths:
        return np.zeros((0, horizon, len(seq.targets))), None, {}, None
    return (np.concatenate(truths), np.concatenate(predictions),
            {name: np.concatenate(parts) for name, parts in bases.items()}, last)


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
def generate_forecast(file, device, context=None, horizon: int | None = None) -> dict:
    """H future steps after the ``context`` sequences (or after the training data), in original units.

    Inputs that are not targets are unknown in the future: they are taken from
    one season earlier (or held at their last value), and a note says so.
    """
    from types import SimpleNamespace

    stored = file.data
    season = stored.get("season")
    horizon = horizon or season or DEFAULT_HORIZON
    if horizon < 1:
        raise BpttError(f"--horizon must be at least 1, got {horizon}")
    norm = Normaliser.from_dict(stored["norm"])
    model = file.model.to(device).eval()
    features, targets = stored["features"], stored["targets"]
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
    notes = []
    others = [f for f in features if f not in targets]
    if others and horizon > 1:
        how = f"their values one season ({season} steps) earlier" if season else "their last values"
        notes.append(f"inputs {', '.join(stored['columns'][f] for f in others)} are not forecast: the future uses {how}")
    first = np.concatenate([norm.apply(h[-1:])[:, features] for h in histories])
    known = np.concatenate([norm.apply(seasonal_fill(h, horizon, season)[: horizon - 1])[None, :, features]
                            for h in histories])  # (G, H-1, F) assumed future inputs
    predicted = rollout(model, state, torch.from_numpy(first).to(device), torch.from_numpy(known).to(device),
                        feedback(features, targets), horizon)  # (G, H, O)
    values = norm.invert(predicted.cpu().double().numpy(), targets)
    times, past = None, None
    if last_time and freq:
        step = pd.tseries.frequencies.to_offset(freq)
        times = [pd.date_range(pd.Timestamp(t), periods=horizon + 1, freq=step)[1:] for t in last_time]
        past = (context.times[-1] if context is not None
                else pd.date_range(end=pd.Timestamp(last_time[-1]), periods=len(histories[-1]), freq=step))
    shown = SimpleNamespace(targets=targets, columns=stored["columns"], names=names,
                            group_column=stored.get("group_column"))
    plot = picture(shown, len(names) - 1, histories[-1], past, None if times is None else times[-1], horizon,
                   f"{horizon}-step forecast", forecast_values=values[-1])
    return {"kind": stored["kind"], "names": names, "values": values, "times": times, "notes": notes,
            "targets": stored["target_names"], "time_column": stored.get("time_column"),
            "group_column": stored.get("group_column"), "horizon": horizon, "plot": plot}
