"""Every training and scoring loss, in one place.

Each loss comes in two forms: a mean for training (a device-side count, so no
host sync per update) and a (sum, count) pair for scoring passes, whose sums
add up over chunks, streams and processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from bptt_cli.choices import LOSSES as REGRESSION_LOSSES
from bptt_cli.errors import BpttError

IGNORE_LABEL = -100  # class targets that carry no loss (padding, unlabelled frames, document boundaries)
PROBABILISTIC = ("gaussian", "quantile")  # losses whose models forecast a distribution, not a point
DEFAULT_QUANTILES = (0.1, 0.5, 0.9)
GAUSSIAN_LEVELS = (0.1, 0.5, 0.9)  # a gaussian head's bands: an 80 % interval around the mean
SCALE_FLOOR = 1e-3  # the smallest gaussian standard deviation, in normalised units: keeps the NLL finite
LOG_2PI = math.log(2 * math.pi)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """bf16 outputs are scored in float32; float64 ones (gradcheck) stay float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def check_regression_loss(name: str) -> None:
    if name not in REGRESSION_LOSSES:
        raise BpttError(f"unknown --loss {name!r}; use one of {', '.join(REGRESSION_LOSSES)}")


def parse_quantiles(text: str | None, loss: str) -> tuple[float, ...]:
    """``--quantiles 0.1,0.5,0.9`` as sorted levels, each in (0, 1) and given once; only with --loss quantile."""
    if text is None or text == "":
        return DEFAULT_QUANTILES if loss == "quantile" else ()
    if loss != "quantile":
        raise BpttError(f"--quantiles {text} needs --loss quantile (the loss is {loss}); add --loss quantile or drop --quantiles")
    try:
        levels = [float(part) for part in str(text).split(",")]
    except ValueError:
        raise BpttError(f"--quantiles {text}: not a comma-separated list of numbers; e.g. --quantiles 0.1,0.5,0.9") from None
    if not all(0 < q < 1 for q in levels):
        raise BpttError(f"--quantiles {text}: every level must lie strictly between 0 and 1; e.g. --quantiles 0.1,0.5,0.9")
    if len(set(levels)) != len(levels):
        raise BpttError(f"--quantiles {text}: a level is given twice; give each once, e.g. --quantiles 0.1,0.5,0.9")
    return tuple(sorted(levels))


def level_name(q: float) -> str:
    """A quantile level as a column suffix: 0.1 -> p10, 0.025 -> p2.5."""
    return f"p{round(100 * q, 6):g}"


@dataclass(frozen=True)
class OutputHead:
    """How a numeric model's outputs read: one point per target (mse, huber), a mean and a scale per target
    (gaussian), or one value per target and quantile level (quantile).

    Outputs are laid out in blocks of O (the target count): block 0 the means or the lowest quantile.
    """

    loss: str = "mse"
    quantiles: tuple[float, ...] = ()

    @classmethod
    def of(cls, loss: str, quantiles: str | list | tuple | None = None) -> "OutputHead":
        """From the options of a run: ``quantiles`` as given on the command line or as stored."""
        check_regression_loss(loss)
        if isinstance(quantiles, (list, tuple)):
            quantiles = ",".join(str(q) for q in quantiles)
        return cls(loss, parse_quantiles(quantiles, loss))

    @classmethod
    def stored(cls, data: dict, config: dict | None) -> "OutputHead":
        """A model file's head; files from before probabilistic losses keep their loss in the run config only."""
        loss = data.get("loss") or (config or {}).get("loss") or "mse"
        if loss in PROBABILISTIC:
            return cls(loss, tuple(data.get("quantiles") or ()))
        return cls(loss if loss in REGRESSION_LOSSES else "mse")  # a loss of older versions is scored as mse

    def describe(self) -> dict:
        return {"loss": self.loss, "quantiles": list(self.quantiles)}

    @property
    def probabilistic(self) -> bool:
        return self.loss in PROBABILISTIC

    @property
    def per_target(self) -> int:
        return {"gaussian": 2, "quantile": len(self.quantiles)}.get(self.loss, 1)

    @property
    def levels(self) -> tuple[float, ...]:
        """The quantile levels it forecasts: the 10 % and 90 % of the predicted normal, with the median."""
        return GAUSSIAN_LEVELS if self.loss == "gaussian" else self.quantiles

    @property
    def intervals(self) -> list[tuple[int, int, float]]:
        """(low level index, high level index, nominal coverage): the outermost levels paired inwards."""
        return paired_intervals(self.levels)

    def blocks(self, outputs: torch.Tensor) -> torch.Tensor:
        """Outputs (..., K*O) as (..., K, O); quantile blocks sorted, so p10 <= p50 <= p90 always."""
        split = outputs.unflatten(-1, (self.per_target, -1))
        return split.sort(dim=-2).values if self.loss == "quantile" else split

    def point(self, outputs: torch.Tensor) -> torch.Tensor:
        """The point forecast (..., O): the output, the mean, or the median (the middle quantile)."""
        if not self.probabilistic:
            return outputs
        split = self.blocks(outputs)
        if self.loss == "gaussian":
            return split[..., 0, :]
        middle = len(self.quantiles) // 2
        if len(self.quantiles) % 2:
            return split[..., middle, :]
        return split[..., middle - 1 : middle + 1, :].mean(dim=-2)

    def scale(self, outputs: torch.Tensor) -> torch.Tensor:
        """A gaussian head's standard deviation (..., O), floored so the likelihood stays finite."""
        return F.softplus(self.blocks(outputs)[..., 1, :]) + SCALE_FLOOR

    def bands(self, outputs: torch.Tensor) -> torch.Tensor:
        """The forecast at every level (..., L, O), ascending along L."""
        if self.loss == "gaussian":
            split = self.blocks(outputs)
            z = torch.special.ndtri(torch.tensor(GAUSSIAN_LEVELS, dtype=outputs.dtype, device=outputs.device))
            return split[..., :1, :] + z[:, None] * self.scale(outputs).unsqueeze(-2)
        return self.blocks(outputs)

    def sums(self, predicted: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The summed loss over the targets that are not NaN, and their count; a point loss's terms times
        ``weights`` (one per output column, see ``lead_weights``) when given."""
        scored = ~torch.isnan(targets)
        y = torch.nan_to_num(targets)
        predicted = at_least_float32(predicted)
        if self.loss == "gaussian":
            mean, sigma = self.blocks(predicted)[..., 0, :], self.scale(predicted)
            per = 0.5 * LOG_2PI + sigma.log() + 0.5 * ((y - mean) / sigma).square()
        elif self.loss == "quantile":
            levels = torch.tensor(self.quantiles, dtype=predicted.dtype, device=predicted.device)[:, None]
            per = pinball(self.blocks(predicted), y.unsqueeze(-2), levels).mean(dim=-2)
        else:
            error = predicted - y
            per = error.square() if self.loss == "mse" else F.huber_loss(error, torch.zeros_like(error), reduction="none")
            if weights is not None:
                per = per * weights.to(per.device, per.dtype)
        return torch.where(scored, per, 0.0).sum(), scored.sum()


LEAD_WEIGHT_POWER = 2.5  # measured on the demand, JFK and a synthetic seasonal series (README, "Forecast quality")


def lead_weights(history: list[np.ndarray], leads: int, season: int | None = None) -> torch.Tensor | None:
    """Weights (leads * C,), lead-major as a direct head's outputs, for the loss of a model that decodes
    ``leads`` steps at once, scaled to mean 1; None for one lead or too short a history.

    Each lead's reference is the better naive forecast at that lead: the mean squared change of the (normalised)
    training targets over the lead (persistence's error) or, with a season, over the whole seasons that cover it
    (seasonal naive's). The weight is 1 / reference ** LEAD_WEIGHT_POWER: above the first power it leans towards
    the near leads, whose errors are the smallest, so the next step is forecast about as well as by a one-step
    model; the seasonal reference keeps a series that repeats its season from putting all the weight on it."""
    usable = [h for h in history if len(h) > leads]
    if leads < 2 or not usable:
        return None

    def change(k: int) -> np.ndarray:
        return np.nanmean(np.concatenate([np.square(h[k:] - h[:-k]) for h in history if len(h) > k]), axis=0)

    reference = np.stack([change(k) for k in range(1, leads + 1)])  # (leads, C)
    if season and any(len(h) > season * -(-leads // season) for h in history):
        reference = np.minimum(reference, np.stack([change(season * -(-k // season)) for k in range(1, leads + 1)]))
    if not np.isfinite(reference).all() or (reference <= 0).any():  # a target that never changes
        return None
    weights = 1.0 / reference.astype(np.float64) ** LEAD_WEIGHT_POWER
    return torch.from_numpy((weights / weights.mean()).reshape(-1)).float()


def paired_intervals(levels: tuple[float, ...]) -> list[tuple[int, int, float]]:
    """(low level index, high level index, nominal coverage) of ascending ``levels``, outermost pair first."""
    return [(i, len(levels) - 1 - i, levels[len(levels) - 1 - i] - levels[i]) for i in range(len(levels) // 2)]


def pinball(forecast, actual, level):
    """The quantile (pinball) loss of ``forecast`` at ``level``, elementwise (tensors or arrays)."""
    error = actual - forecast
    return (error >= 0) * level * error + (error < 0) * (level - 1) * error


def regression_loss(head: OutputHead, weights: torch.Tensor | None = None):
    """The mean loss over the targets that are not NaN (its terms times ``weights``); no NaN when there are none."""
    on_device: dict = {}  # the weights, copied once to each device the loss runs on

    def loss(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if weights is not None and predicted.device not in on_device:
            on_device[predicted.device] = weights.to(predicted.device)
        total, count = head.sums(predicted, targets, on_device.get(predicted.device))
        return total / count.clamp(min=1)  # a device-side count: no host sync

    return loss


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (S, B, V) against the next token ids (S, B): text training's loss."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def class_total(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The summed cross-entropy alone: gradcheck's loss, in the dtype it computes in (float64)."""
    return class_sum(logits, targets)[0]


def as_head(loss: str | OutputHead) -> OutputHead:
    """A head itself, or the head of a loss name (a probabilistic one with its default levels)."""
    return loss if isinstance(loss, OutputHead) else OutputHead.of(loss)


def regression_total(loss: str | OutputHead):
    """The summed regression error alone, for gradcheck (float64 stays float64)."""
    head = as_head(loss)
    return lambda predicted, targets: head.sums(predicted, targets)[0]


def class_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled steps only (windows without one give 0, not NaN)."""
    total, count = class_sum(logits, targets)
    return total / count.clamp(min=1)


def class_sum(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed cross-entropy over the labelled steps, and their count."""
    total = F.cross_entropy(at_least_float32(logits).flatten(0, 1), targets.flatten(), ignore_index=IGNORE_LABEL, reduction="sum")
    return total, (targets != IGNORE_LABEL).sum()
