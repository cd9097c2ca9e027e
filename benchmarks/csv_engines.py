"""Loading and normalising a 1 M-row x 8-column CSV with pandas.read_csv: the c, python and pyarrow engines.

The file is generated (a float timestamp column and seven float series). Each
engine reads it and the columns are z-normalised (the mean and std of each);
the engines alternate, round after round. pyarrow runs only where it is
installed (it is not a bptt dependency).

    python benchmarks/csv_engines.py --rows 1000000
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def load_and_normalise(path: Path, engine: str) -> np.ndarray:
    frame = pd.read_csv(path, engine=engine)
    values = frame.to_numpy(dtype=np.float32)  # (rows, columns)
    return (values - values.mean(axis=0)) / (values.std(axis=0) + 1e-8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python-rounds", type=int, default=1, help="the python engine is slow: fewer rounds")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.rows, 8)).cumsum(axis=0)
    data[:, 0] = np.arange(args.rows) * 0.01
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "series.csv"
        pd.DataFrame(data, columns=["time", *(f"s{i}" for i in range(7))]).to_csv(path, index=False,
                                                                               float_format="%.6g")
        engines = ["c", "python"] + (["pyarrow"] if importlib.util.find_spec("pyarrow") else [])
        seconds: dict[str, list[float]] = {engine: [] for engine in engines}
        for round_ in range(args.rounds):
            for engine in engines:
                if engine == "python" and round_ >= args.python_rounds:
                    continue
                start = time.perf_counter()
                load_and_normalise(path, engine)
                seconds[engine].append(time.perf_counter() - start)
        size = path.stat().st_size / 1e6
    base = min(seconds["c"])
    print(f"{args.rows:,} rows x 8 columns, {size:.0f} MB; pandas {pd.__version__}")
    for engine, values in seconds.items():
        print(f"engine {engine:8s} {min(values):6.2f} s  (speed vs c: {base / min(values):.2f})")
    if "pyarrow" not in seconds:
        print("engine pyarrow: not installed (pip install pyarrow to compare)")


if __name__ == "__main__":
    main()
