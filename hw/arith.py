"""Pipelined arithmetic of the vector unit: sigma, SiLU, output scaling, quantization, block normalization.

Each component is bit-exact with its function in :mod:`golden.numerics` and
builds its lookup-table ROM from the table there. All of them are free-running
pipelines: one input per cycle, a fixed latency in cycles (the ``latency``
property), and no stall or valid signal, so a user delays its own valid flag
by ``latency`` cycles. Inputs feed logic directly and every output is a
register.

The plain functions (:func:`saturate`, :func:`bit_length`,
:func:`shift_window`, :func:`norm16_shift` and others) return Amaranth
expressions for use inside other components.
"""

import numpy as np

from amaranth.hdl import Array, C, Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from golden import numerics as nx

__all__ = [
    "SCALAR_EXPONENT_BITS", "ScalarLayout", "GATE_SHAPE",
    "saturation_limit", "saturate", "leading_one", "bit_length", "signed_leading_one",
    "window_offset", "shift_window", "window_fits",
    "normalize_mantissa", "norm16_shift", "delayed",
    "Sigma", "Silu", "ApplyScale", "QuantizeCode", "Norm16",
]

# Width of a Scalar exponent in hardware, so exponents lie in [-512, 511].
# scalar_from_int and scalar_rsqrt of 48-bit operands give exponents in
# [-15, 32] and [-39, -16]. The output scales of the random-weight model in
# tests/test_hw_scalar.py and their intermediate products stay in [-31, 14].
SCALAR_EXPONENT_BITS = 10

ScalarLayout = data.StructLayout({
    "mantissa": unsigned(nx.MANT_BITS),
    "exponent": signed(SCALAR_EXPONENT_BITS),
})
"""A :class:`golden.numerics.Scalar`: ``mantissa * 2**exponent``, zero when ``mantissa`` is 0."""

# Unsigned Q16 gate values in [0, 65536] need 17 bits.
GATE_SHAPE = Shape.cast(range(nx.GATE_ONE + 1))

ACT_SHAPE = signed(nx.ACT_BITS)


def _check_width(name, value, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}, not {value}")


def _table_shape(table):
    """Return the narrowest shape that contains every entry of ``table``."""
    return Shape.cast(range(int(np.min(table)), int(np.max(table)) + 1))


def saturation_limit(negative, bits):
    """Return the most negative ``signed(bits)`` value when ``negative`` is 1, the most positive otherwise."""
    return Mux(negative, Const(-(1 << (bits - 1)), signed(bits)), Const((1 << (bits - 1)) - 1, signed(bits)))


def saturate(value, bits):
    """Clamp ``value`` to the range of a signed ``bits``-bit integer.

    Returns a ``signed(bits)`` expression. A narrower value is sign- or
    zero-extended.
    """
    value = Value.cast(value)
    if not value.shape().signed:
        value = Cat(value, C(0, 1)).as_signed()
    if len(value) <= bits:
        return Cat(value, value[-1].replicate(bits - len(value))).as_signed()

    # The value fits when the bits from bits-1 up are all copies of the sign.
    top = value[bits - 1:]
    fits = (top == 0) | (top == (1 << len(top)) - 1)
    return Mux(fits, value[:bits].as_signed(), saturation_limit(value[-1], bits))


def leading_one(value):
    """Return ``(index of the highest set bit, whether any bit is set)`` of an unsigned value.

    The index is a balanced multiplexer tree, log2(width) levels deep, and
    is 0 when no bit is set.
    """
    value = Value.cast(value)
    if len(value) == 1:
        return C(0, 0), value[0]
    half = 1 << (ceil_log2(len(value)) - 1)
    low_index, low_any = leading_one(value[:half])
    high_index, high_any = leading_one(value[half:])
    index = Cat(Mux(high_any, high_index, low_index)[:ceil_log2(half)], high_any)
    return index, low_any | high_any


def bit_length(value):
    """Return the bit length of an unsigned value (Python's ``int.bit_length``), 0 for 0."""
    value = Value.cast(value)
    if value.shape().signed:
        raise TypeError(f"bit_length takes an unsigned value, not one of shape {value.shape()!r}")
    index, nonzero = leading_one(value)
    return Mux(nonzero, index + 1, 0)


def window_offset(shift, width, bits):
    """Return the offset that :func:`shift_window` takes for a signed ``shift`` of any value.

    A right shift past ``width - 1`` leaves only the sign, so it is clamped
    there, and a left shift by ``bits`` or more is clamped to ``bits``
    because it fits only for 0 either way. The offset is in
    [0, width + bits - 1].
    """
    shift = Value.cast(shift)
    clamped = Mux(shift > width - 1, width - 1, Mux(shift < -bits, -bits, shift))
    return (clamped + bits)[:ceil_log2(width + bits)]


def shift_window(value, offset, bits):
    """Return the low ``bits`` bits of ``floor(value * 2**-shift)`` for a signed ``value``, as ``signed(bits)``.

    ``offset`` is ``window_offset(shift, len(value), bits)``. One funnel
    shifter with ``bits`` outputs serves both directions, and
    :func:`window_fits` returns whether the whole result fits.
    """
    value = Value.cast(value)
    sign = value[-1]
    funnel = Cat(C(0, bits), value, sign.replicate(bits - 1))
    return funnel.bit_select(offset, bits).as_signed()


def signed_leading_one(value):
    """Return :func:`leading_one` of ``value ^ sign`` for a signed ``value``: the highest bit that differs from the sign."""
    value = Value.cast(value)
    return leading_one(value.as_unsigned() ^ value[-1].replicate(len(value)))


def window_fits(index, differs, zero, offset):
    """Return whether the result of :func:`shift_window` fits its ``bits``.

    ``(index, differs)`` is ``signed_leading_one(value)`` and ``zero`` whether
    ``value`` is 0. The result fits when ``value`` needs at most
    ``bits + shift = offset`` signed bits, that is ``index + 1 < offset``
    where a bit differs from the sign. Otherwise ``value`` is 0 or -1, and
    it fits unless the shift is a left shift by ``bits`` (offset 0), which
    only 0 survives. Where the result does not fit, the caller saturates by
    the sign of ``value``. The priority encoder behind ``index`` and this
    check are meant for two pipeline stages.
    """
    return Mux(differs, index + 1 < offset, (offset != 0) | zero)


def normalize_mantissa(value, index, width=nx.MANT_BITS):
    """Return ``value * 2**(width - 1 - index)`` truncated to ``width`` bits.

    ``value`` is unsigned and ``index`` is the :func:`leading_one` index of
    ``value``, or of a larger value of the same vector. So the result is
    ``value >> (length - width)`` for a value of bit length ``length`` above
    ``width`` and ``value << (width - length)`` for a shorter one. Both
    directions share one right shifter over ``value << (width - 1)``.
    """
    value = Value.cast(value)
    index = Value.cast(index)[:max(ceil_log2(len(value)), 1)]
    return ((value << (width - 1)) >> index)[:width]


def norm16_shift(absmax):
    """Return the shift of :func:`golden.numerics.norm16` for an unsigned ``absmax``.

    The shift is ``bit_length(absmax) - 15``, or 0 when ``absmax`` is 0. It
    is a priority encoder about log2(width) multiplexers deep plus a small
    subtraction, so a vector unit computes it once per vector and registers
    it for :class:`Norm16`.
    """
    index, nonzero = leading_one(absmax)
    return Mux(nonzero, index + 1 - (nx.NORM_BITS - 1), 0)


def delayed(m, cycles, value):
    """Return ``value`` delayed by ``cycles`` registers in the sync domain of ``m``."""
    for _ in range(cycles):
        register = Signal.like(value)
        m.d.sync += register.eq(value)
        value = register
    return value


_SIGMA_LATENCY = 6


class Sigma(wiring.Component):
    """Sigmoid of a Q16 value, bit-exact with :func:`golden.numerics.sigma`.

    A ROM of ``SIGMA_ENTRIES`` points (base and slope, built from
    ``golden.numerics.SIGMA_BASE`` and ``SIGMA_SLOPE``) is interpolated
    linearly over ``|x|`` with one multiply. ``|x| >= SIGMA_LIMIT`` gives 1.0,
    and a negative ``x`` gives ``1 - sigma(|x|)``.

    Latency is 6 cycles, throughput one input per cycle. Uses one block RAM
    for the table (or, with ``table_in_logic``, about a thousand LUTs) and
    one 18x18 multiplier.

    Parameters
    ----------
    table_in_logic : bool
        Ask synthesis to build the table from logic instead of a block RAM
        (Yosys ``rom_style = "logic"``), for designs short of block RAM.

    Members
    -------
    x : In(signed(32))
        Q16 input.
    sigma : Out(unsigned(17))
        Unsigned Q16 result in [0, 65536].
    """

    def __init__(self, *, table_in_logic=False):
        if not isinstance(table_in_logic, bool):
            raise TypeError(f"`table_in_logic` must be a bool, not {table_in_logic!r}")
        self._table_in_logic = table_in_logic
        super().__init__({
            "x": In(ACT_SHAPE),
            "sigma": Out(GATE_SHAPE),
        })

    @property
    def latency(self):
        return _SIGMA_LATENCY

    def elaborate(self, platform):
        m = Module()

        frac_bits = nx.SIGMA_FRAC_BITS
        magnitude_bits = ceil_log2(nx.SIGMA_LIMIT)
        base_shape = _table_shape(nx.SIGMA_BASE)
        slope_shape = _table_shape(nx.SIGMA_SLOPE)
        entry_layout = data.StructLayout({"base": base_shape, "slope": slope_shape})
        m.submodules.rom = rom = Memory(
            shape=entry_layout, depth=nx.SIGMA_ENTRIES,
            init=[{"base": int(base), "slope": int(slope)} for base, slope in zip(nx.SIGMA_BASE, nx.SIGMA_SLOPE)],
            attrs={"rom_style": "logic"} if self._table_in_logic else None)
        read = rom.read_port()

        # Stage 1: |x| split into table index and fraction. Below the limit
        # only the low bits of |x| matter, so the negation is that narrow.
        negative_1 = Signal()
        saturated_1 = Signal()
        fraction_1 = Signal(frac_bits)
        index_1 = Signal(range(nx.SIGMA_ENTRIES))
        low = self.x[:magnitude_bits]
        magnitude = Mux(self.x[-1], -low, low)[:magnitude_bits]
        m.d.sync += [
            negative_1.eq(self.x < 0),
            saturated_1.eq((self.x >= nx.SIGMA_LIMIT) | (self.x <= -nx.SIGMA_LIMIT)),
            fraction_1.eq(magnitude[:frac_bits]),
            index_1.eq(magnitude[frac_bits:]),
        ]
        m.d.comb += read.addr.eq(index_1)

        # Stage 2 is the block RAM read. Stage 3 registers its output, so the
        # block RAM drives only flip-flops.
        entry_3 = Signal(entry_layout)
        m.d.sync += entry_3.eq(read.data)
        fraction_3 = delayed(m, 2, fraction_1)

        # Stage 4: slope times fraction.
        product = entry_3.slope * fraction_3
        product_4 = Signal(product.shape())
        base_4 = Signal(base_shape)
        m.d.sync += [
            product_4.eq(product),
            base_4.eq(entry_3.base),
        ]

        # Stage 5: base plus the rounded product. The rounding constant fills
        # the low bits of base << frac_bits, so one adder does both.
        biased = Cat(C(1 << (frac_bits - 1), frac_bits), base_4)
        if base_shape.signed:
            biased = biased.as_signed()
        positive = (biased + product_4) >> frac_bits
        positive_5 = Signal(positive.shape())
        m.d.sync += positive_5.eq(positive)

        # Stage 6: saturation and the sign.
        negative_5 = delayed(m, 4, negative_1)
        saturated_5 = delayed(m, 4, saturated_1)
        with m.If(saturated_5):
            m.d.sync += self.sigma.eq(Mux(negative_5, 0, nx.GATE_ONE))
        with m.Elif(negative_5):
            m.d.sync += self.sigma.eq(nx.GATE_ONE - positive_5)
        with m.Else():
            m.d.sync += self.sigma.eq(positive_5)

        return m


class Silu(wiring.Component):
    """SiLU ``x * sigma(x)`` of a Q16 value, bit-exact with :func:`golden.numerics.silu`.

    The product ``x * sigma`` (32 by 17 bits) is split at bit 16 of ``x``
    into two multiplies that each fit an 18x18 multiplier:
    ``round(x * s / 2**16) = x_high * s + round(x_low * s / 2**16)``, exact
    because ``x_high * s * 2**16`` has no fraction bits. Rounding is half up,
    as in golden.

    Latency is 9 cycles (6 of them in :class:`Sigma`), throughput one input
    per cycle. Uses the table of its :class:`Sigma` and three 18x18
    multipliers in all.

    Parameters
    ----------
    table_in_logic : bool
        Passed to the :class:`Sigma` inside.

    Members
    -------
    x : In(signed(32))
        Q16 input.
    silu : Out(signed(32))
        Q16 result. It never saturates, because ``|silu| <= |x|``.
    """

    def __init__(self, *, table_in_logic=False):
        self._sigma = Sigma(table_in_logic=table_in_logic)
        super().__init__({
            "x": In(ACT_SHAPE),
            "silu": Out(ACT_SHAPE),
        })

    @property
    def latency(self):
        return _SIGMA_LATENCY + 3

    def elaborate(self, platform):
        m = Module()

        m.submodules.sigma = sigma = self._sigma
        m.d.comb += sigma.x.eq(self.x)
        x = delayed(m, sigma.latency, self.x)

        # Stage 1 after sigma: the two partial products.
        split = nx.GATE_FRAC
        low_product = x[:split] * sigma.sigma
        high_product = x[split:].as_signed() * sigma.sigma
        low_1 = Signal(low_product.shape())
        high_1 = Signal(high_product.shape())
        m.d.sync += [
            low_1.eq(low_product),
            high_1.eq(high_product),
        ]

        # Stage 2: round the low product to its integer part.
        low_rounded = (low_1 + (1 << (nx.GATE_FRAC - 1))) >> nx.GATE_FRAC
        low_2 = Signal(low_rounded.shape())
        high_2 = Signal.like(high_1)
        m.d.sync += [
            low_2.eq(low_rounded),
            high_2.eq(high_1),
        ]

        # Stage 3: the sum.
        m.d.sync += self.silu.eq(high_2 + low_2)

        return m


class ApplyScale(wiring.Component):
    """Scale an accumulator by a Scalar to Q16, bit-exact with :func:`golden.numerics.apply_scale`.

    Computes ``saturate(round(acc * mantissa * 2**exponent))`` to a signed
    32-bit result, rounding half up. A zero mantissa gives 0. The result is
    exact for every exponent of :data:`ScalarLayout`: a large left shift
    saturates, and a right shift by more than the product width gives 0. The
    mantissa need not be normalized.

    NOTE: golden computes in int64, which overflows for a right shift of 64
    or more and for a left-shifted product past 63 bits. There golden's
    result is wrong (-1 for 0 at exponent -64, 0 for a saturating left
    shift) and this component keeps the exact one.

    Latency is 4 cycles, throughput one input per cycle. The multiply is
    ``width`` by 16 bits, which Yosys 0.70 maps to one MULT18X18D at
    ``width = 17`` and two at ``width = 25``.

    Parameters
    ----------
    width : int
        Signed width of the accumulator.

    Members
    -------
    acc : In(signed(width))
        Accumulator.
    scale : In(ScalarLayout)
        Scale, which may change every cycle.
    value : Out(signed(32))
        Q16 result.
    """

    def __init__(self, width):
        _check_width("width", width)
        self._width = width
        super().__init__({
            "acc": In(signed(width)),
            "scale": In(ScalarLayout),
            "value": Out(ACT_SHAPE),
        })

    @property
    def width(self):
        return self._width

    @property
    def latency(self):
        return 4

    def elaborate(self, platform):
        m = Module()

        # |acc| <= 2**(width-1) and mantissa < 2**16, so the product fits.
        product_bits = self._width + nx.MANT_BITS
        exponent = self.scale.exponent

        # Stage 1: the product. Rounding half up is
        # round(p * 2**e) = (floor(p * 2**(e+1)) + 1) >> 1, for shifts either way.
        doubled_bits = nx.ACT_BITS + 2
        product_1 = Signal(signed(product_bits))
        offset_1 = Signal(range(product_bits + doubled_bits))
        zero_1 = Signal()
        m.d.sync += [
            product_1.eq(self.acc * self.scale.mantissa),
            offset_1.eq(window_offset(-(exponent + 1), product_bits, doubled_bits)),
            zero_1.eq(self.scale.mantissa == 0),
        ]

        # Stage 2: floor(p * 2**(e+1)) in 34 bits, one more than the rounded
        # 33-bit value needs, and the highest bit of p that differs from its
        # sign, for the fit check.
        doubled_2 = Signal(signed(doubled_bits))
        index_2 = Signal(range(product_bits))
        differs_2 = Signal()
        product_zero_2 = Signal()
        index, differs = signed_leading_one(product_1)
        m.d.sync += [
            doubled_2.eq(shift_window(product_1, offset_1, doubled_bits)),
            index_2.eq(index),
            differs_2.eq(differs),
            product_zero_2.eq(product_1 == 0),
        ]
        negative_2 = delayed(m, 1, product_1[-1])
        offset_2 = delayed(m, 1, offset_1)

        # Stage 3: round, and check the fit.
        rounded_3 = Signal(signed(doubled_bits))
        fits_3 = Signal()
        m.d.sync += [
            rounded_3.eq((doubled_2 + 1) >> 1),
            fits_3.eq(window_fits(index_2, differs_2, product_zero_2, offset_2)),
        ]
        negative_3 = delayed(m, 1, negative_2)
        zero_3 = delayed(m, 2, zero_1)

        # Stage 4: saturate. A doubled value out of 34 bits has
        # |result| >= 2**32, so it saturates by the sign of the product.
        with m.If(zero_3):
            m.d.sync += self.value.eq(0)
        with m.Elif(fits_3):
            m.d.sync += self.value.eq(saturate(rounded_3, nx.ACT_BITS))
        with m.Else():
            m.d.sync += self.value.eq(saturation_limit(negative_3, nx.ACT_BITS))

        return m


def _check_quantize_table():
    """Raise unless the golden table gives exactly code 127 for ``|z| = absmax`` at every normalized absmax.

    :class:`QuantizeCode` clamps ``|z|`` to ``absmax`` before the multiply,
    which keeps the multiplier at 16 by 16 bits and the code within 127
    without a final clamp. That matches golden only when ``|z| = absmax``
    gives code 127, neither less (golden gives 127 for every larger ``|z|``)
    nor more (golden would clamp it).
    """
    top = np.arange(nx.MANT_MIN, 2 * nx.MANT_MIN, dtype=np.int64)
    recip = nx.QUANT_RECIP_TABLE[(top >> nx.QUANT_INDEX_SHIFT) - nx.QUANT_FIRST]
    codes = nx.round_shift(top * recip, nx.QUANT_RECIP_SHIFT)
    if np.any(codes != nx.CODE_MAX):
        first = int(top[np.argmax(codes != nx.CODE_MAX)])
        raise ValueError(f"golden.numerics.QUANT_RECIP_TABLE gives a code other than {nx.CODE_MAX} for "
                         f"z = absmax = {first}, so QuantizeCode would not match golden.quantize_codes")


class QuantizeCode(wiring.Component):
    """Quantize to int8 codes, bit-exact with :func:`golden.numerics.quantize_codes`.

    Computes ``round(127 * z / absmax)``, rounded half away from zero and
    clamped to [-127, 127], as golden does. ``absmax`` is normalized to a
    16-bit mantissa (shifted right when longer, left when shorter, with ``z``
    shifted alike), and the quotient is ``|z|`` times the
    ``golden.numerics.QUANT_RECIP_TABLE`` entry for that mantissa.

    Before the shift, ``|z|`` is clamped to ``absmax``, which keeps the
    multiply at 16 by 16 bits. The golden table gives code 127 at
    ``|z| = absmax`` for every absmax (checked when the component is built),
    so the clamp gives golden's code for a larger ``|z|`` too.

    The per-vector part (bit length of ``absmax``, table lookup) runs once per
    ``load``, and all ``lanes`` share it and its one copy of the table.
    A ``load`` in cycle ``L`` applies to the ``z`` presented in cycle
    ``L + setup_latency`` and later, until the next load applies. So the next
    vector's ``load`` may come as early as ``setup_latency - 1`` cycles before
    the current vector's last ``z``, and vectors can stream back to back.
    Before the first load, ``absmax`` is 0 and every code is 0.

    Latency is 5 cycles from ``z`` to ``code``, ``setup_latency`` is 2,
    throughput one ``z`` per lane per cycle. Uses block RAM for the table and
    one 18x18 multiplier per lane.

    With ``vectors`` V above 1 the component quantizes V vectors side by
    side, each with its own ``absmax``, and one ``load`` sets up all of
    them. They share the one table and take turns at it, one lookup per
    cycle, so ``setup_latency`` is ``V + 1``. The codes of a ``z`` presented
    in the ``V - 1`` cycles before ``load + setup_latency`` are unspecified,
    so vectors do not stream back to back across a load.

    Parameters
    ----------
    width : int
        Signed width of ``z`` and unsigned width of ``absmax``, 32 by default.
    lanes : int
        Number of ``z`` values per vector per cycle, 1 by default.
    vectors : int
        V, the vectors quantized side by side, 1 by default.

    Members
    -------
    absmax : In(unsigned(width)), or In(unsigned(width)).array(vectors) when V > 1
        Largest ``|z|`` of each vector, read when ``load`` is high.
    load : In(1)
        Starts the per-vector setup for ``absmax``.
    z : In(signed(width)).array(vectors * lanes)
        Values to quantize: lane ``p`` of vector ``v`` at ``v * lanes + p``.
    code : Out(signed(8)).array(vectors * lanes)
        int8 codes, in the order of ``z``.
    """

    def __init__(self, width=32, lanes=1, vectors=1):
        _check_width("width", width)
        _check_width("lanes", lanes)
        _check_width("vectors", vectors)
        _check_quantize_table()
        self._width = width
        self._lanes = lanes
        self._vectors = vectors
        absmax = In(unsigned(width)) if vectors == 1 else In(unsigned(width)).array(vectors)
        super().__init__({
            "absmax": absmax,
            "load": In(1),
            "z": In(signed(width)).array(vectors * lanes),
            "code": Out(signed(nx.CODE_BITS)).array(vectors * lanes),
        })

    @property
    def width(self):
        return self._width

    @property
    def lanes(self):
        return self._lanes

    @property
    def vectors(self):
        return self._vectors

    @property
    def latency(self):
        return 5

    @property
    def setup_latency(self):
        return 1 + self._vectors

    def elaborate(self, platform):
        m = Module()

        recip_shape = _table_shape(nx.QUANT_RECIP_TABLE)
        m.submodules.rom = rom = Memory(
            shape=recip_shape, depth=len(nx.QUANT_RECIP_TABLE),
            init=[int(entry) for entry in nx.QUANT_RECIP_TABLE])
        read = rom.read_port()

        # Per-vector setup. A z in cycle t reads the clamp bound in cycle t+1,
        # the shift in t+2 and the table entry in t+3 (stages 2 to 4 below).
        # So each of them changes setup_latency + 1, + 2 and + 3 cycles after
        # the load, and the bound and the shift are delayed to match the
        # table lookup. With several vectors the lookups take turns, one
        # vector per cycle, so a vector's entry arrives up to V - 1 cycles later.
        vectors = self._vectors
        turn = Signal(range(vectors))
        if vectors > 1:
            m.d.sync += turn.eq(Mux(turn == vectors - 1, 0, turn + 1))
        turn_4 = delayed(m, 1, turn)
        tops = []
        for vector in range(vectors):
            absmax = self.absmax if vectors == 1 else self.absmax[vector]
            absmax_1 = Signal(self._width, name=f"absmax_1_{vector}")
            with m.If(self.load):
                m.d.sync += absmax_1.eq(absmax)

            shift_2 = Signal(range(self._width), name=f"shift_2_{vector}")
            m.d.sync += shift_2.eq(leading_one(absmax_1)[0])
            absmax_2 = delayed(m, 1, absmax_1)

            top_3 = Signal(nx.MANT_BITS, name=f"top_3_{vector}")
            m.d.sync += top_3.eq(normalize_mantissa(absmax_2, shift_2))
            tops.append(top_3)
            shift_3 = delayed(m, 1, shift_2)

            recip_5 = Signal(recip_shape, name=f"recip_5_{vector}")
            with m.If(turn_4 == vector):
                m.d.sync += recip_5.eq(read.data)

            bound = delayed(m, 1, absmax_2)
            shift = delayed(m, 1, shift_3)
            for lane in range(self._lanes):
                index = vector * self._lanes + lane
                self._elaborate_lane(m, self.z[index], self.code[index], bound, shift, recip_5)

        top = tops[0] if vectors == 1 else Array(tops)[turn]
        m.d.comb += read.addr.eq((top >> nx.QUANT_INDEX_SHIFT) - nx.QUANT_FIRST)
        return m

    def _elaborate_lane(self, m, z, code, bound, shift, recip):
        # Stage 1: |z| and its sign.
        negative_1 = Signal()
        magnitude_1 = Signal(self._width)
        m.d.sync += [
            negative_1.eq(z < 0),
            magnitude_1.eq(Mux(z < 0, -z, z)),
        ]

        # Stage 2: clamp |z| to absmax.
        clamped_2 = Signal(self._width)
        m.d.sync += clamped_2.eq(Mux(magnitude_1 > bound, bound, magnitude_1))

        # Stage 3: shift by the same amount as absmax, so mantissa <= top < 2**16.
        mantissa_3 = Signal(nx.MANT_BITS)
        m.d.sync += mantissa_3.eq(normalize_mantissa(clamped_2, shift))

        # Stage 4: the multiply by the table entry.
        product = mantissa_3 * recip
        product_4 = Signal(product.shape())
        m.d.sync += product_4.eq(product)

        # Stage 5: round half up on the magnitude, which is half away from
        # zero on the code, and apply the sign. The magnitude is
        # high + round_bit with high = product >> 24, at most 127 because
        # |z| <= absmax. Its negation is ~high + ~round_bit in 8 bits, so one
        # adder with inverted inputs does both.
        recip_shift = nx.QUANT_RECIP_SHIFT
        high = product_4[recip_shift:][:nx.CODE_BITS]
        round_bit = product_4[recip_shift - 1]
        negative_4 = delayed(m, 3, negative_1)
        m.d.sync += code.eq(
            (high ^ negative_4.replicate(nx.CODE_BITS)) + (round_bit ^ negative_4))


class Norm16(wiring.Component):
    """Block-normalize a value to signed 16 bits, bit-exact with :func:`golden.numerics.norm16`.

    Computes ``value >> shift`` (arithmetic, so rounding towards minus
    infinity) for ``shift >= 0`` and ``value << -shift`` for ``shift < 0``,
    saturated to signed 16 bits. With ``shift = norm16_shift(absmax)`` and
    ``|value| <= absmax``, golden's precondition, the result always fits and
    equals golden's. The saturation only shapes other inputs, for which
    golden's result does not fit 16 bits.

    Latency is 3 cycles, throughput one input per cycle. Uses no multiplier.

    Parameters
    ----------
    width : int
        Signed width of ``value``, 32 by default.

    Members
    -------
    value : In(signed(width))
        Element of the vector.
    shift : In(range(-16, width))
        Shift of the vector, from :func:`norm16_shift`. Any value of the
        port's shape is allowed.
    normalized : Out(signed(16))
        Normalized element.
    """

    def __init__(self, width=32):
        _check_width("width", width)
        self._width = width
        super().__init__({
            "value": In(signed(width)),
            "shift": In(range(-nx.NORM_BITS, width)),
            "normalized": Out(signed(nx.NORM_BITS)),
        })

    @property
    def width(self):
        return self._width

    @property
    def latency(self):
        return 3

    def elaborate(self, platform):
        m = Module()

        # Stage 1: the funnel offset of the shift, and the highest bit of the
        # value that differs from the sign, for the fit check.
        value_1 = Signal.like(self.value)
        offset_1 = Signal(range(self._width + nx.NORM_BITS))
        index_1 = Signal(range(self._width))
        differs_1 = Signal()
        zero_1 = Signal()
        index, differs = signed_leading_one(self.value)
        m.d.sync += [
            value_1.eq(self.value),
            offset_1.eq(window_offset(self.shift, self._width, nx.NORM_BITS)),
            index_1.eq(index),
            differs_1.eq(differs),
            zero_1.eq(self.value == 0),
        ]

        # Stage 2: the shifted value and whether it fits 16 bits.
        window_2 = Signal(signed(nx.NORM_BITS))
        fits_2 = Signal()
        m.d.sync += [
            window_2.eq(shift_window(value_1, offset_1, nx.NORM_BITS)),
            fits_2.eq(window_fits(index_1, differs_1, zero_1, offset_1)),
        ]
        negative_2 = delayed(m, 1, value_1[-1])

        # Stage 3: saturate.
        m.d.sync += self.normalized.eq(Mux(fits_2, window_2, saturation_limit(negative_2, nx.NORM_BITS)))

        return m
