"""Reading WAV features through bptt's feature cache against computing them with librosa every run.

Makes ``--files`` recordings (chirps in noise, 0.5-1.5 s at 16 kHz, seeded; written
with soundfile, part of the audio extra) and times, each in a fresh process with
its imports (librosa's among them when it is needed), ``load_audio`` of all of
them with ``--trim-db 40 --cmvn --deltas``:

- computed: no cache (``--no-cache``), the way every run read WAVs before;
- computed again: the same, the A/A control: its ratio to the first is this run's noise;
- first run: an empty cache, filled as it goes (what the first training pays);
- cached: the cache filled, as every later run finds it (train again, evaluate, predict).

Rounds alternate the four; each figure is the median of the rounds, ratios too.

    python benchmarks/feature_cache.py --files 1000 --rounds 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine_line

READ = """
import sys
from pathlib import Path
from bptt_cli.audio import FeatureSettings, load_audio
folder, cache = Path(sys.argv[1]), sys.argv[2]
found = load_audio(folder, folder / "labels.csv", FeatureSettings(trim_db=40, cmvn=True, deltas=True),
                   cache=Path(cache) if cache else None)
assert len(found.frames) == int(sys.argv[3])
"""


def make_recordings(folder: Path, count: int, rate: int = 16000) -> None:
    """``count`` seeded chirps in noise with a second of silence around them, and a labels.csv of 10 classes."""
    import soundfile

    rng = np.random.default_rng(0)
    rows = ["file,label"]
    for i in range(count):
        seconds = rng.uniform(0.5, 1.5)
        t = np.arange(int(seconds * rate)) / rate
        low, high = rng.uniform(100, 2000, 2)
        voice = np.sin(2 * np.pi * (low + (high - low) * t / seconds / 2) * t) * np.hanning(len(t))
        quiet = np.zeros(rate // 2)
        signal = np.concatenate([quiet, voice, quiet]) + 0.003 * rng.standard_normal(len(t) + rate)
        soundfile.write(folder / f"{i:05d}.wav", (0.5 * signal).astype(np.float32), rate, subtype="PCM_16")
        rows.append(f"{i:05d}.wav,c{i % 10}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


def timed(folder: Path, cache: Path | None, count: int) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", READ, str(folder), str(cache or ""), str(count)], check=True,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="recordings to make and read")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="bptt-feature-cache-") as scratch:
        folder, warm, cold = Path(scratch) / "wavs", Path(scratch) / "warm", Path(scratch) / "cold"
        folder.mkdir()
        make_recordings(folder, args.files)
        timed(folder, warm, args.files)  # fills the cache the "cached" runs read
        seconds: dict[str, list[float]] = {"computed": [], "computed again": [], "first run": [], "cached": []}
        for _ in range(args.rounds):
            seconds["computed"].append(timed(folder, None, args.files))
            shutil.rmtree(cold, ignore_errors=True)
            seconds["first run"].append(timed(folder, cold, args.files))
            seconds["cached"].append(timed(folder, warm, args.files))
            seconds["computed again"].append(timed(folder, None, args.files))
        entries = list((warm / "features").iterdir())
        size = sum(p.stat().st_size for p in entries)
    print(f"{args.files} WAV files, --trim-db 40 --cmvn --deltas, one fresh process per read (imports included), "
          f"median of {args.rounds} rounds; the cache holds {len(entries)} entries, {size / 2**20:.1f} MiB")
    base = seconds["computed"]
    for name, values in seconds.items():
        ratio = statistics.median(b / v for b, v in zip(base, values))
        print(f"{name:15} {statistics.median(values):7.2f} s   computed / this {ratio:5.2f}x   "
              f"(rounds {min(values):.2f}-{max(values):.2f} s)")


if __name__ == "__main__":
    main()
