"""Scoring passes over packed streams: the state runs through whole sequences, never truncated.

Validation during training and ``bptt evaluate`` of series, feature and corpus
models share these passes; the sums they return add up over chunks and ranks.
"""

from __future__ import annotations

import numpy as np
import torch

from bptt_cli import distributed
from bptt_cli.losses import IGNORE_LABEL, OutputHead, as_head, class_sum
from bptt_cli.models import RecurrentModel, State
from bptt_cli.series import Streams

CHUNK = 1024  # steps per forward call when scoring: bounds memory, not the context


@torch.no_grad()
def stream_pass(model: RecurrentModel, streams: Streams, device: torch.device) -> tuple[torch.Tensor, State]:
    """Run whole streams (never truncated), resetting where sequences begin: outputs (T, B, O), final state."""
    was_training = model.training
    model.eval()
    x = streams.inputs.to(device)
    resets = torch.as_tensor(streams.resets, device=device)
    state = model.init_state(x.shape[1], device)
    outputs = []
    chunk = x.shape[0] if model.config.bidirectional else CHUNK  # reading backwards needs each sequence whole
    for start in range(0, x.shape[0], chunk):
        end = min(start + chunk, x.shape[0])
        cuts = np.flatnonzero(streams.resets[start:end].any(axis=1)).tolist()
        out, state = model.recur(x[start:end], state, resets[start:end], cuts)
        outputs.append(model.decode(out, x[start:end]).float())
    model.train(was_training)
    return torch.cat(outputs).cpu(), state


def scored_sums(seq, outputs: torch.Tensor, streams: Streams, head: OutputHead | str = "mse",
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """What validation figures are made of, as sums that add up over ranks: (loss, scored count, hits).

    ``seq`` is the data the streams came from: its ``classifies`` says which loss scores them; ``weights``
    weigh a forecast's outputs as training's loss does.
    """
    if seq.classifies:
        total, count = class_sum(outputs, streams.targets)
        hits = ((outputs.argmax(-1) == streams.targets) & (streams.targets != IGNORE_LABEL)).sum()
    else:
        total, count = as_head(head).sums(outputs, streams.targets, weights)
        hits = torch.zeros(())
    return torch.stack([total.double(), count.double(), hits.double()])


def scored_figures(seq, sums: torch.Tensor) -> dict:
    """The validation figures from ``scored_sums``: the loss, and the accuracy for a classifier."""
    total, count, hits = sums.tolist()
    figures = {"loss": total / max(count, 1.0)}
    if seq.classifies:
        figures["accuracy"] = hits / max(count, 1.0)
    return figures


def columns_of_this_rank(streams: Streams) -> Streams:
    """This rank's contiguous share of the B streams (all of them in a single process)."""
    begin, end = distributed.shard_range(streams.inputs.shape[1])
    return Streams(streams.inputs[:, begin:end], streams.targets[:, begin:end], streams.resets[:, begin:end],
                   [(stream - begin, *rest) for stream, *rest in streams.where if begin <= stream < end])


def ranked_sums(model: RecurrentModel, streams: Streams, device: torch.device, seq,
                head: OutputHead | str = "mse", weights: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
    """One validation pass shared out over the ranks: the all-reduced sums, and this rank's final state."""
    mine = columns_of_this_rank(streams)
    outputs, state = stream_pass(model, mine, device)
    return distributed.all_sum(scored_sums(seq, outputs, mine, head, weights)), state
