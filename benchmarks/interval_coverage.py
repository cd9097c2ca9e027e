"""How well the 80 % intervals of gaussian and quantile models cover, lead by lead, on an AR(1) series.

    python benchmarks/interval_coverage.py [--rows 2000] [--horizon 12] [--epochs 3]

Trains a gaussian and a quantile model (`bptt train --loss ...`, a small LSTM) on y[t] = 0.8 y[t-1] + N(0, 1),
then scores a second series drawn the same way from an origin at every step. For the gaussian model it
compares the two ways to give a rolled-out forecast its interval: the predicted scale at each lead (the model
fed its means) and the sampled paths bptt uses (each path fed draws from the predicted normal). The
persistence baseline's empirical interval (its training errors' quantiles per lead) is the reference.
Coverage is a share of points, not a time: the machine's load does not change it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402

from bptt_cli import forecast  # noqa: E402
from bptt_cli.kinds.series import SeriesKind  # noqa: E402
from bptt_cli.losses import OutputHead  # noqa: E402
from bptt_cli.modelfile import load_model_file  # noqa: E402
from bptt_cli.series import Normaliser  # noqa: E402


def ar1(path: Path, rows: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    shocks, y = rng.normal(0.0, 1.0, rows), np.zeros(rows)
    for t in range(1, rows):
        y[t] = 0.8 * y[t - 1] + shocks[t]
    pd.DataFrame({"y": 5 + y}).to_csv(path, index=False)
    return path


def per_lead(truth: np.ndarray, bands: np.ndarray) -> np.ndarray:
    """The share of points inside the outermost interval at each lead: truth (N, H, O), bands (N, H, L, O)."""
    return ((bands[..., 0, :] <= truth) & (truth <= bands[..., -1, :])).mean(axis=(0, 2))


def scale_only_bands(path: Path, test: Path, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The gaussian model's bands from its predicted scale at each lead, and the truth, at every origin."""
    file = load_model_file(path)
    seq = SeriesKind().read(test, SeriesKind.Options(), file.data)
    norm, head = Normaliser.from_dict(file.data["norm"]), OutputHead.stored(file.data, file.config)
    model = file.model.eval()
    values = seq.values[0]
    origins = forecast.origins_for(len(values), horizon, None, 0, forecast.OriginPlan(every=1))
    x = torch.from_numpy(seq.frames(norm, 0))
    lead = np.arange(1, horizon + 1)
    state = forecast.states_at(model, x, origins, torch.device("cpu"))
    outputs = forecast.rollout(model, state, x[origins], x[origins[:, None] + lead[None, :-1]],
                               forecast.feedback(seq.features, seq.targets), horizon, head)
    bands = norm.invert(head.bands(outputs).double().numpy(), seq.targets)
    return values[:, seq.targets][origins[:, None] + lead[None, :]], bands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        train, test = ar1(folder / "ar.csv", args.rows, 0), ar1(folder / "ar_test.csv", args.rows, 1)
        rows = []
        for loss in ("gaussian", "quantile"):
            model = folder / f"{loss}.pt"
            subprocess.run([sys.executable, "-m", "bptt_cli", "train", str(train), "-o", str(model), "--loss", loss,
                            "--epochs", str(args.epochs), "--hidden", "16", "--layers", "1", "--batch-size", "8",
                            "--window", "20", "--lr", "0.01", "-q"], check=True, capture_output=True)
            file = load_model_file(model)
            seq = SeriesKind().read(test, SeriesKind.Options(), file.data)
            figures = forecast.evaluate_forecasts(file.model.eval(), seq, Normaliser.from_dict(file.data["norm"]),
                                                  [0], args.horizon, None, file.data, test, torch.device("cpu"),
                                                  forecast.OriginPlan(every=1))
            scored = figures["backtest"]
            rows.append((f"{loss}: {'sampled paths' if loss == 'gaussian' else 'levels at each lead'}",
                         per_lead(scored.truth, scored.bands)))
            if loss == "gaussian":
                rows.append(("gaussian: predicted scale at each lead", per_lead(*scale_only_bands(model, test,
                                                                                                  args.horizon))))
                rows.append(("persistence: training errors per lead",
                             per_lead(scored.truth, scored.baseline_bands["persistence"])))
    shown = sorted({0, args.horizon // 2 - 1, args.horizon - 1})
    print(f"share of {len(scored.truth):,} points inside the 80 % interval, AR(1) phi 0.8, N(0, 1) noise")
    print(f"{'forecast':42s}" + "".join(f"  lead {k + 1:<3d}" for k in shown) + "  all leads")
    for name, covered in rows:
        print(f"{name:42s}" + "".join(f"  {covered[k]:8.3f}" for k in shown) + f"  {covered.mean():9.3f}")


if __name__ == "__main__":
    main()
