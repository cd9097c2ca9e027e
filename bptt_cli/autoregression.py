"""The linear autoregression a series forecast starts from (``--anchor linear``), fitted once on the training rows.

An anchored model predicts the change from the last value, so untrained it is persistence. On a smooth series
with a daily or weekly cycle, a linear map from the last week of values to each lead's change is already far
better than persistence, and the recurrent state alone is slow to learn the whole shape of the season. So each
lead k starts from ``last + sum_l W[k, l] * (value l steps back - last)``, W the ridge least squares solution on
the (normalised) training rows, per target; the model's targets are the values minus that offset, and every
forecast adds it back. An untrained model is the linear forecast, and training learns what it misses. The offset
reads only rows up to the origin (in a rollout, the model's own forecasts after it); rows before a sequence's
start count as the last value (no offset from them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

FIT_ORIGINS = 20_000  # origins the weights are fitted on, evenly spread: enough for a few thousand weights
# ridge penalties, relative to the mean square of a lag's difference, tried on the held-out rows: a smooth
# series wants little (JFK temperatures), a noisy one more; DEFAULT_RIDGE without held-out rows
RIDGES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_RIDGE = 1e-3
WEEK_OF_SEASONS = 7  # lags: a week of a daily season (the weekly cycle of demand), or seven seasons
MAX_LAGS = 1024  # so 5-minute data (288 a day) reads 3.5 days, not a week of 2,016 values
PLAIN_LAGS = 48  # without a season
CHUNK = 4096  # origins whose lag windows are built at once: bounded memory on long series


def default_lags(season: int | None, longest: int) -> int:
    """The values a linear start reads: a week of seasons (or PLAIN_LAGS), at most MAX_LAGS and a quarter of the
    longest training sequence, so that most of its origins have a whole window behind them."""
    return min(WEEK_OF_SEASONS * season if season else PLAIN_LAGS, MAX_LAGS, longest // 4)


def windows(values, origins: np.ndarray, lags: int):
    """The last ``lags`` values (N, lags, O) up to each origin of ``values`` (L, O), ascending, an array or a
    tensor as given; rows before the start, and NaN, read as the origin's own value (no offset from them)."""
    origins = np.asarray(origins)
    rows = origins[:, None] - np.arange(lags - 1, -1, -1)[None, :]  # (N, lags)
    if torch.is_tensor(values):
        rows_t, origins_t = torch.from_numpy(rows).to(values.device), torch.from_numpy(origins).to(values.device)
        picked, own = values[rows_t.clamp(min=0)], values[origins_t].unsqueeze(1)
        return torch.where((rows_t >= 0)[..., None] & ~picked.isnan(), picked, own)
    picked, own = values[np.maximum(rows, 0)], values[origins][:, None]
    return np.where((rows >= 0)[..., None] & ~np.isnan(picked), picked, own)


@dataclass(frozen=True, eq=False)
class LinearStart:
    """A fitted linear start: its offsets from a trail of the last values, and what a model config keeps."""

    weights: np.ndarray  # (leads, O, lags): lead k of target o from the lag differences, oldest lag first

    def __eq__(self, other) -> bool:
        return isinstance(other, LinearStart) and np.array_equal(other.weights, self.weights)

    @property
    def leads(self) -> int:
        return self.weights.shape[0]

    @property
    def lags(self) -> int:
        return self.weights.shape[2]

    @classmethod
    def fit(cls, histories: list[np.ndarray], leads: int, lags: int,
            held: list[tuple[np.ndarray, int]] = ()) -> LinearStart | None:
        """Ridge weights per target on the training ``histories`` (each (L, O), normalised), the penalty of
        RIDGES with the least squared error on the ``held`` out rows (a history and the first row scored in it;
        DEFAULT_RIDGE without any); None when no training history has a whole window and every lead after it."""
        if lags < 2 or not any(len(h) > lags + leads for h in histories):
            return None
        gram, cross = _moments([(h, 0) for h in histories], leads, lags, FIT_ORIGINS)
        held_gram, held_cross = _moments(list(held), leads, lags, FIT_ORIGINS)
        best, weights = None, None
        for ridge in RIDGES if held_gram.any() else (DEFAULT_RIDGE,):
            found = _solve(gram, cross, ridge)  # (O, lags, leads)
            error = (np.einsum("olk,olm,omk->o", found, held_gram, found)
                     - 2 * np.einsum("olk,olk->o", found, held_cross))  # the held-out error, less a constant
            if best is None:
                best, weights = error, found
            else:
                better = error < best
                best, weights = np.where(better, error, best), np.where(better[:, None, None], found, weights)
        return cls(weights.transpose(2, 0, 1))

    @classmethod
    def of(cls, config) -> LinearStart | None:
        """The linear start a model config keeps (``linear``, flat, and ``linear_lags``), or None."""
        if not config.linear:
            return None
        return cls(np.asarray(config.linear, dtype=np.float64).reshape(config.leads, -1, config.linear_lags))

    def stored(self) -> tuple[list[float], int]:
        """What a model config keeps: the weights flat (lead, target, lag), and the lags."""
        return [float(v) for v in self.weights.reshape(-1)], self.lags

    def trail(self, values, origins: np.ndarray):
        """The last ``lags`` values (N, lags, O) up to each origin of ``values`` (L, O): what ``offsets`` reads."""
        return windows(values, origins, self.lags)

    def offsets(self, trail):
        """The start's offsets from the last value (N, leads * O), lead-major, from each origin's ``trail``."""
        moved = trail - trail[:, -1:]
        if torch.is_tensor(trail):
            weights = torch.as_tensor(self.weights, dtype=trail.dtype, device=trail.device)
            return torch.einsum("nlo,kol->nko", moved, weights).flatten(1)
        found = np.stack([moved[:, :, o] @ self.weights[:, o].T for o in range(moved.shape[2])], axis=-1)
        return found.reshape(len(trail), -1)  # (N, leads, O) lead-major

    def offsets_along(self, values: np.ndarray) -> np.ndarray:
        """The offsets (L - 1, leads * O) from every row but the last of ``values`` (L, O), in chunks."""
        origins = np.arange(len(values) - 1)
        return np.concatenate([self.offsets(self.trail(values, origins[s:s + CHUNK]))
                               for s in range(0, len(origins), CHUNK)] or [np.zeros((0, self.leads * values.shape[1]))])

    def advance(self, trail: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The trail after the forecast ``values`` (N, take, O) are read: the last ``lags`` rows of both."""
        return torch.cat([trail, values.to(trail.dtype)], dim=1)[:, -self.lags:]


def _moments(histories: list[tuple[np.ndarray, int]], leads: int, lags: int,
             budget: int) -> tuple[np.ndarray, np.ndarray]:
    """The least squares moments (O, lags, lags) and (O, lags, leads) of each lead's change on the lag
    differences, over at most ``budget`` origins evenly spread from each history's first scored row on, each with
    a whole window behind it and every lead after it; zeros without any."""
    spans = [(h, max(lags - 1, first - 1), len(h) - leads) for h, first in histories]
    spans = [(h, a, b) for h, a, b in spans if b > a]
    width = histories[0][0].shape[1] if histories else 1
    gram, cross = np.zeros((width, lags, lags)), np.zeros((width, lags, leads))
    total = sum(b - a for _, a, b in spans)
    ahead = np.arange(1, leads + 1)
    for h, a, b in spans:
        origins = np.arange(a, b)
        origins = origins[np.linspace(0, len(origins) - 1, min(len(origins), max(1, round(budget * len(origins)
                                                                                     / total)))).astype(int)]
        for start in range(0, len(origins), CHUNK):
            at = origins[start:start + CHUNK]
            x = windows(h, at, lags)
            x = x - x[:, -1:]  # (N, lags, O): each lag's difference from the last value
            y = np.nan_to_num(h[at[:, None] + ahead[None, :]] - h[at][:, None])  # (N, leads, O)
            for o in range(width):  # matrix products, not einsum: BLAS on lags of a thousand
                gram[o] += x[:, :, o].T @ x[:, :, o]
                cross[o] += x[:, :, o].T @ y[:, :, o]
    return gram, cross


def _solve(gram: np.ndarray, cross: np.ndarray, ridge: float) -> np.ndarray:
    """The ridge solution (O, lags, leads) of each target's moments, the penalty ``ridge`` times the mean
    diagonal of its Gram matrix."""
    lags = gram.shape[1]
    found = np.empty_like(cross)
    for o in range(len(gram)):
        penalty = ridge * max(np.trace(gram[o]) / lags, 1e-12)
        found[o] = np.linalg.solve(gram[o] + penalty * np.eye(lags), cross[o])
    return found
