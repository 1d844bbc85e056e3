# amaranth: UnusedElaboratable=no
"""WeightMemory in simulation: loaded through its byte loader, read back tile by tile.

The loader's bytes are ``golden.image.pack_trits`` of ``hw.weights.linear_order``.
The first line stops Amaranth's warning about the memories that the
parameter checks build and never elaborate.
"""

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from golden import numerics as nx
from golden.image import pack_trits
from firmware.loader import weight_rows
from hw.weights import WeightMemory, linear_order, projection_words

SHAPES = [(1, 1), (2, 5), (4, 8), (16, 32)]
CYCLE_LIMIT = 50_000


def encode_trits(trits):
    """Return the on-chip bits of a flat trit sequence, trit ``i`` at bits ``[2i, 2i+2)``."""
    value = 0
    for index, trit in enumerate(np.asarray(trits).ravel()):
        value |= nx.TRIT_ENCODING[int(trit)] << (nx.TRIT_BITS * index)
    return value


def expected_words(sequence, rows, inputs):
    """Return the read data of each whole word of a linear-order trit sequence."""
    word_trits = rows * inputs
    return [encode_trits(sequence[start:start + word_trits])
            for start in range(0, len(sequence) - word_trits + 1, word_trits)]


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


async def receive_stream(ctx, port, count, rng, ready=1.0):
    """Receive ``count`` beats from ``port``, ready at probability ``ready`` each cycle."""
    received = []
    for _ in range(CYCLE_LIMIT):
        if len(received) == count:
            break
        accept = bool(rng.random() < ready)
        ctx.set(port.ready, accept)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        if valid and accept:
            received.append(payload)
    ctx.set(port.ready, 0)
    assert len(received) == count, f"received {len(received)} of {count} beats in {CYCLE_LIMIT} cycles"
    return received


async def load(ctx, memory, start, words, data, rng=None, idle=0.0):
    """Load ``words`` bank words (0: no limit) from ``data`` (bytes) at word ``start``; wait until they are written."""
    rng = rng or np.random.default_rng(0)
    ctx.set(memory.load_rows, words)
    await send_stream(ctx, memory.load_start, [start], rng)
    await send_stream(ctx, memory.load_data, list(data), rng, idle=idle)
    await ctx.tick().until(~memory.load_busy)


def run(memory, *testbenches):
    sim = Simulator(memory)
    sim.add_clock(1e-8)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    sim.run()


def read_back(memory, addresses, *, before=None, seed=0, idle=0.0, ready=1.0):
    """Run ``before(ctx)`` (loads), then read ``addresses``; return the read data in order.

    Read ``i`` carries the tag ``i`` modulo ``2**tag_bits``, and each word must come back with its tag.
    """
    tags = [index % (1 << memory.tag_bits) for index in range(len(addresses))]
    beats = []

    async def reader(ctx):
        if before is not None:
            await before(ctx)
        requests = [{"addr": address, "tag": tag} for address, tag in zip(addresses, tags)]
        await send_stream(ctx, memory.read_addr, requests, np.random.default_rng(seed + 1), idle=idle)

    async def monitor(ctx):
        beats.extend(await receive_stream(ctx, memory.read_data, len(addresses),
                                          np.random.default_rng(seed + 2), ready=ready))

    run(memory, reader, monitor)
    assert [beat.tag for beat in beats] == tags
    return [beat.trits for beat in beats]


def test_linear_order_positions():
    rows, inputs = 2, 4
    matrix = np.arange(1, 5 * 6 + 1).reshape(5, 6)
    sequence = linear_order(matrix, rows, inputs)
    col_tiles = 2
    assert len(sequence) == projection_words(matrix.shape, rows, inputs) * rows * inputs
    assert projection_words(matrix.shape, rows, inputs) == 3 * col_tiles

    # Row r, column c: bank r mod R, word (r div R) * ceil(cols/K) + c div K, lane c mod K.
    for row in range(5):
        for col in range(6):
            word = (row // rows) * col_tiles + col // inputs
            position = word * rows * inputs + (row % rows) * inputs + col % inputs
            assert sequence[position] == matrix[row, col]
    assert np.count_nonzero(sequence) == matrix.size


def test_linear_order_rejects_vector():
    with pytest.raises(ValueError, match=r"^`trits` must be a 2-D matrix, not an array of shape \(6,\)$"):
        linear_order(np.zeros(6), 2, 4)


@pytest.mark.parametrize("rows, inputs", SHAPES)
def test_weights_load_and_read(rows, inputs):
    rng = np.random.default_rng(rows * 100 + inputs)
    matrix = rng.integers(-1, 2, (2 * rows + 1, inputs + 3))
    sequence = linear_order(matrix, rows, inputs)
    words = projection_words(matrix.shape, rows, inputs)
    start, depth = 3, words + 5
    memory = WeightMemory(rows, inputs, depth, tag_bits=3)
    background = rng.integers(-1, 2, depth * rows * inputs)

    async def before(ctx):
        await load(ctx, memory, 0, depth * rows, pack_trits(background))
        await load(ctx, memory, start, words * rows, pack_trits(sequence), rng=np.random.default_rng(1), idle=0.2)
        assert not ctx.get(memory.load_error)

    # The words around the projection keep the background, padding trits included.
    expected = background.copy()
    expected[start * rows * inputs:(start + words) * rows * inputs] = sequence
    got = read_back(memory, list(range(depth)), before=before, idle=0.3, ready=0.5)
    assert got == expected_words(expected, rows, inputs)


@pytest.mark.parametrize("rows, inputs, cycles_per_byte", [(1, 1, 5), (2, 5, 1), (4, 8, 1), (16, 32, 1)])
def test_weights_load_rate(rows, inputs, cycles_per_byte):
    count = 20
    memory = WeightMemory(rows, inputs, 64)
    transfer_cycles = []

    async def testbench(ctx):
        await send_stream(ctx, memory.load_start, [0], np.random.default_rng(0))
        ctx.set(memory.load_data.valid, 1)
        ctx.set(memory.load_data.payload, 121)
        for cycle in range(count * 5 + 10):
            _, _, ready = await ctx.tick().sample(memory.load_data.ready)
            if ready:
                transfer_cycles.append(cycle)
            if len(transfer_cycles) == count:
                break
        ctx.set(memory.load_data.valid, 0)

    run(memory, testbench)
    # After the first bytes fill the gearbox, a byte is taken every `cycles_per_byte` cycles.
    gaps = np.diff(transfer_cycles[5:])
    assert len(transfer_cycles) == count
    assert set(gaps.tolist()) == {cycles_per_byte}


def read_every_cycle(memory, count, load_rows, data):
    """Load ``data``, then offer addresses 0 .. count-1 on consecutive cycles; return (valid cycles, payloads).

    Every address must be accepted in the cycle it is offered.
    """
    valid_cycles, payloads = [], []

    async def testbench(ctx):
        await load(ctx, memory, 0, load_rows, data)
        ctx.set(memory.read_data.ready, 1)
        ctx.set(memory.read_addr.valid, 1)
        for cycle in range(count + 3):
            if cycle < count:
                ctx.set(memory.read_addr.payload, {"addr": cycle, "tag": 0})
            else:
                ctx.set(memory.read_addr.valid, 0)
            _, _, addr_ready, valid, payload = await ctx.tick().sample(
                memory.read_addr.ready, memory.read_data.valid, memory.read_data.payload)
            assert addr_ready
            if valid:
                valid_cycles.append(cycle)
                payloads.append(payload.trits)

    run(memory, testbench)
    return valid_cycles, payloads


def test_weights_read_one_per_cycle():
    rows, inputs = 4, 8
    rng = np.random.default_rng(7)
    sequence = linear_order(rng.integers(-1, 2, (8, 16)), rows, inputs)
    memory = WeightMemory(rows, inputs, 8)
    expected = expected_words(sequence, rows, inputs)
    valid_cycles, payloads = read_every_cycle(memory, len(expected), len(expected) * rows, pack_trits(sequence))
    assert valid_cycles == [cycle + memory.read_latency for cycle in range(len(expected))]
    assert payloads == expected


def test_weights_invalid_byte_flags_error():
    rows, inputs = 2, 5
    rng = np.random.default_rng(8)
    sequence = rng.integers(-1, 2, 4 * rows * inputs)
    data = bytearray(pack_trits(sequence))
    data[3] = 243
    # The invalid byte reads as five zero trits, so the words after it keep their place.
    expected_sequence = sequence.copy()
    expected_sequence[15:20] = 0
    memory = WeightMemory(rows, inputs, 4)
    errors = []

    async def before(ctx):
        await load(ctx, memory, 0, 4 * rows, bytes(data))
        errors.append(ctx.get(memory.load_error))
        await load(ctx, memory, 0, rows, pack_trits(sequence[:rows * inputs]))
        errors.append(ctx.get(memory.load_error))

    got = read_back(memory, [0, 1, 2, 3], before=before)
    assert errors == [1, 0]
    assert got[0] == encode_trits(sequence[:rows * inputs])
    assert got[1:] == expected_words(expected_sequence, rows, inputs)[1:]


def test_weights_byte_255_flags_error():
    memory = WeightMemory(1, 5, 2)
    errors = []

    async def testbench(ctx):
        await load(ctx, memory, 0, 1, bytes([242]))
        errors.append(ctx.get(memory.load_error))
        await load(ctx, memory, 0, 1, bytes([255]))
        errors.append(ctx.get(memory.load_error))

    run(memory, testbench)
    assert errors == [0, 1]


def test_weights_write_past_depth_flags_error():
    rows, inputs, depth = 2, 5, 3
    rng = np.random.default_rng(9)
    sequence = rng.integers(-1, 2, 3 * rows * inputs)
    memory = WeightMemory(rows, inputs, depth)
    errors = []

    async def before(ctx):
        # Words 1 and 2 fit. Word 3 does not, so its write is dropped.
        await load(ctx, memory, 1, 3 * rows, pack_trits(sequence))
        errors.append(ctx.get(memory.load_error))

    got = read_back(memory, [1, 2], before=before)
    assert errors == [1]
    assert got == expected_words(sequence, rows, inputs)[:2]


def test_weights_partial_word_not_written():
    rows, inputs = 2, 8
    rng = np.random.default_rng(10)
    old = rng.integers(-1, 2, 2 * rows * inputs)
    new = rng.integers(-1, 2, 10)
    memory = WeightMemory(rows, inputs, 2)

    async def before(ctx):
        await load(ctx, memory, 0, 2 * rows, pack_trits(old))
        # Ten trits: bank 0 of word 1 is complete, bank 1 gets two trits and is never written.
        await load(ctx, memory, 1, rows, pack_trits(new))

    got = read_back(memory, [0, 1], before=before)
    expected = old.copy()
    expected[rows * inputs:rows * inputs + inputs] = new[:inputs]
    assert got == expected_words(expected, rows, inputs)


def test_weights_words_past_count_not_written():
    rows, inputs = 2, 5
    rng = np.random.default_rng(11)
    old = rng.integers(-1, 2, 2 * rows * inputs)
    new = rng.integers(-1, 2, 2 * rows * inputs)
    memory = WeightMemory(rows, inputs, 2)
    errors = []

    async def before(ctx):
        await load(ctx, memory, 0, 2 * rows, pack_trits(old))
        await load(ctx, memory, 0, 3, pack_trits(new))
        errors.append(ctx.get(memory.load_error))

    got = read_back(memory, [0, 1], before=before)
    expected = old.copy()
    expected[:3 * inputs] = new[:3 * inputs]
    assert errors == [0]
    assert got == expected_words(expected, rows, inputs)


@pytest.mark.parametrize("rows, inputs", [(2, 5), (4, 8)])
def test_weights_unlimited_load(rows, inputs):
    # With K >= 5 the padding of the final byte never completes a word, so no count is needed.
    rng = np.random.default_rng(12)
    depth = 4
    background = rng.integers(-1, 2, depth * rows * inputs)
    sequence = rng.integers(-1, 2, 2 * rows * inputs + inputs)
    memory = WeightMemory(rows, inputs, depth)
    errors = []

    async def before(ctx):
        await load(ctx, memory, 0, 0, pack_trits(background))
        await load(ctx, memory, 1, 0, pack_trits(sequence))
        errors.append(ctx.get(memory.load_error))

    got = read_back(memory, list(range(depth)), before=before)
    expected = background.copy()
    expected[rows * inputs:rows * inputs + len(sequence)] = sequence
    assert errors == [0]
    assert got == expected_words(expected, rows, inputs)


def test_weights_zero_depth_message():
    with pytest.raises(ValueError, match=r"^`depth` must be a positive integer, not 0$"):
        WeightMemory(2, 5, 0)


def test_weights_negative_tag_bits_message():
    with pytest.raises(ValueError, match=r"^`tag_bits` must be a non-negative integer, not -1$"):
        WeightMemory(2, 5, 8, tag_bits=-1)


def test_weights_wrong_type_message():
    with pytest.raises(TypeError, match=r"^`rows` must be a positive integer, not 2.0$"):
        WeightMemory(2.0, 5, 8)


def test_weights_converts_to_verilog():
    text = verilog.convert(WeightMemory(4, 8, 64), name="weight_memory")
    assert "module weight_memory" in text
    assert "load_error" in text


@pytest.mark.parametrize("rows, inputs, row_trits", [(2, 5, 9), (4, 8, 9), (3, 16, 18), (2, 32, 36), (1, 6, 11)])
def test_weights_words_straddle_rows(rows, inputs, row_trits):
    # Words packed end to end in longer rows: every word reads back whole, in any order.
    rng = np.random.default_rng(rows * 1000 + inputs * 10 + row_trits)
    depth = 23
    words = rng.integers(-1, 2, (depth, rows, inputs))
    memory = WeightMemory(rows, inputs, depth, row_trits=row_trits, tag_bits=6)
    assert memory.row_depth == -(-depth * inputs // row_trits)
    addresses = rng.permutation(np.repeat(np.arange(depth), 2)).tolist()

    async def before(ctx):
        data = pack_trits(weight_rows(words, row_trits).ravel())
        await load(ctx, memory, 0, 0, data, rng=np.random.default_rng(1), idle=0.2)
        assert not ctx.get(memory.load_error)

    got = read_back(memory, addresses, before=before, idle=0.2, ready=0.7)
    assert got == [encode_trits(words[address]) for address in addresses]


def test_weights_straddling_read_one_per_cycle():
    rows, inputs, row_trits = 4, 8, 9
    rng = np.random.default_rng(13)
    words = rng.integers(-1, 2, (12, rows, inputs))
    memory = WeightMemory(rows, inputs, len(words), row_trits=row_trits)
    data = pack_trits(weight_rows(words, row_trits).ravel())
    valid_cycles, payloads = read_every_cycle(memory, len(words), 0, data)
    assert valid_cycles == [cycle + memory.read_latency for cycle in range(len(words))]
    assert payloads == [encode_trits(word) for word in words]


def test_weight_rows_order():
    # Bank b's trits run word after word, and row q contains trits [qT, (q+1)T) of each bank, zero-padded.
    words = np.arange(1, 3 * 2 * 4 + 1).reshape(3, 2, 4)
    rows = weight_rows(words, 5)
    assert rows.shape == (3, 2, 5)
    for bank in range(2):
        stream = rows[:, bank, :].ravel()
        assert stream[:12].tolist() == words[:, bank, :].ravel().tolist()
        assert stream[12:].tolist() == [0, 0, 0]


def test_weights_short_rows_message():
    with pytest.raises(ValueError, match=r"^`row_trits` must be at least `inputs` \(8\), not 7$"):
        WeightMemory(2, 8, 16, row_trits=7)
