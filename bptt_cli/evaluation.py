"""Scoring a token model on a text: one stream, state carried from the first token to the last.

Evaluation never truncates: whatever window the model was trained with, each
token is predicted from everything before it, so the figures are comparable
between runs with different windows.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from bptt_cli.device import autocast
from bptt_cli.errors import BpttError
from bptt_cli.models import RecurrentModel

CHUNK = 1024  # steps per forward call: bounds memory, not the context


@torch.no_grad()
def token_loss(
    model: RecurrentModel, ids: np.ndarray, device: torch.device, precision: str = "fp32"
) -> tuple[float, int]:
    """Total cross-entropy (nats) of predicting ids[1:] from the ids before them, and the count."""
    if len(ids) < 2:
        raise BpttError(f"{len(ids)} known token(s) is too little to evaluate; give at least 2")
    was_training = model.training
    model.eval()
    state = model.init_state(1, device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(ids) - 1, CHUNK):
        # one chunk at a time becomes int64 on the device: a mapped 1 GB text is never copied whole
        chunk = torch.from_numpy(np.asarray(ids[start : start + CHUNK + 1], dtype=np.int64)).to(device)
        x, y = chunk[:-1].unsqueeze(1), chunk[1:].unsqueeze(1)  # (T, 1) each
        with autocast(device, precision):
            logits, state = model(x, state)  # (T, 1, V)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").double()
    model.train(was_training)
    return float(total), len(ids) - 1  # one host sync per evaluation


def summarise(total_nats: float, count: int) -> dict[str, float]:
    """Loss per token (nats), perplexity and bits per token."""
    loss = total_nats / count
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "bits_per_token": loss / math.log(2),
    }

