# amaranth: UnusedElaboratable=no
"""cocotb test bench of the vector unit alone, on the Verilog of :class:`hw.vector.VectorUnit`.

The unit under test is built with its memories preloaded from the memory
image of a random-weight model (``firmware.loader.memory_image``). The bench
runs that model's program one instruction at a time, on the unit and on
:class:`firmware.program_model.ProgramModel`. After every instruction a
scoreboard compares the absmax, scale, sum-of-squares, zmax and argmax
registers, the VEC, ACC and STATE memories up to the model's sizes and the
code buffer that QUANT writes, exactly.

A driver feeds each MATVEC its result beats, ``trits @ codes`` computed in
numpy from the image's weights and the codes that the unit wrote, with
random idle cycles. A monitor records every code write. The bench reads the
memories through VPI (the cocotb runner Verilates with ``--public-flat-rw``),
and also checks the preloaded image, the head's accumulators and the
recurrent state through the unit's host read port.

The first line of this file stops Amaranth's warning about the VectorUnit
that the bench builds only for its documented cycle counts and layouts.

Settings come from environment variables (set by ``tests/test_sim_units.py``):

``MMFREE_CORE``    the core parameters (JSON)
``MMFREE_MODEL``   ``random:H,I,V,L,SEED``, the model whose image the build preloads
``MMFREE_TOKENS``  tokens to run before the state reset (one more runs after it)
``MMFREE_IDLE``    probability of an idle cycle before a MATVEC beat (0 to 1)
``MMFREE_SEED``    seed of the tokens and of the idle cycles
"""

import json
import os
import re
import time
from collections import deque

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from firmware.isa import MAX_REGISTERS, SCALE_REGISTERS, SLOTS, CoreParams, Opcode, decode, encode
from firmware.loader import memory_image, target_payloads
from firmware.program_model import ProgramModel
from firmware.protocol import Target
from golden.config import ModelConfig
from golden.int_model import prepare
from golden.synthetic import random_tensors
from hw.arith import ScalarLayout
from hw.vector import HOST_ELEMENT_BYTES, VectorUnit

CLOCK_NS = 10
# The bench's instructions take far fewer cycles. The limit only stops a unit that never signals done.
CYCLE_LIMIT = 5_000
# The scoreboard logs this many differences and only counts the rest.
MAX_LOGGED_MISMATCHES = 10


def current_cycle():
    return int(round(get_sim_time("ns"))) // CLOCK_NS


def model_image(core, spec):
    """Return the memory image of ``random:H,I,V,L,SEED`` on ``core``."""
    if not spec.startswith("random:"):
        raise ValueError(f"MMFREE_MODEL must be random:H,I,V,L,SEED, not {spec!r}")
    H, I, V, L, seed = (int(part) for part in spec[len("random:"):].split(","))
    config = ModelConfig(vocab_size=V, hidden_size=H, intermediate_size=I, num_layers=L)
    return memory_image(prepare(config, random_tensors(config, seed)), core)


def signed_fields(value, count, bits):
    """Split ``value`` into ``count`` signed fields of ``bits`` bits, field 0 in the low bits."""
    mask = (1 << bits) - 1
    sign = 1 << (bits - 1)
    return [((value >> (index * bits) & mask) ^ sign) - sign for index in range(count)]


def find_memory(dut, name, depth):
    """Return the VPI handle of memory ``name`` with ``depth`` words.

    Yosys renames a memory to an escaped ``name$N`` when another object of
    the design has the same name, as it does for the accumulator memory.
    """
    try:
        handle = dut[name]
    except KeyError:
        handle = None
    if handle is not None and type(handle).__name__ == "ArrayObject" and len(handle) == depth:
        return handle
    pattern = re.compile(rf"^\\?{re.escape(name)}(\$\d+)? ?$")
    for handle in dut:
        if pattern.match(handle._name) and type(handle).__name__ == "ArrayObject" and len(handle) == depth:
            return handle
    raise LookupError(f"no memory named {name} with {depth} words in {dut._name}; was it Verilated "
                      f"with --public-flat-rw?")


class Memories:
    """The VEC, ACC and STATE memories of the unit, read word by word through VPI."""

    def __init__(self, dut, unit):
        lanes = unit.core.vector_lanes
        memories = unit.memories
        self.lanes = lanes
        self.vec_lanes = unit.quant_lanes
        self.acc_lanes = unit.acc_lanes
        self.acc_bits = unit.core.acc_bits
        self.vec = find_memory(dut, "vec", memories["vec"].depth)
        self.acc = find_memory(dut, "acc", memories["acc"].depth)
        self.state = find_memory(dut, "state", memories["state"].depth)

    @staticmethod
    def _read(handle, bits, lanes, count):
        words = -(-count // lanes)
        values = []
        for word in range(words):
            values += signed_fields(handle[word].value.to_unsigned(), lanes, bits)
        return np.array(values[:count], dtype=np.int64)

    def read_vec(self, count):
        return self._read(self.vec, 32, self.vec_lanes, count)

    def read_acc(self, count):
        return self._read(self.acc, self.acc_bits, self.acc_lanes, count)

    def read_state(self, count):
        return self._read(self.state, 32, self.lanes, count)


class Scoreboard:
    """Compares the unit's registers and memories with the model's, value for value."""

    def __init__(self, log):
        self.log = log
        self.checks = 0
        self.values = 0
        self.mismatches = 0

    def compare(self, where, name, expected, actual):
        expected = [int(value) for value in np.ravel(expected)]
        actual = [int(value) for value in np.ravel(actual)]
        self.checks += 1
        self.values += len(expected)
        if expected == actual:
            return
        self.mismatches += 1
        if self.mismatches > MAX_LOGGED_MISMATCHES:
            return
        wrong = [index for index, (a, b) in enumerate(zip(expected, actual)) if a != b]
        first = wrong[0] if wrong else min(len(expected), len(actual))
        self.log.error("%s: %s differs at %d of %d values (first at index %d: expected %s, got %s)",
                       where, name, len(wrong), len(expected), first,
                       expected[first] if first < len(expected) else "nothing",
                       actual[first] if first < len(actual) else "nothing")


class ResultDriver:
    """Offers MATVEC result beats on ``results`` in order, with an idle cycle before a beat at probability ``idle``."""

    def __init__(self, dut, unit, rng):
        self.dut = dut
        self.rng = rng
        self.idle = 0.0
        self.queue = deque()
        self.offered = None
        layout = unit.result_layout
        self.acc_bits = unit.core.acc_bits
        self.row_group_offset = layout["row_group"].offset

    @property
    def busy(self):
        return bool(self.queue) or self.offered is not None

    def pack(self, accumulators, row_group):
        mask = (1 << self.acc_bits) - 1
        value = row_group << self.row_group_offset
        for row, accumulator in enumerate(accumulators):
            value |= (int(accumulator) & mask) << (row * self.acc_bits)
        return value

    async def run(self):
        dut = self.dut
        while True:
            await FallingEdge(dut.clk)
            if self.offered is None and self.queue and self.rng.random() >= self.idle:
                self.offered = self.queue.popleft()
                dut.results__payload.value = self.offered
            dut.results__valid.value = int(self.offered is not None)

            await ReadOnly()
            if self.offered is not None and dut.results__ready.value:
                self.offered = None


class CodeWriteMonitor:
    """Records every write on ``code_write`` into a copy of the code buffer, and counts writes outside QUANT."""

    def __init__(self, dut, lanes, shape, log):
        self.dut = dut
        self.lanes = lanes
        # One row per code-buffer slot; each write carries `lanes` codes of every slot.
        self.codes = np.zeros(shape, dtype=np.int64)
        self.log = log
        self.opcode = None
        self.stray_writes = 0

    async def run(self):
        dut = self.dut
        while True:
            await FallingEdge(dut.clk)
            await ReadOnly()
            enable = dut.code_write__en.value.to_unsigned()
            if not enable:
                continue
            if self.opcode != Opcode.QUANT:
                self.stray_writes += 1
                self.log.error("code buffer write during %s", self.opcode)
            index = dut.code_write__index.value.to_unsigned()
            slots, size = self.codes.shape
            data = signed_fields(dut.code_write__data.value.to_unsigned(), slots * self.lanes, 8)
            for slot in range(slots):
                for lane in range(self.lanes):
                    position = slot * self.lanes + lane
                    if not enable >> position & 1:
                        continue
                    if index + lane >= size:
                        self.stray_writes += 1
                        self.log.error("code buffer write at element %d of slot %d, past its %d elements",
                                       index + lane, slot, size)
                    else:
                        self.codes[slot, index + lane] = data[position]


class TB:
    """The vector unit with its clock, the result driver, the code monitor, the model and the scoreboard."""

    def __init__(self, dut):
        self.dut = dut
        self.core = CoreParams(**json.loads(os.environ["MMFREE_CORE"]))
        self.model_spec = os.environ.get("MMFREE_MODEL", "random:37,90,61,2,3")
        self.tokens = int(os.environ.get("MMFREE_TOKENS", "2"))
        self.idle = float(os.environ.get("MMFREE_IDLE", "0.3"))
        self.rng = np.random.default_rng(int(os.environ.get("MMFREE_SEED", "1")))
        self.image = model_image(self.core, self.model_spec)
        # Built only for its documented cycle counts and layouts. The design under test is the Verilog.
        self.unit = VectorUnit(self.core)
        self.model = ProgramModel(self.image)
        self.scoreboard = Scoreboard(dut._log)
        self.driver = ResultDriver(dut, self.unit, np.random.default_rng(self.rng.integers(1 << 32)))
        self.monitor = CodeWriteMonitor(dut, self.unit.quant_lanes, self.model.codes.shape, dut._log)
        self.memories = None
        self.instructions = [decode(word) for word in self.image.program]
        if self.instructions[-1].opcode != Opcode.END:
            raise ValueError("the program does not end with END")
        self.instructions.pop()
        self.cycle_checks = 0

    async def start(self):
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        dut.rst.value = 1
        dut.start.value = 0
        dut.reset_state.value = 0
        dut.results__valid.value = 0
        dut.host_write__en.value = 0
        dut.host_read__target.value = 0
        dut.host_read__address.value = 0
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        self.memories = Memories(dut, self.unit)
        cocotb.start_soon(self.driver.run())
        cocotb.start_soon(self.monitor.run())

    def matvec_beats(self, instr):
        """Return the packed beats of a MATVEC: ``trits @ codes`` per row group, from the image and the written codes."""
        R, K = self.core.rows, self.core.inputs
        groups, tiles = instr.row_groups, instr.col_tiles
        words = self.image.weights[instr.weights:instr.weights + groups * tiles]
        trits = words.reshape(groups, tiles, R, K).transpose(0, 2, 1, 3).reshape(groups * R, tiles * K)
        codes = self.monitor.codes[instr.slot, instr.code * K:instr.code * K + tiles * K]
        accumulators = trits.astype(np.int64) @ codes
        limit = 1 << (self.core.acc_bits - 1)
        if np.any(accumulators >= limit) or np.any(accumulators < -limit):
            raise ValueError(f"{instr}: a sum does not fit {self.core.acc_bits}-bit accumulators")
        return [self.driver.pack(accumulators[group * R:(group + 1) * R], group) for group in range(groups)]

    async def execute(self, instr, token, *, check_cycles):
        """Run ``instr`` on the unit and on the model, then compare them; return the unit's cycles."""
        dut = self.dut
        word = encode(instr.opcode, **instr.fields)
        if word >> len(dut.instruction):
            raise ValueError(f"{instr} does not fit the {len(dut.instruction)}-bit instruction port")
        if instr.opcode == Opcode.MATVEC:
            self.driver.queue.extend(self.matvec_beats(instr))
        self.monitor.opcode = instr.opcode

        await FallingEdge(dut.clk)
        dut.instruction.value = word
        dut.token.value = token
        dut.start.value = 1
        started = current_cycle()
        await FallingEdge(dut.clk)
        dut.start.value = 0
        for _ in range(CYCLE_LIMIT):
            await ReadOnly()
            if dut.done.value:
                break
            await FallingEdge(dut.clk)
        else:
            raise AssertionError(f"{instr}: no done within {CYCLE_LIMIT} cycles")
        cycles = current_cycle() - started
        # A SCALE's engine writes its scale register after done; busy falls then.
        for _ in range(CYCLE_LIMIT):
            if not dut.busy.value:
                break
            await FallingEdge(dut.clk)
            await ReadOnly()
        else:
            raise AssertionError(f"{instr}: busy for {CYCLE_LIMIT} cycles after done")

        where = f"token {token}, {instr}"
        assert not self.driver.busy, f"{where}: {len(self.driver.queue) + 1} result beats were not taken"
        self.model.execute(instr, token)
        self.compare(where)
        if check_cycles:
            expected = self.unit.instruction_cycles(instr)
            self.scoreboard.compare(where, "cycles from start to done", [expected], [cycles])
            self.cycle_checks += 1
        return cycles

    def compare(self, where):
        """Compare every register, the used part of VEC, ACC and STATE, and the code buffer with the model."""
        dut, model, board = self.dut, self.model, self.scoreboard
        board.compare(where, "absmax registers", model.max,
                      [dut[f"absmax_{index}"].value.to_unsigned() for index in range(MAX_REGISTERS)])
        exponent = ScalarLayout["exponent"]
        scales = []
        for index in range(SCALE_REGISTERS):
            value = dut[f"scale_{index}"].value.to_unsigned()
            mantissa = value & ((1 << ScalarLayout["mantissa"].shape.width) - 1)
            scales += [mantissa, signed_fields(value >> exponent.offset, 1, exponent.shape.width)[0]]
        board.compare(where, "scale registers (mantissa, exponent)",
                      [field for scale in model.scale for field in (scale.mantissa, scale.exponent)], scales)
        board.compare(where, "sum of squares", [model.sumsq], [dut["_sumsq"].value.to_unsigned()])
        board.compare(where, "zmax registers", model.zmax,
                      [dut[f"zmax_{slot}"].value.to_unsigned() for slot in range(SLOTS)])
        board.compare(where, "argmax", [model.argmax], [dut.argmax.value.to_unsigned()])

        board.compare(where, "VEC", model.vec, self.memories.read_vec(model.vec.size))
        board.compare(where, "ACC", model.acc, self.memories.read_acc(model.acc.size))
        board.compare(where, "STATE", model.state, self.memories.read_state(model.state.size))
        board.compare(where, "code buffer", model.codes.ravel(), self.monitor.codes.ravel())

    async def run_token(self, token, *, idle, check_cycles):
        """Run the whole program for ``token``, comparing after each instruction."""
        self.driver.idle = idle
        for instr in self.instructions:
            await self.execute(instr, token, check_cycles=check_cycles)
        self.monitor.opcode = None
        head = self.model.head_accumulators()
        assert self.model.argmax == int(np.argmax(head)), "the model's ARGMAX disagrees with its own accumulators"

    async def host_read(self, target, address, count):
        """Read ``count`` bytes of ``target`` from ``address`` through the host port, one address per cycle."""
        dut = self.dut
        latency = self.unit.host_read_latency
        data = bytearray()
        for cycle in range(count + latency):
            await FallingEdge(dut.clk)
            if cycle < count:
                dut.host_read__target.value = int(target)
                dut.host_read__address.value = address + cycle
            await ReadOnly()
            # The byte of the address presented `latency` cycles ago.
            if cycle >= latency:
                data.append(dut.host_read__data.value.to_unsigned())
        return bytes(data)

    async def reset_state(self):
        """Pulse ``reset_state`` and wait for ``reset_done``; return the cycles in between."""
        dut = self.dut
        await FallingEdge(dut.clk)
        dut.reset_state.value = 1
        started = current_cycle()
        await FallingEdge(dut.clk)
        dut.reset_state.value = 0
        for _ in range(CYCLE_LIMIT):
            await ReadOnly()
            if dut.reset_done.value:
                self.model.reset_state()
                return current_cycle() - started
            await FallingEdge(dut.clk)
        raise AssertionError(f"no reset_done within {CYCLE_LIMIT} cycles")


async def check_preloaded_image(tb, tokens):
    """Compare the preloaded memories with the image's host payloads, read back through the host port.

    VECTORS up to the used constants, the embedding rows of ``tokens``, and all
    of LOWER_BOUNDS and SCALARS. A difference means that the build preloaded
    another image than the bench models, or that preload or host read is wrong.
    """
    layout = tb.image.layout
    payloads = {Target[name]: data for name, _, data in target_payloads(tb.image) if name != "PROGRAM"}
    row_bytes = layout.hidden_stride * HOST_ELEMENT_BYTES[Target.EMBEDDINGS]
    regions = [
        (Target.VECTORS, 0, layout.const_entries * HOST_ELEMENT_BYTES[Target.VECTORS]),
        (Target.LOWER_BOUNDS, 0, len(payloads[Target.LOWER_BOUNDS])),
        (Target.SCALARS, 0, len(payloads[Target.SCALARS])),
    ]
    regions += [(Target.EMBEDDINGS, token * row_bytes, row_bytes) for token in sorted(set(tokens))]
    for target, address, count in regions:
        expected = payloads[target][address:address + count]
        actual = await tb.host_read(target, address, count)
        tb.scoreboard.compare("preloaded image", f"{target.name} bytes {address} to {address + count}",
                              list(expected), list(actual))


async def check_host_reads(tb, where):
    """Compare the head's accumulators and the whole recurrent state, read through the host port, with the model."""
    layout = tb.image.layout
    head = tb.model.head_accumulators()
    size = HOST_ELEMENT_BYTES[Target.ACCUMULATORS]
    data = await tb.host_read(Target.ACCUMULATORS, layout.acc["head"] * size, head.size * size)
    tb.scoreboard.compare(where, "head accumulators (host read)", head, np.frombuffer(data, dtype="<i4"))
    size = HOST_ELEMENT_BYTES[Target.STATE]
    data = await tb.host_read(Target.STATE, 0, tb.model.state.size * size)
    tb.scoreboard.compare(where, "STATE (host read)", tb.model.state, np.frombuffer(data, dtype="<i4"))


@cocotb.test()
async def program_matches_model(dut):
    """Run the program token by token, reset the state, run once more; compare after every instruction."""
    tb = TB(dut)
    await tb.start()
    vocab = tb.image.layout.config.vocab_size
    tokens = [int(token) for token in tb.rng.integers(0, vocab, tb.tokens + 1)]
    dut._log.info("core %d x %d with %d vector lanes, model %s, %d instructions per token, tokens %s",
                  tb.core.rows, tb.core.inputs, tb.core.vector_lanes, tb.model_spec, len(tb.instructions), tokens)
    started = time.monotonic()
    start_cycle = current_cycle()

    await check_preloaded_image(tb, tokens)

    # The first token gets every beat as soon as the unit can take it, so
    # that MATVEC's documented cycle count applies and is checked as well.
    for step, token in enumerate(tokens[:-1]):
        await tb.run_token(token, idle=0.0 if step == 0 else tb.idle, check_cycles=step == 0)
        await check_host_reads(tb, f"after token {step} ({token})")
    assert np.any(tb.model.state != 0), "the recurrent state is still zero; the reset check below would be vacuous"

    cycles = await tb.reset_state()
    tb.scoreboard.compare("state reset", "cycles from reset_state to reset_done",
                          [tb.unit.memories["state"].depth + 1], [cycles])
    tb.scoreboard.compare("state reset", "STATE", np.zeros(tb.unit.memories["state"].depth * tb.core.vector_lanes),
                          tb.memories.read_state(tb.unit.memories["state"].depth * tb.core.vector_lanes))
    await tb.run_token(tokens[-1], idle=tb.idle, check_cycles=False)
    await check_host_reads(tb, f"after the reset and token {tokens[-1]}")

    board = tb.scoreboard
    simulated = current_cycle() - start_cycle
    dut._log.info("%d tokens, %d comparisons of %d values, %d mismatches, %d cycle counts checked, "
                  "%d cycles in %.1f s of wall time",
                  len(tokens), board.checks, board.values, board.mismatches, tb.cycle_checks, simulated,
                  time.monotonic() - started)
    assert tb.monitor.stray_writes == 0, f"{tb.monitor.stray_writes} code buffer writes outside QUANT or its range"
    assert board.mismatches == 0, f"{board.mismatches} comparisons differ from the program model; see the log above"
    assert tb.cycle_checks > 0
