"""Rows per second and the latency of one row of ``bptt predict``'s series predictor, against re-running
the whole context for every row (what a stateless caller of the model must do).

bptt carries the state, so a row costs one recurrent step whatever came before;
the naive predictor re-reads the last ``--context`` rows for each new one.

    python benchmarks/predict_latency.py --rows 2000 --context 48,480
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bptt_cli.modelfile import ModelFile, load_model_file, save_model_file
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.predict import SeriesPredictor
from bptt_cli.series import Normaliser


def default_series_model(folder: Path) -> Path:
    """The default model shape of ``bptt train data.csv`` (LSTM 2x256) on two columns, with random weights."""
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig("lstm", 2, 2, tokens=False, hidden=256, layers=2))
    data = {"kind": "series", "task": "forecast", "columns": ["load", "temp"], "features": [0, 1], "targets": [0, 1],
            "target_names": ["load", "temp"], "classes": None, "norm": Normaliser(np.zeros(2), np.ones(2)).to_dict(),
            "time_column": None, "group_column": None, "freq": None, "season": 48, "settings": {}}
    path = folder / "m.pt"
    save_model_file(path, ModelFile(model, None, {}, {}, data))
    return path


@torch.no_grad()
def naive_row(model: RecurrentModel, window: torch.Tensor) -> torch.Tensor:
    out, _ = model.recur(window.unsqueeze(1), model.init_state(1))
    return model.decode(out[-1, 0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--context", default="48,480", help="rows the naive predictor re-reads per row")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(args.rows, 2))
    with tempfile.TemporaryDirectory() as scratch:
        path = default_series_model(Path(scratch))
        file = load_model_file(path)
        predictor = SeriesPredictor(file, path, torch.device("cpu"))
        records = [{"load": a, "temp": b} for a, b in rows]
        latencies = []
        start = time.perf_counter()
        for record in records:
            began = time.perf_counter()
            predictor.step(record)
            latencies.append(time.perf_counter() - began)
        carried = args.rows / (time.perf_counter() - start)
        print(f"bptt predict (state carried): {carried:,.0f} rows/s, median latency "
              f"{1e3 * np.median(latencies):.3f} ms, p99 {1e3 * np.quantile(latencies, 0.99):.3f} ms")
        x = torch.from_numpy(rows.astype(np.float32))
        for context in (int(c) for c in args.context.split(",")):
            count = min(args.rows - context, 300)
            began = time.perf_counter()
            for end in range(context, context + count):
                naive_row(file.model, x[end - context : end])
            naive = count / (time.perf_counter() - began)
            print(f"re-running the last {context} rows per row: {naive:,.0f} rows/s; bptt is {carried / naive:.1f}x")
    print(f"(torch {torch.__version__}, {args.threads} thread(s), pandas {pd.__version__})")


if __name__ == "__main__":
    main()
