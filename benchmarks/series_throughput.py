"""Learning per second of bptt's Trainer on series and sequence classification, against plain PyTorch loops.

Two tasks, each with the default model (LSTM 2x256), AdamW at lr 2e-3, clip 1.0:

* forecast: sample_data/elecdemand.csv, --window 48, --batch-size 32. bptt trains
  on the streams ``bptt train`` prepares (``KINDS["series"].prepare``) with
  ``Trainer.fit``; the plain loop runs nn.LSTM + nn.Linear over the same (T, B, F)
  streams in windows of 48, state carried and detached, masked MSE,
  ``clip_grad_norm_``, ``torch.optim.AdamW`` (its default, not fused).
* classify: sample_data/vowels/JapaneseVowels_TRAIN.ts, one label per
  utterance, full BPTT (--window 0), --batch-size 16. bptt trains on batches of
  16 whole utterances (``SequenceBatches``: shuffled per epoch, padded, each from
  zeros, one update per batch); the plain loop takes shuffled batches of 16 whole
  utterances, pads them, runs ``pack_padded_sequence`` and scores the last step
  of each.

Each loop gets the same wall-clock budget from the same initial weights; then the
validation loss that bptt's own validation pass computes (same held-out points
for all) is read for each. The plain loop runs twice: its second run is the A/A
control. The three alternate for ``--rounds`` rounds, and the ratios are medians over rounds: the plain
loop's speed swings from run to run (glibc's allocator state), so one run is not a figure. Prints
updates/s, CPU seconds, the validation loss (and accuracy) reached, and the machine.

    python benchmarks/series_throughput.py --task forecast --seconds 20 --rounds 5
    python benchmarks/series_throughput.py --task classify --seconds 20 --rounds 5
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_line
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bptt_cli.kinds import KINDS, RunSetup
from bptt_cli.models import ModelConfig
from bptt_cli.trainer import SilentReporter, TrainConfig, Trainer

CPU = torch.device("cpu")
TASKS = {
    "forecast": ("series", "sample_data/elecdemand.csv", 48, 32),
    "classify": ("audio", "sample_data/vowels/JapaneseVowels_TRAIN.ts", 0, 16),
}


class PlainModel(nn.Module):
    """The textbook model: nn.LSTM and nn.Linear, named as bptt names them so weights load both ways."""

    def __init__(self, features: int, hidden: int, layers: int, outputs: int):
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, layers)
        self.decoder = nn.Linear(hidden, outputs)


def textbook_step(model: nn.Module, optimizer, loss: torch.Tensor, clip: float, start: float, budget: float) -> bool:
    """zero_grad, backward, clip_grad_norm_, step; whether the wall-clock budget is spent."""
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return time.perf_counter() - start >= budget


def plain_forecast(model: PlainModel, inputs, targets, window: int, budget: float, lr: float, clip: float) -> int:
    """Windows of ``window`` steps over the (T, B, F) streams, state carried; returns the updates made."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    updates, start = 0, time.perf_counter()
    while True:
        state = None  # every epoch starts from zeros, as bptt's do
        for t in range(0, inputs.shape[0] - window + 1, window):
            x, y = inputs[t : t + window], targets[t : t + window]
            out, state = model.rnn(x, state)
            state = tuple(s.detach() for s in state)
            pred = model.decoder(out)
            mask = ~torch.isnan(y)
            updates += 1
            if textbook_step(model, optimizer, F.mse_loss(pred[mask], y[mask]), clip, start, budget):
                return updates


def utterances(batches) -> tuple[list[torch.Tensor], list[int]]:
    """The whole training utterances bptt draws its batches from, each with its one label (on its last step)."""
    return [torch.from_numpy(x) for x in batches.inputs], [int(y[-1]) for y in batches.targets]


def plain_classify(model: PlainModel, sequences, labels, batch: int, budget: float, lr: float, clip: float) -> int:
    """Shuffled batches of whole utterances, padded and packed; returns the updates made."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    lengths = torch.tensor([len(s) for s in sequences])
    padded = nn.utils.rnn.pad_sequence(sequences)  # (T, N, F)
    target = torch.tensor(labels)
    updates, start = 0, time.perf_counter()
    while True:
        for chosen in np.array_split(rng.permutation(len(sequences)), max(1, len(sequences) // batch)):
            index = torch.from_numpy(chosen)
            packed = pack_padded_sequence(padded[:, index], lengths[index], enforce_sorted=False)
            out, _ = model.rnn(packed)
            out, _ = pad_packed_sequence(out)
            last = out[lengths[index] - 1, torch.arange(len(index))]
            updates += 1
            if textbook_step(model, optimizer, F.cross_entropy(model.decoder(last), target[index]), clip, start,
                             budget):
                return updates


def timed(run) -> tuple[int, float, float]:
    """(updates, wall seconds, CPU seconds of this process) of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    updates = run()
    return updates, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=TASKS, default="forecast")
    parser.add_argument("--seconds", type=float, default=40.0, help="wall-clock budget of each loop")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of an untimed plain loop first")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="run plain, bptt, plain again this many times; ratios are medians over rounds")
    args = parser.parse_args()
    kind_name, data, window, batch = TASKS[args.task]
    kind = KINDS[kind_name]
    train_config = TrainConfig(window=window, batch_size=batch, epochs=10**6, max_time=args.seconds, lr=args.lr,
                               clip=args.clip, log_every=100)
    setup = RunSetup(ModelConfig(), train_config, CPU, SilentReporter())
    # the forecast as a textbook loop trains it: the next step of every column, no anchor, no multi-step head
    shape = {"leads": 1, "anchor": "none"} if args.task == "forecast" else {}
    with kind.prepare(Path(data), kind.options(shape), setup) as prepared:
        start_weights = copy.deepcopy(prepared.model.state_dict())
        config = prepared.model.config
        inputs, targets = prepared.inputs, prepared.targets
        figures = {}

        def plain_run(name: str, budget: float = args.seconds):
            model = PlainModel(config.input_size, config.hidden, config.layers, config.output_size)
            model.load_state_dict(start_weights)
            if args.task == "forecast":
                updates = timed(lambda: plain_forecast(model, inputs, targets, window, budget, args.lr, args.clip))
            else:
                sequences, labels = utterances(inputs)
                updates = timed(lambda: plain_classify(model, sequences, labels, batch, budget, args.lr, args.clip))
            prepared.model.load_state_dict(model.state_dict())
            figures[name] = (*updates, prepared.validate(prepared.model))

        def bptt_run():
            prepared.model.load_state_dict(start_weights)
            trainer = Trainer(prepared.model, train_config, CPU, SilentReporter(), None, lambda record: None,
                              prepared.loss_fn)
            figures["bptt Trainer"] = (*timed(lambda: trainer.fit(inputs, targets, prepared.resets)["steps"]),
                                       prepared.validate(prepared.model))

        plain_run("warm-up", args.warmup)  # oneDNN's first calls and the allocator's first pages, not timed
        del figures["warm-up"]
        rounds = []
        for _ in range(args.rounds):  # alternated, so a slow spell of the machine hits every loop alike
            plain_run("plain loop")
            bptt_run()
            plain_run("plain loop again (A/A)")
            rounds.append(dict(figures))
    shape = f"{len(inputs)} batches of {inputs.size}" if targets is None else f"streams {tuple(inputs.shape)}"
    print(f"{args.task}: {data}, window {window or 'full'}, batch {batch}, {config.cell} {config.layers}x"
          f"{config.hidden}, AdamW lr {args.lr:g}, clip {args.clip:g}, {args.seconds:g} s each, "
          f"{args.rounds} round(s); {shape}")
    print(machine_line())
    ratios: dict[str, list[float]] = {}
    for number, found in enumerate(rounds, 1):
        plain_rate = found["plain loop"][0] / found["plain loop"][1]
        for name, (updates, wall, cpu, scored) in found.items():
            rate = updates / wall
            ratios.setdefault(name, []).append(rate / plain_rate)
            accuracy = f", accuracy {scored['accuracy']:.4f}" if "accuracy" in scored else ""
            print(f"round {number} {name:24s} {updates:6d} updates  {wall:6.1f} s wall  {cpu:6.1f} s CPU  "
                  f"{rate:7.2f} updates/s ({rate / plain_rate:5.2f}x plain)  validation loss {scored['loss']:.5f}"
                  f"{accuracy}")
    for name in ("bptt Trainer", "plain loop again (A/A)"):
        found = ratios[name]
        print(f"median over rounds, {name}: {statistics.median(found):.3f}x plain "
              f"(rounds {min(found):.3f}-{max(found):.3f})")


if __name__ == "__main__":
    main()
