"""VectorUnit in simulation against ProgramModel, instruction by instruction.

Each test runs instructions on the unit and on
:class:`firmware.program_model.ProgramModel` side by side and compares every
register and the VEC, ACC, STATE memories and the code buffer after each
instruction. MATVEC's beats are the model's accumulators, cut into row
groups as the projection unit sends them.

The model shape has no dimension that is a multiple of P = 4 except the
intermediate size 100, so most passes end in a partial group.
"""

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from firmware.isa import MAX_REGISTERS, SCALE_REGISTERS, SLOTS, CoreParams, Opcode, decode, encode
from firmware.loader import memory_image, target_payloads
from firmware.program_model import ProgramModel
from firmware.protocol import Target
from golden import numerics as nx
from golden.config import ModelConfig
from golden.int_model import prepare
from golden.synthetic import random_tensors
from hw.vector import HOST_ELEMENT_BYTES, VectorUnit

CONFIG = ModelConfig(vocab_size=71, hidden_size=42, intermediate_size=98, num_layers=2)
CORE = CoreParams(rows=4, inputs=8, vector_lanes=4, max_hidden=48, max_intermediate=112, max_vocab=80,
                  max_layers=2, weight_depth=4096)
# Two vector lanes and ACC words of Q = 4 accumulators: MUL2, SILU and RESID take 4 elements per cycle.
WIDE_CORE = CoreParams(rows=16, inputs=8, vector_lanes=2, max_hidden=48, max_intermediate=112, max_vocab=80,
                       max_layers=2, weight_depth=4096, scale_lanes_doubled=True)
TOKENS = (17, 70)
CYCLE_LIMIT = 2_000


@pytest.fixture(scope="module")
def image():
    params = prepare(CONFIG, random_tensors(CONFIG, seed=11))
    return memory_image(params, CORE)


@pytest.fixture(scope="module")
def wide_image():
    params = prepare(CONFIG, random_tensors(CONFIG, seed=11))
    return memory_image(params, WIDE_CORE)


def core_and_image(request, name):
    """Return CORE and its image for ``"narrow"``, WIDE_CORE and its image for ``"wide"``."""
    if name == "wide":
        return WIDE_CORE, request.getfixturevalue("wide_image")
    return CORE, request.getfixturevalue("image")


def program_instructions(image):
    """Return the decoded instructions of the program, without its END."""
    instructions = [decode(word) for word in image.program]
    assert instructions[-1].opcode == Opcode.END
    return instructions[:-1]


def element_count(instr):
    return instr.fields.get("count", 0)


class Bench:
    """Drives one VectorUnit and a ProgramModel with the same instructions and compares them."""

    def __init__(self, unit, image, *, beat_idle=0.0, seed=0):
        self.unit = unit
        self.image = image
        self.model = ProgramModel(image)
        self.lanes = unit.core.vector_lanes
        self.rows = unit.core.rows
        self.codes = np.zeros_like(self.model.codes)
        self.beat_idle = beat_idle
        self.rng = np.random.default_rng(seed)
        self.beats = []             # MATVEC result beats still to deliver
        self.busy_cycles = None     # cycles from the last start until busy fell, when settled

    async def execute(self, ctx, instr, token=0, settle=True):
        """Run ``instr`` on both; return the unit's cycles from ``start`` to ``done``.

        With ``settle`` it then waits until ``busy`` falls, which the engines
        of SCALE and MATVEC keep high after ``done``, so that the registers can
        be compared, and sets :attr:`busy_cycles`.
        """
        self.model.execute(instr, token)
        if instr.opcode == Opcode.MATVEC:
            values = self.model.acc[instr.acc_dst:instr.acc_dst + instr.row_groups * self.rows]
            self.beats += [{"accumulators": [int(value) for value in values[group * self.rows:(group + 1) * self.rows]],
                            "row_group": group} for group in range(instr.row_groups)]
        unit = self.unit
        ctx.set(unit.instruction.as_value(), encode(instr.opcode, **instr.fields))
        ctx.set(unit.token, token)
        ctx.set(unit.start, 1)
        await ctx.tick()
        ctx.set(unit.start, 0)
        for cycle in range(1, CYCLE_LIMIT):
            _, _, done = await ctx.tick().sample(unit.done)
            if done:
                break
        else:
            raise AssertionError(f"{instr}: no done within {CYCLE_LIMIT} cycles")
        if settle:
            for busy_cycles in range(cycle, CYCLE_LIMIT):
                if not ctx.get(unit.busy):
                    break
                await ctx.tick()
            else:
                raise AssertionError(f"{instr}: busy for {CYCLE_LIMIT} cycles")
            self.busy_cycles = busy_cycles
            assert not self.beats, f"{instr}: {len(self.beats)} beats were not taken"
        return cycle

    async def background(self, ctx):
        """Deliver the MATVEC beats and record every code write, in every cycle (a background testbench)."""
        unit = self.unit
        offered = False
        width = unit.quant_lanes
        while True:
            if self.beats and not offered and self.rng.random() >= self.beat_idle:
                ctx.set(unit.results.payload, self.beats[0])
                offered = True
            ctx.set(unit.results.valid, offered)
            _, _, valid, ready, enable, index, codes = await ctx.tick().sample(
                unit.results.valid, unit.results.ready, unit.code_write.en, unit.code_write.index,
                unit.code_write.data)
            if valid and ready:
                self.beats.pop(0)
                offered = False
            for slot in range(self.codes.shape[0]):
                for lane in range(width):
                    position = slot * width + lane
                    if enable >> position & 1:
                        self.codes[slot, index + lane] = codes[position]

    def read_vec(self, ctx):
        memory = self.unit.memories["vec"]
        return np.array([ctx.get(memory.data[word])[lane] for word in range(memory.depth)
                         for lane in range(self.unit.quant_lanes)], dtype=np.int64)

    def read_acc(self, ctx):
        memory = self.unit.memories["acc"]
        return np.array([ctx.get(memory.data[word])[lane] for word in range(memory.depth)
                         for lane in range(self.unit.acc_lanes)], dtype=np.int64)

    def read_state(self, ctx):
        memory = self.unit.memories["state"]
        values = []
        for word in range(memory.depth):
            raw = ctx.get(memory.data[word])
            for lane in range(self.lanes):
                value = raw >> (32 * lane) & 0xFFFF_FFFF
                values.append(value - (1 << 32) if value >> 31 else value)
        return np.array(values, dtype=np.int64)

    def compare(self, ctx, instr):
        """Assert that the unit's registers and memories equal the model's after ``instr``."""
        unit, model = self.unit, self.model
        registers = unit.registers
        absmax = [ctx.get(register) for register in registers["absmax"]]
        assert absmax == model.max, f"{instr}: absmax registers"
        scales = [ctx.get(register) for register in registers["scale"]]
        assert [(scale.mantissa, scale.exponent) for scale in scales] == \
            [(scale.mantissa, scale.exponent) for scale in model.scale], f"{instr}: scale registers"
        assert ctx.get(registers["sumsq"]) == model.sumsq, f"{instr}: sumsq"
        assert [ctx.get(register) for register in registers["zmax"]] == model.zmax, f"{instr}: zmax"
        assert ctx.get(unit.argmax) == model.argmax, f"{instr}: argmax"

        vec = self.read_vec(ctx)
        np.testing.assert_array_equal(vec[:model.vec.size], model.vec, err_msg=f"{instr}: VEC")
        acc = self.read_acc(ctx)
        np.testing.assert_array_equal(acc[:model.acc.size], model.acc, err_msg=f"{instr}: ACC")
        state = self.read_state(ctx)
        np.testing.assert_array_equal(state[:model.state.size], model.state, err_msg=f"{instr}: STATE")
        np.testing.assert_array_equal(self.codes, model.codes, err_msg=f"{instr}: code buffer")

    async def reset_state(self, ctx):
        """Pulse ``reset_state`` and wait for ``reset_done``; return the cycles in between."""
        ctx.set(self.unit.reset_state, 1)
        await ctx.tick()
        ctx.set(self.unit.reset_state, 0)
        for cycle in range(1, CYCLE_LIMIT):
            _, _, done = await ctx.tick().sample(self.unit.reset_done)
            if done:
                self.model.reset_state()
                return cycle
        raise AssertionError(f"no reset_done within {CYCLE_LIMIT} cycles")


def simulate(unit, testbench, bench=None):
    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if bench is not None:
        sim.add_testbench(bench.background, background=True)
    sim.run()


async def host_write(ctx, unit, target, address, data):
    """Write ``data`` byte by byte through the host port, one byte per cycle."""
    ctx.set(unit.host_write.target, target)
    ctx.set(unit.host_write.en, 1)
    for offset, byte in enumerate(data):
        ctx.set(unit.host_write.address, address + offset)
        ctx.set(unit.host_write.data, byte)
        await ctx.tick()
    ctx.set(unit.host_write.en, 0)


async def host_read(ctx, unit, target, address, count):
    """Read ``count`` bytes through the host port, one new address in every cycle."""
    latency = unit.host_read_latency
    result = bytearray()
    ctx.set(unit.host_read.target, target)
    for cycle in range(count + latency - 1):
        if cycle < count:
            ctx.set(unit.host_read.address, address + cycle)
        await ctx.tick()
        # This is cycle `cycle + 1`, with the byte of the address presented `latency` cycles earlier.
        if cycle + 1 >= latency:
            result.append(ctx.get(unit.host_read.data))
    return bytes(result)


def core_without_checks(**fields):
    """Return a CoreParams built past its own checks, which reject these shapes first, to reach the unit's."""
    core = object.__new__(CoreParams)
    for name, value in fields.items():
        object.__setattr__(core, name, value)
    return core


def test_vector_unit_rejects_lanes_not_power_of_two():
    core = core_without_checks(rows=6, inputs=6, vector_lanes=3)
    with pytest.raises(ValueError, match=r"^`vector_lanes` must be a power of two, not 3$"):
        VectorUnit(core)


def test_vector_unit_rejects_lanes_not_dividing_rows():
    core = core_without_checks(rows=2, inputs=8, vector_lanes=4)
    with pytest.raises(ValueError, match=r"^`vector_lanes` must divide `rows` \(2\), not 4$"):
        VectorUnit(core)


def test_vector_unit_rejects_other_core_types():
    with pytest.raises(TypeError, match=r"^`core` must be a CoreParams, not 4$"):
        VectorUnit(4)


def test_vector_unit_one_token_matches_model(image):
    unit = VectorUnit(CORE, image=image)
    bench = Bench(unit, image)
    measured = []

    async def testbench(ctx):
        for instr in program_instructions(image):
            cycles = await bench.execute(ctx, instr, TOKENS[0])
            bench.compare(ctx, instr)
            measured.append((instr, cycles))

    simulate(unit, testbench, bench)
    assert bench.model.argmax == int(np.argmax(bench.model.head_accumulators()))
    for instr, cycles in measured:
        expected = unit.instruction_cycles(instr)
        assert cycles == expected, f"{instr}: {cycles} cycles, documented {expected}"


def test_vector_unit_quant_runs_beside_scale(image):
    # The program's first stage: STATS, SCALE, SCALE, QUANT. The second SCALE
    # waits for the first one's engine, and QUANT starts while the second
    # one's engine still runs, yet every register and code ends as the model's.
    unit = VectorUnit(CORE, image=image)
    bench = Bench(unit, image)
    instructions = program_instructions(image)
    opcodes = [instr.opcode for instr in instructions[:5]]
    assert opcodes == [Opcode.EMBED, Opcode.STATS, Opcode.SCALE, Opcode.SCALE, Opcode.QUANT]
    measured = {}

    async def testbench(ctx):
        embed, stats, first, second, quant = instructions[:5]
        await bench.execute(ctx, embed, TOKENS[0])
        await bench.execute(ctx, stats, TOKENS[0])
        measured["first"] = await bench.execute(ctx, first, settle=False)
        measured["second"] = await bench.execute(ctx, second, settle=False)
        measured["busy_at_quant"] = ctx.get(unit.busy)
        measured["quant"] = await bench.execute(ctx, quant)
        bench.compare(ctx, quant)

    simulate(unit, testbench, bench)
    quant = instructions[4]
    assert measured["first"] == unit.cycles(Opcode.SCALE)
    assert measured["second"] > unit.cycles(Opcode.SCALE)
    assert measured["busy_at_quant"]
    assert measured["quant"] == unit.cycles(Opcode.QUANT, element_count(quant))


async def run_after_matvec(ctx, bench, instructions, opcodes):
    """Run ``instructions`` without waiting for MATVEC's writer and compare the unit after every other one.

    Returns ``(instr, busy, cycles)`` for each instruction of ``opcodes``
    that directly follows a MATVEC: whether the unit was busy when it
    started, and its cycles from ``start`` to ``done``.
    """
    measured = []
    previous = None
    for instr in instructions:
        busy = ctx.get(bench.unit.busy)
        settle = instr.opcode != Opcode.MATVEC
        cycles = await bench.execute(ctx, instr, TOKENS[0], settle=settle)
        if instr.opcode in opcodes and previous == Opcode.MATVEC:
            measured.append((instr, busy, cycles))
        if settle:
            bench.compare(ctx, instr)
        previous = instr.opcode
    return measured


@pytest.mark.parametrize("width", ["narrow", "wide"])
def test_vector_unit_silu_and_gates_run_beside_matvec(request, width):
    # GATES reads f and i while MATVEC writes g, and SILU reads gate while
    # MATVEC writes up. Each starts while the writer still runs and takes its
    # own cycles; MUL2 then waits for the writer. Every register and memory ends
    # as the model's. On the wide core SILU reads Q accumulators per cycle.
    core, image = core_and_image(request, width)
    unit = VectorUnit(core, image=image)
    assert unit.wide_scale == (width == "wide")
    bench = Bench(unit, image)
    measured = []

    async def testbench(ctx):
        measured.extend(await run_after_matvec(ctx, bench, program_instructions(image), (Opcode.GATES, Opcode.SILU)))

    simulate(unit, testbench, bench)
    opcodes = [instr.opcode for instr, _, _ in measured]
    assert opcodes.count(Opcode.GATES) == CONFIG.num_layers
    assert opcodes.count(Opcode.SILU) == CONFIG.num_layers
    assert all(busy for _, busy, _ in measured)
    for instr, _, cycles in measured:
        assert cycles == unit.instruction_cycles(instr), f"{instr}: cycles"


@pytest.mark.parametrize("width, beat_idle", [("narrow", 0.0), ("narrow", 0.6), ("wide", 0.0), ("wide", 0.6)])
def test_vector_unit_followers_track_writer(request, width, beat_idle):
    # RESID and ARGMAX start while the writer still stores the accumulators they
    # read, and issue each group only after it is written. With gaps between
    # the beats they overtake the writer and wait for it. Every register and
    # memory ends as the model's. On the wide core RESID reads Q accumulators per cycle.
    core, image = core_and_image(request, width)
    unit = VectorUnit(core, image=image)
    assert unit.wide_scale == (width == "wide")
    bench = Bench(unit, image, beat_idle=beat_idle, seed=3)
    measured = []

    async def testbench(ctx):
        measured.extend(await run_after_matvec(ctx, bench, program_instructions(image), (Opcode.RESID, Opcode.ARGMAX)))

    simulate(unit, testbench, bench)
    opcodes = [instr.opcode for instr, _, _ in measured]
    assert opcodes.count(Opcode.RESID) == 2 * CONFIG.num_layers
    assert opcodes.count(Opcode.ARGMAX) == 1
    assert all(busy for _, busy, _ in measured)
    # With gaps between the beats, followers overtake the writer and wait:
    # each one on the narrow core, and at least one RESID on the wide core,
    # whose 16-row beats often arrive before a follower needs them.
    if beat_idle:
        waited = [cycles > unit.instruction_cycles(instr) for instr, _, cycles in measured]
        assert any(instr_waited for (instr, _, _), instr_waited in zip(measured, waited)
                   if instr.opcode == Opcode.RESID)
        if width == "narrow":
            for (instr, _, _), instr_waited in zip(measured, waited):
                assert instr_waited, f"{instr}: did not wait"
    else:
        for instr, _, cycles in measured:
            assert cycles == unit.instruction_cycles(instr), f"{instr}: waited"


def test_vector_unit_follows_last_acc_word():
    # The largest model fills ACC's 128 words, so the head's MATVEC writes the last
    # word, and ARGMAX must still follow the writer rather than wait until it is done.
    core = CoreParams(rows=4, inputs=8, vector_lanes=4, max_hidden=48, max_intermediate=112, max_vocab=48,
                      max_layers=2, weight_depth=4096)
    config = ModelConfig(vocab_size=48, hidden_size=48, intermediate_size=112, num_layers=2)
    image = memory_image(prepare(config, random_tensors(config, seed=4)), core)
    unit = VectorUnit(core, image=image)
    assert unit.memories["acc"].depth == 128
    bench = Bench(unit, image)
    measured = []

    async def testbench(ctx):
        measured.extend(await run_after_matvec(ctx, bench, program_instructions(image), (Opcode.ARGMAX,)))

    simulate(unit, testbench, bench)
    [(instr, busy, cycles)] = measured
    assert busy
    assert cycles == unit.cycles(Opcode.ARGMAX, element_count(instr))


def test_vector_unit_two_tokens_then_reset_state(image):
    # Beats arrive with random gaps, and the second token starts from the first one's state.
    unit = VectorUnit(CORE, image=image)
    bench = Bench(unit, image, beat_idle=0.4, seed=5)
    reset_cycles = []

    async def testbench(ctx):
        for token in TOKENS:
            for instr in program_instructions(image):
                await bench.execute(ctx, instr, token)
                bench.compare(ctx, instr)
        assert np.any(bench.read_state(ctx) != 0)
        reset_cycles.append(await bench.reset_state(ctx))
        np.testing.assert_array_equal(bench.read_state(ctx), 0)
        # The first GATES after a reset reads a zero state again.
        for instr in program_instructions(image):
            await bench.execute(ctx, instr, TOKENS[0])
            bench.compare(ctx, instr)
            if instr.opcode == Opcode.GATES:
                break

    simulate(unit, testbench, bench)
    assert reset_cycles == [unit.memories["state"].depth + 1]


def test_vector_unit_resid_saturates(image):
    # Residuals next to both int32 limits plus large scaled accumulators.
    unit = VectorUnit(CORE, image=image)
    bench = Bench(unit, image)
    rng = np.random.default_rng(2)
    count = 13
    vec_base, acc_base = 8, 16
    int32_max, int32_min = (1 << 31) - 1, -(1 << 31)
    residual = np.where(rng.random(count) < 0.5, int32_max - rng.integers(0, 1000, count),
                        int32_min + rng.integers(0, 1000, count))
    acc_limit = 1 << (CORE.acc_bits - 1)
    acc = rng.integers(-acc_limit, acc_limit, count)
    acc[:2] = [acc_limit - 1, -acc_limit]
    scale = nx.Scalar(0xC000, 4)

    async def testbench(ctx):
        vec_memory, acc_memory = unit.memories["vec"], unit.memories["acc"]
        # A value past `count` must stay as it is.
        bench.model.vec[vec_base:vec_base + 16] = 12345
        bench.model.vec[vec_base:vec_base + count] = residual
        bench.model.acc[acc_base:acc_base + count] = acc
        for memory, values, base in ((vec_memory, bench.model.vec, vec_base), (acc_memory, bench.model.acc, acc_base)):
            width = memory.shape.length
            for word in range(base // width, (base + 16) // width):
                ctx.set(memory.data[word], [int(value) for value in values[width * word:width * (word + 1)]])
        ctx.set(unit.registers["scale"][3], {"mantissa": scale.mantissa, "exponent": scale.exponent})
        bench.model.scale[3] = scale

        instr = decode(encode(Opcode.RESID, acc_src=acc_base, scale=3, vec_dst=vec_base, dst_max=6, count=count))
        await bench.execute(ctx, instr)
        bench.compare(ctx, instr)

    simulate(unit, testbench, bench)
    written = bench.model.vec[vec_base:vec_base + count]
    assert np.any(written == int32_max)
    assert np.any(written == int32_min)


def test_vector_unit_argmax_ties_and_empty_passes(image):
    # Equal maxima across lanes and groups, a tail of 3, and passes with count 0.
    unit = VectorUnit(CORE, image=image)
    bench = Bench(unit, image)
    values = np.array([5, 9, 9, -3, 9, 0, 9, 1, 2, 9, 100, -7, 100, 100, 100], dtype=np.int64)

    async def testbench(ctx):
        acc_memory = unit.memories["acc"]
        padded = np.concatenate([values, [1000]])        # element 15 is past the count
        bench.model.acc[:16] = padded
        for word in range(4):
            ctx.set(acc_memory.data[word], [int(value) for value in padded[4 * word:4 * word + 4]])

        for count in (11, 15, 10, 3):
            instr = decode(encode(Opcode.ARGMAX, acc_src=0, count=count))
            await bench.execute(ctx, instr)
            bench.compare(ctx, instr)

        # An empty pass writes nothing and clears its absmax register.
        ctx.set(unit.registers["absmax"][2], 77)
        bench.model.max[2] = 77
        instr = decode(encode(Opcode.MUL2, acc_src=0, acc_max=0, vec_src=0, vec_max=0, vec_dst=4, dst_max=2,
                              count=0))
        await bench.execute(ctx, instr)
        bench.compare(ctx, instr)
        assert ctx.get(unit.registers["absmax"][2]) == 0

    simulate(unit, testbench, bench)
    assert bench.model.argmax == 1


def test_vector_unit_mul2_measures_any_slot_count(image):
    # After the first GATES, the program's first MUL2 measures its product for
    # 0 to 3 slots with the first stage's constants (three projections). It
    # also runs over a partial group and as an empty pass, each in the
    # documented cycles.
    unit = VectorUnit(CORE, image=image)
    bench = Bench(unit, image)
    instructions = program_instructions(image)
    first_mul2 = next(instr for instr in instructions if instr.opcode == Opcode.MUL2)
    const = image.layout.stage_const[next(iter(image.layout.stage_const))]
    measured = []

    async def testbench(ctx):
        for instr in instructions[:instructions.index(first_mul2)]:
            await bench.execute(ctx, instr, TOKENS[0])
        for count, slots in ((first_mul2.count, 0), (first_mul2.count, 3), (5, 2), (0, 1), (first_mul2.count, 1)):
            instr = decode(encode(Opcode.MUL2, **{**first_mul2.fields, "count": count, "const": const,
                                                  "slots": slots}))
            measured.append((instr, await bench.execute(ctx, instr)))
            bench.compare(ctx, instr)
            if slots:
                assert ctx.get(unit.registers["absmax"][instr.dst_max]) == nx.PRODUCT_BOUND

    simulate(unit, testbench, bench)
    assert len({bench.model.zmax[slot] for slot in range(SLOTS)}) == SLOTS
    for instr, cycles in measured:
        assert cycles == unit.instruction_cycles(instr), f"{instr}: cycles"


def test_vector_unit_resid_measures_with_any_bound(image):
    # The program's first RESID, then RESIDs that measure their sums with
    # bounds from both ends of residual_bound: a term of 1, and the cap at
    # 2**31 from a large scale and from a large absmax register. They
    # measure 0 to 3 slots, a partial group and an empty pass, each in the
    # documented cycles.
    unit = VectorUnit(CORE, image=image)
    bench = Bench(unit, image)
    instructions = program_instructions(image)
    first_resid = next(instr for instr in instructions if instr.opcode == Opcode.RESID)
    const = image.layout.stage_const[next(iter(image.layout.stage_const))]
    scale_register, x_register = first_resid.scale, first_resid.dst_max
    original = object()
    cases = [  # (scale exponent, absmax register or None, count, slots, bound_max)
        (original, None, first_resid.count, first_resid.slots, first_resid.bound_max),
        (-60, None, first_resid.count, 3, 5),
        (original, (1 << 31) - 3, 5, 2, 5),
        (40, None, first_resid.count, 1, 4),
        (30 - nx.MANT_BITS - first_resid.magnitude_bits, None, first_resid.count, 1, 4),
        (31 - nx.MANT_BITS - first_resid.magnitude_bits, None, first_resid.count, 1, 4),
        (original, None, 0, 1, 4),
        (original, None, first_resid.count, 0, 4),
    ]
    measured, bounds = [], []

    async def testbench(ctx):
        for instr in instructions[:instructions.index(first_resid)]:
            await bench.execute(ctx, instr, TOKENS[0])
        mantissa, program_exponent = bench.model.scale[scale_register].mantissa, bench.model.scale[scale_register].exponent
        for exponent, absmax, count, slots, bound_max in cases:
            scale = nx.Scalar(mantissa, program_exponent if exponent is original else exponent)
            bench.model.scale[scale_register] = scale
            ctx.set(unit.registers["scale"][scale_register], {"mantissa": scale.mantissa, "exponent": scale.exponent})
            if absmax is not None:
                bench.model.max[x_register] = absmax
                ctx.set(unit.registers["absmax"][x_register], absmax)
            x_max = bench.model.max[x_register]
            fields = {**first_resid.fields, "count": count, "slots": slots, "bound_max": bound_max,
                      **({"const": const} if slots > 1 else {})}
            instr = decode(encode(Opcode.RESID, **fields))
            measured.append((instr, await bench.execute(ctx, instr)))
            bench.compare(ctx, instr)
            bounds.append((x_max, bench.model.max[bound_max]))

    simulate(unit, testbench, bench)
    for instr, cycles in measured:
        assert cycles == unit.instruction_cycles(instr), f"{instr}: cycles"
    # The cases reach both ends of the bound: a term of 1, the cap from either
    # side, and the largest term below the cap.
    assert bounds[1][1] == bounds[1][0] + 1
    assert bounds[2][1] == bounds[3][1] == bounds[5][1] == 1 << 31
    assert bounds[4][1] == min(bounds[4][0] + (1 << 30), 1 << 31)


def test_vector_unit_host_load_runs_first_stage(image):
    # Only what the first stage reads is loaded, through the host port.
    unit = VectorUnit(CORE)
    bench = Bench(unit, image)
    payloads = {Target[name]: data for name, _, data in target_payloads(image) if name != "PROGRAM"}
    layout = image.layout
    stride_bytes = layout.hidden_stride * HOST_ELEMENT_BYTES[Target.EMBEDDINGS]
    token = TOKENS[1]
    # The first stage's constants, and the second's, which the first MUL2 measures its product with.
    const_loads = []
    for stage in list(layout.stage_const.values())[:2]:
        const_bytes = slice(stage * 8, (stage + layout.hidden_stride) * 8)
        const_loads.append((Target.VECTORS, const_bytes.start, payloads[Target.VECTORS][const_bytes]))
    loads = [
        *const_loads,
        (Target.EMBEDDINGS, token * stride_bytes,
         payloads[Target.EMBEDDINGS][token * stride_bytes:(token + 1) * stride_bytes]),
        (Target.LOWER_BOUNDS, 0, payloads[Target.LOWER_BOUNDS]),
        (Target.SCALARS, 0, payloads[Target.SCALARS]),
    ]

    async def testbench(ctx):
        for target, address, data in loads:
            await host_write(ctx, unit, target, address, data)
        for target, address, data in loads:
            assert await host_read(ctx, unit, target, address, len(data)) == data, f"target {target}"
        for instr in program_instructions(image):
            await bench.execute(ctx, instr, token)
            bench.compare(ctx, instr)
            if instr.opcode == Opcode.MUL2:
                break

    simulate(unit, testbench, bench)


def test_vector_unit_host_round_trip_every_target():
    unit = VectorUnit(CORE)
    rng = np.random.default_rng(9)
    writable = [Target.VECTORS, Target.EMBEDDINGS, Target.LOWER_BOUNDS, Target.SCALARS, Target.STATE]
    # A few bytes at the start, in the middle (not on a word boundary) and at the end of each target.
    windows = {}
    for target in writable:
        size = unit.target_bytes(target)
        windows[target] = [(0, bytes(rng.integers(0, 256, 12, dtype=np.uint8))),
                           (size // 2 + 3, bytes(rng.integers(0, 256, 7, dtype=np.uint8))),
                           (size - 9, bytes(rng.integers(0, 256, 9, dtype=np.uint8)))]
    acc_limit = 1 << (CORE.acc_bits - 1)
    accumulators = rng.integers(-acc_limit, acc_limit, 16)
    accumulators[:2] = [-acc_limit, acc_limit - 1]

    async def testbench(ctx):
        for target, pieces in windows.items():
            for address, data in pieces:
                await host_write(ctx, unit, target, address, data)
        # A write one byte past the end is ignored, not wrapped to the start.
        for target in writable:
            await host_write(ctx, unit, target, unit.target_bytes(target), b"\xAA")
        # Writes to the read-only accumulators are ignored.
        await host_write(ctx, unit, Target.ACCUMULATORS, 0, b"\x55" * 8)

        for target, pieces in windows.items():
            for address, data in pieces:
                assert await host_read(ctx, unit, target, address, len(data)) == data, \
                    f"target {target} address {address}"

        acc_memory = unit.memories["acc"]
        for word in range(4):
            ctx.set(acc_memory.data[word], [int(value) for value in accumulators[4 * word:4 * word + 4]])
        expected = accumulators.astype("<i4").tobytes()
        assert await host_read(ctx, unit, Target.ACCUMULATORS, 0, len(expected)) == expected

        # The STATE bytes written above read back through a reset as zero.
        ctx.set(unit.reset_state, 1)
        await ctx.tick()
        ctx.set(unit.reset_state, 0)
        await ctx.tick().until(unit.reset_done)
        size = unit.target_bytes(Target.STATE)
        assert await host_read(ctx, unit, Target.STATE, size - 9, 9) == bytes(9)

    simulate(unit, testbench)


def test_vector_unit_converts_to_verilog():
    core = CoreParams(rows=4, inputs=8, vector_lanes=2, max_hidden=40, max_intermediate=96, max_vocab=64,
                      max_layers=2, weight_depth=1024)
    text = verilog.convert(VectorUnit(core), name="vector_unit")
    assert "module vector_unit" in text


@pytest.mark.slow
@pytest.mark.parametrize("rows, inputs, lanes", [(4, 8, 1), (6, 8, 2), (8, 16, 8)])
def test_vector_unit_token_other_lane_counts(rows, inputs, lanes):
    core = CoreParams(rows=rows, inputs=inputs, vector_lanes=lanes, max_hidden=48, max_intermediate=112,
                      max_vocab=80, max_layers=2, weight_depth=4096)
    image = memory_image(prepare(CONFIG, random_tensors(CONFIG, seed=lanes)), core)
    unit = VectorUnit(core, image=image)
    bench = Bench(unit, image, beat_idle=0.2, seed=lanes)

    async def testbench(ctx):
        for instr in program_instructions(image):
            cycles = await bench.execute(ctx, instr, TOKENS[1])
            bench.compare(ctx, instr)
            if instr.opcode != Opcode.MATVEC:
                assert cycles == unit.instruction_cycles(instr), f"{instr}: cycles"

    simulate(unit, testbench, bench)


@pytest.mark.parametrize("rows, lanes, acc_lanes, doubled, scale_doubled",
                         [(16, 2, 4, True, False), (32, 2, 8, True, False), (16, 2, 4, True, True),
                          (32, 2, 8, True, True), (16, 2, 4, False, True)])
def test_vector_unit_wide_accumulator_words(rows, lanes, acc_lanes, doubled, scale_doubled):
    # ACC words wider than P: MATVEC writes a beat in R / W cycles, the
    # passes and the host read P accumulators out of a word, and MUL2 (and
    # SILU and RESID with `scale_lanes_doubled`) read 2P where STATS and QUANT have lanes of their own.
    core = CoreParams(rows=rows, inputs=8, vector_lanes=lanes, max_hidden=48, max_intermediate=112,
                      max_vocab=80, max_layers=2, weight_depth=4096, quant_lanes_doubled=doubled,
                      scale_lanes_doubled=scale_doubled)
    image = memory_image(prepare(CONFIG, random_tensors(CONFIG, seed=rows)), core)
    unit = VectorUnit(core, image=image)
    assert unit.acc_lanes == acc_lanes
    # STATS, QUANT and MUL2 take 2P elements per cycle, or P.
    assert unit.quant_lanes == (2 * lanes if doubled else lanes)
    assert unit.wide_mul2 == doubled
    assert unit.wide_scale == (doubled and scale_doubled)
    # SILU and RESID issue 2P elements per cycle where they are wide. The
    # bench below checks that the unit takes the cycles counted here.
    scale_lanes = 2 * lanes if unit.wide_scale else lanes
    for instr in program_instructions(image):
        if instr.opcode in (Opcode.SILU, Opcode.RESID):
            groups = -(-instr.count // scale_lanes)
            fixed_cycles = unit.cycles(instr.opcode, 0, slots=instr.fields.get("slots", 0)) - 1
            assert unit.instruction_cycles(instr) == fixed_cycles + groups, f"{instr}: cycles"
    bench = Bench(unit, image)

    async def testbench(ctx):
        for instr in program_instructions(image):
            cycles = await bench.execute(ctx, instr, TOKENS[0])
            bench.compare(ctx, instr)
            assert cycles == unit.instruction_cycles(instr), \
                f"{instr}: cycles"
            if instr.opcode == Opcode.MATVEC:
                # The writer stores a beat in R / W cycles.
                assert bench.busy_cycles == unit.matvec_cycles(instr.row_groups), f"{instr}: writer cycles"
        expected = bench.model.acc.astype("<i4").tobytes()
        assert await host_read(ctx, unit, Target.ACCUMULATORS, 0, len(expected)) == expected

    simulate(unit, testbench, bench)
