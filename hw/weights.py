"""Weight memory: R banks of K-trit words, read one tile per cycle, loaded from base-3 bytes.

A projection of ``rows x cols`` occupies ``ceil(rows/R) * ceil(cols/K)`` words
in every bank from its base address. The trit of row ``r``, column ``c`` is in
bank ``r mod R``, word ``base + (r div R) * ceil(cols/K) + c div K``, lane
``c mod K``; padding trits are zero. The loader fills the banks in *linear
order*: word address major, then bank, then lane. :func:`linear_order`
arranges a projection's trits in that order, for the tests and the host.
"""

import numpy as np
from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
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

    Read side: each address accepted on ``read_addr`` reads word ``addr`` of all
    R banks, and the R words appear on ``read_data`` one cycle later, bank
    ``r`` at bits ``[r*2K, (r+1)*2K)`` (the engine's ``trits`` layout). One read
    per cycle, in order. ``read_addr.ready`` is ``~read_data.valid | read_data.ready``,
    a combinational path from the downstream ready. Addresses at or above
    ``depth`` read undefined data.

    Load side: a beat on ``load_start`` starts a load at the word address in
    its payload, and ``load_words`` at that transfer sets the number of bank
    words (K trits each) to write. The start is accepted only while
    ``load_busy`` is low, and it discards any partial word of the previous
    load. ``load_data`` then takes one byte per cycle. A byte packs
    five trits in base 3, ``sum((t_i + 1) * 3**i)``, trit 0 first in linear
    order. A decoder register keeps the byte's trits for one cycle. Then a
    gearbox of ``K + 4`` trits assembles K-trit words and writes each to its
    bank as soon as it is complete. For ``inputs`` below 5 a byte may complete
    more than one word, so the loader takes a byte about every ``5 / K`` cycles.

    Only the first ``load_words`` bank words of a load are written, so the zero
    trits that pad the final byte never overwrite the next projection. Bytes
    after the last word are consumed and dropped. A ``load_words`` of 0 writes
    every complete word. That is safe for ``inputs`` of 5 or more and loads of
    whole bank words, because the at most four padding trits then never
    complete a word. For ``inputs`` below 5 they can, so such loads need a count.

    ``load_error`` rises on a byte above 242 (such a byte is consumed as five
    zero trits, so the words after it keep their place) and on a word that
    would be written at or past ``depth`` (that write is dropped). It stays
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

    Members
    -------
    read_addr : ``In(stream.Signature(addr_width))``
        Word addresses to read.
    read_data : ``Out(stream.Signature(rows * inputs * 2))``
        The R bank words of each address.
    load_start : ``In(stream.Signature(addr_width))``
        Word address at which a load begins.
    load_words : ``In(load_words_width)``
        Bank words to write in the load that starts, or 0 for no limit.
    load_data : ``In(stream.Signature(8))``
        Base-3 packed trit bytes in linear order.
    load_busy : ``Out(1)``
        A byte is being decoded or a complete word is waiting to be written.
    load_error : ``Out(1)``
        An invalid byte or a write past ``depth`` since the last ``load_start``.
    """

    def __init__(self, rows, inputs, depth):
        check_positive_int("rows", rows)
        check_positive_int("inputs", inputs)
        check_positive_int("depth", depth)
        self._rows = rows
        self._inputs = inputs
        self._depth = depth
        super().__init__({
            "read_addr": In(stream.Signature(self.addr_width)),
            "read_data": Out(stream.Signature(self.word_bits * rows)),
            "load_start": In(stream.Signature(self.addr_width)),
            "load_words": In(self.load_words_width),
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
    def addr_width(self):
        """Width of a word address (at least 1)."""
        return max(1, ceil_log2(self._depth))

    @property
    def load_words_width(self):
        """Width of ``load_words``, enough for every bank word of the memory."""
        return bits_for(self._depth * self._rows)

    @property
    def word_bits(self):
        """Width of one bank word, ``2 * inputs``."""
        return self._inputs * nx.TRIT_BITS

    def elaborate(self, platform):
        m = Module()
        banks = []
        for index in range(self._rows):
            bank = Memory(shape=unsigned(self.word_bits), depth=self._depth, init=[])
            m.submodules[f"bank_{index}"] = bank
            banks.append(bank)

        self._elaborate_read(m, banks)
        self._elaborate_load(m, banks)
        return m

    def _elaborate_read(self, m, banks):
        read_ports = [bank.read_port() for bank in banks]
        accept = Signal()
        m.d.comb += [
            self.read_addr.ready.eq(~self.read_data.valid | self.read_data.ready),
            accept.eq(self.read_addr.valid & self.read_addr.ready),
        ]
        for index, port in enumerate(read_ports):
            low = index * self.word_bits
            m.d.comb += [
                port.addr.eq(self.read_addr.payload),
                port.en.eq(accept),
                self.read_data.payload[low:low + self.word_bits].eq(port.data),
            ]
        with m.If(accept):
            m.d.sync += self.read_data.valid.eq(1)
        with m.Elif(self.read_data.ready):
            m.d.sync += self.read_data.valid.eq(0)

    def _elaborate_load(self, m, banks):
        inputs, trit_bits = self._inputs, nx.TRIT_BITS
        write_ports = [bank.write_port() for bank in banks]

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
        capacity = inputs + TRITS_PER_BYTE - 1
        pending = Signal(capacity * trit_bits)
        fill = Signal(range(capacity + 1))
        word_ready = Signal()
        pending_after_write = Signal.like(pending)
        fill_after_write = Signal.like(fill)
        m.d.comb += [
            word_ready.eq(fill >= inputs),
            pending_after_write.eq(Mux(word_ready, pending >> (inputs * trit_bits), pending)),
            fill_after_write.eq(Mux(word_ready, fill - inputs, fill)),
            decoded_taken.eq(decoded_valid & (fill_after_write < inputs)),
            self.load_busy.eq(decoded_valid | word_ready),
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

        # Write the oldest K trits as one bank word, banks in turn, then the next address.
        word = Signal(bits_for(self._depth))
        bank = Signal(range(self._rows))
        remaining = Signal.like(self.load_words)
        limited = Signal()
        write = Signal()
        in_range = Signal()
        m.d.comb += [
            write.eq(word_ready & (~limited | (remaining != 0))),
            in_range.eq(word < self._depth),
        ]
        for index, port in enumerate(write_ports):
            m.d.comb += [
                port.addr.eq(word),
                port.data.eq(pending[:inputs * trit_bits]),
                port.en.eq(write & in_range & (bank == index)),
            ]
        with m.If(write):
            with m.If(limited):
                m.d.sync += remaining.eq(remaining - 1)
            with m.If(~in_range):
                m.d.sync += self.load_error.eq(1)
            with m.Elif(bank == self._rows - 1):
                m.d.sync += [bank.eq(0), word.eq(word + 1)]
            with m.Else():
                m.d.sync += bank.eq(bank + 1)

        with m.If(self.load_start.valid & self.load_start.ready):
            m.d.sync += [
                word.eq(self.load_start.payload),
                remaining.eq(self.load_words),
                limited.eq(self.load_words != 0),
                bank.eq(0),
                pending.eq(0),
                fill.eq(0),
                self.load_error.eq(0),
            ]
