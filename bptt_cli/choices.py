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


# The defaults a data kind gives the bptt train options left untouched (applied by kinds/text.py and
# kinds/series.py), kept here so that bptt train --help shows them without importing torch.

# A language model over a few MB overfits long before a 10-minute budget ends (a 2x256 LSTM on 0.9 MB of
# Shakespeare: the textbook loop's held-out figure worsens with every update it makes): dropout, and the rate
# halved at every validation without a better loss; AWD-LSTM's activation penalties (--ar, --tar) and AdamW's
# decoupled weight decay, and an Adam rate of 3e-3: so regularised, the model goes on improving at a higher rate
# for longer before the plateau halvings. The validation tail is 5 % (char-rnn's split): the text is what the
# model learns from, and 5 % of a few MB is still tens of thousands of tokens to choose the epoch on. Measured
# on a play never trained on: README, "Learning quality". SGD rates are another scale, and nt-asgd keeps its
# rate, so the rate and the schedule are for the Adam family only, and the decay for AdamW only (with Adam and
# SGD it is an L2 term in the gradient, another scale again).
TEXT_DEFAULTS = {"dropout": 0.2, "schedule": "plateau", "ar": 2.0, "tar": 1.0, "weight_decay": 0.1, "lr": 3e-3,
                 "val_fraction": 0.05}

# Defaults that train a series well in a few minutes on 2 cores (README, "Forecast quality"): a small model, and
# epochs enough for early stopping on the chronological validation tail to end the run, not the epoch count.
# The validation tail, the model file and the intervals use an exponential moving average of the weights (its
# figures: README, "Forecast quality"); not with nt-asgd, which averages its own. Half text's Adam rate: the model
# learns what the linear start misses, and 1e-3 forecast every held-out tail measured better than 2e-3.
SERIES_DEFAULTS = {"hidden": 64, "layers": 1, "window": 48, "epochs": 500, "average": "ema:0.99", "lr": 1e-3}
SERIES_PATIENCE = 20  # validations (one per epoch) without a better loss; only where there is a validation tail

# Sequences with one label each train whole (--window 0) for about this many updates when --epochs is left at its
# default: ten epochs of the README's vowels (243 utterances) and spoken words (60 recordings) are 80 and 20
# updates, and both documented commands make about 1,000. A set of 3,200 or more keeps the ten epochs.
WHOLE_SEQUENCE_UPDATES = 1000

# WAV recordings with one label each (spoken words and other short sounds): per-recording mean and variance
# normalisation and deltas (what a voice or a channel adds to every frame taken out), silence trimmed so the last
# frame is the sound's end, every frame trained on the label, stretch/mask/warp augmentation, averaged weights.
# Trained on one voice and scored on seven others (README, "Defaults for sequences with one label each"), bptt's
# plain defaults reached 15 % on the digits and 20 % on ten command words; with these, 95.7 % and 97.3 %.
LABELLED_WAV_DEFAULTS = {"cmvn": True, "deltas": True, "trim_db": 40.0, "target_replication": True,
                         "augment": "stretch,time-mask,freq-mask,warp=0.3", "average": "ema:0.99"}
