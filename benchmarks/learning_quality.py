"""How much a language model learns in a fixed time: bits per character on a play it never saw.

Language-model part of issue 15's bar. The training text is sample_data/shakespeare.txt without one play
(Julius Caesar, held out whole: ~115k characters); every run trains for the same wall-clock budget on the
rest and is scored on that play with ``bptt evaluate``'s scorer (128 streams side by side, each after 256
characters of context; characters outside the training vocabulary are skipped alike):

- plain: the textbook TBPTT loop (``train_throughput.plain_loop``: AdamW 2e-3, clip 1.0) on bptt's default
  model (LSTM 2x256, embed 128, window 50, batch 32), trained until the budget is spent; its last weights.
- wlm: ``word_language_model.py``'s settings (its model class, dropout 0.2, SGD at lr 20, clip 0.25, the
  same size, window and batch), with the example's epoch loop: validate on the tail 10 % (the example's
  Penn Treebank validation file is 8 % the size of its training file; ``--wlm-val-fraction`` changes it),
  keep the best, divide lr by 4 when validation does not improve; the budget covers its validations.
- bptt: ``bptt train TRAIN --max-time BUDGET`` (its defaults; validation on the tail 5 % is inside the
  budget), with each variant of ``--variants`` added in a run of its own.

The runs take turns in one process; "plain again" repeats the plain loop at the end, so its gap to the first
is what the machine's changing load does to a figure (the A/A control).

    python benchmarks/learning_quality.py --budget 180
    python benchmarks/learning_quality.py --budget 600 --variants defaults
"""

from __future__ import annotations

from bptt_cli.cli import quiet_openmp_wait  # imports no torch

quiet_openmp_wait()  # OpenMP waits as bptt sets them (benchmarks/threads.py), for the in-process baselines too;
# before torch loads OpenMP

import os  # noqa: E402

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import word_language_model as wlm
from common import machine_line
from train_throughput import plain_loop

from bptt_cli.kinds import Request
from bptt_cli.kinds.text import TextKind
from bptt_cli.modelfile import ModelFile, load_model_file
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.text import Tokenizer, read_text

HELD_OUT = "JULIUS CAESAR"
PLAIN, WLM = "plain (AdamW)", "word_language_model (SGD 20, dropout 0.2)"
TITLE = "\n\nby William Shakespeare"
VARIANTS = {  # name -> options added to bptt's defaults
    "defaults": [],
    "defaults, seed 1": ["--seed", "1"],
    "weight decay 0.05": ["--weight-decay", "0.05"],
    "cosine": ["--schedule", "cosine"],
    "cosine, dropout 0.1": ["--schedule", "cosine", "--dropout", "0.1"],
    "dropout 0.2": ["--dropout", "0.2"],
    "dropout 0.4": ["--dropout", "0.4"],
    "dropout 0.2, plateau": ["--dropout", "0.2", "--schedule", "plateau"],
    "dropout 0.2, ema 0.999": ["--dropout", "0.2", "--average", "ema:0.999"],
    "dropout 0.2, plateau, ema 0.999": ["--dropout", "0.2", "--schedule", "plateau", "--average", "ema:0.999"],
    "dropout 0.2, cosine": ["--dropout", "0.2", "--schedule", "cosine"],
    "dropout 0.2, cosine, lr 4e-3": ["--dropout", "0.2", "--schedule", "cosine", "--lr", "4e-3"],
    "defaults, precision auto": ["--precision", "auto"],
    "locked dropout 0.2": ["--dropout", "0.2", "--dropout-kind", "locked"],
    "weight drop 0.2": ["--weight-drop", "0.2"],
    "embed dropout 0.1": ["--embed-dropout", "0.1"],
    "ar 2, tar 1": ["--ar", "2", "--tar", "1"],
    "ar 3, tar 2": ["--ar", "3", "--tar", "2"],
    "ar 5, tar 3": ["--ar", "5", "--tar", "3"],
    "ar 3, tar 5": ["--ar", "3", "--tar", "5"],
    "ar 6, tar 6": ["--ar", "6", "--tar", "6"],
    "ar 2, tar 1, dropout 0.3": ["--ar", "2", "--tar", "1", "--dropout", "0.3"],
    "ar 2, tar 1, weight decay 0.1": ["--ar", "2", "--tar", "1", "--weight-decay", "0.1"],
    "ar 3, tar 2, weight decay 0.1": ["--ar", "3", "--tar", "2", "--weight-decay", "0.1"],
    "ar 3, tar 2, weight decay 0.3": ["--ar", "3", "--tar", "2", "--weight-decay", "0.3"],
    "ar 5, tar 3, weight decay 0.1": ["--ar", "5", "--tar", "3", "--weight-decay", "0.1"],
    "ema 0.999": ["--average", "ema:0.999"],
    "lr 2e-3": ["--lr", "2e-3"],
    "val fraction 0.1": ["--val-fraction", "0.1"],
    "val fraction 0.1, seed 1": ["--val-fraction", "0.1", "--seed", "1"],
    "val fraction 0.1, dropout 0.1": ["--val-fraction", "0.1", "--dropout", "0.1"],
    "val fraction 0.1, lr 4e-3": ["--val-fraction", "0.1", "--lr", "4e-3"],
    "val fraction 0.1, lr 2e-3": ["--val-fraction", "0.1", "--lr", "2e-3"],
    "val fraction 0.1, lr 2e-3, cosine": ["--val-fraction", "0.1", "--lr", "2e-3", "--schedule", "cosine"],
    "val fraction 0.1, lr 2e-3, window jitter 0.1": ["--val-fraction", "0.1", "--lr", "2e-3", "--window-jitter",
                                                     "0.1"],
    "ema 0.99": ["--average", "ema:0.99"],
}


def split_play(text: str, title: str = HELD_OUT) -> tuple[str, str]:
    """The text without the play ``title`` (up to the next play's title), and that play."""
    start = text.index(title + TITLE)
    following = text.find(TITLE, start + len(title) + len(TITLE))
    end = len(text) if following < 0 else text.rindex("\n", 0, following) + 1
    return text[:start] + text[end:], text[start:end]


def held_out_bits(model: RecurrentModel, tokenizer: Tokenizer, play: Path) -> float:
    """Bits per character of ``model`` on ``play``, scored as ``bptt evaluate`` scores a text model."""
    file = ModelFile(model.eval(), tokenizer, data={"kind": "text"})
    return TextKind().evaluate(file, play, torch.device("cpu"), Request())["bits_per_token"]


class _BudgetSpent(Exception):
    """Raised after the update that used up the budget, to leave a training loop there."""


def run_plain(train: Path, budget: float, args) -> dict:
    """The textbook loop as one run: one optimizer and one pass along the streams, until the budget is spent."""
    tokenizer = Tokenizer.fit("char", read_text(train))
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig(input_size=tokenizer.size, output_size=tokenizer.size, embed=args.embed,
                                       hidden=args.hidden, layers=args.layers))
    from common import batchify

    streams = batchify(tokenizer.encode(read_text(train))[0], args.batch_size)
    began, updates = time.perf_counter(), [0]

    def tick() -> None:
        updates[0] += 1
        if time.perf_counter() - began >= budget:
            raise _BudgetSpent

    try:
        plain_loop(model, streams, args.window, 10**9, tick)
    except _BudgetSpent:
        pass
    return {"updates": updates[0], "seconds": time.perf_counter() - began, "model": model, "tokenizer": tokenizer}


def as_bptt_model(net: wlm.RNNModel, corpus: wlm.Corpus, tokenizer: Tokenizer, args) -> RecurrentModel:
    """word_language_model's trained network as a RecurrentModel over bptt's character ids (same layers,
    rows permuted from its vocabulary order to bptt's; its <eos> is the line end), so one scorer serves all."""
    model = RecurrentModel(ModelConfig(input_size=tokenizer.size, output_size=tokenizer.size, embed=args.embed,
                                       hidden=args.hidden, layers=args.layers, dropout=0.2))
    order = torch.empty(tokenizer.size, dtype=torch.int64)
    for token, index in corpus.index.items():
        order[tokenizer.vocab.index("\n" if token == "<eos>" else token)] = index
    state = net.state_dict()
    renamed = {"embedding.weight": state["encoder.weight"][order], "decoder.weight": state["decoder.weight"][order],
               "decoder.bias": state["decoder.bias"][order]}
    renamed.update({k: v for k, v in state.items() if k.startswith("rnn.")})
    model.load_state_dict(renamed)
    return model


def run_wlm(train: Path, budget: float, args) -> dict:
    """The example's main loop (epochs, validation, best model, lr / 4 on a plateau) until the budget is spent;
    the epoch the budget ends in is validated too, as bptt validates where --max-time stops it."""
    torch.manual_seed(0)
    corpus = wlm.Corpus(str(train), args.wlm_val_fraction)
    tokenizer = Tokenizer.fit("char", read_text(train))
    train_data = wlm.batchify(corpus.train, args.batch_size)
    net = wlm.RNNModel("lstm", len(corpus.index), args.embed, args.hidden, args.layers, 0.2)
    lr, best, best_state, updates = 20.0, math.inf, None, [0]
    began = time.perf_counter()

    def tick() -> None:
        updates[0] += 1
        if time.perf_counter() - began >= budget:
            raise _BudgetSpent

    spent = False
    while not spent:
        try:
            wlm.train_epoch(net, train_data, args.window, args.batch_size, lr, 0.25, on_update=tick)
        except _BudgetSpent:
            spent = True
        loss = wlm.evaluate(net, corpus.valid, args.window)
        if loss < best:
            best, best_state = loss, {k: v.clone() for k, v in net.state_dict().items()}
        else:
            lr /= 4.0
    net.load_state_dict(best_state)
    return {"updates": updates[0], "seconds": time.perf_counter() - began,
            "model": as_bptt_model(net, corpus, tokenizer, args), "tokenizer": tokenizer}


def run_bptt(train: Path, budget: float, args, extra: list[str], folder: Path) -> dict:
    output = folder / "bptt.pt"
    for stale in (output, output.with_name(output.name + ".ckpt")):
        stale.unlink(missing_ok=True)
    command = [sys.executable, "-m", "bptt_cli", "train", str(train), "-o", str(output), "--max-time", str(budget),
               "--no-cache", "--quiet", "--json", "--threads", str(torch.get_num_threads()),
               "--hidden", str(args.hidden), "--layers", str(args.layers), "--embed", str(args.embed),
               "--window", str(args.window), "--batch-size", str(args.batch_size), "--epochs", "1000", *extra]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode not in (0, 3):  # 3: stopped by --max-time, resumable
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-800:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    file = load_model_file(output)
    return {"updates": summary["steps"], "seconds": time.perf_counter() - began, "model": file.model,
            "tokenizer": file.tokenizer, "val": summary.get("best_val_loss")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sample_data/shakespeare.txt")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of training per run (the issue: 600)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--baselines", nargs="*", default=["plain", "wlm"], choices=["plain", "wlm"],
                        help="the runs bptt is held to (plain also runs again at the end, the A/A control)")
    parser.add_argument("--wlm-val-fraction", type=float, default=0.1,
                        help="word_language_model's validation tail (bptt's text default is 0.05)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    print(machine_line())
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        text, play = split_play(read_text(args.data))
        train, held_out = folder / "train.txt", folder / "held_out.txt"
        train.write_text(text)
        held_out.write_text(play)
        print(f"training text: {len(text):,} characters ({args.data} without {HELD_OUT.title()}); "
              f"held out: {HELD_OUT.title()}, {len(play):,} characters; budget {args.budget:g} s per run")
        plan = [(f"bptt {name}", lambda name=name: run_bptt(train, args.budget, args, VARIANTS[name], folder))
                for name in args.variants]
        wlm_name = WLM if args.wlm_val_fraction == 0.1 else f"{WLM[:-1]}, validation {args.wlm_val_fraction:g})"
        if "wlm" in args.baselines:
            plan = [(wlm_name, lambda: run_wlm(train, args.budget, args)), *plan]
        if "plain" in args.baselines:
            plan = [(PLAIN, lambda: run_plain(train, args.budget, args)), *plan,
                    ("plain again (A/A)", lambda: run_plain(train, args.budget, args))]
        scored = []
        for name, work in plan:
            run = work()
            scored.append((name, run, held_out_bits(run["model"], run["tokenizer"], held_out)))
            print(f"{name}: {run['updates']:,} updates in {run['seconds']:.0f} s, held-out {scored[-1][2]:.4f} "
                  f"bits/char (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    reference = {name: bits for name, _, bits in scored}
    plain, wlm_bits = reference.get(PLAIN), reference.get(wlm_name)
    print("\n| run | updates | seconds | held-out bits/char | vs plain | vs wlm |")
    print("|---|---|---|---|---|---|")
    for name, run, bits in scored:
        versus = [f"{100 * (bits / b - 1):+.1f} %" if b else "-" for b in (plain, wlm_bits)]
        print(f"| {name} | {run['updates']:,} | {run['seconds']:.0f} | {bits:.4f} | {versus[0]} | {versus[1]} |")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
