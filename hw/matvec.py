"""MatVec: runs one ternary projection on the engine, one tile per cycle.

A projection of ``rows x cols`` is ``row_groups = ceil(rows/R)`` groups of R
output rows, each the sum of ``col_tiles = ceil(cols/K)`` tiles. For row group
``g`` and tile ``t`` MatVec reads weight word ``weight_base + g * col_tiles + t``
from all R banks and word ``code_base + t`` of code slot ``code_slot``, and the
engine emits the R accumulators of the group after its last tile.
"""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from golden import numerics as nx

from .engine import TernaryEngine, check_positive_int, resolve_acc_bits
from .weights import WeightMemory

__all__ = ["MatVec", "CodeWriteSignature"]


class CodeWriteSignature(wiring.Signature):
    """Signature of the code buffer's write port: P codes of each of S slots per cycle at an element index.

    Members
    -------
    en : ``Out(slots * width)``
        Write enable of each code; bit ``s * width + p`` belongs to slot ``s``.
    index : ``Out(index_bits)``
        Element index of the first code in every slot, a multiple of ``width``.
    data : ``Out(data.ArrayLayout(signed(8), slots * width))``
        The codes, the one for element ``index + p`` of slot ``s`` at position ``s * width + p``.
    """

    def __init__(self, width, index_bits, slots=1):
        super().__init__({
            "en": Out(slots * width),
            "index": Out(index_bits),
            "data": Out(data.ArrayLayout(signed(nx.CODE_BITS), slots * width)),
        })


class MatVec(wiring.Component):
    """Projection unit: weight memory, code buffer and ternary engine.

    A command names the projection's first weight word (``weight_base``), its
    ``row_groups`` and ``col_tiles``, and the code buffer slot and word of its
    first K codes (``code_slot``, ``code_base``). The command is accepted while ``busy`` is low.
    ``busy`` then stays high until the beat of the last row group has been
    transferred on ``results``. A command with zero ``row_groups`` or zero
    ``col_tiles`` produces no beats and leaves ``busy`` low.

    NOTE: the next command waits for the last beat of the current one, so each
    projection of a back-to-back series pays the pipeline latency again.

    Latency and throughput: the address generator issues one tile per cycle
    with no gap between row groups, and the weight memory and the engine take
    one tile per cycle, so a projection streams ``row_groups * col_tiles`` tiles
    in as many cycles. Without output backpressure the beat of the last row
    group is valid ``row_groups * col_tiles + ceil_log2(inputs) + 5`` cycles
    after the cycle in which the command is transferred. Output backpressure
    stalls the whole pipeline.

    The code buffer contains ``code_slots`` slots of ``code_depth`` words of K
    codes, side by side in one memory. Its write port ``code_write`` writes up
    to P codes of every slot per cycle: the codes of elements
    ``index .. index + P - 1``, which lie in word ``index // K`` of each slot.
    ``index`` must be a multiple of P, because the write port ignores its
    remainder modulo P. The buffer must not be written while a command that
    reads the same words runs, and ``code_slot`` must be below ``code_slots``.

    Padding trits are zero, so the accumulator width depends on the real
    columns only: a projection of ``cols`` columns needs ``max_fan_in >= cols``,
    not ``col_tiles * K``.

    Parameters
    ----------
    rows : int
        R, the engine rows and weight banks.
    inputs : int
        K, the trits per row and codes per tile.
    weight_depth : int
        Words per weight bank.
    code_depth : int
        Words of K codes in each slot of the code buffer.
    code_slots : int
        S, the slots of the code buffer (1 by default).
    code_write_width : int
        P, the codes per write. It must divide ``inputs``.
    max_fan_in : int
        The widest projection's ``cols``, which sets the accumulator width.
    acc_bits : int or None
        Accumulator width; ``None`` derives it from ``max_fan_in``.
    weight_row_trits : int or None
        T, the trits per weight memory row (:class:`hw.weights.WeightMemory`); ``None`` means K.

    Members
    -------
    command : ``In(stream.Signature(command_layout))``
        Projections to run: ``weight_base``, ``row_groups``, ``col_tiles``, ``code_slot``, ``code_base``.
    results : ``Out(stream.Signature(result_layout))``
        One beat per row group: ``accumulators`` (R signed values) and ``row_group``.
    busy : ``Out(1)``
        A command is running.
    code_write : ``In(CodeWriteSignature(code_write_width, index_bits, code_slots))``
        Code buffer write port.
    load_start, load_rows, load_data, load_busy, load_error
        The weight memory's loader, as in :class:`hw.weights.WeightMemory`.
    """

    def __init__(self, rows, inputs, *, weight_depth, code_depth, code_write_width, max_fan_in, acc_bits=None,
                 weight_row_trits=None, code_slots=1):
        # Every parameter is checked before the engine and the weight memory
        # exist, so a rejected MatVec leaves no unelaborated submodule behind.
        check_positive_int("rows", rows)
        check_positive_int("inputs", inputs)
        check_positive_int("weight_depth", weight_depth)
        check_positive_int("code_depth", code_depth)
        check_positive_int("code_write_width", code_write_width)
        check_positive_int("code_slots", code_slots)
        if inputs % code_write_width:
            raise ValueError(f"`code_write_width` must divide `inputs` {inputs}, not {code_write_width!r}")
        resolve_acc_bits(max_fan_in, acc_bits)

        self._engine = TernaryEngine(rows, inputs, max_fan_in=max_fan_in, acc_bits=acc_bits)
        # The weight memory's tag layout depends on the code buffer's depth.
        self._code_depth = code_depth
        self._weights = WeightMemory(rows, inputs, weight_depth, row_trits=weight_row_trits,
                                     tag_bits=self.read_tag_layout.size)
        self._rows = rows
        self._inputs = inputs
        self._weight_depth = weight_depth
        self._code_write_width = code_write_width
        self._code_slots = code_slots

        super().__init__({
            "command": In(stream.Signature(self.command_layout)),
            "results": Out(stream.Signature(self.result_layout)),
            "busy": Out(1),
            "code_write": In(CodeWriteSignature(code_write_width, self.code_index_bits, code_slots)),
            "load_start": In(stream.Signature(self._weights.row_addr_width)),
            "load_rows": In(self._weights.load_rows_width),
            "load_data": In(stream.Signature(8)),
            "load_busy": Out(1),
            "load_error": Out(1),
        })

    @property
    def rows(self):
        return self._rows

    @property
    def inputs(self):
        return self._inputs

    @property
    def weight_depth(self):
        return self._weight_depth

    @property
    def code_depth(self):
        return self._code_depth

    @property
    def code_slots(self):
        return self._code_slots

    @property
    def code_write_width(self):
        return self._code_write_width

    @property
    def acc_bits(self):
        return self._engine.acc_bits

    @property
    def read_tag_layout(self):
        """Layout of the tag of a weight read: the address of its codes and the tile flags."""
        return data.StructLayout({"code_addr": unsigned(self.code_addr_width), "first": 1, "last": 1})

    @property
    def code_addr_width(self):
        """Width of a code buffer word address (at least 1)."""
        return max(1, ceil_log2(self._code_depth))

    @property
    def code_index_bits(self):
        """Width of a code element index (at least 1)."""
        return max(1, ceil_log2(self._code_depth * self._inputs))

    @property
    def command_layout(self):
        return data.StructLayout({
            "weight_base": unsigned(self._weights.addr_width),
            "row_groups": unsigned(bits_for(self._weight_depth)),
            "col_tiles": unsigned(bits_for(self._code_depth)),
            "code_slot": unsigned(bits_for(self._code_slots - 1)),
            "code_base": unsigned(self.code_addr_width),
        })

    @property
    def result_layout(self):
        return data.StructLayout({
            "accumulators": data.ArrayLayout(signed(self._engine.acc_bits), self._rows),
            "row_group": unsigned(bits_for(max(0, self._weight_depth - 1))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self._engine
        m.submodules.weights = weights = self._weights

        wiring.connect(m, wiring.flipped(self.load_start), weights.load_start)
        wiring.connect(m, wiring.flipped(self.load_data), weights.load_data)
        m.d.comb += [
            weights.load_rows.eq(self.load_rows),
            self.load_busy.eq(weights.load_busy),
            self.load_error.eq(weights.load_error),
        ]

        code_read = self._elaborate_code_buffer(m)

        # Address generator: one tile per read-address transfer.
        issuing = Signal()
        weight_addr = Signal.like(weights.read_addr.payload.addr)
        code_addr = Signal(self.code_addr_width)
        tile = Signal.like(self.command.payload.col_tiles)
        group = Signal.like(self.command.payload.row_groups)
        command = Signal(self.command_layout)
        first_tile = Signal()
        last_tile = Signal()
        read_accept = Signal()
        read_tag = Signal(self.read_tag_layout)
        m.d.comb += [
            first_tile.eq(tile == 0),
            last_tile.eq(tile == command.col_tiles - 1),
            weights.read_addr.valid.eq(issuing),
            weights.read_addr.payload.addr.eq(weight_addr),
            weights.read_addr.payload.tag.eq(read_tag),
            read_tag.code_addr.eq(code_addr),
            read_tag.first.eq(first_tile),
            read_tag.last.eq(last_tile),
            read_accept.eq(weights.read_addr.valid & weights.read_addr.ready),
        ]

        with m.If(read_accept):
            m.d.sync += weight_addr.eq(weight_addr + 1)
            with m.If(last_tile):
                m.d.sync += [tile.eq(0), code_addr.eq(command.code_base)]
                with m.If(group == command.row_groups - 1):
                    m.d.sync += issuing.eq(0)
                with m.Else():
                    m.d.sync += group.eq(group + 1)
            with m.Else():
                m.d.sync += [tile.eq(tile + 1), code_addr.eq(code_addr + 1)]

        # The codes' address and the tile flags travel with the weight read as its
        # tag. The code buffer is read without a clock edge, so its codes reach the
        # engine beside the trits, and the engine's input register takes both.
        arrived = Signal(self.read_tag_layout)
        m.d.comb += [
            arrived.eq(weights.read_data.payload.tag),
            code_read.addr.eq(arrived.code_addr),
            engine.tiles.valid.eq(weights.read_data.valid),
            engine.tiles.payload.trits.eq(weights.read_data.payload.trits),
            engine.tiles.payload.codes.eq(self._select_slot(code_read.data, command.code_slot)),
            engine.tiles.payload.first.eq(arrived.first),
            engine.tiles.payload.last.eq(arrived.last),
            weights.read_data.ready.eq(engine.tiles.ready),
        ]

        # Results: tag each beat with its row group. The last beat ends the command.
        result_group = Signal.like(self.results.payload.row_group)
        m.d.comb += [
            self.results.valid.eq(engine.accumulators.valid),
            self.results.payload.accumulators.eq(engine.accumulators.payload),
            self.results.payload.row_group.eq(result_group),
            engine.accumulators.ready.eq(self.results.ready),
        ]
        with m.If(self.results.valid & self.results.ready):
            with m.If(result_group == command.row_groups - 1):
                m.d.sync += [result_group.eq(0), self.busy.eq(0)]
            with m.Else():
                m.d.sync += result_group.eq(result_group + 1)

        m.d.comb += self.command.ready.eq(~self.busy)
        with m.If(self.command.valid & self.command.ready):
            payload = self.command.payload
            m.d.sync += [
                command.eq(payload),
                weight_addr.eq(payload.weight_base),
                code_addr.eq(payload.code_base),
                tile.eq(0),
                group.eq(0),
                result_group.eq(0),
            ]
            with m.If((payload.row_groups != 0) & (payload.col_tiles != 0)):
                m.d.sync += [issuing.eq(1), self.busy.eq(1)]
        return m

    def _select_slot(self, word, slot):
        """Return the K codes of ``slot`` in a code buffer word (``slot`` is constant during a command)."""
        if self._code_slots == 1:
            return word
        return word.as_value().word_select(slot, self._inputs * nx.CODE_BITS)

    def _elaborate_code_buffer(self, m):
        """Add the code buffer with its write port and return its read port."""
        inputs, width, slots = self._inputs, self._code_write_width, self._code_slots
        # A few dozen words, each S x K codes wide: distributed RAM stores it in a
        # few hundred LUTs, where block RAMs would be used to 1/8 of their depth.
        buffer = Memory(shape=data.ArrayLayout(signed(nx.CODE_BITS), slots * inputs), depth=self._code_depth,
                        init=[], attrs={"ram_style": "distributed"})
        m.submodules.code_buffer = buffer
        write = buffer.write_port(granularity=1)
        read = buffer.read_port(domain="comb")

        # Element `index` lies in word `index // K` at lane `index % K`, and lanes come in groups of P.
        # NOTE: for K or P other than a power of two these are constant dividers in logic, not slices.
        index = self.code_write.index
        group = Signal(range(inputs // width))
        m.d.comb += [
            write.addr.eq(index // inputs),
            group.eq((index % inputs) // width),
        ]
        for slot in range(slots):
            for lane in range(inputs):
                position = slot * width + lane % width
                m.d.comb += [
                    write.data[slot * inputs + lane].eq(self.code_write.data[position]),
                    write.en[slot * inputs + lane].eq(self.code_write.en[position] & (group == lane // width)),
                ]
        return read
