"""Sampling: reproducible, greedy at temperature 0, one recurrent step per new token."""

import pytest
import torch

from bptt_cli.errors import BpttError
from bptt_cli.generation import generate, next_token
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.text import Tokenizer

TEXT = "the quick brown fox jumps over the lazy dog\n"


@pytest.fixture
def setup():
    tokenizer = Tokenizer.fit("char", TEXT)
    model = RecurrentModel(ModelConfig("lstm", tokenizer.size, tokenizer.size, embed=8, hidden=16, layers=2))
    return model, tokenizer


def text(model, tokenizer, **kw):
    return "".join(generate(model, tokenizer, kw.pop("prime", "the "), kw.pop("length", 60), **kw))


def test_same_seed_same_text_other_seed_other_text(setup):
    a = text(*setup, temperature=1.0, seed=3)
    assert a == text(*setup, temperature=1.0, seed=3)
    assert a != text(*setup, temperature=1.0, seed=4)
    assert len(a) == 60


def test_temperature_zero_is_greedy_and_ignores_the_seed(setup):
    assert text(*setup, temperature=0, seed=1) == text(*setup, temperature=0, seed=2)


def test_top_k_one_equals_greedy(setup):
    assert text(*setup, temperature=1.0, top_k=1, seed=5) == text(*setup, temperature=0)


def test_top_p_keeps_only_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    g = torch.Generator().manual_seed(0)
    picks = {int(next_token(logits, 1.0, 0, 0.75, g)) for _ in range(300)}
    assert picks == {0, 1}


def test_each_new_token_costs_one_recurrent_step(setup):
    model, tokenizer = setup
    steps = []
    recur = model.recur

    def counting(x, state):
        steps.append(x.shape[0])
        return recur(x, state)

    model.recur = counting
    for length in (10, 200):
        steps.clear()
        list(generate(model, tokenizer, "the ", length))
        assert steps[0] == 4  # the prime, once
        assert steps[1:] == [1] * (length - 1)  # then one step per token, never the prefix again


def test_a_prime_outside_the_vocabulary_names_the_characters(setup):
    with pytest.raises(BpttError, match=r"'Z', 'é'"):
        generate(*setup, prime="theZé", length=5)


@pytest.mark.parametrize("kw, option", [({"temperature": -1}, "--temperature"), ({"top_p": 0}, "--top-p"),
                                        ({"top_k": -2}, "--top-k")])
def test_bad_sampling_values_are_refused_before_any_output(setup, kw, option):
    with pytest.raises(BpttError, match=option):
        generate(*setup, prime="the", length=5, **kw)
