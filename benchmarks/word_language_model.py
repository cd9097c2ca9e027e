"""A re-implementation of the behaviour of pytorch/examples' word_language_model (its RNN model and main.py loop).

The reference point the issue names: its own model class (dropout on the
embeddings and on the outputs, nn.LSTM/nn.GRU between them), a ``batchify``
into B columns, ``get_batch`` of the next window, ``repackage_hidden`` to
detach the carried state, ``clip_grad_norm_`` and the hand-written SGD update
``p.data.add_(p.grad, alpha=-lr)``, and evaluation in windows of eval batch 10.
Its corpus reads the file line by line into a Python dictionary, one token at a
time; here the tokens are characters (plus ``<eos>`` for each line end) so it
sees the same stream as ``bptt train --tokenizer char``.

Importable by the other benchmarks, and runnable whole for the whole-process comparison:

    python benchmarks/word_language_model.py sample_data/shakespeare.txt --epochs 1
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn


class Corpus:
    """Train / valid split of one file, tokenised in Python, one token at a time, as the example does."""

    def __init__(self, path: str, val_fraction: float = 0.1):
        self.index: dict[str, int] = {}
        ids = []
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                for token in [*line.rstrip("\n"), "<eos>"]:
                    if token not in self.index:
                        self.index[token] = len(self.index)
                    ids.append(self.index[token])
        data = torch.tensor(ids, dtype=torch.int64)
        cut = len(data) - int(len(data) * val_fraction)
        self.train, self.valid = data[:cut], data[cut:]


def batchify(data: torch.Tensor, columns: int) -> torch.Tensor:
    """Trim to a multiple of ``columns`` and stack into (N / columns, columns), column-contiguous."""
    rows = data.size(0) // columns
    return data[: rows * columns].view(columns, rows).t().contiguous()


def get_batch(source: torch.Tensor, i: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = min(window, len(source) - 1 - i)
    return source[i : i + length], source[i + 1 : i + 1 + length].reshape(-1)


def repackage_hidden(h):
    """Detach the carried state from its history, recursing into the LSTM (h, c) tuple."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


class RNNModel(nn.Module):
    """Embedding -> dropout -> nn.LSTM / nn.GRU -> dropout -> linear decoder."""

    def __init__(self, cell: str, tokens: int, embed: int, hidden: int, layers: int, dropout: float = 0.2):
        super().__init__()
        self.cell, self.hidden, self.layers = cell, hidden, layers
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(tokens, embed)
        self.rnn = getattr(nn, cell.upper())(embed, hidden, layers, dropout=dropout)
        self.decoder = nn.Linear(hidden, tokens)
        self.tokens = tokens
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, x, hidden):
        emb = self.drop(self.encoder(x))
        output, hidden = self.rnn(emb, hidden)
        decoded = self.decoder(self.drop(output)).view(-1, self.tokens)
        return torch.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, batch: int):
        weight = next(self.parameters())
        zeros = weight.new_zeros(self.layers, batch, self.hidden)
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros


def train_epoch(model: RNNModel, train_data: torch.Tensor, window: int, batch: int, lr: float, clip: float,
                max_updates: int | None = None, on_update=lambda: None) -> int:
    """One pass of the example's loop; returns the number of updates made (``on_update`` is called after each)."""
    model.train()
    criterion = nn.NLLLoss()
    hidden = model.init_hidden(batch)
    updates = 0
    for i in range(0, train_data.size(0) - 1, window):
        if max_updates is not None and updates >= max_updates:
            break
        data, targets = get_batch(train_data, i, window)
        model.zero_grad()
        hidden = repackage_hidden(hidden)
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        updates += 1
        on_update()
    return updates


@torch.no_grad()
def evaluate(model: RNNModel, data: torch.Tensor, window: int, batch: int = 10) -> float:
    model.eval()
    criterion = nn.NLLLoss()
    source = batchify(data, batch)
    hidden, total = model.init_hidden(batch), 0.0
    for i in range(0, source.size(0) - 1, window):
        x, y = get_batch(source, i, window)
        output, hidden = model(x, hidden)
        hidden = repackage_hidden(hidden)
        total += len(x) * criterion(output, y).item()
    return total / (len(source) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--model", default="lstm", choices=["lstm", "gru"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=20.0)
    parser.add_argument("--clip", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("-o", "--output", default="wlm.pt")
    args = parser.parse_args()
    torch.manual_seed(0)
    corpus = Corpus(args.data)
    train_data = batchify(corpus.train, args.batch_size)
    model = RNNModel(args.model, len(corpus.index), args.embed, args.hidden, args.layers, args.dropout)
    best = math.inf
    for epoch in range(1, args.epochs + 1):
        started = time.time()
        updates = train_epoch(model, train_data, args.window, args.batch_size, args.lr, args.clip, args.max_steps)
        loss = evaluate(model, corpus.valid, args.window)
        print(f"epoch {epoch}: {updates} updates in {time.time() - started:.1f}s, valid loss {loss:.3f}")
        if loss < best:
            best = loss
            with open(args.output, "wb") as out:
                torch.save(model.state_dict(), out)


if __name__ == "__main__":
    main()
