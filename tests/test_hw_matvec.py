# amaranth: UnusedElaboratable=no
"""MatVec in simulation: whole projections against ``trits @ codes`` (numpy int64).

Weights go in through the byte loader (``pack_trits`` of ``linear_order``) and
codes through the code buffer's write port, as the sequencer will write them.
The first line stops Amaranth's warning about the units that the parameter
checks build and never elaborate.
"""

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from golden import numerics as nx
from golden.image import pack_trits
from hw.configs import CONFIGS
from hw.matvec import MatVec
from hw.weights import linear_order, projection_words

# (R, K, P): a single lane, K not a power of two, a small core and the bundled core.
SHAPES = [(1, 1, 1), (2, 5, 5), (4, 8, 4), (16, 32, 4)]
CYCLE_LIMIT = 50_000


async def send_stream(ctx, port, payloads, rng, idle=0.0):
    """Transfer ``payloads`` on ``port`` in order, with an idle cycle before a beat at probability ``idle``."""
    for payload in payloads:
        while rng.random() < idle:
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(port.payload, payload)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def receive_stream(ctx, port, count, rng, ready=1.0, convert=lambda payload: payload):
    """Receive ``count`` beats from ``port``, ready at probability ``ready`` each cycle."""
    received = []
    for _ in range(CYCLE_LIMIT):
        if len(received) == count:
            break
        accept = bool(rng.random() < ready)
        ctx.set(port.ready, accept)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        if valid and accept:
            received.append(convert(payload))
    ctx.set(port.ready, 0)
    assert len(received) == count, f"received {len(received)} of {count} beats in {CYCLE_LIMIT} cycles"
    return received


class Projection:
    """A projection placed in the weight memory and the code buffer, with its expected beats."""

    def __init__(self, trits, codes, weight_base, code_base, rows, inputs, code_slot=0):
        self.trits = np.asarray(trits, dtype=np.int64)
        self.codes = np.asarray(codes, dtype=np.int64)
        self.weight_base = weight_base
        self.code_base = code_base
        self.code_slot = code_slot
        matrix_rows, cols = self.trits.shape
        self.row_groups = -(-matrix_rows // rows)
        self.col_tiles = -(-cols // inputs)
        self.words = projection_words(self.trits.shape, rows, inputs)

        padded = np.zeros(self.row_groups * rows, dtype=np.int64)
        padded[:matrix_rows] = self.trits @ self.codes
        self.expected = [(group, padded[group * rows:(group + 1) * rows].tolist())
                         for group in range(self.row_groups)]

    @property
    def command(self):
        return {"weight_base": self.weight_base, "row_groups": self.row_groups,
                "col_tiles": self.col_tiles, "code_slot": self.code_slot, "code_base": self.code_base}


async def load_weights(ctx, matvec, projection, rng):
    """Load a projection's trits through the byte loader and wait until they are written."""
    data = pack_trits(linear_order(projection.trits, matvec.rows, matvec.inputs))
    ctx.set(matvec.load_rows, projection.words * matvec.rows)
    await send_stream(ctx, matvec.load_start, [projection.weight_base], rng)
    await send_stream(ctx, matvec.load_data, list(data), rng, idle=0.2)
    await ctx.tick().until(~matvec.load_busy)
    assert not ctx.get(matvec.load_error)


async def write_codes(ctx, matvec, projection, rng):
    """Write a projection's codes, P at a time, padded with random codes to whole tiles.

    Every group is first filled with random codes, then written in two passes
    with complementary random enables, so a code whose enable is low must keep
    its value.
    """
    inputs, width = matvec.inputs, matvec.code_write_width
    cols = len(projection.codes)
    codes = rng.integers(-nx.CODE_MAX, nx.CODE_MAX + 1, projection.col_tiles * inputs)
    codes[:cols] = projection.codes
    junk = rng.integers(-nx.CODE_MAX, nx.CODE_MAX + 1, len(codes))
    base = projection.code_base * inputs

    for element in range(0, len(codes), width):
        mask = int(rng.integers(0, 1 << width))
        passes = [(junk, (1 << width) - 1), (codes, mask), (codes, ~mask & ((1 << width) - 1))]
        for values, enables in passes:
            ctx.set(matvec.code_write.index, base + element)
            ctx.set(matvec.code_write.data, [int(code) for code in values[element:element + width]])
            ctx.set(matvec.code_write.en, enables)
            await ctx.tick()
    ctx.set(matvec.code_write.en, 0)


async def write_slot_codes(ctx, matvec, projections, rng):
    """Write the codes of one projection per code slot, every slot in the same writes.

    As in :func:`write_codes`, random codes go first, then the codes in two
    passes with complementary random enables, now drawn per slot.
    """
    inputs, width, slots = matvec.inputs, matvec.code_write_width, matvec.code_slots
    assert [projection.code_slot for projection in projections] == list(range(slots))
    assert len({(projection.code_base, projection.col_tiles) for projection in projections}) == 1
    first = projections[0]
    count = first.col_tiles * inputs
    codes = rng.integers(-nx.CODE_MAX, nx.CODE_MAX + 1, (slots, count))
    for projection in projections:
        codes[projection.code_slot, :len(projection.codes)] = projection.codes
    junk = rng.integers(-nx.CODE_MAX, nx.CODE_MAX + 1, (slots, count))
    every = (1 << slots * width) - 1
    for element in range(0, count, width):
        mask = int(rng.integers(0, every + 1))
        for values, enables in [(junk, every), (codes, mask), (codes, ~mask & every)]:
            ctx.set(matvec.code_write.index, first.code_base * inputs + element)
            ctx.set(matvec.code_write.data, [int(code) for code in values[:, element:element + width].ravel()])
            ctx.set(matvec.code_write.en, enables)
            await ctx.tick()
    ctx.set(matvec.code_write.en, 0)


def run_matvec(matvec, projections, *, seed=0, idle=0.0, ready=1.0, slots_together=False, order=None):
    """Place ``projections``, run one command for each; return the received (row_group, accumulators).

    With ``slots_together`` the projections are one per code slot and their
    codes are written together (:func:`write_slot_codes`). ``order`` lists
    the projections' indices in the order their commands are sent.
    """
    results = []
    total = sum(projection.row_groups for projection in projections)

    async def driver(ctx):
        rng = np.random.default_rng(seed)
        for projection in projections:
            await load_weights(ctx, matvec, projection, rng)
            if not slots_together:
                await write_codes(ctx, matvec, projection, rng)
        if slots_together:
            await write_slot_codes(ctx, matvec, projections, rng)
        for index in order or range(len(projections)):
            await send_stream(ctx, matvec.command, [projections[index].command], rng, idle=idle)

    async def monitor(ctx):
        def convert(payload):
            return (payload.row_group, [payload.accumulators[row] for row in range(matvec.rows)])
        results.extend(await receive_stream(ctx, matvec.results, total,
                                            np.random.default_rng(seed + 1), ready=ready, convert=convert))
        await ctx.tick().until(~matvec.busy)

    sim = Simulator(matvec)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()
    return results


def expected_results(projections):
    return [beat for projection in projections for beat in projection.expected]


@pytest.mark.parametrize("rows, inputs, width", SHAPES)
def test_matvec_random_projections(rows, inputs, width):
    rng = np.random.default_rng(rows * 100 + inputs)
    matvec = MatVec(rows, inputs, weight_depth=32, code_depth=16, code_write_width=width,
                    max_fan_in=2 * inputs + 3)
    # Shapes that are not multiples of R and K, back to back at different bases.
    first = Projection(rng.integers(-1, 2, (rows + 1, inputs + 3)), rng.integers(-127, 128, inputs + 3),
                       weight_base=1, code_base=0, rows=rows, inputs=inputs)
    second = Projection(rng.integers(-1, 2, (2 * rows + 1, 2 * inputs + 3)),
                        rng.integers(-127, 128, 2 * inputs + 3),
                        weight_base=1 + first.words, code_base=first.col_tiles, rows=rows, inputs=inputs)
    projections = [first, second]
    assert run_matvec(matvec, projections, seed=1) == expected_results(projections)


@pytest.mark.parametrize("rows, inputs, width", SHAPES)
def test_matvec_code_slots(rows, inputs, width):
    # Three code slots written in the same cycles, then one projection from each,
    # in the order 2, 0, 1, so that each command must take its own slot's codes.
    rng = np.random.default_rng(rows * 31 + inputs)
    matvec = MatVec(rows, inputs, weight_depth=32, code_depth=4, code_write_width=width,
                    max_fan_in=2 * inputs, code_slots=3)
    projections, weight_base = [], 0
    for slot in range(3):
        projection = Projection(rng.integers(-1, 2, (rows + 1, 2 * inputs - 1)),
                                rng.integers(-127, 128, 2 * inputs - 1), weight_base=weight_base,
                                code_base=1, rows=rows, inputs=inputs, code_slot=slot)
        projections.append(projection)
        weight_base += projection.words

    order = [2, 0, 1]
    results = run_matvec(matvec, projections, seed=3, slots_together=True, order=order)
    assert results == expected_results([projections[index] for index in order])


@pytest.mark.parametrize("rows, inputs, width", SHAPES)
def test_matvec_backpressure_and_idle(rows, inputs, width):
    rng = np.random.default_rng(rows * 7 + inputs)
    matvec = MatVec(rows, inputs, weight_depth=32, code_depth=8, code_write_width=width,
                    max_fan_in=3 * inputs)
    projection = Projection(rng.integers(-1, 2, (3 * rows - 1, 3 * inputs - 1)),
                            rng.integers(-127, 128, 3 * inputs - 1),
                            weight_base=2, code_base=1, rows=rows, inputs=inputs)
    assert run_matvec(matvec, [projection], seed=2, idle=0.3, ready=0.3) == projection.expected


@pytest.mark.slow
@pytest.mark.parametrize("rows, inputs, width", [(3, 7, 7), (8, 16, 8), (16, 32, 4), (16, 32, 32)])
def test_matvec_sweep_larger_shapes(rows, inputs, width):
    rng = np.random.default_rng(rows * 1000 + inputs * 10 + width)
    matvec = MatVec(rows, inputs, weight_depth=2048, code_depth=128, code_write_width=width, max_fan_in=512)
    projections, weight_base, code_base = [], 0, 0
    for matrix_rows, cols in ((128, 128), (100, 75), (5, 512)):
        projection = Projection(rng.integers(-1, 2, (matrix_rows, cols)), rng.integers(-127, 128, cols),
                                weight_base=weight_base, code_base=code_base, rows=rows, inputs=inputs)
        projections.append(projection)
        weight_base += projection.words
        code_base += projection.col_tiles
    assert run_matvec(matvec, projections, seed=7, idle=0.1, ready=0.7) == expected_results(projections)


def test_matvec_zero_trits():
    rows, inputs = 4, 8
    rng = np.random.default_rng(3)
    matvec = MatVec(rows, inputs, weight_depth=16, code_depth=4, code_write_width=4, max_fan_in=20)
    projection = Projection(np.zeros((6, 20), dtype=np.int64), rng.integers(-127, 128, 20),
                            weight_base=0, code_base=0, rows=rows, inputs=inputs)
    results = run_matvec(matvec, [projection])
    assert results == projection.expected
    assert all(not any(accumulators) for _, accumulators in results)


def test_matvec_largest_magnitude():
    # A 13-bit accumulator fits at most 32 products of 127, and 32 columns are not a multiple of K = 5.
    rows, inputs, cols = 2, 5, 32
    matvec = MatVec(rows, inputs, weight_depth=64, code_depth=16, code_write_width=5, max_fan_in=cols)
    assert matvec.acc_bits == 13
    assert nx.accumulator_bits(cols + 1) == 14

    # Each code vector has its own code buffer words: 7 tiles from word 0 or word 7.
    projections = []
    for code, code_base in ((nx.CODE_MAX, 0), (-nx.CODE_MAX, 7)):
        for trit in (1, -1):
            projections.append(Projection(np.full((3, cols), trit), np.full(cols, code),
                                          weight_base=len(projections) * 14, code_base=code_base,
                                          rows=rows, inputs=inputs))
    results = run_matvec(matvec, projections, seed=4, ready=0.6)
    assert results == expected_results(projections)
    assert max(abs(value) for _, accumulators in results for value in accumulators) == nx.CODE_MAX * cols


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_matvec_named_core_largest_fan_in(config_name):
    # The accumulator width of each named core, at its widest projection with every product at
    # +127 and then at -127: the largest sums of either sign that its parameters allow.
    core = CONFIGS[config_name]
    cols, tiles = core.max_fan_in, -(-core.max_fan_in // core.inputs)
    matvec = MatVec(core.rows, core.inputs, weight_depth=2 * tiles, code_depth=tiles,
                    code_write_width=core.vector_lanes, max_fan_in=cols, acc_bits=core.acc_bits)
    projections = [Projection(np.full((core.rows, cols), trit), np.full(cols, nx.CODE_MAX),
                              weight_base=index * tiles, code_base=0, rows=core.rows, inputs=core.inputs)
                   for index, trit in enumerate((1, -1))]
    results = run_matvec(matvec, projections, seed=8)
    assert results == expected_results(projections)
    assert max(abs(value) for _, accumulators in results for value in accumulators) == nx.CODE_MAX * cols


@pytest.mark.parametrize("rows, inputs, width", SHAPES)
def test_matvec_cycle_count(rows, inputs, width):
    rng = np.random.default_rng(5)
    matvec = MatVec(rows, inputs, weight_depth=32, code_depth=8, code_write_width=width,
                    max_fan_in=3 * inputs)
    projection = Projection(rng.integers(-1, 2, (3 * rows, 3 * inputs)), rng.integers(-127, 128, 3 * inputs),
                            weight_base=0, code_base=0, rows=rows, inputs=inputs)
    valid_cycles, beats, busy = [], [], []

    async def testbench(ctx):
        rng = np.random.default_rng(6)
        await load_weights(ctx, matvec, projection, rng)
        await write_codes(ctx, matvec, projection, rng)
        ctx.set(matvec.results.ready, 1)
        await send_stream(ctx, matvec.command, [projection.command], rng)
        for cycle in range(1, 3 * 3 + 20):
            _, _, valid, payload, running = await ctx.tick().sample(
                matvec.results.valid, matvec.results.payload, matvec.busy)
            busy.append(running)
            if valid:
                valid_cycles.append(cycle)
                beats.append((payload.row_group, [payload.accumulators[row] for row in range(rows)]))

    sim = Simulator(matvec)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    # One tile per cycle: a beat every `col_tiles` cycles after the fixed latency.
    latency = (inputs - 1).bit_length() + 5
    assert valid_cycles == [3 * (group + 1) + latency for group in range(3)]
    assert beats == projection.expected
    # busy[i] is sampled in cycle i + 1: busy falls in the cycle after the last beat.
    assert busy.index(0) == valid_cycles[-1]


def test_matvec_empty_command():
    matvec = MatVec(2, 4, weight_depth=8, code_depth=4, code_write_width=2, max_fan_in=8)
    seen = []

    async def testbench(ctx):
        ctx.set(matvec.results.ready, 1)
        commands = [{"weight_base": 0, "row_groups": 0, "col_tiles": 2, "code_base": 0},
                    {"weight_base": 0, "row_groups": 2, "col_tiles": 0, "code_base": 0}]
        await send_stream(ctx, matvec.command, commands, np.random.default_rng(0))
        for _ in range(20):
            _, _, valid, busy = await ctx.tick().sample(matvec.results.valid, matvec.busy)
            seen.append((valid, busy))

    sim = Simulator(matvec)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert set(seen) == {(0, 0)}


def test_matvec_write_width_message():
    with pytest.raises(ValueError, match=r"^`code_write_width` must divide `inputs` 32, not 3$"):
        MatVec(16, 32, weight_depth=64, code_depth=8, code_write_width=3, max_fan_in=128)


def test_matvec_zero_rows_message():
    with pytest.raises(ValueError, match=r"^`rows` must be a positive integer, not 0$"):
        MatVec(0, 32, weight_depth=64, code_depth=8, code_write_width=4, max_fan_in=128)


def test_matvec_narrow_acc_bits_message():
    with pytest.raises(ValueError, match=r"^`acc_bits` 12 is too narrow for `max_fan_in` 128: "
                                         r"sums of 8-bit codes need at least 15 bits$"):
        MatVec(16, 32, weight_depth=64, code_depth=8, code_write_width=4, max_fan_in=128, acc_bits=12)


def test_matvec_converts_to_verilog():
    text = verilog.convert(MatVec(4, 8, weight_depth=64, code_depth=16, code_write_width=4, max_fan_in=128),
                           name="matvec")
    assert "module matvec" in text
    assert "results__payload" in text
