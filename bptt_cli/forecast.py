"""Forecasting from the carried state, scored against the baselines a model has to beat.

A forecast from origin o feeds row o to the state that has read rows 0..o-1,
then feeds the model's own predictions for the target columns (and the real,
or assumed, values of the other input columns) for H steps. The persistence
(last value) and seasonal-naive (same step one season ago) forecasts are
scored on exactly the same points, so the table shows whether the model earns
its keep. MASE divides by the one-step naive error on the training data.
"""

from __future__ import annotations

import numpy as np
import torch

from bptt_cli.models import RecurrentModel, State


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
    """
    x, predictions = first, []
    for k in range(horizon):  # one recurrent step per lead time, over every origin at once
        out, state = model.recur(x.unsqueeze(0), state)  # (1, N, hidden)
        step = model.decode(out[0])  # (N, O)
        predictions.append(step)
        if k + 1 < horizon:
            x = known[:, k].clone()
            for target, feature in feed:
                x[:, feature] = step[:, target]
    return torch.stack(predictions, dim=1)


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


def errors(truth: np.ndarray, forecast: np.ndarray, scale: np.ndarray) -> dict:
    """MAE, RMSE, sMAPE (percent) and MASE over points (..., O), averaged over targets, and per target."""
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
    return {name: float(np.nanmean(values)) for name, values in per.items()} | {
        "per_target": [{name: float(values[i]) for name, values in per.items()} for i in range(error.shape[-1])]
    }


def naive_scale(series: list[np.ndarray]) -> np.ndarray:
    """The in-sample MAE of the one-step naive forecast, per column: the MASE denominator."""
    diffs = np.concatenate([np.abs(np.diff(s, axis=0)) for s in series if len(s) > 1])
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
