"""The float reference against hand-computed cases and an independent loop implementation."""

import math

import numpy as np
import pytest

from golden.checkpoint import load_checkpoint
from golden.config import ModelConfig
from golden.float_model import FloatModel, lower_bounds, round_half_away, ternarize
from golden.synthetic import random_tensors


def test_round_half_away_from_zero():
    values = np.array([0.5, -0.5, 1.5, -1.5, 2.5, 0.49, -2.51], dtype=np.float32)
    assert round_half_away(values).tolist() == [1, -1, 2, -2, 3, 0, -3]


def test_ternarize_rounds_half_to_even():
    # mean |W| = 1, so W / beta is exactly 0.5, 1.5, -0.5, -1.5.
    trits, beta = ternarize(np.array([[0.5, 1.5], [-0.5, -1.5]], dtype=np.float32))
    assert beta == 1.0
    assert trits.tolist() == [[0, 1], [0, -1]]


def test_ternarize_clamps_and_scales():
    trits, beta = ternarize(np.array([[0.5, -0.25], [0.0, 1.0]], dtype=np.float32))
    assert beta == pytest.approx(0.4375)
    assert trits.tolist() == [[1, -1], [0, 1]]


def test_ternarize_beta_floor():
    trits, beta = ternarize(np.zeros((2, 3), dtype=np.float32))
    assert beta == pytest.approx(1e-5)
    assert not trits.any()


def test_lower_bounds_by_hand():
    bounds = lower_bounds(np.zeros((2, 1), dtype=np.float32), 2, 1)
    assert bounds[:, 0].tolist() == pytest.approx([0.0, 0.5])
    raw = np.array([[0.0], [math.log(3.0)]], dtype=np.float32)
    # softmax over layers = [1/4, 3/4]; cumsum - first = [0, 3/4].
    assert lower_bounds(raw, 2, 1)[:, 0].tolist() == pytest.approx([0.0, 0.75])


def test_bitlinear_by_hand():
    config = ModelConfig(vocab_size=4, hidden_size=4, intermediate_size=4, num_layers=1)
    tensors = random_tensors(config, seed=0)
    weight = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [-1, 0, 1, 1], [0, 0, 0, 0]], dtype=np.float32)
    tensors["lm_head.weight"] = weight * 0.5
    tensors["lm_head.norm.weight"] = np.ones(4, dtype=np.float32)
    model = FloatModel(config, tensors)

    x = np.array([1.0, -2.0, 3.0, 0.0], dtype=np.float32)
    # rms = sqrt(14/4); m = 3/rms; codes = round(127 * x / 3) = [42, -85, 127, 0].
    beta = 0.5 * 6 / 16       # six nonzero entries of 0.5 among 16
    m = 3 / math.sqrt(3.5)
    expected = np.array([42, -85 + 127, -42 + 127, 0]) * beta * m / 127
    assert model.bitlinear("lm_head", x) == pytest.approx(expected, rel=1e-5)


def _loop_reference(config, tensors, tokens):
    """An independent, loop-by-loop transcription of the decoding step."""
    H, I, eps = config.hidden_size, config.intermediate_size, config.rms_norm_eps

    def norm(v, w):
        scale = 1 / math.sqrt(sum(e * e for e in v) / len(v) + eps)
        return [e * scale * g for e, g in zip(v, w)]

    def bitlinear(name, v):
        latent = tensors[name + ".weight"].astype(np.float64)
        beta = max(float(np.mean(np.abs(tensors[name + ".weight"]))), 1e-5)
        y = norm(v, tensors[name + ".norm.weight"])
        m = max(max(abs(e) for e in y), 1e-5)
        codes = [max(-128, min(127, math.copysign(math.floor(abs(127 * e / m) + 0.5), e))) for e in y]
        out = []
        for row in latent:
            acc = 0
            for weight, code in zip(row, codes):
                acc += max(-1, min(1, round(weight / beta))) * code
            out.append(acc * beta * m / 127)
        return out

    def sig(v):
        return 1 / (1 + math.exp(-v))

    raw = tensors["model.lower_bounds"].astype(np.float64)
    soft = np.exp(raw) / np.exp(raw).sum(axis=0)
    bounds = np.cumsum(soft, axis=0) - soft[0]
    state = [[0.0] * H for _ in range(config.num_layers)]
    outputs = []
    for token in tokens:
        x = list(tensors["model.embeddings.weight"][token].astype(np.float64))
        for layer in range(config.num_layers):
            p = f"model.layers.{layer}"
            a = norm(x, tensors[f"{p}.attn_norm.weight"])
            f = [sig(e) for e in bitlinear(f"{p}.attn.f_proj", a)]
            f = [lb + (1 - lb) * e for lb, e in zip(bounds[layer], f)]
            i = bitlinear(f"{p}.attn.i_proj", a)
            state[layer] = [fe * h + ie * sig(ie) * (1 - fe) for fe, h, ie in zip(f, state[layer], i)]
            g = norm(bitlinear(f"{p}.attn.g_proj", a), tensors[f"{p}.attn.g_norm.weight"])
            o = [ge * h * sig(h) for ge, h in zip(g, state[layer])]
            x = [a + b for a, b in zip(x, bitlinear(f"{p}.attn.o_proj", o))]
            gu = bitlinear(f"{p}.mlp.gate_proj", norm(x, tensors[f"{p}.mlp_norm.weight"]))
            mixed = [e * sig(e) * u for e, u in zip(gu[:I], gu[I:])]
            x = [a + b for a, b in zip(x, bitlinear(f"{p}.mlp.down_proj", mixed))]
        outputs.append(bitlinear("lm_head", norm(x, tensors["model.norm.weight"])))
    return np.array(outputs)


def test_step_matches_loop_transcription():
    config = ModelConfig(vocab_size=11, hidden_size=6, intermediate_size=10, num_layers=2)
    tensors = random_tensors(config, seed=3)
    model = FloatModel(config, tensors)
    tokens = [1, 4, 9, 0, 10]
    ours = np.array([model.step(t) for t in tokens])
    reference = _loop_reference(config, tensors, tokens)
    assert np.allclose(ours, reference, rtol=1e-3, atol=1e-4)


def test_reset_clears_state():
    config = ModelConfig(vocab_size=11, hidden_size=6, intermediate_size=10, num_layers=2)
    model = FloatModel(config, random_tensors(config, seed=3))
    first = model.step(3)
    model.step(5)
    model.reset()
    assert np.array_equal(model.step(3), first)


def test_token_outside_vocabulary(odd_checkpoint):
    model = FloatModel(*load_checkpoint(odd_checkpoint))
    with pytest.raises(ValueError, match=r"token id 1000 is outside the vocabulary 0\.\.999"):
        model.step(1000)
