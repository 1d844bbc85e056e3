"""Float reference of the released MatMul-free LM checkpoints.

One recurrent decoding step in fp32, exactly as the released ``hgrn_bit``
code computes it: ternarized weights, per-token int8 activation codes rounded
half away from zero, the double RMSNorm in front of every BitLinear, the
per-layer lower bounds on the forget gates, the ``rmsnorm(g) * silu(h)``
output gate and the ternary LM head.
"""

from dataclasses import dataclass

import numpy as np

from .config import ModelConfig

__all__ = ["ternarize", "round_half_away", "rmsnorm", "sigmoid", "silu", "lower_bounds",
           "FloatModel", "Ternary"]


def round_half_away(values):
    """Round to the nearest integer, ties away from zero (the fused GPU kernel's rounding)."""
    return np.sign(values) * np.floor(np.abs(values) + np.float32(0.5))


def rmsnorm(x, weight, eps):
    x = x.astype(np.float32)
    return x / np.sqrt(np.mean(x * x, dtype=np.float32) + np.float32(eps)) * weight


def sigmoid(x):
    return np.float32(1) / (np.float32(1) + np.exp(-x, dtype=np.float32))


def silu(x):
    return x * sigmoid(x)


@dataclass
class Ternary:
    """A ternarized projection: trits ``T`` (int8, out x in) and the per-tensor scale ``beta``."""
    trits: np.ndarray
    beta: float
    norm: np.ndarray

    def __post_init__(self):
        # float32 matrix products of trits and int8 codes are exact while every
        # partial sum stays below 2**24, which holds for fan-ins up to 132k.
        self.matrix = self.trits.astype(np.float32)


def ternarize(weight):
    """Return ``(trits, beta)``: per-tensor absmean scale, round half to even, clamp to [-1, 1]."""
    weight = weight.astype(np.float32)
    beta = max(float(np.mean(np.abs(weight), dtype=np.float32)), 1e-5)
    trits = np.clip(np.round(weight / np.float32(beta)), -1, 1).astype(np.int8)
    return trits, np.float32(beta)


def lower_bounds(raw, num_layers, hidden_size):
    """Return the L x H forget-gate lower bounds: softmax over layers, cumsum, minus the first."""
    if raw is None:
        return np.zeros((num_layers, hidden_size), dtype=np.float32)
    raw = raw.astype(np.float32)
    shifted = np.exp(raw - raw.max(axis=0, keepdims=True))
    softmax = shifted / shifted.sum(axis=0, keepdims=True)
    return (np.cumsum(softmax, axis=0) - softmax[0]).astype(np.float32)


class FloatModel:
    """The fp32 reference of one model, stepping one token at a time.

    Parameters
    ----------
    config : ModelConfig
    tensors : dict of str to numpy.ndarray
        The checkpoint's latent weights, as :func:`golden.checkpoint.load_checkpoint` returns them.
    """

    def __init__(self, config: ModelConfig, tensors):
        self.config = config
        self.eps = np.float32(config.rms_norm_eps)
        self.embeddings = tensors["model.embeddings.weight"].astype(np.float32)
        self.projections = {}
        for name, _, _ in config.projections:
            trits, beta = ternarize(tensors[f"{name}.weight"])
            self.projections[name] = Ternary(trits, beta, tensors[f"{name}.norm.weight"].astype(np.float32))
        self.tensors = tensors
        self.lower_bounds = lower_bounds(tensors.get("model.lower_bounds"), config.num_layers,
                                         config.hidden_size)
        self.reset()

    def reset(self):
        """Clear the recurrent state of every layer, as at the start of a sequence."""
        self.state = np.zeros((self.config.num_layers, self.config.hidden_size), dtype=np.float32)

    def quantize(self, x, norm):
        """Return the int8 codes and the absmax ``m`` of ``rmsnorm(x, norm)``."""
        y = rmsnorm(x, norm, self.eps)
        m = max(float(np.max(np.abs(y))), 1e-5)
        codes = np.clip(round_half_away(np.float32(127) * y / np.float32(m)), -128, 127)
        return codes.astype(np.float32), np.float32(m)

    def bitlinear(self, name, x):
        proj = self.projections[name]
        codes, m = self.quantize(x, proj.norm)
        return (proj.matrix @ codes) * proj.beta * m / np.float32(127)

    def step(self, token):
        """Run one decoding step for ``token``; return the logits (float32, length V)."""
        config, eps, t = self.config, self.eps, self.tensors
        if not 0 <= token < config.vocab_size:
            raise ValueError(f"token id {token} is outside the vocabulary 0..{config.vocab_size - 1}")
        x = self.embeddings[token].copy()
        I = config.intermediate_size
        for layer in range(config.num_layers):
            p = f"model.layers.{layer}"
            a = rmsnorm(x, t[f"{p}.attn_norm.weight"], eps)
            f = sigmoid(self.bitlinear(f"{p}.attn.f_proj", a))
            lb = self.lower_bounds[layer]
            f = lb + (np.float32(1) - lb) * f
            u = silu(self.bitlinear(f"{p}.attn.i_proj", a)) * (np.float32(1) - f)
            self.state[layer] = f * self.state[layer] + u
            g = self.bitlinear(f"{p}.attn.g_proj", a)
            o = rmsnorm(g, t[f"{p}.attn.g_norm.weight"], eps) * silu(self.state[layer])
            x = x + self.bitlinear(f"{p}.attn.o_proj", o)

            b = rmsnorm(x, t[f"{p}.mlp_norm.weight"], eps)
            gate_up = self.bitlinear(f"{p}.mlp.gate_proj", b)
            x = x + self.bitlinear(f"{p}.mlp.down_proj", silu(gate_up[:I]) * gate_up[I:])
        return self.bitlinear("lm_head", rmsnorm(x, t["model.norm.weight"], eps))
