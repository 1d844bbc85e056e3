"""Integer numerics of the accelerator: every width, fixed-point format and table.

This module is the single source of truth for the arithmetic that the
hardware implements. The integer model (:mod:`golden.int_model`) is written
in these primitives only, and the hardware generator builds its constants and
lookup-table ROMs from the tables here.

Conventions
-----------
- ``>>`` is an arithmetic (floor) shift, as on a two's-complement bus.
- "Round" means round half up: ``(v + 2**(s-1)) >> s``.
- Fixed-point formats are named ``Qn``: a signed integer with ``n`` fraction
  bits. The residual stream, the recurrent state and every dequantized
  projection output are Q16 in 32 bits, saturating. Gate values (sigma, the
  forget gate, the lower bounds) are unsigned Q16 in [0, 65536].
- A per-token scalar (an output scale, a reciprocal) is a :class:`Scalar`: a
  16-bit mantissa normalized to [2**15, 2**16) and a signed exponent.

Where the float model and these primitives part
-----------------------------------------------
- Activation codes are computed from ``z = v * c`` (the input vector times a
  per-channel constant that folds both RMSNorm weights). The codes do not
  depend on the positive per-token RMS factors, so no rsqrt precedes the
  quantizer, and the RMS enters only the output scale.
- The two chained RMSNorms in front of a BitLinear collapse into one over
  ``v * n``: ``rmsnorm(rmsnorm(v, n), g) = (v*n) / rms(v*n) * g`` up to the
  epsilons (1e-6 against a mean square of order one), which are dropped.
- The absmax floor of 1e-5 is dropped: an all-zero input gives all-zero codes
  and a zero output in both models.
- A stage input that is a product of two block-normalized vectors (the
  MLGRU's mixed output and the GLU's product) is normalized with the bound
  :data:`PRODUCT_BOUND` rather than its own absmax. Its largest normalized
  element then has up to 14 bits instead of 15, and fewer where the large
  elements of the two factors fall at different positions. If every
  product is below 2**16, every normalized element is 0 or -1.
- Likewise the residual stream after a residual add is normalized with
  :func:`residual_bound` rather than its own absmax. The bound is the absmax
  before the add plus the largest scaled accumulator that the projection's
  fan-in allows. So the add measures its result as it writes it. On the
  bundled model the stream keeps 3 to 8 fewer of its 15 bits (median 6).
- On the bundled model both bounds change fidelity little: top-1 agreement
  98.57 % against 98.77 % without them, perplexity 0.01 % above the float
  model's (README, Fidelity).
"""

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CODE_MAX", "CODE_BITS", "TRIT_BITS", "TRIT_ENCODING", "ACT_FRAC", "ACT_BITS", "GATE_ONE", "NORM_BITS",
    "PRODUCT_BOUND", "MANT_BITS",
    "Scalar", "saturate", "round_shift", "norm16", "accumulator_bits",
    "scalar_from_int", "scalar_from_float", "scalar_mul", "scalar_rsqrt", "scalar_to_float",
    "apply_scale", "residual_bound", "quantize_codes", "sigma", "silu", "quantize_vector",
    "SIGMA_TABLE", "QUANT_RECIP_TABLE", "RSQRT_TABLE", "tables",
]

# int8 activation codes are symmetric: [-127, 127].
CODE_MAX = 127
CODE_BITS = 8

# On-chip encoding of one trit in two bits; 0b10 is unused and reads as 0.
TRIT_BITS = 2
TRIT_ENCODING = {0: 0b00, 1: 0b01, -1: 0b11}

# Residual stream, recurrent state and dequantized projection outputs: Q16 in int32.
ACT_FRAC = 16
ACT_BITS = 32
ACT_MIN, ACT_MAX = -(1 << (ACT_BITS - 1)), (1 << (ACT_BITS - 1)) - 1

# Gates in unsigned Q16: 1.0 is 65536.
GATE_FRAC = 16
GATE_ONE = 1 << GATE_FRAC

# Vectors entering a BitLinear are block-normalized so that every element is
# a signed 16-bit value; per-channel constants (norm weights) are signed 16
# bits with a per-vector exponent, their absmax in [2**14, 2**15).
NORM_BITS = 16

# The largest |norm16(a) * norm16(b)|: norm16's results lie in [-2**15, 2**15).
# A stage whose input is such a product (the MLGRU's mixed output and the
# GLU's product) normalizes it with this bound instead of its absmax. The
# shift is then known before the product is written, so the vector unit
# computes the stage's statistics in the same pass.
PRODUCT_BOUND = (1 << (NORM_BITS - 1)) ** 2

# Mantissa width of a Scalar.
MANT_BITS = 16
MANT_MIN = 1 << (MANT_BITS - 1)

# Sum of squares of the RMS statistic: w = (vs * n) >> W_SHIFT is at most 17
# bits, so the sum over up to 2**14 channels fits in 48 bits.
W_SHIFT = 15
SUMSQ_BITS = 48

# Sigma: linear interpolation on a table over |x| in [0, 16) with 32 entries
# per unit, applied to a Q16 input. Index = |x| >> 11, fraction = low 11 bits.
SIGMA_ENTRIES = 512
SIGMA_FRAC_BITS = ACT_FRAC - 5
SIGMA_LIMIT = SIGMA_ENTRIES << SIGMA_FRAC_BITS

# Quantization reciprocal: indexed by the top 13 bits of the 16-bit absmax
# mantissa (the leading one included), so 4096 entries. It is read once per
# vector, not per element, so one copy serves every vector lane.
QUANT_INDEX_SHIFT = 3
QUANT_RECIP_SHIFT = 24

# Reciprocal square root: indexed by the top 11 bits of a 16-bit mantissa
# normalized by an even shift to [2**14, 2**16), so 1536 entries.
RSQRT_INDEX_SHIFT = 5
RSQRT_FRAC = 23


def saturate(values, bits=ACT_BITS):
    """Clamp to the range of a signed ``bits``-bit integer."""
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(values, low, high)


def round_shift(values, shift):
    """Shift right by ``shift`` bits with round half up; shift left when ``shift`` is negative."""
    values = np.asarray(values, dtype=np.int64)
    if shift > 0:
        return (values + (np.int64(1) << np.int64(shift - 1))) >> np.int64(shift)
    return values << np.int64(-shift)


def bit_length(value):
    return int(value).bit_length()


def accumulator_bits(fan_in):
    """Return the signed width that contains any sum of ``fan_in`` products of a trit and a code."""
    return bit_length(CODE_MAX * fan_in) + 1


def norm16(values, absmax):
    """Block-normalize a vector to signed 16 bits.

    ``absmax`` is ``max(|values|)``, which the hardware tracks while it writes
    the vector. Returns ``(normalized, shift)`` with ``normalized = values >> shift``
    (a left shift when ``shift`` is negative) and ``-2**15 <= normalized < 2**15``.
    """
    absmax = int(absmax)
    shift = bit_length(absmax) - (NORM_BITS - 1) if absmax else 0
    values = np.asarray(values, dtype=np.int64)
    if shift >= 0:
        return values >> np.int64(shift), shift
    return values << np.int64(-shift), shift


@dataclass(frozen=True)
class Scalar:
    """A positive per-token scalar ``mantissa * 2**exponent``; zero when ``mantissa`` is 0."""
    mantissa: int
    exponent: int

    def __post_init__(self):
        if self.mantissa and not MANT_MIN <= self.mantissa < 2 * MANT_MIN:
            raise ValueError(f"scalar mantissa must be in [{MANT_MIN}, {2 * MANT_MIN}), not {self.mantissa}")


ZERO = Scalar(0, 0)


def scalar_from_int(value):
    """Normalize a non-negative integer to a Scalar, truncating the bits below the mantissa."""
    value = int(value)
    if value < 0:
        raise ValueError(f"scalar_from_int takes a non-negative value, not {value}")
    if value == 0:
        return ZERO
    shift = bit_length(value) - MANT_BITS
    mantissa = value >> shift if shift >= 0 else value << -shift
    return Scalar(mantissa, shift)


def scalar_from_float(value):
    """Round a positive float to the nearest Scalar (used once per model, when it is prepared)."""
    if not (value > 0 and math.isfinite(value)):
        if value == 0:
            return ZERO
        raise ValueError(f"scalar_from_float takes a finite non-negative value, not {value}")
    fraction, exponent = math.frexp(value)          # value = fraction * 2**exponent, fraction in [0.5, 1)
    mantissa = round(fraction * (1 << MANT_BITS))
    exponent -= MANT_BITS
    if mantissa == 1 << MANT_BITS:
        mantissa, exponent = MANT_MIN, exponent + 1
    return Scalar(mantissa, exponent)


def scalar_to_float(scalar):
    return math.ldexp(scalar.mantissa, scalar.exponent)


def scalar_mul(a, b):
    """Multiply two Scalars, truncating the product to 16 mantissa bits."""
    if not a.mantissa or not b.mantissa:
        return ZERO
    product = a.mantissa * b.mantissa                # in [2**30, 2**32)
    if product >> (2 * MANT_BITS - 1):
        return Scalar(product >> MANT_BITS, a.exponent + b.exponent + MANT_BITS)
    return Scalar(product >> (MANT_BITS - 1), a.exponent + b.exponent + MANT_BITS - 1)


def _rsqrt_table():
    first = 1 << (MANT_BITS - 2 - RSQRT_INDEX_SHIFT)
    last = 1 << (MANT_BITS - RSQRT_INDEX_SHIFT)
    half = 1 << (RSQRT_INDEX_SHIFT - 1)
    return np.array([round((1 << RSQRT_FRAC) / math.sqrt((index << RSQRT_INDEX_SHIFT) + half))
                     for index in range(first, last)], dtype=np.int64)


RSQRT_TABLE = _rsqrt_table()
RSQRT_FIRST = 1 << (MANT_BITS - 2 - RSQRT_INDEX_SHIFT)


def scalar_rsqrt(value):
    """Return ``1 / sqrt(value)`` of a non-negative integer as a Scalar, by table lookup.

    ``value`` is normalized by an even shift ``2k`` to ``t`` in [2**14, 2**16);
    the table contains ``2**23 / sqrt(t)`` at the centre of each bucket of 32.
    Zero maps to zero.
    """
    value = int(value)
    if value <= 0:
        return ZERO
    shift = bit_length(value) - MANT_BITS
    shift += shift & 1
    t = value >> shift if shift >= 0 else value << -shift
    mantissa = int(RSQRT_TABLE[(t >> RSQRT_INDEX_SHIFT) - RSQRT_FIRST])
    return Scalar(mantissa, -RSQRT_FRAC - shift // 2)


def residual_bound(absmax, magnitude_bits, scale):
    """Return a bound of ``|saturate(x + apply_scale(acc, scale))|`` that is known before the sum.

    ``absmax`` bounds ``|x|`` and ``|acc| < 2**magnitude_bits``. With a
    mantissa below ``2**MANT_BITS``, ``|acc * scale|`` is below ``2**k`` for
    ``k = magnitude_bits + MANT_BITS + scale.exponent``, and its rounding is at
    most ``2**k``, or 1 where ``k <= 0``. The sum of the two saturates at 2**31.
    """
    exponent = magnitude_bits + MANT_BITS + scale.exponent
    term = 1 << exponent if exponent > 0 else 1
    return min(int(absmax) + term, 1 << (ACT_BITS - 1))


def apply_scale(values, scale):
    """Return ``round(values * scale)`` saturated to the Q16 activation range."""
    values = np.asarray(values, dtype=np.int64)
    if not scale.mantissa:
        return np.zeros_like(values)
    # The product stays below 2**61 for accumulators of up to 45 bits, so a
    # right shift of 62 already rounds every value to 0, and a nonzero
    # product (at least 2**15) shifted left by 20 already saturates: clamping
    # the shift there keeps the result exact and the int64 arithmetic in range.
    shift = min(max(-scale.exponent, -20), 62)
    return saturate(round_shift(values * scale.mantissa, shift))


def _quant_recip_table():
    first = 1 << (MANT_BITS - 1 - QUANT_INDEX_SHIFT)
    half = 1 << (QUANT_INDEX_SHIFT - 1)
    return np.array([round(CODE_MAX * (1 << QUANT_RECIP_SHIFT) / ((index << QUANT_INDEX_SHIFT) + half))
                     for index in range(first, 2 * first)], dtype=np.int64)


QUANT_RECIP_TABLE = _quant_recip_table()
QUANT_FIRST = 1 << (MANT_BITS - 1 - QUANT_INDEX_SHIFT)


def quantize_codes(z, absmax):
    """Return the int8 codes ``round(127 * z / absmax)``, clamped to [-127, 127].

    ``z`` and ``absmax`` are first shifted right together until ``absmax`` has
    16 bits (``absmax`` below 2**15 is used as it is). The quotient is then a
    product with the table entry ``127 * 2**24 / absmax``, rounded half away
    from zero. The entry is exact only at the centre of its bucket of 8, so a
    code is at most one step from exact rounding (under 1 % of random codes
    are, and exact ties may round towards zero).
    """
    z = np.asarray(z, dtype=np.int64)
    absmax = int(absmax)
    if absmax == 0:
        return np.zeros(z.shape, dtype=np.int64)
    shift = max(0, bit_length(absmax) - MANT_BITS)
    top = absmax >> shift
    if top < MANT_MIN:
        # A small absmax: normalize it (and z) left to 16 bits for the lookup.
        left = MANT_BITS - bit_length(top)
        top <<= left
        magnitude = np.abs(z) << np.int64(left)
    else:
        magnitude = np.abs(z) >> np.int64(shift)
    recip = int(QUANT_RECIP_TABLE[(top >> QUANT_INDEX_SHIFT) - QUANT_FIRST])
    codes = np.minimum(round_shift(magnitude * recip, QUANT_RECIP_SHIFT), CODE_MAX)
    return np.where(z < 0, -codes, codes)


def _sigma_table():
    points = [round(GATE_ONE / (1 + math.exp(-index / 32))) for index in range(SIGMA_ENTRIES + 1)]
    base = np.array(points[:-1], dtype=np.int64)
    slope = np.diff(np.array(points, dtype=np.int64))
    return base, slope


SIGMA_BASE, SIGMA_SLOPE = _sigma_table()
SIGMA_TABLE = (SIGMA_BASE, SIGMA_SLOPE)


def sigma(x):
    """Return ``sigmoid(x)`` of Q16 inputs as unsigned Q16 in [0, 65536].

    Linear interpolation between table points 1/32 apart over |x| < 16;
    1.0 beyond. Negative inputs use ``sigmoid(-x) = 1 - sigmoid(x)``.
    """
    x = np.asarray(x, dtype=np.int64)
    magnitude = np.minimum(np.abs(x), SIGMA_LIMIT - 1)
    index = magnitude >> SIGMA_FRAC_BITS
    fraction = magnitude & ((1 << SIGMA_FRAC_BITS) - 1)
    positive = SIGMA_BASE[index] + round_shift(SIGMA_SLOPE[index] * fraction, SIGMA_FRAC_BITS)
    positive = np.where(np.abs(x) >= SIGMA_LIMIT, GATE_ONE, positive)
    return np.where(x < 0, GATE_ONE - positive, positive)


def silu(x):
    """Return ``x * sigmoid(x)`` of Q16 inputs, in Q16."""
    x = np.asarray(x, dtype=np.int64)
    return round_shift(x * sigma(x), GATE_FRAC)


def quantize_vector(values, frac_bits=None):
    """Quantize a float vector to signed 16 bits with a shared exponent.

    Returns ``(ints, exponent)`` with ``values ~= ints * 2**-exponent`` and
    ``max|ints|`` in [2**14, 2**15). With ``frac_bits`` given, that exponent is
    used instead (and the result saturates to 16 bits).
    """
    values = np.asarray(values, dtype=np.float64)
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    if frac_bits is None:
        frac_bits = 0 if peak == 0 else (NORM_BITS - 2) - math.floor(math.log2(peak))
    ints = np.round(np.ldexp(values, frac_bits))
    return saturate(ints, NORM_BITS).astype(np.int64), frac_bits


def tables():
    """Return every lookup table the hardware holds, by name."""
    return {
        "sigma_base": SIGMA_BASE,
        "sigma_slope": SIGMA_SLOPE,
        "quant_recip": QUANT_RECIP_TABLE,
        "rsqrt": RSQRT_TABLE,
    }
