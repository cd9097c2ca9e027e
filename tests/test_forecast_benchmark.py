"""benchmarks/forecast_quality.py's MSTL peer: decomposed anew before each season of origins, or once.

statsforecast is the benchmark's own need, never bptt's: without it these tests are skipped."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("statsforecast")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from forecast_quality import MstlRefits


def daily(length: int = 24 * 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(length)
    return 10 + 3 * np.sin(2 * np.pi * t / 24) + 0.02 * t * (t > length * 0.8) + 0.3 * rng.standard_normal(length)


def test_each_season_of_origins_is_forecast_from_a_fit_on_the_data_up_to_it():
    y, end = daily(), 24 * 24
    origins = np.arange(end - 1, len(y) - 1)  # one step ahead from every origin of the tail
    refitted = MstlRefits(y, [24], every=24)(end, origins, 1)
    assert refitted.shape == (len(origins), 1)
    once = MstlRefits(y, [24], every=None)
    first = origins < end - 1 + 24
    assert np.array_equal(refitted[first], once(end, origins[first], 1))  # the first block is the training fit
    later = (origins >= end - 1 + 48) & (origins < end - 1 + 72)
    assert np.array_equal(refitted[later], MstlRefits(y, [24], None)(end + 48, origins[later], 1))
    assert not np.allclose(refitted[later], once(end, origins[later], 1))  # the refit saw the trend begin


def test_the_horizons_share_the_fits():
    y, end = daily(), 24 * 24
    refits = MstlRefits(y, [24], every=24)
    refits(end, np.arange(end - 1, len(y) - 1), 1)
    fits = len(refits.fits)
    refits(end, np.arange(end - 1, len(y) - 24, 24), 24)  # the season's origins are the blocks' first ones
    assert len(refits.fits) == fits == 6
