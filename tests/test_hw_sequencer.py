"""Sequencer: fetch order, the unit handshake, and how a run ends."""

import random

import pytest
from amaranth.sim import Simulator

from firmware.isa import INSTRUCTION_BITS, Opcode, encode
from hw.sequencer import RunStatus, Sequencer


def run_program(program, token, unit_cycles=3, seed=0):
    """Load ``program``, run it once; return (issued opcodes, status, cycles)."""
    dut = Sequencer(program_depth=16)
    rng = random.Random(seed)
    issued, outcome = [], {}

    async def bench(ctx):
        for address, word in enumerate(program):
            ctx.set(dut.program_write.en, (1 << (INSTRUCTION_BITS // 8)) - 1)
            ctx.set(dut.program_write.addr, address)
            ctx.set(dut.program_write.data, word)
            await ctx.tick()
        ctx.set(dut.program_write.en, 0)
        ctx.set(dut.token, token)
        ctx.set(dut.run, 1)
        await ctx.tick()
        ctx.set(dut.run, 0)
        for _ in range(500):
            if ctx.get(dut.start):
                issued.append(Opcode(ctx.get(dut.instruction.embed.opcode)))
                await ctx.tick()
                for _ in range(rng.randint(0, unit_cycles)):
                    await ctx.tick()
                ctx.set(dut.unit_done, 1)
                await ctx.tick()
                ctx.set(dut.unit_done, 0)
                continue
            if ctx.get(dut.done):
                outcome["status"] = ctx.get(dut.status)
                outcome["cycles"] = ctx.get(dut.cycles)
                break
            await ctx.tick()
        await ctx.tick()
        outcome["busy_after"] = ctx.get(dut.busy)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return issued, outcome


def test_runs_program_in_order():
    program = [encode(Opcode.EMBED, vocab=10, count=4), encode(Opcode.STATS), encode(Opcode.MATVEC),
               encode(Opcode.ARGMAX), encode(Opcode.END)]
    issued, outcome = run_program(program, token=3)
    assert issued == [Opcode.EMBED, Opcode.STATS, Opcode.MATVEC, Opcode.ARGMAX]
    assert outcome["status"] == RunStatus.OK
    assert outcome["cycles"] > 4 * 3
    assert outcome["busy_after"] == 0


def test_unloaded_program_stops_at_once():
    issued, outcome = run_program([], token=0)
    assert issued == []
    assert outcome["status"] == RunStatus.NOT_LOADED


@pytest.mark.parametrize("token", [10, 11, 2**32 - 1])
def test_token_out_of_range_touches_nothing(token):
    program = [encode(Opcode.EMBED, vocab=10, count=4), encode(Opcode.END)]
    issued, outcome = run_program(program, token=token)
    assert issued == []
    assert outcome["status"] == RunStatus.TOKEN_OUT_OF_RANGE


def test_last_token_in_range_runs():
    program = [encode(Opcode.EMBED, vocab=10, count=4), encode(Opcode.END)]
    issued, outcome = run_program(program, token=9)
    assert issued == [Opcode.EMBED]
    assert outcome["status"] == RunStatus.OK


def test_program_depth_checked():
    with pytest.raises(ValueError, match="`program_depth` must be a positive integer, not 0"):
        Sequencer(program_depth=0)
