"""Scalar unit: the per-token output scales, bit-exact with :mod:`golden.numerics`.

A stage's output scale is ``K * absmax * rsqrt(sumsq)`` (see
:func:`golden.int_model.IntModel.run_stage`): one ``scalar_from_int``, one
``scalar_rsqrt`` and two ``scalar_mul`` per projection, a handful per stage,
so a single pipeline with a command stream serves the whole accelerator.
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden import numerics as nx

from .arith import SCALAR_EXPONENT_BITS, ScalarLayout, delayed, leading_one, normalize_mantissa

__all__ = ["ScalarOp", "CommandLayout", "ScalarUnit", "ScalarLayout", "SCALAR_EXPONENT_BITS", "valid_signature"]


class ScalarOp(enum.Enum, shape=2):
    """Operation of a :class:`ScalarUnit` command."""
    FROM_INT = 0    # scalar_from_int(value)
    MUL = 1         # scalar_mul(a, b)
    RSQRT = 2       # scalar_rsqrt(value)


CommandLayout = data.StructLayout({
    "op": ScalarOp,
    "value": unsigned(nx.SUMSQ_BITS),
    "a": ScalarLayout,
    "b": ScalarLayout,
})
"""A :class:`ScalarUnit` command: ``value`` is the operand of FROM_INT and RSQRT, ``a`` and ``b`` of MUL."""


def valid_signature(payload_shape):
    """Return the signature of a stream without backpressure: ``valid`` and ``payload``.

    It has the members of ``stream.Signature(payload_shape, always_ready=True)``
    except ``ready``. Amaranth 0.5.10's ``verilog.convert`` rejects the
    constant ``ready`` of that stream as a top-level port, so this keeps the
    unit convertible on its own.
    """
    return wiring.Signature({
        "valid": Out(1),
        "payload": Out(payload_shape),
    })


class ScalarUnit(wiring.Component):
    """Compute ``scalar_from_int``, ``scalar_mul`` and ``scalar_rsqrt``, bit-exact with golden.

    - FROM_INT: ``value`` (up to 48 bits) normalized to a 16-bit mantissa,
      truncating. 0 gives the zero Scalar.
    - MUL: ``a * b``, the 32-bit product of the mantissas truncated to 16
      bits. ``a`` and ``b`` are normalized Scalars (mantissa 0 or in
      [2**15, 2**16)), as golden requires, and a zero operand gives the zero
      Scalar.
    - RSQRT: ``1 / sqrt(value)`` from ``golden.numerics.RSQRT_TABLE``, after
      normalizing ``value`` by an even shift. 0 gives the zero Scalar.

    The encoding 3 of ``op`` gives the zero Scalar. The exponent has
    :data:`SCALAR_EXPONENT_BITS` bits, so exponents in [-512, 511] are exact.
    FROM_INT gives exponents in [-15, 32] and RSQRT in [-39, -16], whatever
    the operand.

    NOTE: a MUL whose exponent falls outside [-512, 511] wraps around, with no
    flag. The output scales of a random-weight model and their intermediate
    products stay within [-31, 14].

    The unit is a pipeline that accepts one command per cycle and has no
    backpressure: a result is valid exactly ``latency`` cycles (5) after its
    command, and the user takes it in that cycle. Uses one 18x18 multiplier
    and block RAM for the table.

    Members
    -------
    command : In(valid_signature(CommandLayout))
        Commands: a command is taken in each cycle with ``command.valid`` high.
    result : Out(valid_signature(ScalarLayout))
        Results, in command order.
    """

    def __init__(self):
        super().__init__({
            "command": In(valid_signature(CommandLayout)),
            "result": Out(valid_signature(ScalarLayout)),
        })

    @property
    def latency(self):
        return 5

    def elaborate(self, platform):
        m = Module()

        m.submodules.rom = rom = Memory(
            shape=range(int(nx.RSQRT_TABLE.min()), int(nx.RSQRT_TABLE.max()) + 1),
            depth=len(nx.RSQRT_TABLE), init=[int(entry) for entry in nx.RSQRT_TABLE])
        read = rom.read_port()

        command = self.command.payload
        mant_bits = nx.MANT_BITS
        exponent_shape = ScalarLayout.members["exponent"]

        # The operation and the valid flag travel along the pipeline.
        valid = self.command.valid
        op = command.op
        ops = []
        for stage in range(1, self.latency + 1):
            valid_next = Signal(name=f"valid_{stage}")
            op_next = Signal(ScalarOp, name=f"op_{stage}")
            m.d.sync += [
                valid_next.eq(valid),
                op_next.eq(op),
            ]
            valid, op = valid_next, op_next
            ops.append(op)
        m.d.comb += self.result.valid.eq(valid)

        # Stage 1: the leading one of the integer operand, the product of
        # the mantissas.
        value_1 = Signal.like(command.value)
        index_1 = Signal(range(nx.SUMSQ_BITS))
        nonzero_1 = Signal()
        product_1 = Signal(2 * mant_bits)
        exponent_sum_1 = Signal(exponent_shape)
        mul_zero_1 = Signal()
        index, nonzero = leading_one(command.value)
        m.d.sync += [
            value_1.eq(command.value),
            index_1.eq(index),
            nonzero_1.eq(nonzero),
            product_1.eq(command.a.mantissa * command.b.mantissa),
            exponent_sum_1.eq(command.a.exponent + command.b.exponent),
            mul_zero_1.eq((command.a.mantissa == 0) | (command.b.mantissa == 0)),
        ]

        # Stage 2: the normalized mantissa and the exponents. With the bit
        # length index + 1, FROM_INT shifts by d = index - 15. RSQRT rounds d
        # up to even, so its mantissa drops one more bit when d is odd, and
        # its exponent is -RSQRT_FRAC - (d rounded up to even) / 2. MUL keeps
        # the top 16 bits of the product, whose leading one is bit 31 or 30.
        from_int_2 = Signal(ScalarLayout)
        rsqrt_exponent_2 = Signal(exponent_shape)
        odd_2 = Signal()
        integer_zero_2 = Signal()
        mul_2 = Signal(ScalarLayout)
        shift = index_1 - (mant_bits - 1)
        product_high = product_1[-1]
        m.d.sync += [
            from_int_2.mantissa.eq(normalize_mantissa(value_1, index_1)),
            from_int_2.exponent.eq(Mux(nonzero_1, shift, 0)),
            rsqrt_exponent_2.eq(-nx.RSQRT_FRAC - ((shift + 1) >> 1)),
            odd_2.eq(shift[0]),
            integer_zero_2.eq(~nonzero_1),
            mul_2.mantissa.eq(Mux(mul_zero_1, 0,
                                  Mux(product_high, product_1[mant_bits:], product_1[mant_bits - 1:-1]))),
            mul_2.exponent.eq(Mux(mul_zero_1, 0,
                                  exponent_sum_1 + Mux(product_high, mant_bits, mant_bits - 1))),
        ]

        # Stage 3 is the table read, indexed by the top bits of t, which lies
        # in [2**14, 2**16). Stage 4 registers the block RAM output.
        t = Mux(odd_2, from_int_2.mantissa >> 1, from_int_2.mantissa)
        m.d.comb += read.addr.eq((t >> nx.RSQRT_INDEX_SHIFT) - nx.RSQRT_FIRST)
        integer_zero_3 = delayed(m, 1, integer_zero_2)
        rsqrt_4 = Signal(ScalarLayout)
        m.d.sync += [
            rsqrt_4.mantissa.eq(Mux(integer_zero_3, 0, read.data)),
            rsqrt_4.exponent.eq(Mux(integer_zero_3, 0, delayed(m, 1, rsqrt_exponent_2))),
        ]
        from_int_4 = delayed(m, 2, from_int_2)
        mul_4 = delayed(m, 2, mul_2)

        # Stage 5: the result of the command's operation.
        with m.Switch(ops[3]):
            with m.Case(ScalarOp.FROM_INT):
                m.d.sync += self.result.payload.eq(from_int_4)
            with m.Case(ScalarOp.MUL):
                m.d.sync += self.result.payload.eq(mul_4)
            with m.Case(ScalarOp.RSQRT):
                m.d.sync += self.result.payload.eq(rsqrt_4)
            with m.Default():
                m.d.sync += self.result.payload.eq(0)

        return m
