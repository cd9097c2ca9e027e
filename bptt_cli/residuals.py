"""Intervals for point forecasts (mse, mae, huber), from the model's own errors on the validation tail.

At the end of training a series model is rolled out from up to ``MAX_ORIGINS`` rolling origins of its
chronological validation tail, exactly as ``evaluate`` does, and the quantiles of its errors at each lead
(forecast minus actual, in original units) are kept in the model file as a plain tensor (H, L, O). A forecast
then gets the band point + quantile at each lead. Leads beyond those the tail could measure take the last
measured lead's quantiles widened by sqrt(lead / last): errors of a rolled-out forecast grow, and a band too
narrow misleads more than one too wide. Models trained with --loss gaussian or quantile keep their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bptt_cli.losses import paired_intervals

LEVELS = (0.1, 0.9)  # an 80 % interval, as the gaussian and quantile heads give by default
MAX_ORIGINS = 200  # rolling origins measured: one fused recurrent call per gap, one rollout for all of them
LEAST_ORIGINS = 20  # fewer origins than this measure no quantile worth keeping


@dataclass(frozen=True)
class ResidualBands:
    """A point model's error quantiles at each lead (H, L, O), in original units."""

    levels: tuple[float, ...]
    quantiles: np.ndarray  # (H, L, O)

    @classmethod
    def stored(cls, data: dict) -> "ResidualBands | None":
        """From a model file's data; None for files without them (older files, or no validation tail)."""
        raw = data.get("residual_quantiles")
        if not raw:
            return None
        return cls(tuple(raw["levels"]), raw["errors"].double().numpy())

    @property
    def intervals(self) -> list[tuple[int, int, float]]:
        return paired_intervals(self.levels)

    def offsets(self, horizon: int) -> np.ndarray:
        """(horizon, L, O): the measured leads, then the last one widened by sqrt(lead / last)."""
        measured = len(self.quantiles)
        if horizon <= measured:
            return self.quantiles[:horizon]
        widen = np.sqrt(np.arange(measured + 1, horizon + 1) / measured)[:, None, None]
        return np.concatenate([self.quantiles, self.quantiles[-1:] * widen])

    def around(self, point: np.ndarray) -> np.ndarray:
        """The band (N, H, L, O) around point forecasts (N, H, O): levels below the middle never above the
        point, levels above never below it, so p10 <= point <= p90."""
        offsets = self.offsets(point.shape[1])[None]  # (1, H, L, O)
        below = np.asarray(self.levels)[None, None, :, None] < 0.5
        offsets = np.where(below, np.minimum(offsets, 0), np.maximum(offsets, 0))
        return point[:, :, None, :] + offsets


def calibrate(forecasts, seq, starts: list[int], horizon: int, season: int | None) -> dict | None:
    """The error quantiles at each lead (as a model file keeps them) of ``forecasts(plan, horizon)`` over the
    validation tail (from ``starts``), or None when the tail holds too few origins."""
    from bptt_cli.forecast import OriginPlan, origins_for

    fitting = []
    for i, values in enumerate(seq.values):
        every = origins_for(len(values), horizon, season, max(0, starts[i] - 1), OriginPlan(every=1))
        fitting.append(len(every))
    if sum(fitting) < LEAST_ORIGINS:
        return None
    scored = forecasts(OriginPlan(every=max(1, -(-sum(fitting) // MAX_ORIGINS))), horizon)
    errors = scored.truth - scored.point  # (N, H, O): what the band adds to the point
    quantiles = np.quantile(errors, LEVELS, axis=0).transpose(1, 0, 2)  # (H, L, O)
    return {"levels": list(LEVELS), "errors": torch.from_numpy(np.ascontiguousarray(quantiles)).float(),
            "origins": int(errors.shape[0])}


def check(raw, targets: int) -> str | None:
    """Why a model file's residual quantiles do not fit its targets, or None when they do (or are absent)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("errors"), torch.Tensor):
        return "data residual_quantiles is not a mapping with an errors tensor"
    levels, errors = raw.get("levels"), raw["errors"]
    if (not isinstance(levels, list) or not levels or not all(type(q) is float and 0 < q < 1 for q in levels)
            or levels != sorted(set(levels))):
        return "data residual_quantiles levels are not ascending levels in (0, 1)"
    if not errors.is_floating_point() or errors.dim() != 3 or tuple(errors.shape[1:]) != (len(levels), targets) \
            or errors.shape[0] < 1:
        return f"data residual_quantiles errors are not (leads, {len(levels)} levels, {targets} targets)"
    if not bool(torch.isfinite(errors).all()):
        return "data residual_quantiles errors hold NaN or infinite values"
    return None
