"""Peak memory of ``bptt train`` on 10 MB, 100 MB and 1 GB of text: flat beyond the token cache.

Generates the texts from the sample text (repeated), then for each size runs,
as separate processes:

- baseline: tokenising in memory the way bptt did before the cache (read the
  whole text, ``Tokenizer.fit``, ``encode``, ``batchify``);
- bptt, first run: ``bptt train`` builds the token cache, then trains a few updates;
- bptt, second run: the same command reuses the cache.

For each it reports wall time, peak RSS (which counts the pages of the mapped
cache the run touched, reclaimable page cache) and peak anonymous RSS (the
memory beyond the cache: Python objects, tensors), sampled every 10 ms.

    python benchmarks/memory_large_text.py --sizes 10,100,1000 --tokenizer char
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BASELINE = """
import sys
import numpy as np
import torch
from bptt_cli.text import Tokenizer, read_text
text = read_text(sys.argv[1], sys.argv[2])
tokenizer = Tokenizer.fit(sys.argv[2], text)
torch.from_numpy(tokenizer.encode(text)[0].astype(np.int64))  # what batchify did: every id as an int64 tensor
"""


def generate(path: Path, megabytes: int, sample: Path) -> None:
    """``megabytes`` MB of text: the sample repeated, cut at the size."""
    block = sample.read_bytes()
    left = megabytes * 10**6
    with open(path, "wb") as out:
        while left > 0:
            out.write(block[:left])
            left -= len(block)


def peak_memory(command: list[str]) -> tuple[float, int, int]:
    """Run ``command``; returns (seconds, peak RSS bytes, peak anonymous RSS bytes)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "2"})
    peak_anon = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_anon
        status = Path(f"/proc/{process.pid}/status")
        while not done.is_set():
            try:
                line = next(l for l in status.read_text().splitlines() if l.startswith("RssAnon:"))
                peak_anon = max(peak_anon, int(line.split()[1]) * 1024)
            except (OSError, StopIteration):
                pass
            time.sleep(0.01)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[:4]} failed: {process.stderr.read().decode()[-500:]}")
    return seconds, usage.ru_maxrss * 1024, peak_anon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="MB of text")
    parser.add_argument("--tokenizer", default="char", choices=["char", "word", "byte"])
    parser.add_argument("--sample", default="sample_data/shakespeare.txt")
    parser.add_argument("--baseline-max", type=int, default=1000, help="largest size (MB) to run the baseline at")
    parser.add_argument("--workdir", default=None, help="where the texts and caches go (default: a temp dir)")
    args = parser.parse_args()
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="bptt-memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    mb = 1 << 20
    print(f"tokenizer {args.tokenizer}; bptt train ... --max-steps 10 --val-fraction 0 --hidden 128 --layers 1; "
          f"cores {os.cpu_count()}; peak RSS / peak anonymous RSS (beyond the mapped cache)")
    for size in map(int, args.sizes.split(",")):
        text = folder / f"text{size}MB.txt"
        generate(text, size, Path(args.sample))
        train = [sys.executable, "-m", "bptt_cli", "train", str(text), "-o", str(folder / f"m{size}.pt"),
                 "--tokenizer", args.tokenizer, "--max-steps", "10", "--val-fraction", "0", "--epochs", "1",
                 "--hidden", "128", "--layers", "1", "--quiet",
                 "--cache-dir", str(folder / "cache")]
        rows = []
        if size <= args.baseline_max:
            rows.append(("baseline: in-memory tokenising", peak_memory([sys.executable, "-c", BASELINE, str(text),
                                                                          args.tokenizer])))
        rows.append(("bptt train, builds the cache", peak_memory(train)))
        rows.append(("bptt train, reuses the cache", peak_memory(train)))
        for label, (seconds, rss, anon) in rows:
            print(f"{size:>5} MB  {label:32s} {seconds:7.1f} s  peak RSS {rss / mb:7,.0f} MiB  "
                  f"anonymous {anon / mb:7,.0f} MiB")
        if size <= args.baseline_max:
            print(f"{size:>5} MB  ratio of peak anonymous RSS, bptt (reusing) / baseline: {rows[2][1][2] / rows[0][1][2]:.3f}")
        text.unlink()
        (folder / f"m{size}.pt").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
