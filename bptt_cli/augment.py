"""Training-time augmentation of labelled feature sequences (``--augment``): what a new voice changes.

A voice the model never heard says a word at another pace and with other formants:
``stretch`` plays each training sequence faster or slower (frames dropped or
repeated), ``time-mask`` and ``freq-mask`` blank a random run of frames and a
random band of features (SpecAugment), so that no single stretch of the word or
band of the spectrum decides the class; ``warp`` scales each sequence's feature
axis by its own factor, as a longer or shorter vocal tract moves the formants
(vocal tract length perturbation, on the mel bands rather than the waveform).
Only training batches change (validation and evaluation read the data as it is),
each drawn from the run's seed, the epoch and the update, so a resumed run draws
the same batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bptt_cli.choices import AUGMENTATIONS
from bptt_cli.errors import BpttError
from bptt_cli.losses import IGNORE_LABEL

DEFAULT_AMOUNTS = {"stretch": 0.15, "time-mask": 10, "freq-mask": 8, "warp": 0.1}  # the amount when none is given


@dataclass(frozen=True)
class Augmentation:
    """How much of each augmentation a training batch gets; all zero is none."""

    stretch: float = 0.0  # each sequence's length times a factor in [1 - stretch, 1 + stretch]
    time_mask: int = 0  # frames blanked per sequence: a run of 0 .. time_mask
    freq_mask: int = 0  # features blanked per sequence: a band of 0 .. freq_mask
    warp: float = 0.0  # each sequence's feature axis scaled by a factor in [1 - warp, 1 + warp]
    blocks: int = 1  # the features are this many blocks of the same bands (2 with --deltas), warped alike

    def __bool__(self) -> bool:
        return bool(self.stretch or self.time_mask or self.freq_mask or self.warp)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_augment(spec: str | None) -> Augmentation:
    """``stretch,time-mask=10,freq-mask=8`` (name or name=amount, comma-separated) -> Augmentation; ``none``: none."""
    if not spec or spec == "none":
        return Augmentation()
    amounts: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, _, text = part.partition("=")
        name = name.strip()
        if name not in AUGMENTATIONS:
            raise BpttError(f"--augment: unknown augmentation {name!r}; use {', '.join(AUGMENTATIONS)} "
                            "(name or name=amount, comma-separated), or none")
        try:
            amount = float(text) if text.strip() else DEFAULT_AMOUNTS[name]
        except ValueError:
            raise BpttError(f"--augment {name}={text}: the amount must be a number") from None
        if name in ("stretch", "warp") and not 0 < amount < 1:
            what = "a sequence's length" if name == "stretch" else "the feature axis"
            raise BpttError(f"--augment {name}={text}: the share of {what} must lie in (0, 1), "
                            f"e.g. {name}={DEFAULT_AMOUNTS[name]}")
        if name in ("time-mask", "freq-mask") and (amount < 1 or amount != int(amount)):
            raise BpttError(f"--augment {name}={text}: the widest mask is a whole number of "
                            f"{'frames' if name == 'time-mask' else 'features'}, at least 1")
        amounts[name] = amount
    return Augmentation(amounts.get("stretch", 0.0), int(amounts.get("time-mask", 0)), int(amounts.get("freq-mask", 0)),
                        amounts.get("warp", 0.0))


def stretched(inputs: list[np.ndarray], targets: list[np.ndarray], amount: float,
              rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each sequence at a random pace: its frames taken at evenly spaced positions (dropped or repeated).

    The last frame stays the last, so a label on it stays there; a repeated frame's label
    is kept on its last copy only, so no frame is trained on twice.
    """
    factors = rng.uniform(1 - amount, 1 + amount, len(inputs))
    out_x, out_y = [], []
    for x, y, factor in zip(inputs, targets, factors):  # one iteration per sequence, vectorised over its frames
        picked = np.round(np.linspace(0, len(x) - 1, max(2, round(len(x) * factor)))).astype(np.int64)
        labels = y[picked].copy()
        labels[:-1][picked[:-1] == picked[1:]] = IGNORE_LABEL
        out_x.append(x[picked])
        out_y.append(labels)
    return out_x, out_y


def masked(inputs: np.ndarray, lengths: np.ndarray, augmentation: Augmentation, rng: np.random.Generator) -> None:
    """Blank (to 0, the normalised mean) a run of frames and a band of features of each stream of ``inputs``
    (T, B, F), in place; stream b holds one sequence of ``lengths[b]`` frames from step 0."""
    steps, batch, width = inputs.shape
    if augmentation.time_mask:
        runs = rng.integers(0, np.minimum(augmentation.time_mask, lengths - 1) + 1)  # (B,), never a whole sequence
        starts = rng.integers(0, lengths - runs + 1)
        t = np.arange(steps)[:, None]
        inputs[(t >= starts) & (t < starts + runs)] = 0.0
    if augmentation.freq_mask:
        bands = rng.integers(0, min(augmentation.freq_mask, width - 1) + 1, batch)
        lows = rng.integers(0, width - bands + 1)
        f = np.arange(width)[None, :]
        inputs *= ~((f >= lows[:, None]) & (f < (lows + bands)[:, None]))[None]  # (1, B, F) over every step


def warped(inputs: np.ndarray, augmentation: Augmentation, rng: np.random.Generator) -> None:
    """Scale the feature axis of each stream of ``inputs`` (T, B, F) by its own factor, in place (linear
    interpolation between neighbouring features, the edge feature repeated past the end)."""
    steps, batch, width = inputs.shape
    bands = width // augmentation.blocks
    factors = rng.uniform(1 - augmentation.warp, 1 + augmentation.warp, batch)
    where = np.clip(np.arange(bands)[None, :] * factors[:, None], 0, bands - 1)  # (B, bands)
    low = np.floor(where).astype(np.int64)
    high = np.minimum(low + 1, bands - 1)
    share = (where - low)[None, :, None, :]
    view = inputs.reshape(steps, batch, augmentation.blocks, bands)
    below = np.take_along_axis(view, low[None, :, None, :], axis=3)
    above = np.take_along_axis(view, high[None, :, None, :], axis=3)
    view[...] = below * (1 - share) + above * share
