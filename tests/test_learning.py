"""The trainer learns: a short run on the sample text beats the unigram baseline by a wide margin."""

import math

import numpy as np
import pytest
import torch

from bptt_cli.models import ModelConfig
from bptt_cli.text import Tokenizer
from bptt_cli.kinds import KINDS, RunSetup
from bptt_cli.kinds.text import TextOptions
from bptt_cli.training_run import train
from bptt_cli.trainer import SilentReporter, TrainConfig
from conftest import SAMPLE_TEXT


def unigram_loss(train_ids: np.ndarray, val_ids: np.ndarray, vocab: int) -> float:
    """Cross-entropy (nats) of the validation tokens under the training tokens' frequencies (add-one)."""
    counts = np.bincount(train_ids, minlength=vocab) + 1.0
    return float(-np.log(counts[val_ids] / counts.sum()).mean())


@pytest.mark.slow
def test_a_short_run_on_the_sample_text_beats_the_unigram_baseline(tmp_path):
    data = tmp_path / "sample.txt"
    data.write_text(SAMPLE_TEXT.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    setup = RunSetup(ModelConfig("lstm", embed=32, hidden=128, layers=1),
                     TrainConfig(window=50, batch_size=32, epochs=1, max_steps=150, lr=1e-2, log_every=50),
                     torch.device("cpu"), SilentReporter())
    result = train(KINDS["text"], data, tmp_path / "m.pt", TextOptions(), setup)
    tokenizer = Tokenizer.fit("char", data.read_text())
    ids, _ = tokenizer.encode(data.read_text())
    cut = len(ids) - round(len(ids) * 0.1)
    baseline = unigram_loss(ids[:cut], ids[cut:], tokenizer.size)
    assert baseline > 3.0  # about 4.8 bits per character
    assert result["best_val_loss"] < baseline - 0.7, (result["best_val_loss"], baseline)
    assert math.isfinite(result["last_train_loss"])
