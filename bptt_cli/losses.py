"""Every training and scoring loss, in one place.

Each loss comes in two forms: a mean for training (a device-side count, so no
host sync per update) and a (sum, count) pair for scoring passes, whose sums
add up over chunks, streams and processes.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from bptt_cli.choices import LOSSES as REGRESSION_LOSSES
from bptt_cli.errors import BpttError

IGNORE_LABEL = -100  # class targets that carry no loss (padding, unlabelled frames, document boundaries)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """bf16 outputs are scored in float32; float64 ones (gradcheck) stay float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def check_regression_loss(name: str) -> None:
    if name not in REGRESSION_LOSSES:
        raise BpttError(f"unknown --loss {name!r}; use one of {', '.join(REGRESSION_LOSSES)}")


def regression_loss(name: str):
    """Mean squared (or Huber) error over the targets that are not NaN; no NaN when there are none."""
    check_regression_loss(name)

    def loss(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total, count = regression_sum(name, predicted, targets)
        return total / count.clamp(min=1)  # a device-side count: no host sync

    return loss


def regression_sum(name: str, predicted: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed error over the targets that are not NaN, and their count."""
    scored = ~torch.isnan(targets)
    error = torch.where(scored, at_least_float32(predicted) - torch.nan_to_num(targets), 0.0)
    per = error.square() if name == "mse" else F.huber_loss(error, torch.zeros_like(error), reduction="none")
    return per.sum(), scored.sum()


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (S, B, V) against the next token ids (S, B): text training's loss."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def class_total(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The summed cross-entropy alone: gradcheck's loss, in the dtype it computes in (float64)."""
    return class_sum(logits, targets)[0]


def regression_total(name: str):
    """The summed regression error alone, for gradcheck (float64 stays float64)."""
    check_regression_loss(name)
    return lambda predicted, targets: regression_sum(name, predicted, targets)[0]


def class_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled steps only (windows without one give 0, not NaN)."""
    total, count = class_sum(logits, targets)
    return total / count.clamp(min=1)


def class_sum(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed cross-entropy over the labelled steps, and their count."""
    total = F.cross_entropy(at_least_float32(logits).flatten(0, 1), targets.flatten(), ignore_index=IGNORE_LABEL, reduction="sum")
    return total, (targets != IGNORE_LABEL).sum()
