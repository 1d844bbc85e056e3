"""Bit-exact integer model: the arithmetic the accelerator implements.

A decoding step is a sequence of *stages*. A stage takes one input vector
``v`` (the residual stream, or a vector the previous steps produced), its
absmax, and a per-channel norm constant ``n``, and quantizes ``v`` for the one
to three projections that read it. Per layer there are four stages:

============  ===================================  =====================
stage         input vector                         projections
============  ===================================  =====================
``attn``      residual ``x``, ``n = attn_norm``     f, i, g
``out``       ``g_acc * silu(h)``, ``n = g_norm``   o
``mlp``       residual ``x``, ``n = mlp_norm``      gate (2I rows)
``down``      ``silu(gate) * up``, ``n = 1``        down
============  ===================================  =====================

and one ``head`` stage (``n = final norm``) at the end. Everything is integer
(NumPy int64); the only float is in :func:`prepare`, which runs once per model.
"""

from dataclasses import dataclass, field

import numpy as np

from . import numerics as nx
from .config import ModelConfig
from .float_model import lower_bounds, ternarize

__all__ = ["Projection", "Stage", "IntParams", "IntModel", "StepResult", "prepare", "stage_layout"]


@dataclass
class Projection:
    """One BitLinear in integer form.

    ``trits`` (int8, rows x cols), ``beta`` (the float absmean scale, kept for
    reference), ``c`` (int16 per input channel: the norm weight of the stage
    times the projection's own norm weight, exponent ``c_exp``) and the output
    scale constant ``k`` (a :class:`~golden.numerics.Scalar`).
    """
    name: str
    trits: np.ndarray
    beta: float
    c: np.ndarray
    c_exp: int
    k: nx.Scalar

    def __post_init__(self):
        fan_in = self.trits.shape[1]
        if nx.CODE_MAX * fan_in >= 1 << 24:
            raise ValueError(f"projection {self.name}: fan-in {fan_in} is too large for exact "
                             f"float32 accumulation (at most {((1 << 24) - 1) // nx.CODE_MAX})")
        self.matrix = self.trits.astype(np.float32)

    def accumulate(self, codes):
        """Return the integer accumulators ``trits @ codes`` (exact)."""
        return (self.matrix @ np.asarray(codes, dtype=np.float32)).astype(np.int64)


@dataclass
class Stage:
    """Quantization of one input vector for the projections that read it."""
    name: str
    n: np.ndarray
    n_exp: int
    projections: list


def stage_layout(config: ModelConfig):
    """Return ``[(stage name, norm tensor name or None, [projection names])]`` in step order."""
    layout = []
    for layer in range(config.num_layers):
        p = f"model.layers.{layer}"
        layout += [
            (f"{p}.attn", f"{p}.attn_norm.weight",
             [f"{p}.attn.f_proj", f"{p}.attn.i_proj", f"{p}.attn.g_proj"]),
            (f"{p}.out", f"{p}.attn.g_norm.weight", [f"{p}.attn.o_proj"]),
            (f"{p}.mlp", f"{p}.mlp_norm.weight", [f"{p}.mlp.gate_proj"]),
            (f"{p}.down", None, [f"{p}.mlp.down_proj"]),
        ]
    layout.append(("head", "model.norm.weight", ["lm_head"]))
    return layout


@dataclass
class IntParams:
    """Everything the integer model needs, and exactly what a model image contains."""
    config: ModelConfig
    embeddings: np.ndarray          # int16, V x H
    embed_exp: int                  # embeddings ~= ints * 2**-embed_exp
    lower_bounds: np.ndarray        # unsigned Q16, L x H
    stages: list = field(default_factory=list)

    def projection(self, name):
        for stage in self.stages:
            for proj in stage.projections:
                if proj.name == name:
                    return proj
        raise KeyError(name)


def output_constant(beta, fan_in, n_exp, c_exp):
    """Return the Scalar ``K`` with ``output_q16 = acc * K * absmax(z) / sqrt(sumsq)``.

    With ``w = (vs * n) >> 15`` and ``z = vs * c``, the float output
    ``acc * beta * max|y| / 127`` becomes
    ``acc * beta * sqrt(N) / 127 * 2**(n_exp - c_exp - 15) * absmax(z) / sqrt(sumsq)``;
    one more factor of 2**16 gives Q16.
    """
    value = float(beta) * float(np.sqrt(fan_in)) / nx.CODE_MAX * 2.0 ** (n_exp - c_exp - nx.W_SHIFT + nx.ACT_FRAC)
    return nx.scalar_from_float(value)


def prepare(config: ModelConfig, tensors):
    """Derive :class:`IntParams` from a checkpoint's float tensors."""
    embeddings, embed_exp = nx.quantize_vector(tensors["model.embeddings.weight"])
    bounds = lower_bounds(tensors.get("model.lower_bounds"), config.num_layers, config.hidden_size)
    bounds_q16 = np.clip(np.round(bounds.astype(np.float64) * nx.GATE_ONE), 0, nx.GATE_ONE - 1).astype(np.int64)

    stages = []
    for stage_name, norm_name, proj_names in stage_layout(config):
        fan_in = tensors[f"{proj_names[0]}.weight"].shape[1]
        norm = tensors[norm_name].astype(np.float64) if norm_name else np.ones(fan_in)
        n, n_exp = nx.quantize_vector(norm)
        projections = []
        for name in proj_names:
            trits, beta = ternarize(tensors[f"{name}.weight"])
            c, c_exp = nx.quantize_vector(norm * tensors[f"{name}.norm.weight"].astype(np.float64))
            k = output_constant(beta, fan_in, n_exp, c_exp)
            projections.append(Projection(name, trits, float(beta), c, c_exp, k))
        stages.append(Stage(stage_name, n, n_exp, projections))
    return IntParams(config, embeddings, embed_exp, bounds_q16, stages)


@dataclass
class StepResult:
    """Result of one integer decoding step."""
    token: int                       # argmax of the head accumulators (lowest index on ties)
    head_acc: np.ndarray             # int64, V
    head_scale: nx.Scalar            # Q16 logits = head_acc * head_scale
    states: np.ndarray               # int64, L x H, Q16
    trace: dict

    @property
    def logits(self):
        """The head's dequantized logits as float64 (for cross-entropy and sampling)."""
        return self.head_acc * nx.scalar_to_float(self.head_scale) / nx.GATE_ONE


class IntModel:
    """The integer model of one :class:`IntParams`, stepping one token at a time."""

    def __init__(self, params: IntParams):
        self.params = params
        self.config = params.config
        self.reset()

    def reset(self):
        """Clear the recurrent state of every layer."""
        self.state = np.zeros((self.config.num_layers, self.config.hidden_size), dtype=np.int64)

    def embed(self, token):
        """Return the Q16 residual for ``token``."""
        return nx.round_shift(self.params.embeddings[token], self.params.embed_exp - nx.ACT_FRAC)

    def run_stage(self, stage, v, trace=None, absmax=None):
        """Quantize ``v`` for each projection of ``stage``; return ``[(acc, scale)]``.

        ``v`` is block-normalized with ``absmax``, an upper bound of its
        magnitudes, or with its own absmax when ``absmax`` is None.
        """
        peak = int(np.max(np.abs(v)))
        if absmax is not None and absmax < peak:
            raise ValueError(f"stage {stage.name}: the bound {absmax} is below the input's absmax {peak}")
        vs, _ = nx.norm16(v, peak if absmax is None else absmax)
        w = (vs * stage.n) >> nx.W_SHIFT
        sumsq = int(np.sum(w * w))
        rsqrt = nx.scalar_rsqrt(sumsq)
        results = []
        for proj in stage.projections:
            z = vs * proj.c
            absmax = int(np.max(np.abs(z)))
            codes = nx.quantize_codes(z, absmax)
            acc = proj.accumulate(codes)
            scale = nx.scalar_mul(nx.scalar_mul(proj.k, nx.scalar_from_int(absmax)), rsqrt)
            if trace is not None:
                trace[proj.name] = {"codes": codes, "acc": acc, "absmax": absmax,
                                    "sumsq": sumsq, "scale": scale}
            results.append((acc, scale))
        if trace is not None:
            trace[stage.name] = {"input": np.asarray(v, dtype=np.int64), "sumsq": sumsq}
        return results

    def step(self, token, trace=False):
        """Run one decoding step for ``token``."""
        config = self.config
        if not isinstance(token, (int, np.integer)) or not 0 <= token < config.vocab_size:
            raise ValueError(f"token id {token!r} is outside the vocabulary 0..{config.vocab_size - 1}")
        record = {} if trace else None
        stages = iter(self.params.stages)
        I = config.intermediate_size

        x = self.embed(int(token))
        # The bound of x after a residual add (None: x's absmax, after EMBED).
        bound = None
        hidden_bits = nx.bit_length(nx.CODE_MAX * config.hidden_size)
        intermediate_bits = nx.bit_length(nx.CODE_MAX * I)
        for layer in range(config.num_layers):
            (acc_f, scale_f), (acc_i, scale_i), (acc_g, _) = self.run_stage(next(stages), x, record, bound)
            lb = self.params.lower_bounds[layer]
            f = lb + nx.round_shift((nx.GATE_ONE - lb) * nx.sigma(nx.apply_scale(acc_f, scale_f)), nx.GATE_FRAC)
            u = nx.round_shift(nx.silu(nx.apply_scale(acc_i, scale_i)) * (nx.GATE_ONE - f), nx.GATE_FRAC)
            h = nx.saturate(nx.round_shift(f * self.state[layer], nx.GATE_FRAC) + u)
            self.state[layer] = h
            silu_h = nx.silu(h)
            mixed = (nx.norm16(acc_g, np.max(np.abs(acc_g)))[0]
                     * nx.norm16(silu_h, np.max(np.abs(silu_h)))[0])

            ((acc_o, scale_o),) = self.run_stage(next(stages), mixed, record, absmax=nx.PRODUCT_BOUND)
            bound = nx.residual_bound(np.max(np.abs(x)), hidden_bits, scale_o)
            x = nx.saturate(x + nx.apply_scale(acc_o, scale_o))

            ((acc_gu, scale_gu),) = self.run_stage(next(stages), x, record, bound)
            gate = nx.silu(nx.apply_scale(acc_gu[:I], scale_gu))
            up = acc_gu[I:]
            product = nx.norm16(gate, np.max(np.abs(gate)))[0] * nx.norm16(up, np.max(np.abs(up)))[0]

            ((acc_d, scale_d),) = self.run_stage(next(stages), product, record, absmax=nx.PRODUCT_BOUND)
            bound = nx.residual_bound(np.max(np.abs(x)), intermediate_bits, scale_d)
            x = nx.saturate(x + nx.apply_scale(acc_d, scale_d))
            if record is not None:
                record[f"model.layers.{layer}"] = {"forget": f, "state": h.copy(), "mixed": mixed,
                                                   "product": product, "residual": x.copy()}

        ((acc_head, scale_head),) = self.run_stage(next(stages), x, record, bound)
        return StepResult(int(np.argmax(acc_head)), acc_head, scale_head, self.state.copy(), record or {})
