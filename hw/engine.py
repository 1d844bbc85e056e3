"""Ternary engine: R x K trit-times-code products per cycle, summed into R accumulators.

This is the multiply-accumulate core of :class:`hw.matvec.MatVec`. A tile is
R rows of K trits and the K int8 codes they multiply. The engine adds each
row's K products with a pipelined adder tree and accumulates the row sums
over the tiles of a row group. There is no multiplier, because a trit only
selects a code, its negation or zero.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from golden import numerics as nx

__all__ = ["TernaryEngine", "tile_layout", "required_acc_bits", "resolve_acc_bits"]


# The select stage decodes bit 0 of a trit as "nonzero" and bit 1 as "negative",
# which matches this encoding (0b10 is unused and reads as 0).
assert nx.TRIT_ENCODING == {0: 0b00, 1: 0b01, -1: 0b11}
_NONZERO_BIT = 0
_NEGATIVE_BIT = 1


def check_positive_int(name, value):
    """Raise unless ``value`` is a positive ``int`` (``bool`` is rejected)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be a positive integer, not {value!r}")
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, not {value!r}")


def required_acc_bits(max_fan_in, code_bits=nx.CODE_BITS):
    """Return the narrowest signed width for any sum of ``max_fan_in`` trit-code products.

    Codes are symmetric, in ``[-(2**(code_bits-1) - 1), 2**(code_bits-1) - 1]``.
    For int8 codes the width is :func:`golden.numerics.accumulator_bits`.
    """
    if code_bits == nx.CODE_BITS:
        return nx.accumulator_bits(max_fan_in)
    code_max = (1 << (code_bits - 1)) - 1
    return (code_max * max_fan_in).bit_length() + 1


def resolve_acc_bits(max_fan_in, acc_bits=None, code_bits=nx.CODE_BITS):
    """Check the accumulator parameters and return ``acc_bits``, or the narrowest width for ``None``."""
    check_positive_int("max_fan_in", max_fan_in)
    check_positive_int("code_bits", code_bits)
    if code_bits < 2:
        raise ValueError(f"`code_bits` must be at least 2, not {code_bits!r}")

    needed = required_acc_bits(max_fan_in, code_bits)
    if acc_bits is None:
        return needed
    check_positive_int("acc_bits", acc_bits)
    if acc_bits < needed:
        raise ValueError(f"`acc_bits` {acc_bits} is too narrow for `max_fan_in` {max_fan_in}: "
                         f"sums of {code_bits}-bit codes need at least {needed} bits")
    return acc_bits


def tile_layout(rows, inputs, code_bits=nx.CODE_BITS):
    """Return the payload layout of one engine tile.

    ``trits`` has row ``r``'s K trits at bits ``[r*2K, (r+1)*2K)`` and trit ``l``
    of a row at bits ``[2l, 2l+2)``, which is the weight memory's bank words
    concatenated. ``codes`` are the K signed codes. ``first`` clears the
    accumulators before this tile is added, and ``last`` emits them after it.
    """
    return data.StructLayout({
        "trits": unsigned(rows * inputs * nx.TRIT_BITS),
        "codes": data.ArrayLayout(signed(code_bits), inputs),
        "first": 1,
        "last": 1,
    })


class TernaryEngine(wiring.Component):
    """Pipelined ternary matrix-vector engine.

    Each cycle the engine takes one tile of R x K trits and K codes, and adds
    ``trits @ codes`` (R sums) to its R accumulators. After the tile marked
    ``last`` it emits the R accumulators as one output beat.

    Structure: an input register, then a select stage, where a trit picks
    its code, the code's one's complement (``-c - 1``) or zero. Then each row
    has one adder-tree level per register stage. Beside it, a tree of the same
    depth counts the row's -1 trits, because each complement is one less than
    the negation. Last come the accumulators, which add both sums to the
    row's total and also load the output register. Only the K codes are sent
    to all R rows.

    Latency: ``ceil_log2(inputs) + 3`` cycles from the cycle in which the
    ``last`` tile is transferred to the cycle in which its accumulators are
    valid on ``accumulators``, while the output is not stalled.

    Throughput: one tile per cycle. When ``accumulators`` is not ready, a beat
    that arrives goes to a one-beat skid buffer, and ``tiles.ready`` falls in
    the next cycle, stalling the whole pipeline until the output is taken.
    ``tiles.ready`` is a register output, so no combinational path runs from
    ``accumulators.ready`` to ``tiles.ready``.

    Accumulation is modulo ``2**acc_bits``, so the sums are exact whenever the
    true total fits in ``acc_bits``. This is the case for up to ``max_fan_in``
    nonzero trits per row group with codes in the symmetric range. A code of
    ``-2**(code_bits-1)`` is outside that range. Its products are exact,
    but a sum of many of them may not fit ``acc_bits``.

    Parameters
    ----------
    rows : int
        R, the rows per tile and accumulators per output beat.
    inputs : int
        K, the trits per row and codes per tile.
    max_fan_in : int
        The largest number of columns summed into one accumulator (the
        ``cols`` of the widest projection).
    code_bits : int
        Width of a signed code.
    acc_bits : int or None
        Width of a signed accumulator. ``None`` selects the narrowest width
        for ``max_fan_in`` products. A narrower value raises ``ValueError``.

    Members
    -------
    tiles : ``In(stream.Signature(tile_layout(rows, inputs, code_bits)))``
        Tiles to accumulate.
    accumulators : ``Out(stream.Signature(data.ArrayLayout(signed(acc_bits), rows)))``
        The R accumulators of a row group, one beat per ``last`` tile.
    """

    def __init__(self, rows, inputs, *, max_fan_in, code_bits=nx.CODE_BITS, acc_bits=None):
        check_positive_int("rows", rows)
        check_positive_int("inputs", inputs)
        acc_bits = resolve_acc_bits(max_fan_in, acc_bits, code_bits)

        self._rows = rows
        self._inputs = inputs
        self._max_fan_in = max_fan_in
        self._code_bits = code_bits
        self._acc_bits = acc_bits
        super().__init__({
            "tiles": In(stream.Signature(tile_layout(rows, inputs, code_bits))),
            "accumulators": Out(stream.Signature(data.ArrayLayout(signed(acc_bits), rows))),
        })

    @property
    def rows(self):
        return self._rows

    @property
    def inputs(self):
        return self._inputs

    @property
    def max_fan_in(self):
        return self._max_fan_in

    @property
    def code_bits(self):
        return self._code_bits

    @property
    def acc_bits(self):
        return self._acc_bits

    @property
    def tree_levels(self):
        """Number of adder-tree register stages, ``ceil_log2(inputs)``."""
        return ceil_log2(self._inputs)

    @property
    def latency(self):
        """Cycles from the transfer of a ``last`` tile to its valid output beat."""
        return self.tree_levels + 3

    def elaborate(self, platform):
        m = Module()
        rows, inputs, code_bits = self._rows, self._inputs, self._code_bits

        # Every pipeline register loads only while `advance` is high. It is low
        # while the skid buffer contains a beat, which happens only after the
        # output was not ready.
        skid_valid = Signal()
        advance = Signal()
        m.d.comb += [
            advance.eq(~skid_valid),
            self.tiles.ready.eq(advance),
        ]

        # Input register: isolates the engine from the weight memory's read data.
        tile = Signal(tile_layout(rows, inputs, code_bits))
        tile_valid = Signal()
        with m.If(advance):
            m.d.sync += [
                tile.eq(self.tiles.payload),
                tile_valid.eq(self.tiles.valid),
            ]

        # Select stage. A trit of -1 takes the one's complement of its code,
        # ~c = -c - 1, and the row's count of -1 trits adds the missing ones
        # back. So each term needs only its code and trit, and no negated copy
        # of the codes has to reach every row.
        terms = []
        minus_ones = []
        for row in range(rows):
            row_terms = []
            row_minus_ones = []
            for lane in range(inputs):
                bit = (row * inputs + lane) * nx.TRIT_BITS
                trit = tile.trits[bit:bit + nx.TRIT_BITS]
                nonzero, negative = trit[_NONZERO_BIT], trit[_NEGATIVE_BIT]
                term = Signal(signed(code_bits), name=f"term_{row}_{lane}")
                # Signed, as the adder tree's operands are.
                minus_one = Signal(signed(2), name=f"minus_one_{row}_{lane}")
                with m.If(advance):
                    m.d.sync += [
                        term.eq(Mux(nonzero, tile.codes[lane] ^ negative.replicate(code_bits), 0)),
                        minus_one.eq(nonzero & negative),
                    ]
                row_terms.append(term)
                row_minus_ones.append(minus_one)
            terms.append(row_terms)
            minus_ones.append(row_minus_ones)

        first, last, valid = self._delay(m, advance, tile.first, tile.last, tile_valid, name="select")

        # Adder tree: one level per register stage. An odd operand out is only delayed.
        sums = [self._adder_tree(m, advance, row_terms, f"sum_{row}") for row, row_terms in enumerate(terms)]
        minus_counts = [self._adder_tree(m, advance, row_minus_ones, f"minus_count_{row}")
                        for row, row_minus_ones in enumerate(minus_ones)]
        for level in range(self.tree_levels):
            first, last, valid = self._delay(m, advance, first, last, valid, name=f"level_{level}")

        # Accumulate. The totals of a `last` tile go to the output register or the skid buffer.
        acc_shape = signed(self._acc_bits)
        accs = [Signal(acc_shape, name=f"acc_{row}") for row in range(rows)]
        totals = Signal(data.ArrayLayout(acc_shape, rows))
        for row in range(rows):
            m.d.comb += totals[row].eq(Mux(first, 0, accs[row]) + sums[row] + minus_counts[row])
        with m.If(advance & valid):
            m.d.sync += [accs[row].eq(totals[row]) for row in range(rows)]

        self._output_buffer(m, skid_valid, deliver=advance & valid & last, totals=totals)
        return m

    @staticmethod
    def _delay(m, advance, *values, name):
        """Register ``values`` for one pipeline stage and return the registered copies."""
        delayed = [Signal.like(value, name=f"{name}_{index}") for index, value in enumerate(values)]
        with m.If(advance):
            m.d.sync += [reg.eq(value) for reg, value in zip(delayed, values)]
        return delayed

    def _adder_tree(self, m, advance, operands, name):
        """Sum ``operands`` with a registered binary tree and return the sum signal."""
        level = 0
        while len(operands) > 1:
            reduced = []
            for index in range(0, len(operands), 2):
                pair = operands[index:index + 2]
                width = max(len(operand) for operand in pair) + (len(pair) - 1)
                node = Signal(signed(width), name=f"{name}_{level}_{index // 2}")
                with m.If(advance):
                    m.d.sync += node.eq(pair[0] + pair[1] if len(pair) == 2 else pair[0])
                reduced.append(node)
            operands = reduced
            level += 1
        return operands[0]

    def _output_buffer(self, m, skid_valid, *, deliver, totals):
        """Drive ``accumulators`` from an output register backed by a one-beat skid buffer."""
        output = self.accumulators
        skid = Signal.like(totals, name="skid")
        with m.If(~skid_valid):
            with m.If(deliver):
                with m.If(~output.valid | output.ready):
                    m.d.sync += [output.payload.eq(totals), output.valid.eq(1)]
                with m.Else():
                    m.d.sync += [skid.eq(totals), skid_valid.eq(1)]
            with m.Elif(output.ready):
                m.d.sync += output.valid.eq(0)
        with m.Elif(output.ready):
            # The output register contains a beat whenever the skid buffer does.
            m.d.sync += [output.payload.eq(skid), skid_valid.eq(0)]
