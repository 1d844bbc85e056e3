"""Vector unit: the element-wise passes of a decoding step, P elements per cycle.

The unit executes every instruction of :mod:`firmware.isa` except the engine
part of MATVEC, END and ILLEGAL. It owns the memories these instructions
use: the residual and scratch vectors, the accumulators, the recurrent
state, the per-channel constants, the lower bounds, the embeddings and the
output-scale constants.
Its results are bit-exact with :meth:`firmware.program_model.ProgramModel.execute`;
the arithmetic comes from the pipelined primitives of :mod:`hw.arith` and
the :class:`~hw.scalar.ScalarUnit`.

A pass streams groups of P elements, one group per cycle, through a
fixed-latency datapath. A control pipeline carries each group's valid flag,
lane mask and last flag alongside its data, so every write and every
reduction happens at a constant stage after the group was read.
"""

from types import SimpleNamespace

import numpy as np

from amaranth.hdl import C, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2, exact_log2

from firmware.isa import ADDRESS_BITS, SCALE_REGISTERS, MAX_REGISTERS, SLOTS, CoreParams, Opcode
from firmware.layout import memory_sizes
from firmware.protocol import Target
from golden import numerics as nx

from .arith import ApplyScale, Norm16, QuantizeCode, ScalarLayout, Sigma, Silu, norm16_shift, saturate
from .matvec import CodeWriteSignature
from .scalar import ScalarOp, ScalarUnit
from .sequencer import instruction_layout

__all__ = ["VectorUnit", "HOST_ELEMENT_BYTES", "HostWriteSignature", "HostReadSignature", "accumulator_word_lanes",
           "ACC_WRITE_CYCLES_PER_BEAT"]

# Bytes per element of each memory that the host port reaches. ACCUMULATORS
# is read only; each accumulator reads as an int32, sign-extended.
HOST_ELEMENT_BYTES = {
    Target.VECTORS: 8,          # n, c0, c1, c2 as int16
    Target.EMBEDDINGS: 2,       # int16
    Target.LOWER_BOUNDS: 2,     # unsigned Q16
    Target.SCALARS: 4,          # mantissa u16, then exponent i16
    Target.STATE: 4,            # int32, Q16
    Target.ACCUMULATORS: 4,     # int32
}

HostWriteSignature = wiring.Signature({
    "en": Out(1),
    "target": Out(8),
    "address": Out(32),
    "data": Out(8),
})
"""One byte written by the host: a :class:`~firmware.protocol.Target`, a byte address and the byte."""

HostReadSignature = wiring.Signature({
    "target": Out(8),
    "address": Out(32),
    "data": In(8),
})
"""One byte read by the host: the byte at ``target`` and ``address`` comes back on ``data``."""

# Field widths of one CONST element and of one SCALARS word.
CONST_FIELD_BITS = nx.NORM_BITS
CONST_FIELDS = 1 + SLOTS
SCALAR_EXPONENT_STORED_BITS = 16


# MATVEC's accumulator writer stores a beat of R accumulators in at most this
# many cycles (when R allows), so it keeps up with the engine on every
# projection of at least this many column tiles. The bundled model's
# smallest projections have H / K = 4.
ACC_WRITE_CYCLES_PER_BEAT = 4


def accumulator_word_lanes(core: CoreParams):
    """Return the accumulators per ACC memory word: P times a power of two that divides R.

    It is the smallest such width that writes a beat of R accumulators in
    at most :data:`ACC_WRITE_CYCLES_PER_BEAT` cycles, or R.
    """
    width = core.vector_lanes
    while core.rows // width > ACC_WRITE_CYCLES_PER_BEAT and core.rows % (2 * width) == 0:
        width *= 2
    return width


def _control_layout(lanes):
    """Return the layout of one group in the control pipeline: valid, last and the lane mask."""
    return data.StructLayout({"valid": 1, "last": 1, "mask": lanes})


def _multiply_by_constant(value, factor):
    """Return ``value * factor`` as a sum of shifted copies of ``value``, so that no multiplier is inferred."""
    terms = [value << bit for bit in range(factor.bit_length()) if factor >> bit & 1]
    if not terms:
        return C(0, 1)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _delay(m, value, cycles, name):
    """Return ``value`` delayed by ``cycles`` registers (``value`` itself for 0)."""
    shape = value.shape()
    for stage in range(cycles):
        register = Signal(shape, name=f"{name}_{stage + 1}")
        m.d.sync += register.eq(value)
        value = register
    return value


def _select(m, index, options, shape, name):
    """Return a combinational signal equal to ``options[index]``."""
    result = Signal(shape, name=name)
    with m.Switch(index):
        for position, option in enumerate(options):
            with m.Case(position):
                m.d.comb += result.eq(option)
    return result


def _pack_words(elements, element_bits, lanes, depth, name):
    """Pack integer elements into memory words of ``lanes`` elements, element ``p`` of a word at bits ``p * element_bits``.

    Negative elements are stored in two's complement.
    """
    elements = [int(element) & ((1 << element_bits) - 1) for element in np.asarray(elements).ravel()]
    words = -(-len(elements) // lanes)
    if words > depth:
        raise ValueError(f"the image's {name} need {words} words, but the memory has {depth}; "
                         f"build the core with maxima that fit the model")
    packed = []
    for word in range(words):
        value = 0
        for lane, element in enumerate(elements[word * lanes:(word + 1) * lanes]):
            value |= element << (lane * element_bits)
        packed.append(value)
    return packed


class _AbsMaxReducer(wiring.Component):
    """Running maximum of ``|value|`` over the unmasked lanes of a stream of element groups.

    A group presented in cycle ``t`` is included in ``result`` from cycle
    ``t + 3`` on, and ``final`` pulses in cycle ``t + 3`` when that group has
    ``last`` set. ``clear`` sets ``result`` to 0; no group may be in flight then.
    """

    latency = 3

    def __init__(self, lanes, width):
        self._lanes = lanes
        super().__init__({
            "clear": In(1),
            "valid": In(1),
            "last": In(1),
            "mask": In(lanes),
            "values": In(data.ArrayLayout(signed(width), lanes)),
            "result": Out(unsigned(width)),
            "final": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        width = len(self.result)

        magnitudes_1 = [Signal(width, name=f"magnitude_{lane}") for lane in range(self._lanes)]
        valid_1 = Signal()
        last_1 = Signal()
        for lane, magnitude in enumerate(magnitudes_1):
            value = self.values[lane]
            enabled = self.valid & self.mask[lane]
            m.d.sync += magnitude.eq(Mux(enabled, Mux(value < 0, -value, value), 0))
        m.d.sync += [valid_1.eq(self.valid), last_1.eq(self.last)]

        level = list(magnitudes_1)
        while len(level) > 1:
            level = [Mux(level[i] > level[i + 1], level[i], level[i + 1]) for i in range(0, len(level), 2)]
        group_2 = Signal(width)
        valid_2 = Signal()
        last_2 = Signal()
        m.d.sync += [group_2.eq(level[0]), valid_2.eq(valid_1), last_2.eq(last_1)]

        m.d.sync += self.final.eq(valid_2 & last_2)
        with m.If(self.clear):
            m.d.sync += self.result.eq(0)
        with m.Elif(valid_2 & (group_2 > self.result)):
            m.d.sync += self.result.eq(group_2)
        return m


class _SumReducer(wiring.Component):
    """Running sum of the unmasked lanes of a stream of non-negative element groups.

    A group presented in cycle ``t`` is included in ``result`` from cycle
    ``t + 2`` on; ``final`` pulses then when it has ``last`` set.
    """

    latency = 2

    def __init__(self, lanes, width, result_width):
        self._lanes = lanes
        super().__init__({
            "clear": In(1),
            "valid": In(1),
            "last": In(1),
            "mask": In(lanes),
            "values": In(data.ArrayLayout(unsigned(width), lanes)),
            "result": Out(unsigned(result_width)),
            "final": Out(1),
        })

    def elaborate(self, platform):
        m = Module()

        group_sum = C(0, 1)
        for lane in range(self._lanes):
            group_sum = group_sum + Mux(self.mask[lane], self.values[lane], 0)
        group_1 = Signal(len(self.result))
        valid_1 = Signal()
        last_1 = Signal()
        m.d.sync += [group_1.eq(group_sum), valid_1.eq(self.valid), last_1.eq(self.last)]

        m.d.sync += self.final.eq(valid_1 & last_1)
        with m.If(self.clear):
            m.d.sync += self.result.eq(0)
        with m.Elif(valid_1):
            m.d.sync += self.result.eq(self.result + group_1)
        return m


class _ArgMaxReducer(wiring.Component):
    """Index of the first maximum over the unmasked lanes of a stream of element groups, as ``numpy.argmax``.

    Groups are numbered from 0 after ``clear``; the element of lane ``p`` in
    group ``g`` has index ``g * lanes + p``. A group presented in cycle ``t``
    is included in ``index`` from cycle ``t + 2`` on; ``final`` pulses then
    when it has ``last`` set. With no unmasked element, ``index`` stays 0.
    """

    latency = 2

    def __init__(self, lanes, width):
        self._lanes = lanes
        super().__init__({
            "clear": In(1),
            "valid": In(1),
            "last": In(1),
            "mask": In(lanes),
            "values": In(data.ArrayLayout(signed(width), lanes)),
            "index": Out(32),
            "final": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        width = len(self.values[0])
        lane_bits = exact_log2(self._lanes)

        # Stage 1: the maximum of the group. On equal values the lower lane
        # wins, because the higher one replaces it only when strictly greater.
        candidates = [(self.valid & self.mask[lane], self.values[lane], C(lane, max(lane_bits, 1)))
                      for lane in range(self._lanes)]
        while len(candidates) > 1:
            merged = []
            for (low_any, low_value, low_lane), (high_any, high_value, high_lane) in zip(candidates[::2],
                                                                                         candidates[1::2]):
                take_high = high_any & (~low_any | (high_value > low_value))
                merged.append((low_any | high_any, Mux(take_high, high_value, low_value),
                               Mux(take_high, high_lane, low_lane)))
            candidates = merged
        group_any, group_value, group_lane = candidates[0]

        any_1 = Signal()
        value_1 = Signal(signed(width))
        lane_1 = Signal(max(lane_bits, 1))
        valid_1 = Signal()
        last_1 = Signal()
        m.d.sync += [
            any_1.eq(group_any),
            value_1.eq(group_value),
            lane_1.eq(group_lane),
            valid_1.eq(self.valid),
            last_1.eq(self.last),
        ]

        # Stage 2: a later group replaces the running maximum only when strictly greater.
        group = Signal(32 - lane_bits)
        best = Signal(signed(width))
        found = Signal()
        m.d.sync += self.final.eq(valid_1 & last_1)
        with m.If(self.clear):
            m.d.sync += [group.eq(0), found.eq(0), self.index.eq(0)]
        with m.Elif(valid_1):
            m.d.sync += group.eq(group + 1)
            with m.If(any_1 & (~found | (value_1 > best))):
                m.d.sync += [
                    found.eq(1),
                    best.eq(value_1),
                    self.index.eq(Cat(lane_1[:lane_bits], group)),
                ]
        return m


# The read ports of the ACC memory.
ACC_READS = ("acc_a", "acc_b")

# A SCALE runs beside later instructions. These wait until its scale register
# contains the result: SCALE needs the scalar unit, and GATES, SILU and RESID
# read scale registers. STATS and MUL2 may set the sum of squares and zmax,
# which the engine copies when it starts, so they need not wait. They wait
# anyway: in the assembler's programs every SCALE's engine is done before the
# next stage's STATS or MUL2, so that costs no cycle.
SCALE_WAITERS = (Opcode.SCALE, Opcode.STATS, Opcode.GATES, Opcode.MUL2, Opcode.SILU, Opcode.RESID)

# A MATVEC's accumulator writer runs beside later instructions too. Only these
# may run beside it, if they read none of its accumulators and set another
# absmax register. Every other instruction waits until the writer has set its
# absmax register.
MATVEC_NEIGHBOURS = (Opcode.GATES, Opcode.SILU)

# These follow the writer on its own accumulators: they run beside it if they
# set other absmax registers (ARGMAX sets none, a measuring RESID two), and
# issue a group of their ACC source only once the writer has written it. The
# writer stores the row groups in order and never again, so every group
# below its write position is final.
MATVEC_FOLLOWERS = (Opcode.RESID, Opcode.ARGMAX)


class VectorUnit(wiring.Component):
    """Element-wise passes, output scales and the accumulator writer, with the memories they use.

    Each instruction starts with a one-cycle ``start`` while ``instruction``
    is valid, and ends with a one-cycle ``done`` once all its writes are
    done and its registers contain the new values. ``start`` is ignored while
    an instruction or a state reset runs. A start with an opcode the unit
    does not execute (END, ILLEGAL) changes nothing and gives ``done``.

    SCALE is the exception: its ``done`` follows in two cycles, and its
    engine computes the scale on the ScalarUnit while later instructions
    run. SCALE, STATS, GATES, MUL2, SILU and RESID start only once the engine has
    written the scale register (:data:`SCALE_WAITERS`); ``busy`` stays high
    until then (:attr:`scale_cycles` after the SCALE's ``start``).

    What each instruction does is defined by
    :meth:`firmware.program_model.ProgramModel.execute`; the unit matches it
    bit for bit, with these hardware limits:

    - Vector base addresses (``vec_*``, ``acc_*``, ``state``, ``const``) are
      element addresses and must be multiples of P; their low bits are ignored.
      STATS and QUANT take :attr:`quant_lanes` (2P where 2P divides K)
      elements per cycle, and so do MUL2 where :attr:`wide_mul2` and SILU
      and RESID where :attr:`wide_scale`, so their ``vec_*``, ``acc_*`` and ``const``
      must be multiples of ``quant_lanes``, as :func:`firmware.layout.plan`
      places them.
    - EMBED reads the embedding row of ``token`` at element
      ``token * padded(count)``, the row stride of :func:`firmware.layout.plan`
      (``padded`` rounds up to a multiple of P). It saturates its results to
      int32, which the model does not; they differ only for a ``shift`` below
      -16, which needs embeddings of magnitude 2**15 or more.
    - A pass reads each group of its sources before it writes the group at
      the same address, so RESID updates ``vec_dst`` in place. A destination
      that overlaps a source at another offset is not supported.
    - A RESID with ``slots`` needs ``bound_max`` other than ``dst_max``. If
      they are the same, the register ends with the bound.
    - Elements at or past ``count`` are neither written nor counted in any
      absmax, sum or argmax. A pass with ``count = 0`` writes nothing and sets
      its absmax register (or ARGMAX's result) to 0. A MUL2 with ``slots`` sets
      it to ``PRODUCT_BOUND``, and a RESID with ``slots`` still sets ``bound_max``.
    - The exponent of a SCALARS constant is stored as int16 and used as its
      low 10 bits (:data:`~hw.arith.ScalarLayout`).

    Cycle counts, from the cycle of ``start`` to the cycle of ``done``, with
    ``G = max(1, ceil(count / P))`` groups (``ceil(count / quant_lanes)``
    for STATS, QUANT and the wide MUL2, SILU and RESID) and the latencies A of
    :class:`~hw.arith.ApplyScale`, N of :class:`~hw.arith.Norm16`, L of
    :class:`~hw.arith.Silu`, Q of :class:`~hw.arith.QuantizeCode` and U of
    :class:`~hw.scalar.ScalarUnit`:

    ========  ============================
    EMBED     ``G + 8``
    STATS     ``G + N + 9``
    QUANT     ``G + N + Q + 6``
    GATES     ``G + A + 2 * L + 10``
    MUL2      ``G + N + 8``, or ``G + N + 9`` with ``slots`` above 0
    SILU      ``G + A + L + 7``
    RESID     ``G + A + 8``, or ``G + A + N + 10`` with ``slots`` above 0
    ARGMAX    ``G + 6``
    SCALE     ``2``, then the engine runs for ``3 * U + 3`` from ``start``
    MATVEC    ``2``, then the writer runs for ``row_groups * R / W + 6`` from ``start``
    ========  ============================

    GATES assumes L >= S + 2 for the latency S of :class:`~hw.arith.Sigma`,
    which is true because a Silu contains a Sigma. MATVEC's writer count is
    exact when each beat arrives as soon as the unit can take it. :meth:`cycles`,
    :attr:`scale_cycles` and :meth:`matvec_cycles` compute every count from
    the actual latencies.
    A state reset takes ``state words + 1`` cycles from ``reset_state`` to
    ``reset_done``.

    MATVEC: after ``start`` the unit's accumulator writer accepts
    ``row_groups`` beats on ``results`` and writes each beat's R accumulators
    to ACC at element ``acc_dst + row_group * R``, one ACC word of W
    accumulators per cycle (:attr:`acc_lanes`, a multiple of P), so a beat
    takes R / W cycles; ``ready`` is low while a beat is being written,
    except in its last cycle. The absmax of everything written goes to
    ``dst_max``. ``acc_dst`` must be a multiple of W; the model layout makes
    it a multiple of R. The writer runs beside later instructions: GATES
    and SILU go on while it runs if they read none of its accumulators and
    set another absmax register (:data:`MATVEC_NEIGHBOURS`). RESID and
    ARGMAX follow it (:data:`MATVEC_FOLLOWERS`), if they set other absmax
    registers than the writer (a RESID with ``slots`` sets ``dst_max`` and
    ``bound_max``): they start while it runs
    and issue a group of accumulators only after the writer has written
    it, so they take more cycles than the table gives when they overtake it.
    Every other instruction waits until the writer has set its absmax
    register, and ``busy`` stays high until then.

    Host access (only while no instruction or state reset runs): a write
    stores one byte of a target's memory in the cycle it is presented. A read
    presents ``target`` and ``address`` for one cycle; ``host_read.data``
    holds the byte :attr:`host_read_latency` (3) cycles later and until the
    next read's byte arrives. Reads may follow each other in every cycle. Element ``i`` of a target sits at bytes
    ``[i * size, (i + 1) * size)``, little-endian, with sizes and formats in
    :data:`HOST_ELEMENT_BYTES`. A write past the end of a target, to
    ACCUMULATORS or to an unknown target is ignored; such a read returns an
    unspecified byte.

    Parameters
    ----------
    core : CoreParams
        The core; P = ``core.vector_lanes`` must be a power of two and divide
        ``core.rows``. Memory sizes come from
        :func:`firmware.layout.memory_sizes`.
    image : firmware.loader.MemoryImage or None
        For test benches only: preload CONST, EMBED, LOWER_BOUNDS and SCALARS
        with this image's contents, as the host port would. A generated core
        passes ``None`` and is loaded through the host port.

    Members
    -------
    instruction : ``In(instruction_layout())``
        The instruction to execute, held while ``start`` is high.
    start : ``In(1)``
    done : ``Out(1)``
    busy : ``Out(1)``
        An instruction, a state reset or a SCALE's engine runs.
    token : ``In(32)``
        The token of EMBED, sampled with ``start``.
    argmax : ``Out(32)``
        Result of the last ARGMAX.
    results : ``In(stream.Signature(result_layout))``
        The projection unit's accumulators: R signed values and ``row_group``
        per beat (the layout of :attr:`hw.matvec.MatVec.result_layout`).
    code_write : ``Out(CodeWriteSignature(P, code_index_bits, SLOTS))``
        QUANT writes the codes of element ``e`` of each slot ``s`` below
        ``slots`` to element ``code * K + e`` of code-buffer slot ``s``, all
        slots in the same cycle.
    host_write : ``In(HostWriteSignature)``
    host_read : ``In(HostReadSignature)``
    reset_state : ``In(1)``
        Start zeroing the whole STATE memory, one word per cycle. It is
        ignored while an instruction runs and in the cycle of a ``start``.
    reset_done : ``Out(1)``
        One-cycle pulse after the last STATE word is zeroed.
    """

    def __init__(self, core: CoreParams, *, image=None):
        if not isinstance(core, CoreParams):
            raise TypeError(f"`core` must be a CoreParams, not {core!r}")
        lanes = core.vector_lanes
        if lanes & (lanes - 1):
            raise ValueError(f"`vector_lanes` must be a power of two, not {lanes}")
        if core.rows % lanes:
            raise ValueError(f"`vector_lanes` must divide `rows` ({core.rows}), not {lanes}")

        self._core = core
        self._lanes = lanes
        self._lane_bits = exact_log2(lanes)
        # STATS and QUANT take Q = quant_lanes elements per cycle. VEC and CONST
        # words are Q elements wide, and the passes that are not wide use one P-group of a word.
        self._quant_lanes = quant_lanes = core.quant_lanes
        self._vec_ratio_bits = exact_log2(quant_lanes // lanes)
        self._acc_bits = core.acc_bits
        self._sizes = sizes = memory_sizes(core)
        self._code_index_bits = max(1, ceil_log2(sizes["code_words"] * core.inputs))

        def words(entries, width=lanes):
            return max(1, -(-entries // width))

        def init(name, values, element_bits, depth, width=lanes):
            if image is None:
                return []
            return _pack_words(values, element_bits, width, depth, name)

        const_element_bits = CONST_FIELD_BITS * CONST_FIELDS
        const_values = []
        if image is not None:
            fields = np.asarray(image.const, dtype=np.int64) & ((1 << CONST_FIELD_BITS) - 1)
            const_values = [sum(int(field) << (CONST_FIELD_BITS * index) for index, field in enumerate(row))
                            for row in fields]
        scalar_values = []
        if image is not None:
            scalar_values = [int(mantissa) | (int(exponent) & 0xFFFF) << nx.MANT_BITS
                             for mantissa, exponent in image.scalars]
            if len(scalar_values) > sizes["scalars"]:
                raise ValueError(f"the image's scalars need {len(scalar_values)} words, but the memory has "
                                 f"{sizes['scalars']}; build the core with maxima that fit the model")

        self._vec = Memory(shape=data.ArrayLayout(signed(nx.ACT_BITS), quant_lanes),
                           depth=words(sizes["vec"], quant_lanes), init=[])
        self._acc_lanes = acc_lanes = accumulator_word_lanes(core)
        self._acc_ratio_bits = exact_log2(acc_lanes // lanes)
        self._acc = Memory(shape=data.ArrayLayout(signed(self._acc_bits), acc_lanes),
                           depth=max(1, -(-sizes["acc"] // acc_lanes)),
                           init=[])
        self._state = Memory(shape=unsigned(nx.ACT_BITS * lanes), depth=words(sizes["state"]), init=[])
        const_words = words(sizes["const"], quant_lanes)
        self._const = Memory(shape=unsigned(const_element_bits * quant_lanes), depth=const_words,
                             init=init("constants", const_values, const_element_bits, const_words, quant_lanes))
        # One word per layer and vector word: shallow, so distributed RAM.
        self._lower_bounds = Memory(
            shape=unsigned(nx.NORM_BITS * lanes), depth=words(sizes["state"]), attrs={"ram_style": "distributed"},
            init=init("lower bounds", image.lower_bounds if image else [], nx.NORM_BITS, words(sizes["state"])))
        self._embed = Memory(
            shape=unsigned(nx.NORM_BITS * lanes), depth=words(sizes["embed"]),
            init=init("embeddings", image.embeddings if image else [], nx.NORM_BITS, words(sizes["embed"])))
        self._scalars = Memory(shape=unsigned(nx.MANT_BITS + SCALAR_EXPONENT_STORED_BITS),
                               depth=max(1, sizes["scalars"]), init=scalar_values)

        # The arithmetic of each lane, and the per-vector units, built here so
        # that their latencies are known before elaboration.
        self._lane_units = [{
            "norm_vec": Norm16(nx.ACT_BITS),
            "norm_acc": Norm16(self._acc_bits),
            "apply_a": ApplyScale(self._acc_bits),
            "silu_a": Silu(),
            "apply_b": ApplyScale(self._acc_bits),
            "sigma_b": Sigma(),
            # A lane has three sigma tables, each a block RAM unless the core
            # builds the third in logic.
            "silu_h": Silu(table_in_logic=core.silu_h_table_in_logic),
        } for _ in range(lanes)]
        # MUL2 takes Q elements per cycle too where an ACC word contains Q accumulators.
        self._wide_mul2 = quant_lanes > lanes and self._acc_lanes >= quant_lanes
        # SILU and RESID too, with `scale_lanes_doubled` and where MUL2 is wide.
        self._wide_scale = self._wide_mul2 and core.scale_lanes_doubled
        # Lanes P .. Q - 1 serve STATS, QUANT and, where they are wide, MUL2, SILU and RESID.
        self._quant_units = [{"norm_vec": Norm16(nx.ACT_BITS),
                              **({"norm_acc": Norm16(self._acc_bits)} if self._wide_mul2 else {}),
                              **({"apply_a": ApplyScale(self._acc_bits), "silu_a": Silu()}
                                 if self._wide_scale else {})}
                             for _ in range(quant_lanes - lanes)]
        # QUANT quantizes every slot in one pass; the slots share one table.
        self._quantize = QuantizeCode(width=nx.ACT_BITS, lanes=quant_lanes, vectors=SLOTS)
        self._scalar_unit = ScalarUnit()

        self._absmax = [Signal(32, name=f"absmax_{index}") for index in range(MAX_REGISTERS)]
        self._scale = [Signal(ScalarLayout, name=f"scale_{index}") for index in range(SCALE_REGISTERS)]
        self._sumsq = Signal(nx.SUMSQ_BITS)
        self._zmax = [Signal(32, name=f"zmax_{slot}") for slot in range(SLOTS)]

        super().__init__({
            "instruction": In(instruction_layout()),
            "start": In(1),
            "done": Out(1),
            "busy": Out(1),
            "token": In(32),
            "argmax": Out(32),
            "results": In(stream.Signature(self.result_layout)),
            "code_write": Out(CodeWriteSignature(quant_lanes, self._code_index_bits, SLOTS)),
            "host_write": In(HostWriteSignature),
            "host_read": In(HostReadSignature),
            "reset_state": In(1),
            "reset_done": Out(1),
        })

    @property
    def core(self):
        return self._core

    @property
    def result_layout(self):
        """Layout of one ``results`` beat; it equals :attr:`hw.matvec.MatVec.result_layout` of the same core."""
        return data.StructLayout({
            "accumulators": data.ArrayLayout(signed(self._acc_bits), self._core.rows),
            "row_group": unsigned(bits_for(max(0, self._core.weight_depth - 1))),
        })

    @property
    def host_read_latency(self):
        """Cycles from presenting a host read address to its byte on ``host_read.data``."""
        return self.MEMORY + 1

    @property
    def memories(self):
        """The unit's memories by name, for test benches that inspect or preset their rows."""
        return {
            "vec": self._vec, "acc": self._acc, "state": self._state, "const": self._const,
            "lower_bounds": self._lower_bounds, "embed": self._embed, "scalars": self._scalars,
        }

    @property
    def acc_lanes(self):
        """Accumulators per word of the ACC memory (:func:`accumulator_word_lanes`)."""
        return self._acc_lanes

    @property
    def wide_mul2(self):
        """Whether MUL2 takes :attr:`quant_lanes` elements per cycle (an ACC word contains at least that many)."""
        return self._wide_mul2

    @property
    def wide_scale(self):
        """Whether SILU and RESID take :attr:`quant_lanes` elements per cycle.

        They do where :attr:`wide_mul2` and the core's ``scale_lanes_doubled`` are both true.
        """
        return self._wide_scale

    @property
    def quant_lanes(self):
        """Elements per cycle of STATS, QUANT and the wide passes, and per word of VEC and CONST.

        This is Q, :attr:`CoreParams.quant_lanes`.
        """
        return self._quant_lanes

    @property
    def registers(self):
        """The architectural registers, for test benches: ``absmax``, ``scale`` and ``zmax`` lists and ``sumsq``."""
        return {"absmax": list(self._absmax), "scale": list(self._scale), "sumsq": self._sumsq,
                "zmax": list(self._zmax)}

    def target_bytes(self, target):
        """Return the number of addressable bytes of host target ``target``."""
        entries = {
            Target.VECTORS: self._sizes["const"],
            Target.EMBEDDINGS: self._sizes["embed"],
            Target.LOWER_BOUNDS: self._sizes["state"],
            Target.SCALARS: self._sizes["scalars"],
            Target.STATE: self._sizes["state"],
            Target.ACCUMULATORS: self._sizes["acc"],
        }
        return entries[target] * HOST_ELEMENT_BYTES[target]

    # Stage numbers: a group read in cycle t has its memory data registered
    # in cycle t + MEMORY; every later stage counts from the same t.
    MEMORY = 2

    def _stages(self):
        """Return the stage of every write and reduction, from the latencies of the arithmetic components."""
        units = self._lane_units[0]
        apply_latency = units["apply_a"].latency
        norm_latency = units["norm_vec"].latency
        silu_latency = units["silu_a"].latency
        sigma_latency = units["sigma_b"].latency
        quant_latency = self._quantize.latency
        assert units["apply_b"].latency == apply_latency
        assert units["norm_acc"].latency == norm_latency

        stages = {}
        memory = self.MEMORY
        stages["embed"] = memory + 1
        stages["normalized"] = memory + norm_latency
        stages["product"] = stages["normalized"] + 1
        # STATS and QUANT take norm16(v) one stage late, where a measuring MUL2 has its product.
        stages["stats"] = stages["product"] + 1
        stages["squares"] = stages["stats"] + 1
        stages["codes"] = stages["stats"] + quant_latency
        stages["scaled"] = memory + apply_latency
        stages["silu"] = stages["scaled"] + silu_latency
        stages["resid"] = stages["scaled"] + 1
        stages["sigma"] = stages["scaled"] + sigma_latency
        stages["forget"] = stages["sigma"] + 2
        stages["mix"] = max(stages["forget"], stages["silu"])
        stages["state"] = stages["mix"] + 3
        stages["silu_h"] = stages["state"] + silu_latency
        stages["argmax"] = memory
        # A measuring RESID normalizes its sum in STATS's stages, delayed as much as its sum lags VEC's data.
        stages["sum_stats"] = stages["stats"] + stages["resid"] - memory
        stages["sum_squares"] = stages["squares"] + stages["resid"] - memory
        return stages

    def _is_wide(self, opcode):
        """Return whether a pass of ``opcode`` takes :attr:`quant_lanes` elements per cycle."""
        return opcode in self._wide_opcodes()

    def _wide_opcodes(self):
        return ([Opcode.STATS, Opcode.QUANT] + ([Opcode.MUL2] if self._wide_mul2 else [])
                + ([Opcode.SILU, Opcode.RESID] if self._wide_scale else []))

    def cycles(self, opcode, count=0, row_groups=0, slots=0):
        """Return the cycles from ``start`` to ``done`` of one instruction.

        ``count`` is the element count of a pass, ``row_groups`` the number
        of beats of a MATVEC and ``slots`` the slots that a MUL2 or RESID measures.
        The MATVEC count assumes that each beat arrives as soon as the unit
        is ready for it.
        """
        stages = self._stages()
        opcode = Opcode(opcode)
        lanes = self._quant_lanes if self._is_wide(opcode) else self._lanes
        groups = max(1, -(-count // lanes))
        # Start latches the instruction, setup takes one cycle, the last group
        # is issued in cycle 1 + groups, and done follows the final result by one cycle.
        issue = 1 + groups
        absmax = _AbsMaxReducer.latency + 1
        if opcode == Opcode.EMBED:
            return issue + stages["embed"] + absmax
        if opcode == Opcode.STATS or (opcode == Opcode.MUL2 and slots):
            return issue + stages["squares"] + _SumReducer.latency + 1
        if opcode == Opcode.QUANT:
            return issue + stages["codes"] + 1
        if opcode == Opcode.GATES:
            return issue + stages["silu_h"] + absmax
        if opcode == Opcode.MUL2:
            return issue + stages["product"] + absmax
        if opcode == Opcode.SILU:
            return issue + stages["silu"] + absmax
        if opcode == Opcode.RESID and slots:
            return issue + stages["sum_squares"] + _SumReducer.latency + 1
        if opcode == Opcode.RESID:
            return issue + stages["resid"] + absmax
        if opcode == Opcode.ARGMAX:
            return issue + stages["argmax"] + _ArgMaxReducer.latency + 1
        if opcode == Opcode.SCALE:
            # SETUP hands the SCALE to its engine, which runs on (scale_cycles).
            return 2
        # SCALE and MATVEC hand over to their engines in SETUP, so they are done in
        # two cycles (scale_cycles, matvec_cycles); other opcodes do nothing.
        return 2

    def instruction_cycles(self, instr):
        """Return :meth:`cycles` of a decoded instruction (:class:`firmware.isa.Instruction`)."""
        fields = instr.fields
        slots = fields.get("slots", 0) if instr.opcode in (Opcode.MUL2, Opcode.RESID) else 0
        return self.cycles(instr.opcode, fields.get("count", 0), fields.get("row_groups", 0), slots)

    def matvec_cycles(self, row_groups):
        """Cycles from a MATVEC's ``start`` until its absmax register is set and its writer no longer keeps ``busy`` high.

        The count assumes that each beat arrives as soon as the writer can
        take it and that no pass sets an absmax register in the writer's last cycle.
        """
        if row_groups == 0:
            return 2
        # The first beat is accepted in the cycle after SETUP, and the absmax
        # register is set in the cycle after the reducer's result.
        return 2 + row_groups * (self._core.rows // self._acc_lanes) + _AbsMaxReducer.latency + 1

    @property
    def scale_cycles(self):
        """Cycles from a SCALE's ``start`` until its scale register contains the result and ``busy`` falls.

        Two commands, then three results in a chain: FROM_INT, K times that,
        and the product with the RSQRT result.
        """
        return 2 + 3 * self._scalar_unit.latency + 1

    def elaborate(self, platform):
        m = Module()
        ports = self._elaborate_memories(m)
        shared = self._pass_registers(m, ports, self._stages())
        shared.inputs = self._elaborate_reads(m, ports, shared)
        self._elaborate_control(m, ports, shared)
        self._elaborate_datapath(m, ports, shared)
        self._elaborate_host(m, ports, shared)
        return m

    def _elaborate_memories(self, m):
        """Add the memories; return their ports by name."""
        m.submodules.vec = self._vec
        m.submodules.acc = self._acc
        m.submodules.state = self._state
        m.submodules.const = self._const
        m.submodules.lower_bounds = self._lower_bounds
        m.submodules.embed = self._embed
        m.submodules.scalars = self._scalars
        return {
            "vec_read": self._vec.read_port(),
            "vec_write": self._vec.write_port(granularity=1),
            "acc_a": self._acc.read_port(),
            "acc_b": self._acc.read_port(),
            "acc_write": self._acc.write_port(),
            "state_read": self._state.read_port(),
            "state_write": self._state.write_port(granularity=8),
            "const_read": self._const.read_port(),
            "const_write": self._const.write_port(granularity=8),
            "lower_bounds_read": self._lower_bounds.read_port(),
            "lower_bounds_write": self._lower_bounds.write_port(granularity=8),
            "embed_read": self._embed.read_port(),
            "embed_write": self._embed.write_port(granularity=8),
            "scalars_read": self._scalars.read_port(),
            "scalars_write": self._scalars.write_port(granularity=8),
        }

    def _elaborate_control(self, m, ports, c):
        """Add the instruction sequencing: setup, group issue, drain and the register updates."""
        lanes = self._lanes
        stages = c.stages

        m.d.sync += [self.done.eq(0), self.reset_done.eq(0)]
        reducers = (c.absmax_reducer, c.sumsq_reducer, c.argmax_reducer, *c.zmax_reducers)

        def finish():
            m.d.sync += [self.done.eq(1), c.running.eq(0)]
            m.next = "IDLE"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [c.instr.eq(self.instruction), c.token.eq(self.token), c.running.eq(1)]
                    m.next = "SETUP"
                with m.Elif(self.reset_state):
                    m.d.sync += [c.reset_address.eq(0), c.running.eq(1)]
                    m.next = "RESET"

            with m.State("SETUP"):
                # SETUP repeats while a SCALE still runs and the instruction
                # must wait for it, which changes nothing, because every load is
                # from the latched instruction.
                m.d.comb += [reducer.clear.eq(1) for reducer in reducers]
                self._elaborate_setup(m, c)
                waits = ((Cat(c.opcode == op for op in SCALE_WAITERS).any() & c.scale_busy)
                         | (c.writer_busy & ~self._beside_writer(c)))
                with m.Switch(c.opcode):
                    with m.Case(Opcode.EMBED, Opcode.STATS, Opcode.QUANT, Opcode.GATES, Opcode.MUL2,
                                Opcode.SILU, Opcode.RESID, Opcode.ARGMAX):
                        with m.If(~waits):
                            m.next = "RUN"
                    with m.Case(Opcode.SCALE):
                        with m.If(~waits):
                            m.d.comb += c.scale_start.eq(1)
                            finish()
                    with m.Case(Opcode.MATVEC):
                        with m.If(~waits):
                            with m.If(c.instr.matvec.row_groups == 0):
                                self._write_register(m, self._absmax, c.instr.matvec.dst_max, 0)
                            with m.Else():
                                m.d.comb += c.writer_start.eq(1)
                            finish()
                    with m.Default():
                        finish()

            with m.State("RUN"):
                # A measuring RESID's shift. The bound is ready in the second cycle after
                # SETUP, and the first sum reaches the Norm16 later than that.
                with m.If(c.measure_sum):
                    m.d.sync += c.vec_shift.eq(norm16_shift(c.bound))
                # Wide passes (`c.wide`, `_wide_opcodes`) issue Q elements per cycle, the others P.
                step = Mux(c.wide, self._quant_lanes, lanes)
                last = c.remaining <= step
                # A follower of the writer waits for the group of ACC that it reads next. A wide
                # RESID reads Q / P groups from a multiple of Q / P, and the writer writes
                # whole ACC words of at least Q accumulators, so the first group decides.
                behind_writer = (c.writer_busy & Cat(c.opcode == op for op in MATVEC_FOLLOWERS).any()
                                 & (c.read_addresses["acc_a"] >= c.writer_written))
                with m.If(~behind_writer):
                    m.d.comb += [
                        c.pipeline[0].valid.eq(1),
                        c.pipeline[0].last.eq(last),
                        c.pipeline[0].mask.eq(Cat((c.remaining > lane) & (c.wide | (lane < lanes))
                                                  for lane in range(self._quant_lanes))),
                    ]
                    m.d.sync += c.remaining.eq(c.remaining - step)
                    for name, address in c.read_addresses.items():
                        if name in ("vec_read", "acc_a", "const_read"):
                            m.d.sync += address.eq(address + Mux(c.wide, 1 << self._vec_ratio_bits, 1))
                        else:
                            m.d.sync += address.eq(address + 1)
                    with m.If(last):
                        m.next = "DRAIN"

            with m.State("DRAIN"):
                with m.Switch(c.opcode):
                    with m.Case(Opcode.EMBED, Opcode.GATES, Opcode.MUL2, Opcode.SILU, Opcode.RESID):
                        with m.If(c.measure):
                            # The absmax register takes the bound that the measurements used.
                            with m.If(c.sumsq_reducer.final):
                                m.d.comb += c.pass_writes_absmax.eq(1)
                                self._write_register(m, self._absmax, c.destination, nx.PRODUCT_BOUND)
                                self._write_stats(m, c, c.instr.mul2.slots)
                                finish()
                        with m.Elif(c.measure_sum):
                            # The sum's absmax is final before its measurements.
                            with m.If(c.sumsq_reducer.final):
                                m.d.comb += c.pass_writes_absmax.eq(1)
                                self._write_register(m, self._absmax, c.destination, c.absmax_reducer.result)
                                self._write_register(m, self._absmax, c.instr.resid.bound_max, c.bound)
                                self._write_stats(m, c, c.instr.resid.slots)
                                finish()
                        with m.Elif(c.absmax_reducer.final):
                            m.d.comb += c.pass_writes_absmax.eq(1)
                            self._write_register(m, self._absmax, c.destination, c.absmax_reducer.result)
                            finish()
                    with m.Case(Opcode.STATS):
                        with m.If(c.sumsq_reducer.final):
                            self._write_stats(m, c, c.instr.stats.slots)
                            finish()
                    with m.Case(Opcode.QUANT):
                        tap = c.pipeline[stages["codes"]]
                        with m.If(tap.valid & tap.last):
                            finish()
                    with m.Case(Opcode.ARGMAX):
                        with m.If(c.argmax_reducer.final):
                            m.d.sync += self.argmax.eq(c.argmax_reducer.index)
                            finish()


            with m.State("RESET"):
                m.d.comb += [
                    ports["state_write"].en.eq(-1),
                    ports["state_write"].addr.eq(c.reset_address),
                    ports["state_write"].data.eq(0),
                ]
                m.d.sync += c.reset_address.eq(c.reset_address + 1)
                with m.If(c.reset_address == self._state.depth - 1):
                    m.d.sync += [self.reset_done.eq(1), c.running.eq(0)]
                    m.next = "IDLE"

        c.fsm = fsm

        # The bound of a measuring RESID's sum, as golden.numerics.residual_bound computes it.
        exponent = c.bound_exponent
        cap = 1 << (nx.ACT_BITS - 1)
        term = Mux(exponent > 0, (C(1, nx.ACT_BITS) << exponent[:5])[:nx.ACT_BITS], 1)
        total = c.bound_absmax + term
        m.d.sync += c.bound.eq(Mux((exponent >= nx.ACT_BITS - 1) | (total >= cap), cap, total))

        self._elaborate_scale_engine(m, c)
        m.d.comb += self.busy.eq(c.running | c.scale_busy | c.writer_busy)
        self._elaborate_accumulator_writer(m, ports, c)
        self._elaborate_write_streams(m, c)

    def _pass_registers(self, m, ports, stages):
        """Add the reducers, the control pipeline and the registers that SETUP loads.

        Returns them as a namespace that every later elaborate step shares.
        """
        lanes = self._lanes
        c = SimpleNamespace(stages=stages)

        # One reducer takes the vector writes, the other MATVEC's ACC writes (a word of accumulators).
        quant_lanes = self._quant_lanes
        m.submodules.absmax_reducer = c.absmax_reducer = _AbsMaxReducer(quant_lanes, 32)
        m.submodules.matvec_absmax_reducer = c.matvec_reducer = _AbsMaxReducer(self._acc_lanes, 32)
        m.submodules.sumsq_reducer = c.sumsq_reducer = _SumReducer(quant_lanes, 2 * (nx.NORM_BITS + 1),
                                                                   nx.SUMSQ_BITS)
        c.zmax_reducers = []
        for slot in range(SLOTS):
            reducer = _AbsMaxReducer(quant_lanes, 32)
            m.submodules[f"zmax_reducer_{slot}"] = reducer
            c.zmax_reducers.append(reducer)
        m.submodules.argmax_reducer = c.argmax_reducer = _ArgMaxReducer(lanes, self._acc_bits)
        m.submodules.quantize = c.quantize = self._quantize
        m.submodules.scalar_unit = c.scalar_unit = self._scalar_unit
        # The zmax reducers finish no later than the sum, so STATS waits for the sum only.
        assert _AbsMaxReducer.latency <= (stages["squares"] - stages["stats"]) + _SumReducer.latency

        c.instr = Signal(instruction_layout())
        c.token = Signal(32)
        c.opcode = c.instr.embed.opcode

        # Loaded in SETUP: the elements still to issue, the read and write
        # addresses (word addresses), the norm16 shifts, the scales and EMBED's shift.
        c.remaining = Signal(range((1 << 16) + 1))
        # Addresses count groups of P elements. An ACC word contains
        # 2 ** acc_ratio_bits groups, and a VEC or CONST word 2 ** vec_ratio_bits.
        c.group_ratio_bits = {"acc_a": self._acc_ratio_bits, "acc_b": self._acc_ratio_bits,
                              "vec_read": self._vec_ratio_bits, "const_read": self._vec_ratio_bits}
        c.read_addresses = {name: Signal(len(ports[name].addr) + c.group_ratio_bits.get(name, 0),
                                         name=f"{name}_address")
                            for name in ("vec_read", "acc_a", "acc_b", "state_read", "const_read", "embed_read")}
        c.vec_write_address = Signal(len(ports["vec_write"].addr) + self._vec_ratio_bits)
        c.wide = Signal()
        # A MUL2 with slots: the pass measures its product as STATS would.
        c.measure = Signal()
        # A RESID with slots measures its sum, normalized with `bound`. SETUP's
        # `bound_absmax` and `bound_exponent` give `bound` two cycles later.
        c.measure_sum = Signal()
        c.bound_absmax = Signal(32)
        c.bound_exponent = Signal(signed(12))
        c.bound = Signal(32)
        c.state_write_address = Signal(len(ports["state_write"].addr))
        c.code_index = Signal(self._code_index_bits)
        c.vec_shift = Signal(range(-nx.NORM_BITS, 32 + 1))
        c.acc_shift = Signal(range(-nx.NORM_BITS, 32 + 1))
        c.scale_a = Signal(ScalarLayout)
        c.scale_b = Signal(ScalarLayout)
        c.embed_right = Signal()
        c.embed_amount = Signal(range(nx.ACT_BITS + 1))
        c.scalar_zmax = Signal(32)
        c.beats_left = Signal(16)
        c.accepting = Signal()
        # An instruction or a state reset runs (`running`), or a SCALE (`scale_busy`).
        c.running = Signal()
        c.scale_start = Signal()
        c.scale_busy = Signal()
        c.scale_constant = Signal.like(c.instr.scale.constant)
        # The accumulator writer of the running MATVEC: busy, its accumulators
        # [writer_low, writer_high) and its absmax register.
        c.writer_start = Signal()
        c.writer_busy = Signal()
        c.writer_low = Signal(ADDRESS_BITS)
        c.writer_high = Signal(ADDRESS_BITS + 1)
        c.writer_dst_max = Signal(range(MAX_REGISTERS))
        # The ACC group (as acc_a counts) below which the writer is done, up to the group after ACC's last word.
        c.writer_written = Signal(range((self._acc.depth << self._acc_ratio_bits) + 1))
        c.pass_writes_absmax = Signal()
        c.reset_address = Signal(len(ports["state_write"].addr))

        # The control pipeline: pipeline[k] belongs to the group issued k cycles ago.
        layout = _control_layout(quant_lanes)
        c.pipeline = [Signal(layout, name="pipeline_0")]
        for stage in range(1, max(stages.values()) + 1):
            register = Signal(layout, name=f"pipeline_{stage}")
            m.d.sync += register.eq(c.pipeline[-1])
            c.pipeline.append(register)

        # The absmax register that a vector-writing pass or MATVEC sets.
        c.destination = Signal(range(MAX_REGISTERS))
        destinations = {
            Opcode.EMBED: c.instr.embed.dst_max, Opcode.GATES: c.instr.gates.dst_max,
            Opcode.MUL2: c.instr.mul2.dst_max, Opcode.SILU: c.instr.silu.dst_max,
            Opcode.RESID: c.instr.resid.dst_max,
        }
        with m.Switch(c.opcode):
            for op, field in destinations.items():
                with m.Case(op):
                    m.d.comb += c.destination.eq(field)

        # The vector write of the running pass, valid at the pass's own stage.
        c.vec_stream = Signal(layout)
        c.vec_values = Signal(data.ArrayLayout(signed(nx.ACT_BITS), quant_lanes))
        return c

    def _word(self, address):
        """Return the word address of an element address, a multiple of P."""
        return address[self._lane_bits:]

    def _write_stats(self, m, c, slots):
        """Set the sum of squares and the zmax registers of the slots below ``slots`` from their reducers."""
        m.d.sync += self._sumsq.eq(c.sumsq_reducer.result)
        for slot, (register, reducer) in enumerate(zip(self._zmax, c.zmax_reducers)):
            with m.If(slot < slots):
                m.d.sync += register.eq(reducer.result)

    @staticmethod
    def _write_register(m, registers, index, value):
        """Set ``registers[index]`` to ``value`` at the next clock edge."""
        with m.Switch(index):
            for position, register in enumerate(registers):
                with m.Case(position):
                    m.d.sync += register.eq(value)

    def _elaborate_setup(self, m, c):
        """Load the pass registers from the latched instruction (the SETUP cycle)."""
        word = self._word
        instr, addresses = c.instr, c.read_addresses

        def absmax(index):
            return norm16_shift(_select(m, index, self._absmax, 32, name=None))

        def scale(index):
            return _select(m, index, self._scale, ScalarLayout, name=None)

        def zmax(index):
            # The slot fields have room for a fourth slot, which reads as 0.
            return _select(m, index, self._zmax + [C(0, 32)] * (4 - SLOTS), 32, name=None)

        m.d.sync += [
            c.wide.eq(Cat(c.opcode == op for op in self._wide_opcodes()).any()),
            c.measure.eq((c.opcode == Opcode.MUL2) & (instr.mul2.slots != 0)),
            c.measure_sum.eq((c.opcode == Opcode.RESID) & (instr.resid.slots != 0)),
        ]
        with m.Switch(c.opcode):
            with m.Case(Opcode.EMBED):
                fields = instr.embed
                groups = (fields.count + (self._lanes - 1)) >> self._lane_bits
                address_bits = len(addresses["embed_read"])
                shift = fields.shift
                m.d.sync += [
                    c.remaining.eq(fields.count),
                    c.vec_write_address.eq(word(fields.vec_dst)),
                    # The row stride is padded(count); the product needs only the address bits.
                    addresses["embed_read"].eq(c.token[:address_bits] * groups[:address_bits]),
                    # round_shift(v, s) is ((v >> (s - 1)) + 1) >> 1 for s > 0 and v << -s
                    # otherwise. An int16 gives 0 for every s >= 17 and overflows int32 for
                    # every left shift past 31, so both amounts are clamped.
                    c.embed_right.eq(shift > 0),
                    c.embed_amount.eq(Mux(shift > 0,
                                          Mux(shift > nx.NORM_BITS, nx.NORM_BITS, shift - 1),
                                          Mux(shift < -nx.ACT_BITS, nx.ACT_BITS, -shift))),
                ]
            with m.Case(Opcode.STATS):
                fields = instr.stats
                m.d.sync += [
                    c.remaining.eq(fields.count),
                    addresses["vec_read"].eq(word(fields.vec_src)),
                    addresses["const_read"].eq(word(fields.const)),
                    c.vec_shift.eq(absmax(fields.src_max)),
                ]
            with m.Case(Opcode.QUANT):
                fields = instr.quant
                m.d.comb += c.quantize.load.eq(1)
                m.d.comb += [c.quantize.absmax[slot].eq(self._zmax[slot]) for slot in range(SLOTS)]
                m.d.sync += [
                    c.remaining.eq(fields.count),
                    addresses["vec_read"].eq(word(fields.vec_src)),
                    addresses["const_read"].eq(word(fields.const)),
                    c.vec_shift.eq(absmax(fields.src_max)),
                    c.code_index.eq(_multiply_by_constant(fields.code, self._core.inputs)),
                ]
            with m.Case(Opcode.SCALE):
                m.d.sync += c.scalar_zmax.eq(zmax(instr.scale.slot))
            with m.Case(Opcode.GATES):
                fields = instr.gates
                m.d.sync += [
                    c.remaining.eq(fields.count),
                    addresses["acc_a"].eq(word(fields.acc_i)),
                    addresses["acc_b"].eq(word(fields.acc_f)),
                    addresses["state_read"].eq(word(fields.state)),
                    c.state_write_address.eq(word(fields.state)),
                    c.vec_write_address.eq(word(fields.vec_dst)),
                    c.scale_a.eq(scale(fields.scale_i)),
                    c.scale_b.eq(scale(fields.scale_f)),
                ]
            with m.Case(Opcode.MUL2):
                fields = instr.mul2
                m.d.sync += [
                    c.remaining.eq(fields.count),
                    addresses["acc_a"].eq(word(fields.acc_src)),
                    addresses["vec_read"].eq(word(fields.vec_src)),
                    addresses["const_read"].eq(word(fields.const)),
                    c.vec_write_address.eq(word(fields.vec_dst)),
                    c.acc_shift.eq(absmax(fields.acc_max)),
                    c.vec_shift.eq(absmax(fields.vec_max)),
                ]
            with m.Case(Opcode.SILU):
                fields = instr.silu
                m.d.sync += [
                    c.remaining.eq(fields.count),
                    addresses["acc_a"].eq(word(fields.acc_src)),
                    c.vec_write_address.eq(word(fields.vec_dst)),
                    c.scale_a.eq(scale(fields.scale)),
                ]
            with m.Case(Opcode.RESID):
                fields = instr.resid
                m.d.sync += [
                    c.remaining.eq(fields.count),
                    addresses["acc_a"].eq(word(fields.acc_src)),
                    addresses["vec_read"].eq(word(fields.vec_dst)),
                    addresses["const_read"].eq(word(fields.const)),
                    c.vec_write_address.eq(word(fields.vec_dst)),
                    c.scale_a.eq(scale(fields.scale)),
                    c.bound_absmax.eq(_select(m, fields.dst_max, self._absmax, 32, name=None)),
                    c.bound_exponent.eq(fields.magnitude_bits + nx.MANT_BITS + scale(fields.scale).exponent),
                ]
            with m.Case(Opcode.ARGMAX):
                fields = instr.argmax
                m.d.sync += [
                    c.remaining.eq(fields.count),
                    addresses["acc_a"].eq(word(fields.acc_src)),
                ]

    def _elaborate_scale_engine(self, m, c):
        """Add the engine of SCALE: ``K * scalar_from_int(zmax[slot]) * scalar_rsqrt(sumsq)`` on the ScalarUnit.

        It starts on ``c.scale_start``, in SETUP, where the instruction is
        latched. It runs while the unit goes on with later instructions, and
        ``c.scale_busy`` is high until the scale register contains the result.
        """
        command = c.scalar_unit.command
        result = c.scalar_unit.result
        rsqrt = Signal(ScalarLayout)
        results = Signal(range(4))
        destination = Signal.like(c.instr.scale.dst_scale)
        sumsq = Signal.like(self._sumsq)

        with m.FSM(name="scale"):
            with m.State("IDLE"):
                with m.If(c.scale_start):
                    m.d.sync += [
                        c.scale_busy.eq(1),
                        c.scale_constant.eq(c.instr.scale.constant),
                        destination.eq(c.instr.scale.dst_scale),
                        sumsq.eq(self._sumsq),
                    ]
                    m.next = "FROM_INT"

            with m.State("FROM_INT"):
                m.d.comb += [
                    command.valid.eq(1),
                    command.payload.op.eq(ScalarOp.FROM_INT),
                    command.payload.value.eq(c.scalar_zmax),
                ]
                m.next = "RSQRT"

            with m.State("RSQRT"):
                m.d.comb += [
                    command.valid.eq(1),
                    command.payload.op.eq(ScalarOp.RSQRT),
                    command.payload.value.eq(sumsq),
                ]
                m.d.sync += results.eq(0)
                m.next = "CHAIN"

            with m.State("CHAIN"):
                # Results come in command order: scalar_from_int(zmax), rsqrt(sumsq),
                # K * scalar_from_int(zmax), and the scale. K is the SCALARS word
                # at `constant`, read and registered since the start.
                constant = c.inputs.scalar
                with m.If(result.valid):
                    m.d.sync += results.eq(results + 1)
                    with m.Switch(results):
                        with m.Case(0):
                            m.d.comb += [
                                command.valid.eq(1),
                                command.payload.op.eq(ScalarOp.MUL),
                                command.payload.a.mantissa.eq(constant[:nx.MANT_BITS]),
                                command.payload.a.exponent.eq(constant[nx.MANT_BITS:]),
                                command.payload.b.eq(result.payload),
                            ]
                        with m.Case(1):
                            m.d.sync += rsqrt.eq(result.payload)
                        with m.Case(2):
                            m.d.comb += [
                                command.valid.eq(1),
                                command.payload.op.eq(ScalarOp.MUL),
                                command.payload.a.eq(result.payload),
                                command.payload.b.eq(rsqrt),
                            ]
                        with m.Case(3):
                            self._write_register(m, self._scale, destination, result.payload)
                            m.d.sync += c.scale_busy.eq(0)
                            m.next = "IDLE"

    @staticmethod
    def _beside_writer(c):
        """Return whether the latched instruction may run beside the accumulator writer.

        :data:`MATVEC_NEIGHBOURS` may if they read none of its accumulators,
        :data:`MATVEC_FOLLOWERS` whatever they read; both only if they set
        another absmax register.
        """
        def apart(start, count):
            return (start >= c.writer_high) | (start + count <= c.writer_low)

        gates, silu, resid = c.instr.gates, c.instr.silu, c.instr.resid
        with_neighbour = Mux(c.opcode == Opcode.GATES,
                             apart(gates.acc_f, gates.count) & apart(gates.acc_i, gates.count)
                             & (gates.dst_max != c.writer_dst_max),
                             (c.opcode == Opcode.SILU) & apart(silu.acc_src, silu.count)
                             & (silu.dst_max != c.writer_dst_max))
        as_follower = (((c.opcode == Opcode.RESID) & (resid.dst_max != c.writer_dst_max)
                        & ((resid.slots == 0) | (resid.bound_max != c.writer_dst_max)))
                       | (c.opcode == Opcode.ARGMAX))
        return with_neighbour | as_follower

    def _elaborate_accumulator_writer(self, m, ports, c):
        """Add MATVEC's accumulator writer: one beat buffered, one ACC word of accumulators written per cycle.

        The writer drains a buffered beat whatever the state, and takes the
        next beat in the cycle that writes the last word of the current one.
        """
        lanes, acc_bits = self._acc_lanes, self._acc_bits
        chunks = self._core.rows // lanes
        beat = Signal(data.ArrayLayout(signed(acc_bits), self._core.rows))
        full = Signal()
        chunk = Signal(range(chunks))
        address = Signal(len(ports["acc_write"].addr))
        base = Signal.like(address)
        beat_is_last = Signal()
        last_chunk = chunk == chunks - 1
        reducer = c.matvec_reducer

        # The writer takes the MATVEC in SETUP and then runs on its own: it
        # accepts the beats, waits for the absmax of everything it wrote, and
        # sets the absmax register in a cycle in which no pass sets one.
        fields = c.instr.matvec
        m.d.comb += reducer.clear.eq(c.writer_start)
        with m.FSM(name="writer"):
            with m.State("IDLE"):
                with m.If(c.writer_start):
                    m.d.sync += [
                        c.writer_busy.eq(1),
                        c.beats_left.eq(fields.row_groups),
                        base.eq(self._word(fields.acc_dst) >> self._acc_ratio_bits),
                        c.writer_low.eq(fields.acc_dst),
                        c.writer_high.eq(fields.acc_dst + _multiply_by_constant(fields.row_groups, self._core.rows)),
                        c.writer_dst_max.eq(fields.dst_max),
                        c.writer_written.eq(self._word(fields.acc_dst)),
                    ]
                    m.next = "ACCEPT"
            with m.State("ACCEPT"):
                m.d.comb += c.accepting.eq(c.beats_left != 0)
                with m.If(c.beats_left == 0):
                    m.next = "FINAL"
            with m.State("FINAL"):
                with m.If(reducer.final):
                    m.next = "COMMIT"
            with m.State("COMMIT"):
                with m.If(~c.pass_writes_absmax):
                    self._write_register(m, self._absmax, c.writer_dst_max, reducer.result)
                    m.d.sync += c.writer_busy.eq(0)
                    m.next = "IDLE"

        acc_write = ports["acc_write"]
        with m.If(full):
            m.d.comb += [
                acc_write.en.eq(1),
                acc_write.addr.eq(address),
                acc_write.data.eq(beat.as_value()[:lanes * acc_bits]),
            ]
            m.d.sync += [
                beat.eq(beat.as_value() >> (lanes * acc_bits)),
                address.eq(address + 1),
                chunk.eq(chunk + 1),
                c.writer_written.eq((address + 1) << self._acc_ratio_bits),
            ]
            with m.If(last_chunk):
                m.d.sync += [full.eq(0), chunk.eq(0)]

        m.d.comb += self.results.ready.eq(c.accepting & (~full | last_chunk))
        with m.If(self.results.valid & self.results.ready):
            row_group = self.results.payload.row_group
            m.d.sync += [
                beat.eq(self.results.payload.accumulators),
                full.eq(1),
                chunk.eq(0),
                address.eq(base + _multiply_by_constant(row_group, chunks)),
                beat_is_last.eq(c.beats_left == 1),
                c.beats_left.eq(c.beats_left - 1),
            ]

        m.d.comb += [
            reducer.valid.eq(full),
            reducer.last.eq(beat_is_last & last_chunk),
            reducer.mask.eq(-1),
        ]
        for lane in range(lanes):
            m.d.comb += reducer.values[lane].eq(beat[lane])

        vector_reducer = c.absmax_reducer
        m.d.comb += [
            vector_reducer.valid.eq(c.vec_stream.valid),
            vector_reducer.last.eq(c.vec_stream.last),
            vector_reducer.mask.eq(c.vec_stream.mask),
        ]
        for lane in range(self._quant_lanes):
            m.d.comb += vector_reducer.values[lane].eq(c.vec_values[lane])

    def _elaborate_write_streams(self, m, c):
        """Advance the write address of each write stream after every group it writes."""
        with m.If(c.vec_stream.valid):
            m.d.sync += c.vec_write_address.eq(c.vec_write_address + Mux(c.wide, 1 << self._vec_ratio_bits, 1))
        with m.If(c.pipeline[c.stages["state"]].valid):
            m.d.sync += c.state_write_address.eq(c.state_write_address + 1)
        with m.If(c.pipeline[c.stages["codes"]].valid):
            m.d.sync += c.code_index.eq(c.code_index + self._quant_lanes)

    def _elaborate_datapath(self, m, ports, c):
        """Add the per-lane arithmetic of every pass and drive the memory writes and reducers."""
        inputs = c.inputs

        lanes = self._lanes
        vector = data.ArrayLayout(signed(nx.ACT_BITS), lanes)
        wide_vector = data.ArrayLayout(signed(nx.ACT_BITS), self._quant_lanes)
        outputs = SimpleNamespace(
            vec={op: Signal(wide_vector if self._is_wide(op) else vector, name=f"{op.name.lower()}_result")
                 for op in (Opcode.EMBED, Opcode.MUL2, Opcode.SILU, Opcode.RESID, Opcode.GATES)},
            new_state=Signal(vector),
            squares=Signal(data.ArrayLayout(unsigned(2 * (nx.NORM_BITS + 1)), self._quant_lanes)),
            z=[Signal(data.ArrayLayout(signed(2 * nx.NORM_BITS), self._quant_lanes), name=f"z{slot}")
               for slot in range(SLOTS)],
        )
        for lane in range(lanes):
            self._elaborate_lane(m, lane, c, inputs, outputs)
        for lane in range(lanes, self._quant_lanes):
            self._elaborate_quant_lane(m, lane, c, inputs, outputs)

        self._elaborate_pass_outputs(m, ports, c, inputs, outputs)

    def _elaborate_reads(self, m, ports, c):
        """Drive the read addresses of a pass and register every memory output (stage MEMORY)."""
        lanes = self._lanes
        # The host port overrides these addresses while the unit is idle: the
        # memories' own, and the group address of ACC's first read port.
        c.read_groups = {name: Signal.like(c.read_addresses[name], name=f"{name}_group")
                        for name in c.group_ratio_bits}
        # A measuring RESID reads its constants late, by as many cycles as its sums lag VEC's data.
        const_late = _delay(m, c.read_addresses["const_read"], c.stages["resid"] - self.MEMORY, "const_read_late")
        for name, address in c.read_addresses.items():
            if name == "const_read":
                m.d.comb += c.read_groups[name].eq(Mux(c.measure_sum, const_late, address))
            elif name in c.group_ratio_bits:
                m.d.comb += c.read_groups[name].eq(address)
            else:
                m.d.comb += ports[name].addr.eq(address)
        # A read of ACC or VEC takes the word that contains the group and then
        # selects the group in the cycle that the word arrives. Wide passes
        # read whole VEC words, from group addresses that are multiples of Q / P.
        read_groups = {}
        for name, group in c.read_groups.items():
            ratio_bits = c.group_ratio_bits[name]
            element_bits = len(Value.cast(ports[name].data)) // (lanes << ratio_bits)
            m.d.comb += ports[name].addr.eq(group >> ratio_bits)
            if ratio_bits:
                select = Signal(ratio_bits, name=f"{name}_select")
                m.d.sync += select.eq(group[:ratio_bits])
                read_groups[name] = Value.cast(ports[name].data).word_select(select, lanes * element_bits)
            else:
                read_groups[name] = ports[name].data
        # A wide MUL2, SILU or RESID reads Q accumulators of an ACC word, from
        # group addresses that are multiples of Q / P.
        quant_select_bits = self._acc_ratio_bits - self._vec_ratio_bits
        acc_chunk = ports["acc_a"].data.as_value()
        if self._wide_mul2 and quant_select_bits:
            select = Signal(quant_select_bits, name="acc_a_chunk_select")
            m.d.sync += select.eq(c.read_groups["acc_a"][self._vec_ratio_bits:self._acc_ratio_bits])
            acc_chunk = acc_chunk.word_select(select, self._quant_lanes * self._acc_bits)
        m.d.comb += [
            ports["lower_bounds_read"].addr.eq(c.read_addresses["state_read"]),
            ports["scalars_read"].addr.eq(c.scale_constant),
        ]

        const_layout = data.StructLayout({
            "n": signed(CONST_FIELD_BITS),
            **{f"c{slot}": signed(CONST_FIELD_BITS) for slot in range(SLOTS)},
        })
        inputs = SimpleNamespace(
            vec=Signal(data.ArrayLayout(signed(nx.ACT_BITS), lanes), name="vec_data"),
            vec_word=Signal(data.ArrayLayout(signed(nx.ACT_BITS), self._quant_lanes), name="vec_word"),
            acc_a=Signal(data.ArrayLayout(signed(self._acc_bits), lanes)),
            acc_word=Signal(data.ArrayLayout(signed(self._acc_bits), self._quant_lanes), name="acc_word"),
            acc_b=Signal(data.ArrayLayout(signed(self._acc_bits), lanes)),
            state=Signal(data.ArrayLayout(signed(nx.ACT_BITS), lanes)),
            const=Signal(data.ArrayLayout(const_layout, self._quant_lanes)),
            const_group=Signal(data.ArrayLayout(const_layout, lanes)),
            lower_bounds=Signal(data.ArrayLayout(unsigned(nx.NORM_BITS), lanes)),
            embed=Signal(data.ArrayLayout(signed(nx.NORM_BITS), lanes)),
            scalar=Signal(len(ports["scalars_read"].data)),
        )
        m.d.sync += [
            inputs.vec.eq(read_groups["vec_read"]),
            inputs.vec_word.eq(ports["vec_read"].data),
            inputs.acc_a.eq(read_groups["acc_a"]),
            inputs.acc_word.eq(acc_chunk[:self._quant_lanes * self._acc_bits]),
            inputs.acc_b.eq(read_groups["acc_b"]),
            inputs.state.eq(ports["state_read"].data),
            inputs.const.eq(ports["const_read"].data),
            inputs.const_group.eq(read_groups["const_read"]),
            inputs.lower_bounds.eq(ports["lower_bounds_read"].data),
            inputs.embed.eq(ports["embed_read"].data),
            inputs.scalar.eq(ports["scalars_read"].data),
        ]
        return inputs

    def _elaborate_lane(self, m, lane, c, inputs, outputs):
        """Add the arithmetic of one lane for every pass."""
        stages = c.stages
        memory = self.MEMORY
        gate_one = nx.GATE_ONE
        half = 1 << (nx.GATE_FRAC - 1)
        vec, acc_a, acc_b = inputs.vec[lane], inputs.acc_a[lane], inputs.acc_b[lane]
        embed = inputs.embed[lane]

        def delay(value, start, end, name):
            return _delay(m, value, end - start, f"{name}_lane{lane}")

        units = self._lane_units[lane]
        for name, unit in units.items():
            m.submodules[f"{name}_{lane}"] = unit

        # EMBED: round_shift(row, shift), saturated to int32. A left shift by at
        # most 32 keeps every bit of an int16 in 48 bits.
        rounded = ((embed >> c.embed_amount) + 1) >> 1
        shifted_left = (embed << c.embed_amount)[:nx.NORM_BITS + nx.ACT_BITS].as_signed()
        m.d.sync += outputs.vec[Opcode.EMBED][lane].eq(
            Mux(c.embed_right, rounded, saturate(shifted_left, nx.ACT_BITS)))

        # Norm16 of the vector (STATS, QUANT, MUL2, RESID's sum) and of the accumulator (MUL2).
        norm_vec, norm_acc = units["norm_vec"], units["norm_acc"]
        m.d.comb += [
            norm_vec.value.eq(Mux(c.measure_sum, outputs.vec[Opcode.RESID][lane], vec)),
            norm_vec.shift.eq(c.vec_shift),
            norm_acc.value.eq(acc_a),
            norm_acc.shift.eq(c.acc_shift),
        ]

        const = delay(inputs.const_group[lane], memory, stages["product"], "const")
        product = self._elaborate_stats_products(m, lane, c, norm_vec.normalized, norm_acc.normalized, const,
                                                 outputs)
        m.d.comb += outputs.vec[Opcode.MUL2][lane].eq(product)

        # SILU, and the input of GATES: silu(apply_scale(acc, scale)).
        apply_a, silu_a = units["apply_a"], units["silu_a"]
        m.d.comb += [
            apply_a.acc.eq(acc_a),
            apply_a.scale.eq(c.scale_a),
            silu_a.x.eq(apply_a.value),
            outputs.vec[Opcode.SILU][lane].eq(silu_a.silu),
        ]

        # RESID: saturate(x + apply_scale(acc, scale)).
        residual = delay(vec, memory, stages["scaled"], "residual")
        m.d.sync += outputs.vec[Opcode.RESID][lane].eq(saturate(residual + apply_a.value, nx.ACT_BITS))

        # GATES, forget gate: f = lb + round((1 - lb) * sigma(apply_scale(acc_f, scale_f))).
        apply_b, sigma_b = units["apply_b"], units["sigma_b"]
        m.d.comb += [
            apply_b.acc.eq(acc_b),
            apply_b.scale.eq(c.scale_b),
            sigma_b.x.eq(apply_b.value),
        ]
        bound = delay(inputs.lower_bounds[lane], memory, stages["sigma"], "lower_bound")
        gate_product = Signal(unsigned(2 * (nx.GATE_FRAC + 1)), name=f"gate_product_lane{lane}")
        m.d.sync += gate_product.eq((gate_one - bound) * sigma_b.sigma)
        bound_next = delay(bound, stages["sigma"], stages["sigma"] + 1, "lower_bound")
        forget = Signal(range(gate_one + 1), name=f"forget_lane{lane}")
        m.d.sync += forget.eq(bound_next + ((gate_product + half) >> nx.GATE_FRAC))
        assert stages["forget"] == stages["sigma"] + 2

        # GATES, recurrence: h = saturate(round(f * h) + round(silu(i) * (1 - f))).
        mix = stages["mix"]
        forget_mix = delay(forget, stages["forget"], mix, "forget")
        input_mix = delay(silu_a.silu, stages["silu"], mix, "input")
        state_mix = delay(inputs.state[lane], memory, mix, "state")
        input_product = Signal(signed(nx.ACT_BITS + nx.GATE_FRAC + 2), name=f"input_product_lane{lane}")
        state_product = Signal(signed(nx.ACT_BITS + nx.GATE_FRAC + 2), name=f"state_product_lane{lane}")
        m.d.sync += [
            input_product.eq(input_mix * (gate_one - forget_mix)),
            state_product.eq(state_mix * forget_mix),
        ]
        input_term = Signal(signed(nx.ACT_BITS + 2), name=f"input_term_lane{lane}")
        state_term = Signal(signed(nx.ACT_BITS + 2), name=f"state_term_lane{lane}")
        m.d.sync += [
            input_term.eq((input_product + half) >> nx.GATE_FRAC),
            state_term.eq((state_product + half) >> nx.GATE_FRAC),
        ]
        m.d.sync += outputs.new_state[lane].eq(saturate(state_term + input_term, nx.ACT_BITS))
        assert stages["state"] == mix + 3

        # GATES output: silu(h).
        silu_h = units["silu_h"]
        m.d.comb += [
            silu_h.x.eq(outputs.new_state[lane]),
            outputs.vec[Opcode.GATES][lane].eq(silu_h.silu),
        ]

    @staticmethod
    def _elaborate_stats_products(m, lane, c, normalized, acc_normalized, const, outputs):
        """Add a lane's products: MUL2's, and the z of each slot and the square of STATS, QUANT and a measuring MUL2 or RESID.

        ``normalized`` and ``acc_normalized`` are at stage ``normalized``, and
        ``const`` at stage ``product``. Returns MUL2's product (stage
        ``product``), or None where ``acc_normalized`` is None (no MUL2 on the lane).
        """
        normalized_1 = Signal(signed(nx.NORM_BITS), name=f"normalized_lane{lane}")
        m.d.sync += normalized_1.eq(normalized)
        if acc_normalized is None:
            product, measured = None, normalized_1
        else:
            product = Signal(signed(2 * nx.NORM_BITS), name=f"product_lane{lane}")
            m.d.sync += product.eq(normalized * acc_normalized)
            # norm16(product, PRODUCT_BOUND) is a fixed shift, and it fits 16 bits.
            shift = nx.PRODUCT_BOUND.bit_length() - (nx.NORM_BITS - 1)
            measured = Mux(c.measure, product[shift:shift + nx.NORM_BITS].as_signed(), normalized_1)
        for slot in range(SLOTS):
            m.d.sync += outputs.z[slot][lane].eq(measured * const[f"c{slot}"])
        scaled = Signal(signed(2 * nx.NORM_BITS), name=f"scaled_lane{lane}")
        m.d.sync += scaled.eq(measured * const.n)
        w = scaled >> nx.W_SHIFT
        m.d.sync += outputs.squares[lane].eq((w * w).as_unsigned())
        return product

    def _elaborate_quant_lane(self, m, lane, c, inputs, outputs):
        """Add a lane that serves STATS, QUANT and a wide MUL2, SILU or RESID only (lanes P to Q - 1)."""
        units = self._quant_units[lane - self._lanes]
        for name, unit in units.items():
            m.submodules[f"{name}_{lane}"] = unit
        vec = inputs.vec_word[lane]
        if self._wide_scale:
            # SILU computes silu(apply_scale(acc, scale)), and RESID saturate(x + apply_scale(acc, scale)).
            apply_a, silu_a = units["apply_a"], units["silu_a"]
            m.d.comb += [
                apply_a.acc.eq(inputs.acc_word[lane]),
                apply_a.scale.eq(c.scale_a),
                silu_a.x.eq(apply_a.value),
                outputs.vec[Opcode.SILU][lane].eq(silu_a.silu),
            ]
            residual = _delay(m, vec, c.stages["scaled"] - self.MEMORY, f"residual_lane{lane}")
            m.d.sync += outputs.vec[Opcode.RESID][lane].eq(saturate(residual + apply_a.value, nx.ACT_BITS))
            # A measuring RESID normalizes its sum.
            vec = Mux(c.measure_sum, outputs.vec[Opcode.RESID][lane], vec)
        norm_vec = units["norm_vec"]
        m.d.comb += [
            norm_vec.value.eq(vec),
            norm_vec.shift.eq(c.vec_shift),
        ]
        const = _delay(m, inputs.const[lane], c.stages["product"] - self.MEMORY, f"const_lane{lane}")
        acc_normalized = None
        if self._wide_mul2:
            norm_acc = units["norm_acc"]
            m.d.comb += [
                norm_acc.value.eq(inputs.acc_word[lane]),
                norm_acc.shift.eq(c.acc_shift),
            ]
            acc_normalized = norm_acc.normalized
        product = self._elaborate_stats_products(m, lane, c, norm_vec.normalized, acc_normalized, const, outputs)
        if product is not None:
            m.d.comb += outputs.vec[Opcode.MUL2][lane].eq(product)

    def _elaborate_pass_outputs(self, m, ports, c, inputs, outputs):
        """Connect each pass's results, at the pass's own stage, to its memory writes and reducers."""
        lanes = self._lanes
        stages = c.stages
        opcode = c.opcode
        pipeline = c.pipeline

        # Vector writes: one stream per pass.
        write_stages = {
            Opcode.EMBED: stages["embed"],
            Opcode.MUL2: stages["product"],
            Opcode.SILU: stages["silu"],
            Opcode.RESID: stages["resid"],
            Opcode.GATES: stages["silu_h"],
        }
        with m.Switch(opcode):
            for op, stage in write_stages.items():
                with m.Case(op):
                    m.d.comb += [
                        c.vec_stream.eq(pipeline[stage]),
                        c.vec_values.eq(outputs.vec[op]),
                    ]
        # A pass writes one P-group of a VEC word, and a wide pass whole words.
        vec_write = ports["vec_write"]
        ratio_bits = self._vec_ratio_bits
        m.d.comb += vec_write.addr.eq(c.vec_write_address >> ratio_bits)
        if ratio_bits:
            group_enable = c.vec_stream.mask[:lanes] << (c.vec_write_address[:ratio_bits] * lanes)
            group_data = c.vec_values.as_value()[:lanes * nx.ACT_BITS].replicate(1 << ratio_bits)
            m.d.comb += [
                vec_write.en.eq(Mux(c.vec_stream.valid, Mux(c.wide, c.vec_stream.mask, group_enable), 0)),
                vec_write.data.eq(Mux(c.wide, c.vec_values.as_value(), group_data)),
            ]
        else:
            m.d.comb += [
                vec_write.en.eq(Mux(c.vec_stream.valid, c.vec_stream.mask, 0)),
                vec_write.data.eq(c.vec_values),
            ]

        # GATES writes the new state; each lane's mask bit enables its four bytes.
        state_tap = pipeline[stages["state"]]
        state_write = ports["state_write"]
        with m.If((opcode == Opcode.GATES) & state_tap.valid):
            m.d.comb += [
                state_write.en.eq(Cat(state_tap.mask[lane].replicate(nx.ACT_BITS // 8) for lane in range(lanes))),
                state_write.addr.eq(c.state_write_address),
                state_write.data.eq(outputs.new_state),
            ]

        # The sum of squares and the absmax of each z, for STATS and a measuring MUL2 or RESID.
        squares_tap = Signal.like(pipeline[0], name="squares_tap")
        stats_tap = Signal.like(pipeline[0], name="stats_tap")
        m.d.comb += [
            squares_tap.eq(Mux(c.measure_sum, pipeline[stages["sum_squares"]], pipeline[stages["squares"]])),
            stats_tap.eq(Mux(c.measure_sum, pipeline[stages["sum_stats"]], pipeline[stages["stats"]])),
        ]
        is_stats = (opcode == Opcode.STATS) | c.measure | c.measure_sum
        m.d.comb += [
            c.sumsq_reducer.valid.eq(is_stats & squares_tap.valid),
            c.sumsq_reducer.last.eq(squares_tap.last),
            c.sumsq_reducer.mask.eq(squares_tap.mask),
            c.sumsq_reducer.values.eq(outputs.squares),
        ]
        for reducer, z in zip(c.zmax_reducers, outputs.z):
            m.d.comb += [
                reducer.valid.eq(is_stats & stats_tap.valid),
                reducer.last.eq(stats_tap.last),
                reducer.mask.eq(stats_tap.mask),
            ]
            for lane in range(self._quant_lanes):
                m.d.comb += reducer.values[lane].eq(z[lane])

        # QUANT: the codes of each slot's z, for the slots below `slots`.
        quantize = c.quantize
        assert stages["stats"] + 1 >= quantize.setup_latency
        for slot, z in enumerate(outputs.z):
            for lane in range(self._quant_lanes):
                m.d.comb += quantize.z[slot * self._quant_lanes + lane].eq(z[lane])
        codes_tap = pipeline[stages["codes"]]
        with m.If((opcode == Opcode.QUANT) & codes_tap.valid):
            m.d.comb += self.code_write.en.eq(
                Cat(Mux(slot < c.instr.quant.slots, codes_tap.mask, 0) for slot in range(SLOTS)))
        m.d.comb += self.code_write.index.eq(c.code_index)
        for position, code in enumerate(quantize.code):
            m.d.comb += self.code_write.data[position].eq(code)

        # ARGMAX reads the accumulators straight from stage MEMORY.
        argmax_tap = pipeline[stages["argmax"]]
        m.d.comb += [
            c.argmax_reducer.valid.eq((opcode == Opcode.ARGMAX) & argmax_tap.valid),
            c.argmax_reducer.last.eq(argmax_tap.last),
            c.argmax_reducer.mask.eq(argmax_tap.mask),
            c.argmax_reducer.values.eq(inputs.acc_a),
        ]

    def _elaborate_host(self, m, ports, c):
        """Add the byte-granular host port of the target memories."""
        lanes = self._lanes
        idle = c.fsm.ongoing("IDLE") & ~c.scale_busy & ~c.writer_busy
        write = self.host_write
        read = self.host_read

        # (target, memory, write port, read port) of every byte-addressed memory.
        targets = [
            (Target.VECTORS, self._const, "const_write", "const_read"),
            (Target.EMBEDDINGS, self._embed, "embed_write", "embed_read"),
            (Target.LOWER_BOUNDS, self._lower_bounds, "lower_bounds_write", "lower_bounds_read"),
            (Target.SCALARS, self._scalars, "scalars_write", "scalars_read"),
            (Target.STATE, self._state, "state_write", "state_read"),
            (Target.ACCUMULATORS, self._acc, None, "acc_a"),
        ]

        def offset_bits(target):
            # A SCALARS word contains one element, a CONST word Q and a word of every other memory P.
            elements = {Target.SCALARS: 1, Target.VECTORS: self._quant_lanes}.get(target, lanes)
            return exact_log2(HOST_ELEMENT_BYTES[target] * elements)

        for target, memory, write_name, read_name in targets:
            shift = offset_bits(target)
            word = write.address[shift:]
            if write_name is not None:
                port = ports[write_name]
                with m.If(idle & write.en & (write.target == target) & (word < memory.depth)):
                    m.d.comb += [
                        port.en.eq(1 << write.address[:shift]),
                        port.addr.eq(word),
                        port.data.eq(write.data.replicate(len(port.en))),
                    ]
            with m.If(idle):
                if read_name in ACC_READS:
                    m.d.comb += c.read_groups[read_name].eq(read.address[shift:])
                else:
                    m.d.comb += ports[read_name].addr.eq(read.address[shift:])

        # The byte select takes the registered memory data of stage MEMORY,
        # and its result is registered once more.
        inputs = c.inputs
        registered = {
            Target.VECTORS: inputs.const.as_value(),
            Target.EMBEDDINGS: inputs.embed.as_value(),
            Target.LOWER_BOUNDS: inputs.lower_bounds.as_value(),
            Target.SCALARS: inputs.scalar,
            Target.STATE: inputs.state.as_value(),
            Target.ACCUMULATORS: Cat(_sign_extend(inputs.acc_a[lane], nx.ACT_BITS) for lane in range(lanes)),
        }
        target = _delay(m, read.target, self.MEMORY, "host_read_target")
        address = _delay(m, read.address, self.MEMORY, "host_read_address")
        with m.Switch(target):
            for case, value in registered.items():
                with m.Case(case):
                    m.d.sync += read.data.eq(value.word_select(address[:offset_bits(case)], 8))


def _sign_extend(value, bits):
    """Return the signed ``value`` sign-extended to ``bits`` bits."""
    return Cat(value, value[-1].replicate(bits - len(value)))

