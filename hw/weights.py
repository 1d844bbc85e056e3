"""Weight memory: R banks of K-trit words, read one tile per cycle, loaded from base-3 bytes.

A projection of ``rows x cols`` occupies ``ceil(rows/R) * ceil(cols/K)`` words
in every bank from its base address. The trit of row ``r``, column ``c`` is in
bank ``r mod R``, word ``base + (r div R) * ceil(cols/K) + c div K``, lane
``c mod K``; padding trits are zero. :func:`linear_order` arranges a
projection's trits in word order: word address major, then bank, then lane.
A bank stores its words end to end in memory rows of T trits, and the loader
fills it row by row (:func:`firmware.loader.weight_rows` turns words into rows).
"""

import math

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from golden import numerics as nx

from .engine import check_positive_int

__all__ = ["WeightMemory", "linear_order", "projection_words"]

TRITS_PER_BYTE = 5
# The largest base-3 packing of five trits, 3**5 - 1.
MAX_TRIT_BYTE = 3 ** TRITS_PER_BYTE - 1


def projection_words(shape, rows, inputs):
    """Return the words per bank that a ``(rows, cols)`` projection occupies with R banks of K lanes."""
    matrix_rows, matrix_cols = shape
    return -(-matrix_rows // rows) * -(-matrix_cols // inputs)


def linear_order(trits, rows, inputs):
    """Arrange a projection's trits in the loader's linear order.

    ``trits`` is the ``(matrix_rows, matrix_cols)`` array of a projection in
    {-1, 0, 1}; ``rows`` is R and ``inputs`` is K. The matrix is padded with
    zero trits to whole row groups and column tiles, and the result is the flat
    int8 sequence for words in address order, banks within a word, lanes
    within a bank. Pack it with :func:`golden.image.pack_trits` to get the
    loader's bytes.
    """
    trits = np.asarray(trits)
    if trits.ndim != 2:
        raise ValueError(f"`trits` must be a 2-D matrix, not an array of shape {trits.shape}")
    check_positive_int("rows", rows)
    check_positive_int("inputs", inputs)

    matrix_rows, matrix_cols = trits.shape
    row_groups = -(-matrix_rows // rows)
    col_tiles = -(-matrix_cols // inputs)
    padded = np.zeros((row_groups * rows, col_tiles * inputs), dtype=np.int8)
    padded[:matrix_rows, :matrix_cols] = trits

    # (group, bank, tile, lane) -> (group, tile, bank, lane): word = group * col_tiles + tile.
    tiles = padded.reshape(row_groups, rows, col_tiles, inputs).transpose(0, 2, 1, 3)
    return tiles.ravel()


def _encode_digits(value):
    """Return the on-chip encoding of the five trits packed in byte ``value`` (trit i at bits [2i, 2i+2))."""
    encoded = 0
    for index in range(TRITS_PER_BYTE):
        trit = value // 3 ** index % 3 - 1
        encoded |= nx.TRIT_ENCODING[trit] << (nx.TRIT_BITS * index)
    return encoded


class WeightMemory(wiring.Component):
    """Banked trit memory with a tile read port and a base-3 byte loader.

    Each of the R banks stores a sequence of K-trit words, and word ``a`` of a
    bank is that bank's trits ``[a*K, (a+1)*K)``. The bank keeps them in rows
    of T trits (``row_trits``, at least K): row ``q`` holds trits
    ``[q*T, (q+1)*T)``. With T above K a word may start in one row and end in
    the next. Even and odd rows then sit in two memories, so that the two rows
    a word touches are read in the same cycle, and a shifter picks the word's
    trits out of them. T is chosen to fill block-RAM rows: 32-trit words at
    two bits a trit fill 64 of 72 bits, 36-trit rows fill all 72.

    Read side: each request accepted on ``read_addr`` reads word ``addr`` of
    all R banks, and the R words appear on ``read_data`` two cycles later
    (:attr:`read_latency`), bank ``r`` at bits ``[r*2K, (r+1)*2K)`` of
    ``trits`` (the engine's ``trits`` layout), with the request's ``tag``
    beside them. The first cycle finds the memory row of the word and
    registers it, so the division by T and the address lines of the banks
    spread across the die are in different cycles. The memory does not use
    the tag, which lets the reader keep what belongs with each word (such
    as the address of its codes) in step with it. One read per cycle, in
    any order. ``read_addr.ready`` is ``~pending | ~read_data.valid |
    read_data.ready`` with ``pending`` the first cycle's valid register, a
    combinational path from the downstream ready.
    Addresses at or above ``depth`` read undefined data.

    Load side: a beat on ``load_start`` starts a load at the row address in
    its payload, and ``load_rows`` at that transfer sets the number of bank
    rows (T trits each) to write. The start is accepted only while
    ``load_busy`` is low, and it discards any partial row of the previous
    load. ``load_data`` then takes one byte per cycle. A byte packs
    five trits in base 3, ``sum((t_i + 1) * 3**i)``, trit 0 first in linear
    order: row address major, then bank, then the trits of the row. A decoder
    register keeps the byte's trits for one cycle. Then a gearbox of ``T + 4``
    trits assembles rows and writes each to its bank as soon as it is
    complete. For T below 5 a byte may complete more than one row, so the
    loader then takes a byte about every ``5 / T`` cycles.

    Only the first ``load_rows`` bank rows of a load are written, so the zero
    trits that pad the final byte never overwrite the rows after it. Bytes
    after the last row are consumed and dropped. A ``load_rows`` of 0 writes
    every complete row. That is safe for T of 5 or more and loads of
    whole bank rows, because the at most four padding trits then never
    complete a row. For T below 5 they can, so such loads need a count.

    ``load_error`` rises on a byte above 242 (such a byte is consumed as five
    zero trits, so the rows after it keep their place) and on a row that
    would be written at or past ``row_depth`` (that write is dropped). It stays
    high until the next ``load_start``.

    Loads and reads may run at the same time, but a read of a word that is
    being written returns undefined data.

    Parameters
    ----------
    rows : int
        R, the number of banks.
    inputs : int
        K, the trits per bank word.
    depth : int
        Words per bank.
    row_trits : int or None
        T, the trits per memory row, at least K; ``None`` means K.
    tag_bits : int
        Width of the tag that a read carries from ``read_addr`` to ``read_data`` (0 by default).

    Members
    -------
    read_addr : ``In(stream.Signature(read_request_layout))``
        Reads: ``addr``, the word address, and ``tag``.
    read_data : ``Out(stream.Signature(read_data_layout))``
        ``trits``, the R bank words of each read, and its ``tag``.
    load_start : ``In(stream.Signature(row_addr_width))``
        Row address at which a load begins.
    load_rows : ``In(load_rows_width)``
        Bank rows to write in the load that starts, or 0 for no limit.
    load_data : ``In(stream.Signature(8))``
        Base-3 packed trit bytes in linear order.
    load_busy : ``Out(1)``
        A byte is being decoded or a complete row is waiting to be written.
    load_error : ``Out(1)``
        An invalid byte or a write past ``row_depth`` since the last ``load_start``.
    """

    #: Cycles from a read's transfer on ``read_addr`` to its data on ``read_data``, without backpressure.
    read_latency = 2

    def __init__(self, rows, inputs, depth, *, row_trits=None, tag_bits=0):
        check_positive_int("rows", rows)
        check_positive_int("inputs", inputs)
        check_positive_int("depth", depth)
        if not isinstance(tag_bits, int) or isinstance(tag_bits, bool) or tag_bits < 0:
            raise ValueError(f"`tag_bits` must be a non-negative integer, not {tag_bits!r}")
        if row_trits is None:
            row_trits = inputs
        check_positive_int("row_trits", row_trits)
        if row_trits < inputs:
            raise ValueError(f"`row_trits` must be at least `inputs` ({inputs}), not {row_trits}")
        self._rows = rows
        self._inputs = inputs
        self._depth = depth
        self._row_trits = row_trits
        self._tag_bits = tag_bits
        super().__init__({
            "read_addr": In(stream.Signature(self.read_request_layout)),
            "read_data": Out(stream.Signature(self.read_data_layout)),
            "load_start": In(stream.Signature(self.row_addr_width)),
            "load_rows": In(self.load_rows_width),
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
    def depth(self):
        return self._depth

    @property
    def row_trits(self):
        return self._row_trits

    @property
    def tag_bits(self):
        return self._tag_bits

    @property
    def read_request_layout(self):
        return data.StructLayout({"addr": unsigned(self.addr_width), "tag": unsigned(self._tag_bits)})

    @property
    def read_data_layout(self):
        return data.StructLayout({"trits": unsigned(self.word_bits * self._rows), "tag": unsigned(self._tag_bits)})

    @property
    def row_depth(self):
        """Rows per bank: enough for ``depth`` words."""
        return -(-self._depth * self._inputs // self._row_trits)

    @property
    def addr_width(self):
        """Width of a word address (at least 1)."""
        return max(1, ceil_log2(self._depth))

    @property
    def row_addr_width(self):
        """Width of a row address (at least 1)."""
        return max(1, ceil_log2(self.row_depth))

    @property
    def load_rows_width(self):
        """Width of ``load_rows``, enough for every bank row of the memory."""
        return bits_for(self.row_depth * self._rows)

    @property
    def word_bits(self):
        """Width of one bank word, ``2 * inputs``."""
        return self._inputs * nx.TRIT_BITS

    @property
    def row_bits(self):
        """Width of one bank row, ``2 * row_trits``."""
        return self._row_trits * nx.TRIT_BITS

    @property
    def split(self):
        """True when words straddle rows, so even and odd rows sit in separate memories."""
        return self._row_trits != self._inputs

    def elaborate(self, platform):
        m = Module()
        # One memory per bank, or with `split` an even-row and an odd-row memory per bank.
        halves = ("even", "odd") if self.split else ("all",)
        half_depth = -(-self.row_depth // len(halves))
        banks = []
        for index in range(self._rows):
            bank = {}
            for half in halves:
                memory = Memory(shape=unsigned(self.row_bits), depth=half_depth, init=[])
                name = f"bank_{index}" if half == "all" else f"bank_{index}_{half}"
                m.submodules[name] = memory
                bank[half] = memory
            banks.append(bank)

        self._elaborate_read(m, banks)
        self._elaborate_load(m, banks)
        return m

    def _row_of_word(self, m, address):
        """Return ``(row, offset)`` signals: the row where word ``address`` starts and its first trit's place in it."""
        K, T = self._inputs, self._row_trits
        row = Signal(range(self.row_depth + 1))
        offset = Signal(range(T))
        if not self.split:
            m.d.comb += row.eq(address)
            return row, offset
        # row = floor(a*K / T) as a multiplication by a rounded-up reciprocal,
        # with the shortest shift that is exact for every address of the memory.
        largest = (self._depth - 1) * K
        positions = np.arange(largest + 1, dtype=np.int64)
        for shift in range(bits_for(T), bits_for(largest) + bits_for(T) + 2):
            factor = -(-(1 << shift) // T)
            if np.array_equal((positions * factor) >> shift, positions // T):
                break
        position = Signal(range(largest + 1))
        m.d.comb += [
            position.eq(address * K),
            row.eq((position * factor) >> shift),
            offset.eq(position - row * T),
        ]
        return row, offset

    def _elaborate_read(self, m, banks):
        K, T, trit_bits = self._inputs, self._row_trits, nx.TRIT_BITS
        request, result = self.read_addr, self.read_data

        # First cycle: the accepted address becomes row addresses in `pending`.
        # Second cycle: the banks read them (`take`), and the word appears on `read_data`.
        pending = Signal()
        take = Signal()
        m.d.comb += [
            take.eq(pending & (~result.valid | result.ready)),
            request.ready.eq(~pending | take),
        ]
        with m.If(request.valid & request.ready):
            m.d.sync += pending.eq(1)
        with m.Elif(take):
            m.d.sync += pending.eq(0)
        with m.If(take):
            m.d.sync += result.valid.eq(1)
        with m.Elif(result.ready):
            m.d.sync += result.valid.eq(0)

        pending_tag = Signal(self._tag_bits)
        with m.If(request.valid & request.ready):
            m.d.sync += pending_tag.eq(request.payload.tag)
        with m.If(take):
            m.d.sync += result.payload.tag.eq(pending_tag)

        row, offset = self._row_of_word(m, request.payload.addr)
        if not self.split:
            row_addr = Signal(self.row_addr_width)
            with m.If(request.valid & request.ready):
                m.d.sync += row_addr.eq(row)
            for index, bank in enumerate(banks):
                port = bank["all"].read_port()
                low = index * self.word_bits
                m.d.comb += [
                    port.addr.eq(row_addr),
                    port.en.eq(take),
                    result.payload.trits[low:low + self.word_bits].eq(port.data[:self.word_bits]),
                ]
            return

        # Rows q and q + 1: the even one is at (q + 1) // 2 of the even memory, the
        # odd one at q // 2 of the odd memory. Both are read, and the word is
        # trits [offset, offset + K) of row q followed by row q + 1. Offsets are
        # multiples of gcd(K, T), so the shifter has T / gcd(K, T) positions.
        step = math.gcd(K, T)
        half_addr_width = max(1, ceil_log2(-(-self.row_depth // 2)))
        even_addr = Signal(half_addr_width)
        odd_addr = Signal(half_addr_width)
        pending_odd_first = Signal()
        pending_place = Signal(range(T // step))
        with m.If(request.valid & request.ready):
            m.d.sync += [
                even_addr.eq((row + 1) >> 1),
                odd_addr.eq(row >> 1),
                pending_odd_first.eq(row[0]),
                pending_place.eq(offset // step),
            ]
        odd_first = Signal()
        place = Signal(range(T // step))
        with m.If(take):
            m.d.sync += [odd_first.eq(pending_odd_first), place.eq(pending_place)]
        for index, bank in enumerate(banks):
            even, odd = bank["even"].read_port(), bank["odd"].read_port()
            m.d.comb += [
                even.addr.eq(even_addr),
                odd.addr.eq(odd_addr),
                even.en.eq(take),
                odd.en.eq(take),
            ]
            pair = Signal(2 * self.row_bits)
            m.d.comb += pair.eq(Mux(odd_first, Cat(odd.data, even.data), Cat(even.data, odd.data)))
            low = index * self.word_bits
            word = result.payload.trits[low:low + self.word_bits]
            with m.Switch(place):
                for value in range(T // step):
                    with m.Case(value):
                        start = value * step * trit_bits
                        m.d.comb += word.eq(pair[start:start + self.word_bits])

    def _elaborate_load(self, m, banks):
        T, trit_bits = self._row_trits, nx.TRIT_BITS
        write_ports = [{half: memory.write_port() for half, memory in bank.items()} for bank in banks]

        # Decoder register: the five trits of one byte, in the on-chip encoding.
        decoded = Signal(TRITS_PER_BYTE * trit_bits)
        decoded_valid = Signal()
        decoded_taken = Signal()
        invalid_byte = Signal()
        byte_trits = Signal(TRITS_PER_BYTE * trit_bits)
        with m.Switch(self.load_data.payload):
            for value in range(MAX_TRIT_BYTE + 1):
                with m.Case(value):
                    m.d.comb += byte_trits.eq(_encode_digits(value))
            with m.Default():
                m.d.comb += invalid_byte.eq(1)

        # Gearbox: `fill` trits wait in `pending`, the oldest at bit 0. Bits above them are zero.
        capacity = T + TRITS_PER_BYTE - 1
        pending = Signal(capacity * trit_bits)
        fill = Signal(range(capacity + 1))
        row_ready = Signal()
        pending_after_write = Signal.like(pending)
        fill_after_write = Signal.like(fill)
        m.d.comb += [
            row_ready.eq(fill >= T),
            pending_after_write.eq(Mux(row_ready, pending >> (T * trit_bits), pending)),
            fill_after_write.eq(Mux(row_ready, fill - T, fill)),
            decoded_taken.eq(decoded_valid & (fill_after_write < T)),
            self.load_busy.eq(decoded_valid | row_ready),
            self.load_start.ready.eq(~self.load_busy),
            # A waiting start stops new bytes, so the bytes before it drain first.
            self.load_data.ready.eq(~self.load_start.valid & (~decoded_valid | decoded_taken)),
        ]
        with m.If(decoded_taken):
            m.d.sync += [
                pending.eq(pending_after_write | (decoded << (fill_after_write * trit_bits))),
                fill.eq(fill_after_write + TRITS_PER_BYTE),
            ]
        with m.Else():
            m.d.sync += [pending.eq(pending_after_write), fill.eq(fill_after_write)]

        with m.If(self.load_data.valid & self.load_data.ready):
            m.d.sync += [decoded.eq(byte_trits), decoded_valid.eq(1)]
            with m.If(invalid_byte):
                m.d.sync += self.load_error.eq(1)
        with m.Elif(decoded_taken):
            m.d.sync += decoded_valid.eq(0)

        # Write the oldest T trits as one bank row, banks in turn, then the next row address.
        row = Signal(bits_for(self.row_depth))
        bank = Signal(range(self._rows))
        remaining = Signal.like(self.load_rows)
        limited = Signal()
        write = Signal()
        in_range = Signal()
        m.d.comb += [
            write.eq(row_ready & (~limited | (remaining != 0))),
            in_range.eq(row < self.row_depth),
        ]
        for index, ports in enumerate(write_ports):
            for half, port in ports.items():
                selected = (bank == index) & (row[0] == (half == "odd")) if self.split else bank == index
                m.d.comb += [
                    port.addr.eq(row >> 1 if self.split else row),
                    port.data.eq(pending[:T * trit_bits]),
                    port.en.eq(write & in_range & selected),
                ]
        with m.If(write):
            with m.If(limited):
                m.d.sync += remaining.eq(remaining - 1)
            with m.If(~in_range):
                m.d.sync += self.load_error.eq(1)
            with m.Elif(bank == self._rows - 1):
                m.d.sync += [bank.eq(0), row.eq(row + 1)]
            with m.Else():
                m.d.sync += bank.eq(bank + 1)

        with m.If(self.load_start.valid & self.load_start.ready):
            m.d.sync += [
                row.eq(self.load_start.payload),
                remaining.eq(self.load_rows),
                limited.eq(self.load_rows != 0),
                bank.eq(0),
                pending.eq(0),
                fill.eq(0),
                self.load_error.eq(0),
            ]
