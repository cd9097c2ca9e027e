"""Learning-rate schedules as one multiplier of the base rate, so the state is plain numbers.

``constant``, ``cosine`` (to zero at the last step) and ``plateau`` (halve the
rate whenever validation does not improve), each after a linear warm-up. Under
``--max-time`` the last step is not known ahead, so the trainer fits cosine's
length to the budget once the update rate is measured (``fit_to_budget``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bptt_cli.choices import SCHEDULES
from bptt_cli.errors import BpttError



@dataclass
class LearningRateSchedule:
    kind: str = "constant"
    warmup: int = 0  # steps of linear warm-up from ~0 to the base rate
    total_steps: int = 1  # the step count cosine decays over
    plateau_scale: float = 1.0  # halved by each validation that does not improve
    best: float = math.inf

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise BpttError(f"unknown schedule {self.kind!r}; use one of {', '.join(SCHEDULES)}")
        if self.warmup < 0:
            raise BpttError(f"--warmup must be 0 or more steps, got {self.warmup}")

    def factor(self, step: int) -> float:
        """Multiplier of the base rate for update number ``step`` (0-based)."""
        scale = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        if self.kind == "cosine":
            progress = min(1.0, max(0, step - self.warmup) / max(1, self.total_steps - self.warmup))
            scale *= 0.5 * (1.0 + math.cos(math.pi * progress))
        return scale * self.plateau_scale

    def fit_to_budget(self, planned: int, step: int, updates_left: float) -> int:
        """End cosine's decay where the time budget ends, if that comes before the ``planned`` last step."""
        self.total_steps = int(min(planned, step + max(1.0, updates_left)))
        return self.total_steps

    def observe(self, validation_loss: float) -> None:
        """Let ``plateau`` react to a validation result."""
        if validation_loss < self.best:
            self.best = validation_loss
        elif self.kind == "plateau":
            self.plateau_scale *= 0.5
