"""cocotb test bench of the ternary engine alone, on the Verilog of :class:`hw.engine.TernaryEngine`.

A driver feeds tiles of random trits and int8 codes, grouped by the
``first`` and ``last`` flags into dot products of random length, with random
idle cycles. A monitor takes the accumulator beats with random backpressure.
A scoreboard computes each dot product as ``trits @ codes`` over all its
tiles in numpy int64 and compares every accumulator of the matching beat
exactly. Each test ends by checking that every tile was transferred, every
expected beat arrived and no extra beat followed.

The driver and the monitor change their outputs at the falling clock edge
and sample the handshake in the read-only phase after it, so a transfer they
record happens at the next rising edge.

Settings come from environment variables (set by ``tests/test_sim_units.py``):

``MMFREE_ENGINE``  the engine parameters, JSON ``{"rows": R, "inputs": K, "max_fan_in": N}``
``MMFREE_TILES``   random tiles that the random test sends besides the edge cases (the latency test sends a quarter)
``MMFREE_SEED``    seed of the random stimulus
"""

import json
import os
import time
from collections import deque
from dataclasses import dataclass

import cocotb
import numpy as np
from amaranth.utils import ceil_log2
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from golden import numerics as nx
from hw.engine import resolve_acc_bits, tile_layout

CLOCK_NS = 10
# The scoreboard logs this many differing beats and only counts the rest.
MAX_LOGGED_MISMATCHES = 10

# Traffic phases of the random test, as (probability of an idle input cycle,
# probability of a not-ready output cycle). The phase with 90 % backpressure
# keeps the engine's skid buffer full and its pipeline stalled most of the time.
PHASES = [(0.0, 0.0), (0.3, 0.3), (0.0, 0.9), (0.8, 0.0), (0.5, 0.6)]


@dataclass(frozen=True)
class EngineShape:
    """The parameters of the engine under test and the limits derived from them."""
    rows: int
    inputs: int
    max_fan_in: int

    @property
    def acc_bits(self):
        return resolve_acc_bits(self.max_fan_in)

    @property
    def latency(self):
        """Documented cycles from the transfer of a ``last`` tile to its valid beat."""
        return ceil_log2(self.inputs) + 3

    @property
    def full_scale_fan_in(self):
        """Largest number of nonzero trits per row whose sum of +-127 products fits in ``acc_bits``."""
        return ((1 << (self.acc_bits - 1)) - 1) // nx.CODE_MAX


@dataclass
class Tile:
    """One engine tile: R x K trits, K codes, the group flags and the traffic of its phase."""
    trits: np.ndarray
    codes: np.ndarray
    first: bool
    last: bool
    label: str
    traffic: tuple


@dataclass
class ExpectedBeat:
    values: np.ndarray
    cycle: int
    label: str


class Traffic:
    """Current probabilities of an idle input cycle and of a not-ready output cycle."""

    def __init__(self, idle=0.0, stall=0.0):
        self.idle = idle
        self.stall = stall


class TileCodec:
    """Converter from tiles to ``tiles`` payloads and from ``accumulators`` payloads to integers, by :func:`tile_layout`."""

    def __init__(self, shape):
        layout = tile_layout(shape.rows, shape.inputs)
        if layout["codes"].shape.elem_shape.width != 8:
            raise ValueError("the codec packs int8 codes only")
        self.trits_offset = layout["trits"].offset
        self.codes_offset = layout["codes"].offset
        self.first_offset = layout["first"].offset
        self.last_offset = layout["last"].offset
        self.rows = shape.rows
        self.acc_bits = shape.acc_bits
        self._encoding = np.zeros(3, dtype=np.uint8)
        for trit, bits in nx.TRIT_ENCODING.items():
            self._encoding[trit + 1] = bits

    def pack(self, tile):
        # Trit l of row r occupies bits [2(rK + l), 2(rK + l) + 2), low bit first.
        encoded = self._encoding[tile.trits.ravel().astype(np.int64) + 1]
        bits = (encoded[:, None] >> np.arange(nx.TRIT_BITS)) & 1
        trits = int.from_bytes(np.packbits(bits.ravel(), bitorder="little").tobytes(), "little")
        codes = int.from_bytes(tile.codes.astype(np.int8).tobytes(), "little")
        return (trits << self.trits_offset | codes << self.codes_offset
                | int(tile.first) << self.first_offset | int(tile.last) << self.last_offset)

    def unpack(self, value):
        mask = (1 << self.acc_bits) - 1
        sign = 1 << (self.acc_bits - 1)
        return np.array([((value >> (row * self.acc_bits) & mask) ^ sign) - sign for row in range(self.rows)],
                        dtype=np.int64)


def wrap(values, bits):
    """Return ``values`` modulo ``2**bits`` as signed integers, as the accumulators hold them."""
    sign = 1 << (bits - 1)
    return ((np.asarray(values, dtype=np.int64) + sign) % (1 << bits)) - sign


def split_into_tiles(trits, codes, shape, label, traffic):
    """Cut one dot product (R x n*K trits, n*K codes) into n tiles flagged ``first`` and ``last``."""
    count = trits.shape[1] // shape.inputs
    tiles = []
    for index in range(count):
        lanes = slice(index * shape.inputs, (index + 1) * shape.inputs)
        tiles.append(Tile(trits[:, lanes], codes[lanes], index == 0, index == count - 1, label, traffic))
    return tiles


def random_dot_product(rng, shape, traffic):
    """Return the tiles of a dot product of random length within the full-scale fan-in, with random sparsity."""
    max_tiles = shape.full_scale_fan_in // shape.inputs
    length = int(rng.integers(1, max_tiles + 1))
    zero = float(rng.choice([0.0, 1 / 3, 0.9]))
    trits = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(shape.rows, length * shape.inputs),
                       p=[(1 - zero) / 2, zero, (1 - zero) / 2])
    codes = rng.integers(-nx.CODE_MAX, nx.CODE_MAX + 1, size=length * shape.inputs)
    return split_into_tiles(trits, codes, shape, f"random, length {length}", traffic)


def full_scale_dot_product(shape, row_trits, code, fan_in, traffic):
    """Return the tiles of a dot product with trit ``row_trits[r]`` in the first ``fan_in`` columns of row r.

    Every code is ``code``. The columns past ``fan_in`` in the last tile have zero trits.
    """
    length = -(-fan_in // shape.inputs)
    trits = np.zeros((shape.rows, length * shape.inputs), dtype=np.int8)
    trits[:, :fan_in] = np.asarray(row_trits, dtype=np.int8)[:, None]
    codes = np.full(length * shape.inputs, code, dtype=np.int64)
    label = f"fan-in {fan_in}, trits {sorted(set(int(t) for t in row_trits))}, codes {code}"
    return split_into_tiles(trits, codes, shape, label, traffic)


def edge_case_dot_products(rng, shape, traffic):
    """Return the tiles of the edge cases, one dot product each.

    All-zero trits with random codes. Every code +127 and -127, each with all
    trits +1 and all -1, at the full-scale fan-in, which gives the largest and
    smallest sums the accumulator width holds. Rows of alternating +1 and -1,
    so one beat contains both extremes. One dot product past the full-scale
    fan-in, whose sum wraps modulo ``2**acc_bits`` as the engine documents.
    """
    fan_in = shape.full_scale_fan_in
    groups = []
    length = int(rng.integers(1, 4))
    zeros = np.zeros((shape.rows, length * shape.inputs), dtype=np.int8)
    codes = rng.integers(-nx.CODE_MAX, nx.CODE_MAX + 1, size=length * shape.inputs)
    groups.append(split_into_tiles(zeros, codes, shape, f"all-zero trits, length {length}", traffic))
    for trit in (1, -1):
        for code in (nx.CODE_MAX, -nx.CODE_MAX):
            groups.append(full_scale_dot_product(shape, [trit] * shape.rows, code, fan_in, traffic))
    alternating = [1 if row % 2 == 0 else -1 for row in range(shape.rows)]
    groups.append(full_scale_dot_product(shape, alternating, nx.CODE_MAX, fan_in, traffic))
    wrapped = full_scale_dot_product(shape, [1] * shape.rows, nx.CODE_MAX, fan_in + 1, traffic)
    for tile in wrapped:
        tile.label = f"fan-in {fan_in + 1}, past full scale (wraps)"
    groups.append(wrapped)
    return groups


class Scoreboard:
    """Checker of the accumulator beats, in order, against numpy dot products of the transferred tiles."""

    def __init__(self, shape, log):
        self.shape = shape
        self.log = log
        self.expected = deque()
        self.group = []
        self.tiles = 0
        self.beats = 0
        self.mismatches = 0
        self.unexpected = 0
        self.protocol_errors = 0
        self.latencies = []

    def tile_transferred(self, tile, cycle):
        self.tiles += 1
        if tile.first:
            self.group = []
        elif not self.group:
            self.protocol_errors += 1
            self.log.error("the bench sent a tile without `first` outside a dot product (%s)", tile.label)
        self.group.append(tile)
        if not tile.last:
            return
        trits = np.concatenate([part.trits for part in self.group], axis=1).astype(np.int64)
        codes = np.concatenate([part.codes for part in self.group]).astype(np.int64)
        exact = trits @ codes
        expected = wrap(exact, self.shape.acc_bits)
        if "wraps" not in tile.label and not np.array_equal(expected, exact):
            self.protocol_errors += 1
            self.log.error("the bench generated a dot product outside the accumulator range (%s)", tile.label)
        self.expected.append(ExpectedBeat(expected, cycle, tile.label))
        self.group = []

    def beat_received(self, values, cycle):
        self.beats += 1
        if not self.expected:
            self.unexpected += 1
            self.log.error("cycle %d: beat %s arrived with no dot product outstanding", cycle, values.tolist())
            return
        item = self.expected.popleft()
        self.latencies.append(cycle - item.cycle)
        if not np.array_equal(values, item.values):
            self.mismatches += 1
            if self.mismatches > MAX_LOGGED_MISMATCHES:
                return
            wrong = np.flatnonzero(values != item.values)
            row = int(wrong[0])
            self.log.error("beat %d (%s): %d of %d accumulators differ, first in row %d: expected %d, got %d",
                           self.beats, item.label, wrong.size, values.size, row, item.values[row], values[row])


def current_cycle():
    return int(round(get_sim_time("ns"))) // CLOCK_NS


class TileDriver:
    """Driver that offers queued tiles on ``tiles`` in order, idling before a tile at probability ``traffic.idle``.

    The traffic phase follows the tile at the head of the queue.
    """

    def __init__(self, dut, codec, rng, traffic, on_transfer):
        self.dut = dut
        self.codec = codec
        self.rng = rng
        self.traffic = traffic
        self.on_transfer = on_transfer
        self.queue = deque()
        self.offered = None
        self.stalled_cycles = 0
        self.transfer_cycles = []

    @property
    def busy(self):
        return bool(self.queue) or self.offered is not None

    async def run(self):
        dut = self.dut
        while True:
            await FallingEdge(dut.clk)
            if self.queue:
                self.traffic.idle, self.traffic.stall = self.queue[0].traffic
            if self.offered is None and self.queue and self.rng.random() >= self.traffic.idle:
                self.offered = self.queue.popleft()
                dut.tiles__payload.value = self.codec.pack(self.offered)
            dut.tiles__valid.value = int(self.offered is not None)

            await ReadOnly()
            if self.offered is None:
                continue
            if dut.tiles__ready.value:
                cycle = current_cycle()
                self.transfer_cycles.append(cycle)
                self.on_transfer(self.offered, cycle)
                self.offered = None
            else:
                self.stalled_cycles += 1


class AccumulatorMonitor:
    """Monitor that takes ``accumulators`` beats, holding ``ready`` low in a cycle at probability ``traffic.stall``."""

    def __init__(self, dut, codec, rng, traffic, on_beat):
        self.dut = dut
        self.codec = codec
        self.rng = rng
        self.traffic = traffic
        self.on_beat = on_beat

    async def run(self):
        dut = self.dut
        while True:
            await FallingEdge(dut.clk)
            ready = self.rng.random() >= self.traffic.stall
            dut.accumulators__ready.value = int(ready)

            await ReadOnly()
            if ready and dut.accumulators__valid.value:
                values = self.codec.unpack(dut.accumulators__payload.value.to_unsigned())
                self.on_beat(values, current_cycle())


class TB:
    """The engine with its clock, a tile driver, an accumulator monitor and the scoreboard."""

    def __init__(self, dut, seed_offset=0):
        self.dut = dut
        self.shape = EngineShape(**json.loads(os.environ["MMFREE_ENGINE"]))
        self.tiles = int(os.environ.get("MMFREE_TILES", "2000"))
        seed = int(os.environ.get("MMFREE_SEED", "1")) + seed_offset
        self.rng = np.random.default_rng(seed)
        self.traffic = Traffic()
        self.codec = TileCodec(self.shape)
        self.scoreboard = Scoreboard(self.shape, dut._log)
        self.driver = TileDriver(dut, self.codec, np.random.default_rng(seed + 1000), self.traffic,
                                 self.scoreboard.tile_transferred)
        self.monitor = AccumulatorMonitor(dut, self.codec, np.random.default_rng(seed + 2000), self.traffic,
                                          self.scoreboard.beat_received)
        shape = self.shape
        dut._log.info("engine %d x %d, max fan-in %d, %d-bit accumulators (full scale at fan-in %d), seed %d",
                      shape.rows, shape.inputs, shape.max_fan_in, shape.acc_bits, shape.full_scale_fan_in, seed)

    async def start(self):
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        dut.rst.value = 1
        dut.tiles__valid.value = 0
        dut.accumulators__ready.value = 0
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        cocotb.start_soon(self.driver.run())
        cocotb.start_soon(self.monitor.run())

    def send(self, tiles):
        self.driver.queue.extend(tiles)

    async def finish(self):
        """Wait until every tile is transferred and every beat received, then check that no extra beat comes."""
        dut = self.dut
        # A generous limit of 20 cycles per tile: with 90 % backpressure a beat waits about 10 cycles,
        # and every beat takes at least one tile.
        limit = 20 * len(self.driver.queue) + 100 * self.shape.latency + 1000
        waited = 0
        while self.driver.busy or self.scoreboard.expected:
            if waited >= limit:
                break
            await ClockCycles(dut.clk, 16)
            waited += 16
        self.traffic.stall = 0.0
        await ClockCycles(dut.clk, 2 * self.shape.latency + 8)

        board = self.scoreboard
        dut._log.info("%d tiles, %d beats, %d mismatches, %d unexpected beats",
                      board.tiles, board.beats, board.mismatches, board.unexpected)
        assert not self.driver.busy, f"{len(self.driver.queue)} tiles were never transferred within {limit} cycles"
        assert not board.expected, f"{len(board.expected)} expected beats never arrived"
        assert board.protocol_errors == 0, "the bench generated an invalid stimulus; see the log above"
        assert board.unexpected == 0, f"{board.unexpected} beats arrived with no dot product outstanding"
        assert board.mismatches == 0, f"{board.mismatches} beats differ from trits @ codes"


def interleave(rng, random_groups, edge_groups):
    """Return the tiles of ``random_groups`` with every group of ``edge_groups`` inserted at a random place."""
    groups = list(random_groups)
    for group in edge_groups:
        groups.insert(int(rng.integers(0, len(groups) + 1)), group)
    return [tile for group in groups for tile in group]


@cocotb.test()
async def random_dot_products(dut):
    """Random dot products and the edge cases under random idle cycles and backpressure."""
    tb = TB(dut)
    await tb.start()
    started = time.monotonic()

    # Each phase gets an equal share of the random tiles and a copy of the edge cases.
    tiles = []
    for traffic in PHASES:
        groups, count = [], 0
        while count < tb.tiles // len(PHASES):
            group = random_dot_product(tb.rng, tb.shape, traffic)
            groups.append(group)
            count += len(group)
        tiles += interleave(tb.rng, groups, edge_case_dot_products(tb.rng, tb.shape, traffic))
    tb.send(tiles)
    await tb.finish()

    cycles = tb.driver.transfer_cycles[-1] - tb.driver.transfer_cycles[0] + 1
    dut._log.info("%d tiles in %d cycles, %.1f s of wall time, %d cycles with tiles.ready low",
                  len(tiles), cycles, time.monotonic() - started, tb.driver.stalled_cycles)
    assert tb.driver.stalled_cycles > 0, "backpressure never reached the input, so the skid buffer was not exercised"


@cocotb.test()
async def latency_and_throughput(dut):
    """With no idle cycles and no backpressure: one tile per cycle and every beat after the documented latency."""
    tb = TB(dut, seed_offset=1)
    await tb.start()

    groups, count = [], 0
    while count < max(1, tb.tiles // 4):
        group = random_dot_product(tb.rng, tb.shape, (0.0, 0.0))
        groups.append(group)
        count += len(group)
    tiles = interleave(tb.rng, groups, edge_case_dot_products(tb.rng, tb.shape, (0.0, 0.0)))
    tb.send(tiles)
    await tb.finish()

    transfers = tb.driver.transfer_cycles
    assert tb.driver.stalled_cycles == 0, f"tiles.ready was low in {tb.driver.stalled_cycles} cycles"
    assert transfers[-1] - transfers[0] == len(tiles) - 1, "the tiles were not transferred in consecutive cycles"
    latencies = set(tb.scoreboard.latencies)
    assert latencies == {tb.shape.latency}, f"latencies {sorted(latencies)}, documented {tb.shape.latency}"
