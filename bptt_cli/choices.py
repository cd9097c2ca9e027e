"""The names of every choice bptt offers, in one torch-free place.

The library modules that own each concept import their tuple from here, and the
CLI builds its ``Enum`` choices from the same tuples, so a name is written once
and ``bptt train --help`` lists the choices without importing torch.
"""

from __future__ import annotations

TOKENIZERS = ("char", "byte", "word")  # owned by text.py
OPTIMIZERS = ("adamw", "adam", "sgd", "nt-asgd")  # owned by trainer.py; nt-asgd: SGD, then averaged (AWD-LSTM)
DROPOUT_KINDS = ("standard", "locked")  # owned by dropout.py: a mask per step, or one per window shared by its steps
SCHEDULES = ("constant", "cosine", "plateau")  # owned by schedule.py
ON_NAN = ("stop", "skip")  # owned by trainer.py
SERIES_TASKS = ("forecast", "tag")  # owned by series.py
MISSING = ("error", "ffill", "interpolate", "drop")  # owned by series.py
CALENDAR_PARTS = ("hour", "week", "year")  # calendar inputs: hour of day, day of week, day of year (series.py)
LOSSES = ("mse", "huber", "gaussian", "quantile")  # losses on numeric targets; owned by losses.py
AUGMENTATIONS = ("stretch", "time-mask", "freq-mask", "warp")  # --augment, labelled sequences trained whole (augment.py)
ANCHORS = ("last", "linear", "none")  # what a series forecast starts from (kinds/series.py)
PRECISIONS = ("fp32", "bf16", "auto")  # owned by device.py; auto: bf16 where the hardware has it
BAD_ROW_RULES = ("skip", "stop")  # what bptt predict does with a row it cannot read
PREDICT_FORMATS = ("auto", "csv", "json")  # bptt predict's output; auto: json for JSON-lines input
REPLACE_RULES = ("better", "always", "never")  # when a run may replace the model at -o (training_run.py)
