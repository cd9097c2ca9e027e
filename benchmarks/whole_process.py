"""Whole-process time of ``bptt train`` against pytorch/examples' word_language_model, start to finish.

Start-up, reading and tokenising the text, one epoch of training, the
validation and writing the model all count. Both train the same model (LSTM,
dropout 0.2, SGD at lr 20, clip 0.25) on the same text, window and batch;
bptt tokenises afresh each time (``--no-cache``), as the example does. The two
alternate, round after round.

    python benchmarks/whole_process.py --epochs 1 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sample_data/shakespeare.txt")
    parser.add_argument("--model", default="lstm", choices=["lstm", "gru"])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    shared = ["--model", args.model, "--hidden", str(args.hidden), "--layers", str(args.layers), "--embed", "128",
              "--window", "50", "--batch-size", "32", "--dropout", "0.2", "--lr", "20", "--clip", "0.25",
              "--epochs", str(args.epochs)]
    seconds: dict[str, list[float]] = {"wlm": [], "bptt": []}
    with tempfile.TemporaryDirectory() as folder:
        commands = {
            "wlm": [sys.executable, str(HERE / "word_language_model.py"), args.data, *shared,
                    "-o", f"{folder}/wlm.pt"],
            "bptt": [sys.executable, "-m", "bptt_cli", "train", args.data, *shared, "--optimizer", "sgd",
                     "--no-cache", "--quiet", "-o", f"{folder}/bptt.pt"],
        }
        for _ in range(args.rounds):
            for name, command in commands.items():
                for old in Path(folder).glob(f"{name}.pt*"):
                    old.unlink()
                start = time.perf_counter()
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ})
                seconds[name].append(time.perf_counter() - start)
    print(f"{args.model} {args.layers}x{args.hidden}, {args.epochs} epoch(s) of {args.data}, threads "
          f"{os.environ.get('OMP_NUM_THREADS', 'default')}")
    for name, label in (("wlm", "word_language_model"), ("bptt", "bptt train")):
        print(f"{label:20s} {min(seconds[name]):7.1f} s (rounds: {', '.join(f'{s:.1f}' for s in seconds[name])})")
    ratios = ", ".join(f"{w / b:.3f}" for w, b in zip(seconds["wlm"], seconds["bptt"]))
    print(f"speed ratio bptt / wlm (wlm time / bptt time): {min(seconds['wlm']) / min(seconds['bptt']):.3f} "
          f"(per round: {ratios})")


if __name__ == "__main__":
    main()
