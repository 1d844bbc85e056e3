# amaranth: UnusedElaboratable=no
"""TernaryEngine in simulation against ``trits @ codes`` (numpy int64).

The first line stops Amaranth's warning about the engines that the
parameter checks build and never elaborate.
"""

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from golden import numerics as nx
from hw.engine import TernaryEngine, required_acc_bits

# (R, K) pairs: a single lane, K not a power of two, and the bundled core's 16 x 32.
SHAPES = [(1, 1), (2, 5), (4, 8), (16, 32)]
CYCLE_LIMIT = 20_000


def encode_trits(trits):
    """Return the engine's ``trits`` field for an (R, K) trit array: row-major, two bits per trit."""
    value = 0
    for index, trit in enumerate(np.asarray(trits).ravel()):
        value |= nx.TRIT_ENCODING[int(trit)] << (nx.TRIT_BITS * index)
    return value


def split_group(trits, codes, rows, inputs, rng):
    """Split one row group (at most R rows) into engine tiles, padding with zero trits.

    The padding codes are random, so a padding trit that is not zero would show.
    """
    group_rows, cols = trits.shape
    col_tiles = -(-cols // inputs)
    padded_trits = np.zeros((rows, col_tiles * inputs), dtype=np.int64)
    padded_trits[:group_rows, :cols] = trits
    padded_codes = rng.integers(-nx.CODE_MAX, nx.CODE_MAX + 1, col_tiles * inputs)
    padded_codes[:cols] = codes

    tiles = []
    for tile in range(col_tiles):
        lanes = slice(tile * inputs, (tile + 1) * inputs)
        tiles.append({
            "trits": encode_trits(padded_trits[:, lanes]),
            "codes": [int(code) for code in padded_codes[lanes]],
            "first": int(tile == 0),
            "last": int(tile == col_tiles - 1),
        })
    expected = np.zeros(rows, dtype=np.int64)
    expected[:group_rows] = trits.astype(np.int64) @ codes.astype(np.int64)
    return tiles, expected


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


def run_engine(engine, groups, *, seed=0, idle=0.0, ready=1.0):
    """Run row groups ``[(trits, codes), ...]`` through ``engine``; return (accumulators, expected)."""
    rng = np.random.default_rng(seed)
    tiles, expected = [], []
    for trits, codes in groups:
        group_tiles, group_expected = split_group(trits, codes, engine.rows, engine.inputs, rng)
        tiles += group_tiles
        expected.append(group_expected)

    outputs = []

    async def driver(ctx):
        await send_stream(ctx, engine.tiles, tiles, np.random.default_rng(seed + 1), idle=idle)

    async def monitor(ctx):
        def convert(payload):
            return [payload[row] for row in range(engine.rows)]
        outputs.extend(await receive_stream(ctx, engine.accumulators, len(groups),
                                            np.random.default_rng(seed + 2), ready=ready, convert=convert))

    sim = Simulator(engine)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()
    return np.array(outputs, dtype=np.int64), np.array(expected, dtype=np.int64)


def random_groups(rng, count, rows, inputs, max_fan_in):
    """Return ``count`` random row groups of 1..R rows and 1..max_fan_in columns."""
    groups = []
    for _ in range(count):
        group_rows = int(rng.integers(1, rows + 1))
        cols = int(rng.integers(1, min(max_fan_in, 3 * inputs) + 1))
        trits = rng.integers(-1, 2, (group_rows, cols))
        codes = rng.integers(-nx.CODE_MAX, nx.CODE_MAX + 1, cols)
        groups.append((trits, codes))
    return groups


@pytest.mark.parametrize("rows, inputs", SHAPES)
def test_engine_random_groups(rows, inputs):
    engine = TernaryEngine(rows, inputs, max_fan_in=3 * inputs)
    groups = random_groups(np.random.default_rng(rows * 100 + inputs), 12, rows, inputs, 3 * inputs)
    got, expected = run_engine(engine, groups, seed=1)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("rows, inputs", SHAPES)
def test_engine_backpressure_and_idle(rows, inputs):
    engine = TernaryEngine(rows, inputs, max_fan_in=3 * inputs)
    groups = random_groups(np.random.default_rng(rows * 7 + inputs), 12, rows, inputs, 3 * inputs)
    got, expected = run_engine(engine, groups, seed=2, idle=0.3, ready=0.4)
    np.testing.assert_array_equal(got, expected)


def test_engine_single_tile_groups_stalled():
    # Every tile is a whole row group, so a beat arrives each cycle while the output stalls.
    engine = TernaryEngine(4, 8, max_fan_in=8)
    rng = np.random.default_rng(3)
    groups = [(rng.integers(-1, 2, (4, 8)), rng.integers(-127, 128, 8)) for _ in range(40)]
    got, expected = run_engine(engine, groups, seed=3, ready=0.3)
    np.testing.assert_array_equal(got, expected)


def test_engine_minus_one_trits_exact():
    # Every -1 trit needs its row's correction count. A code of -128 lies
    # outside the symmetric codes, and its products are exact too.
    engine = TernaryEngine(4, 8, max_fan_in=16, acc_bits=16)
    rng = np.random.default_rng(5)
    minus = -np.ones((4, 16), dtype=np.int64)
    groups = [(minus, np.full(16, -128)), (minus, np.full(16, 127)), (minus, rng.integers(-128, 128, 16)),
              (rng.choice([-1, 1], (4, 16)), np.full(16, -128))]
    got, expected = run_engine(engine, groups)
    assert (expected[0] == 16 * 128).all()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("rows, inputs", SHAPES)
def test_engine_zero_trits(rows, inputs):
    engine = TernaryEngine(rows, inputs, max_fan_in=2 * inputs)
    rng = np.random.default_rng(4)
    groups = [(np.zeros((rows, 2 * inputs), dtype=np.int64), rng.integers(-127, 128, 2 * inputs))
              for _ in range(3)]
    got, expected = run_engine(engine, groups)
    assert not expected.any()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("rows, inputs, acc_bits", [(1, 1, 9), (2, 5, 12), (4, 8, 13), (16, 32, 17)])
def test_engine_largest_magnitude(rows, inputs, acc_bits):
    # The largest fan-in that fits in `acc_bits`, with every product at +-127.
    max_fan_in = ((1 << (acc_bits - 1)) - 1) // nx.CODE_MAX
    engine = TernaryEngine(rows, inputs, max_fan_in=max_fan_in)
    assert engine.acc_bits == acc_bits

    groups = []
    for code in (nx.CODE_MAX, -nx.CODE_MAX):
        for trit in (1, -1):
            groups.append((np.full((rows, max_fan_in), trit), np.full(max_fan_in, code)))
    got, expected = run_engine(engine, groups, seed=5, ready=0.5)
    assert np.abs(expected).max() == nx.CODE_MAX * max_fan_in
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("rows, inputs", SHAPES)
def test_engine_latency_and_throughput(rows, inputs):
    engine = TernaryEngine(rows, inputs, max_fan_in=inputs)
    rng = np.random.default_rng(6)
    count = 6
    tiles = [split_group(rng.integers(-1, 2, (rows, inputs)), rng.integers(-127, 128, inputs),
                         rows, inputs, rng)[0][0] for _ in range(count)]
    ready_cycles, valid_cycles = [], []

    async def testbench(ctx):
        ctx.set(engine.accumulators.ready, 1)
        ctx.set(engine.tiles.valid, 1)
        for cycle in range(count + engine.latency + 2):
            if cycle < count:
                ctx.set(engine.tiles.payload, tiles[cycle])
            else:
                ctx.set(engine.tiles.valid, 0)
            _, _, tile_ready, output_valid = await ctx.tick().sample(engine.tiles.ready,
                                                                     engine.accumulators.valid)
            if tile_ready and cycle < count:
                ready_cycles.append(cycle)
            if output_valid:
                valid_cycles.append(cycle)

    sim = Simulator(engine)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert engine.latency == (inputs - 1).bit_length() + 3
    assert ready_cycles == list(range(count))
    assert valid_cycles == [cycle + engine.latency for cycle in range(count)]


def test_engine_default_acc_bits():
    for fan_in in (1, 16, 17, 128, 512, 4096):
        assert TernaryEngine(2, 4, max_fan_in=fan_in).acc_bits == nx.accumulator_bits(fan_in)
    assert required_acc_bits(17, code_bits=4) == (7 * 17).bit_length() + 1


def test_engine_zero_rows_message():
    with pytest.raises(ValueError, match=r"^`rows` must be a positive integer, not 0$"):
        TernaryEngine(0, 4, max_fan_in=4)


def test_engine_wrong_type_messages():
    with pytest.raises(TypeError, match=r"^`inputs` must be a positive integer, not '8'$"):
        TernaryEngine(2, "8", max_fan_in=4)
    with pytest.raises(TypeError, match=r"^`rows` must be a positive integer, not True$"):
        TernaryEngine(True, 8, max_fan_in=4)
    with pytest.raises(ValueError, match=r"^`code_bits` must be at least 2, not 1$"):
        TernaryEngine(2, 8, max_fan_in=4, code_bits=1)


def test_engine_narrow_acc_bits_message():
    with pytest.raises(ValueError, match=r"^`acc_bits` 16 is too narrow for `max_fan_in` 512: "
                                         r"sums of 8-bit codes need at least 17 bits$"):
        TernaryEngine(16, 32, max_fan_in=512, acc_bits=16)
    assert TernaryEngine(16, 32, max_fan_in=512, acc_bits=24).acc_bits == 24


def test_engine_wider_acc_bits():
    engine = TernaryEngine(2, 5, max_fan_in=10, acc_bits=20)
    groups = [(np.full((2, 10), -1), np.full(10, 127)), (np.ones((2, 10), dtype=np.int64), np.full(10, 127))]
    got, expected = run_engine(engine, groups)
    np.testing.assert_array_equal(got, expected)


def test_engine_converts_to_verilog():
    text = verilog.convert(TernaryEngine(4, 8, max_fan_in=64), name="ternary_engine")
    assert "module ternary_engine" in text
    assert "tiles__payload" in text
    assert "accumulators__valid" in text
