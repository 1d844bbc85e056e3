"""Integer model: determinism, fidelity to the float model, identities it relies on."""

import re

import numpy as np
import pytest

from golden.checkpoint import load_checkpoint
from golden.config import ModelConfig
from golden.float_model import FloatModel
from golden.int_model import IntModel, prepare
from golden.synthetic import random_tensors


@pytest.fixture(scope="module")
def odd_models(odd_checkpoint):
    config, tensors = load_checkpoint(odd_checkpoint)
    return config, tensors, FloatModel(config, tensors), prepare(config, tensors)


def test_agrees_with_float_model(odd_models):
    config, _, float_model, params = odd_models
    int_model = IntModel(params)
    float_model.reset()
    tokens = np.random.default_rng(5).integers(0, config.vocab_size, 60)
    agree = 0
    for token in tokens:
        logits = float_model.step(int(token))
        result = int_model.step(int(token))
        agree += int(np.argmax(logits) == result.token)
        assert np.max(np.abs(result.states / 65536 - float_model.state)) < 0.01
    assert agree / len(tokens) >= 0.95


def test_deterministic_to_the_bit(odd_models):
    params = odd_models[3]
    runs = []
    for _ in range(2):
        model = IntModel(params)
        runs.append([model.step(t) for t in (3, 999, 0, 17)])
    for first, second in zip(*runs):
        assert first.token == second.token
        assert np.array_equal(first.head_acc, second.head_acc)
        assert np.array_equal(first.states, second.states)


def test_argmax_is_head_accumulator_argmax(odd_models):
    model = IntModel(odd_models[3])
    result = model.step(42)
    assert result.token == int(np.argmax(result.head_acc))
    # The head's scale is positive, so it cannot move the argmax.
    assert result.token == int(np.argmax(result.logits))


def test_codes_ignore_positive_input_scale(odd_models):
    model = IntModel(odd_models[3])
    stage = model.params.stages[0]
    x = model.embed(5)
    trace_a, trace_b = {}, {}
    model.run_stage(stage, x, trace_a)
    model.run_stage(stage, x * 8, trace_b)
    for proj in stage.projections:
        assert np.array_equal(trace_a[proj.name]["codes"], trace_b[proj.name]["codes"])


def test_reset_restores_first_step(odd_models):
    model = IntModel(odd_models[3])
    first = model.step(7)
    model.step(8)
    model.reset()
    again = model.step(7)
    assert np.array_equal(first.head_acc, again.head_acc)


@pytest.mark.parametrize("token", [-1, 1000, 2**40, 5.0, "7"])
def test_token_outside_vocabulary(odd_models, token):
    model = IntModel(odd_models[3])
    with pytest.raises(ValueError, match=rf"^token id {re.escape(repr(token))} is outside the vocabulary 0\.\.999$"):
        model.step(token)


def test_state_saturates_instead_of_wrapping():
    config = ModelConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_layers=1)
    tensors = random_tensors(config, seed=2)
    tensors["model.embeddings.weight"] *= 1000.0
    model = IntModel(prepare(config, tensors))
    model.state[:] = 2**31 - 1
    result = model.step(1)
    assert result.states.max() <= 2**31 - 1
    assert result.states.min() >= -(2**31)


def test_all_zero_weights_give_zero_accumulators():
    config = ModelConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_layers=2)
    tensors = {name: np.zeros_like(value) for name, value in random_tensors(config, seed=2).items()}
    result = IntModel(prepare(config, tensors)).step(3)
    assert not result.head_acc.any()
    assert result.token == 0
