"""Sampling text from a token model, one recurrent step per new token.

The prime is run once; after that the state is carried, so each new token
costs one step of the recurrence whatever the length so far.
"""

from __future__ import annotations

import math

from typing import Iterator

import torch

from bptt_cli.errors import BpttError
from bptt_cli.models import RecurrentModel
from bptt_cli.text import Tokenizer


def next_token(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator) -> torch.Tensor:
    """Pick one id from logits (V,): greedy at temperature 0, else sampled after top-k / top-p."""
    if temperature == 0:
        return logits.argmax()
    logits = logits.float() / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1:
        ordered, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(ordered, dim=0).cumsum(0)
        drop = cumulative - torch.softmax(ordered, dim=0) >= top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=0), 1, generator=generator)[0]


def check_sampling(length: int, temperature: float, top_k: int, top_p: float) -> None:
    if length < 0:
        raise BpttError(f"--length must be 0 or more, got {length}")
    if not (temperature == 0 or 1e-6 <= temperature < math.inf):
        raise BpttError(f"--temperature must be 0 (greedy) or a number from 1e-6 up, got {temperature}")
    if top_k < 0:
        raise BpttError(f"--top-k must be 0 (off) or more, got {top_k}")
    if not 0 < top_p <= 1:
        raise BpttError(f"--top-p must be in (0, 1], got {top_p}")


def generate(
    model: RecurrentModel,
    tokenizer: Tokenizer,
    prime: str,
    length: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Iterator[str]:
    """An iterator over the text of ``length`` new tokens that follow ``prime``.

    Everything is checked before the first token, so a bad prime fails before any output.
    """
    check_sampling(length, temperature, top_k, top_p)
    if tokenizer is None:
        raise BpttError("this model was not trained on text; 'generate' for it needs --context (see --help)")
    missing = tokenizer.unknown(prime)
    if missing:
        shown = ", ".join(repr(m) for m in missing[:10])
        raise BpttError(f"--prime has {len(missing)} token(s) not in the model's vocabulary: {shown}; leave them out")
    ids, _ = tokenizer.encode(prime)
    if len(ids) == 0:  # no prime: start after a newline when the vocabulary has one
        ids, _ = tokenizer.encode("\n")
        ids = ids if len(ids) else torch.zeros(1, dtype=torch.long).numpy()
    return _sample(model.to(device).eval(), tokenizer, ids, length, temperature, top_k, top_p, seed, device)


@torch.no_grad()
def _sample(model, tokenizer, ids, length, temperature, top_k, top_p, seed, device) -> Iterator[str]:
    generator = torch.Generator(device=device).manual_seed(seed)
    x = torch.as_tensor(ids, dtype=torch.long, device=device).unsqueeze(1)  # (P, 1)
    logits, state = model(x, model.init_state(1, device))
    decode = tokenizer.decoder()
    for i in range(length):
        token = next_token(logits[-1, 0], temperature, top_k, top_p, generator)
        yield decode(int(token))  # one host sync per token: the text is wanted now
        if i + 1 < length:
            logits, state = model(token.view(1, 1), state)  # one step, state carried
