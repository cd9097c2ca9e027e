"""Scoring a token model on a text, with the state carried from token to token.

``bptt evaluate --exact`` never truncates: one stream runs from the first token
to the last, so each token is predicted from everything before it. That stream
is slow (one token per step: about 4 s per 100k tokens for the default LSTM),
so validation during training and plain ``bptt evaluate`` run several streams
side by side instead: each scores its own part of the text after reading the
``context`` tokens before that part unscored, so only what lies further back
than that is lost (well under 1e-4 bits per token here,
benchmarks/evaluate_speed.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bptt_cli.device import autocast, resolve_precision
from bptt_cli.errors import BpttError
from bptt_cli.losses import IGNORE_LABEL, class_sum
from bptt_cli.models import RecurrentModel
from bptt_cli.scoring import CHUNK
VALIDATION_STREAMS = 16  # side by side: a 99k-token tail in 1.7 s instead of 3.1 s (benchmarks/validation_streams.py)
VALIDATION_CONTEXT = 512  # tokens each validation stream reads before it scores
EVALUATE_STREAMS = 128  # bptt evaluate: an (8, 128) forward call runs near the fp32 matmul rate
EVALUATE_CONTEXT = 256  # tokens each evaluate stream reads first: 1e-7 bits from exact (benchmarks/evaluate_speed.py)


def stream_count(predictions: int, streams: int, context: int) -> int:
    """How many streams score ``predictions`` tokens: no part is shorter than twice its ``context``."""
    if context > 0:
        return min(streams, max(1, predictions // (2 * context)))
    return streams


@torch.no_grad()
def token_loss(
    model: RecurrentModel,
    ids: np.ndarray,
    device: torch.device,
    precision: str = "fp32",
    streams: int = 1,
    context: int = 0,
    share: tuple[int, int] = (0, 1),
) -> tuple[float, int]:
    """Total cross-entropy (nats) of predicting ids[1:] from the ids before them, and the count.

    With ``streams`` > 1 the predictions are cut into that many contiguous parts
    (fewer if a part would be shorter than twice ``context``), each read in
    after ``context`` tokens of the text before it. ``share`` (k, n) scores only
    the k-th of n contiguous shares of those streams (a process's, under
    torch.distributed), and the count is theirs. ``precision`` is the
    recurrence's; the decoder and the loss run in the weights' precision (fp32),
    which keeps bf16's error at a third of what it is with the decoder in bf16 too.
    """
    if len(ids) < 2:
        raise BpttError(f"{len(ids)} known token(s) is too little to evaluate; give at least 2")
    predictions = len(ids) - 1
    streams = stream_count(predictions, streams, context)
    length = -(-predictions // streams)  # predictions per stream, the last may have fewer
    k, n = share
    mine = np.arange(streams * k // n, streams * (k + 1) // n, dtype=np.int64)
    first = np.minimum(mine * length, predictions)  # each stream's first scored prediction
    ends = np.minimum(first + length, predictions)
    lead = np.minimum(first, context)  # tokens read unscored before it
    begins = first - lead
    steps = int((ends - begins).max(initial=0))
    was_training = model.training
    model.eval()
    state = model.init_state(len(first), device)
    dtype = model.decoder.weight.dtype  # the decoder and the loss run in the weights' own precision
    total = torch.zeros((), dtype=torch.float64, device=device)
    chunk = max(1, CHUNK // max(1, len(first)))  # about CHUNK tokens per forward call, whatever the streams
    for start in range(0, steps, chunk):
        # one chunk at a time becomes int64 on the device: a mapped 1 GB text is never copied whole
        offsets = np.arange(start, min(start + chunk, steps), dtype=np.int64)[:, None]  # (T, 1)
        at = begins[None, :] + offsets  # (T, S) the position of each input token
        scored = (offsets >= lead[None, :]) & (at < ends[None, :])
        at = np.minimum(at, predictions - 1)  # past a stream's end: any token, not scored
        x = torch.from_numpy(np.asarray(ids[at], dtype=np.int64)).to(device)
        wanted = np.where(scored, np.asarray(ids[at + 1], dtype=np.int64), IGNORE_LABEL)  # (T, S): unscored ignored
        y = torch.from_numpy(wanted).to(device)
        with autocast(device, precision):
            out, state = model.recur(x, state)  # (T, S, hidden)
        state = tuple(part.to(dtype) for part in state)  # no-ops unless the recurrence ran in bf16
        logits = model.decode(out.to(dtype), x)  # (T, S, V) in the weights' precision whatever the recurrence ran in
        total += class_sum(logits, y)[0].double()
    model.train(was_training)
    return float(total), int((ends - first).sum())  # one host sync per evaluation


def scoring_precision(device: torch.device, precision: str, cell: str, exact: bool) -> str:
    """The recurrence's precision for ``bptt evaluate``: auto keeps the exact figure in fp32, and is
    otherwise what ``resolve_precision`` says (bf16 for the LSTM on a bf16 CPU); bf16 is refused without it."""
    if exact and precision == "auto":
        return "fp32"
    return resolve_precision(device, precision, cell)


def summarise(total_nats: float, count: int) -> dict[str, float]:
    """Loss per token (nats), perplexity and bits per token."""
    loss = total_nats / count
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "bits_per_token": loss / math.log(2),
    }

