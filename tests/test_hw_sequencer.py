"""Sequencer: fetch order, the unit handshake, and how a run ends."""

import random

import pytest
from amaranth.sim import Simulator

from firmware.assembler import assemble
from firmware.isa import INSTRUCTION_BITS, CoreParams, Opcode, decode, encode
from firmware.layout import memory_sizes, plan
from golden.config import ModelConfig
from hw.configs import CONFIGS
from firmware.protocol import Status, Target
from hw.core import Core
from hw.sequencer import RunStatus, Sequencer


def run_program(program, token, unit_cycles=3, seed=0, program_depth=16):
    """Load ``program``, run it once; return (issued opcodes, outcome).

    ``outcome`` contains the run's status and cycles, ``busy_after``, in
    ``words`` the instruction word of every issued instruction, and in
    ``gaps`` the cycles from each ``unit_done`` to the next ``start``.
    """
    dut = Sequencer(program_depth=program_depth)
    rng = random.Random(seed)
    issued, outcome = [], {"words": [], "gaps": []}
    done_cycle = None
    cycle_limit = 500 + program_depth * (unit_cycles + 6)

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
        nonlocal done_cycle
        cycle = 0
        while cycle < cycle_limit:
            if ctx.get(dut.start):
                if done_cycle is not None:
                    outcome["gaps"].append(cycle - done_cycle)
                issued.append(Opcode(ctx.get(dut.instruction.embed.opcode)))
                outcome["words"].append(ctx.get(dut.instruction.as_value()))
                await ctx.tick()
                cycle += 1
                for _ in range(rng.randint(0, unit_cycles)):
                    await ctx.tick()
                    cycle += 1
                ctx.set(dut.unit_done, 1)
                done_cycle = cycle
                await ctx.tick()
                cycle += 1
                ctx.set(dut.unit_done, 0)
                continue
            if ctx.get(dut.done):
                outcome["status"] = ctx.get(dut.status)
                outcome["cycles"] = ctx.get(dut.cycles)
                break
            await ctx.tick()
            cycle += 1
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


@pytest.mark.parametrize("unit_cycles", [0, 5])
def test_next_start_follows_done_by_one_cycle(unit_cycles):
    # The next word is read while the unit runs, even when the unit is done
    # in the cycle after its start.
    program = [encode(Opcode.STATS, count=index) for index in range(6)] + [encode(Opcode.END)]
    issued, outcome = run_program(program, token=0, unit_cycles=unit_cycles, seed=unit_cycles)
    assert [decode(word).count for word in outcome["words"]] == list(range(6))
    assert outcome["gaps"] == [1] * 5


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


def test_program_without_end_stops_at_last_word():
    # Every word is a STATS, so only the end of the program memory can stop the run.
    program = [encode(Opcode.STATS)] * 16
    issued, outcome = run_program(program, token=0, unit_cycles=1)
    assert issued == [Opcode.STATS] * 16
    assert outcome["status"] == RunStatus.NOT_LOADED
    assert outcome["busy_after"] == 0


# (core configuration, model shape H, I, V, L or None for the core's maximum shape). The small
# core's weight banks fit the shape 96, 256, 1000, 3 exactly, but not its maximum of every size at once.
MODEL_MAPS = [("small", (24, 40, 64, 2)), ("small", (96, 256, 1000, 3)), ("bundled", None)]


@pytest.mark.parametrize("config_name, shape", MODEL_MAPS, ids=lambda value: str(value))
def test_assembled_program_stays_inside_model(config_name, shape):
    """Every range that an issued instruction addresses lies inside the loaded model's memory map."""
    core = CONFIGS[config_name]
    H, I, V, L = shape or (core.max_hidden, core.max_intermediate, core.max_vocab, core.max_layers)
    config = ModelConfig(vocab_size=V, hidden_size=H, intermediate_size=I, num_layers=L)
    layout = plan(config, core)
    program = assemble(layout, embed_exp=14)
    issued, outcome = run_program(program, token=config.vocab_size - 1, unit_cycles=1,
                                  program_depth=core.program_depth)
    assert outcome["status"] == RunStatus.OK
    assert len(issued) == len(program) - 1          # every instruction but END

    code_words = memory_sizes(core)["code_words"]
    vec, acc, const = layout.vec_entries, layout.acc_entries, layout.const_entries
    weight_ranges = []
    for word in outcome["words"]:
        instruction = decode(word)
        fields = instruction.fields
        opcode = instruction.opcode
        where = f"{instruction} of {config_name}"
        if opcode == Opcode.EMBED:
            assert fields["vocab"] == config.vocab_size, where
            assert fields["vec_dst"] + fields["count"] <= vec, where
        elif opcode in (Opcode.STATS, Opcode.QUANT):
            assert fields["vec_src"] + fields["count"] <= vec, where
            assert fields["const"] + fields["count"] <= const, where
            if opcode == Opcode.QUANT:
                tiles = -(-fields["count"] // core.inputs)
                assert fields["code"] + tiles <= code_words, where
        elif opcode == Opcode.SCALE:
            assert fields["constant"] < len(config.projections), where
        elif opcode == Opcode.MATVEC:
            words = fields["row_groups"] * fields["col_tiles"]
            assert words > 0, where
            assert fields["weights"] + words <= layout.weight_words, where
            assert fields["code"] + fields["col_tiles"] <= code_words, where
            assert fields["acc_dst"] + fields["row_groups"] * core.rows <= acc, where
            weight_ranges.append((fields["weights"], words))
        elif opcode == Opcode.GATES:
            assert fields["acc_f"] + fields["count"] <= acc, where
            assert fields["acc_i"] + fields["count"] <= acc, where
            assert fields["state"] + fields["count"] <= layout.state_entries, where
            assert fields["vec_dst"] + fields["count"] <= vec, where
        elif opcode == Opcode.MUL2:
            assert fields["acc_src"] + fields["count"] <= acc, where
            assert fields["vec_src"] + fields["count"] <= vec, where
            assert fields["vec_dst"] + fields["count"] <= vec, where
            assert fields["slots"] == 1, where
            assert fields["const"] + fields["count"] <= const, where
        elif opcode in (Opcode.SILU, Opcode.RESID):
            assert fields["acc_src"] + fields["count"] <= acc, where
            assert fields["vec_dst"] + fields["count"] <= vec, where
            if opcode == Opcode.RESID:
                assert fields["slots"] in (1, 3), where
                assert fields["const"] + fields["count"] <= const, where
        elif opcode == Opcode.ARGMAX:
            assert fields["count"] == config.vocab_size, where
            assert fields["acc_src"] + fields["count"] <= acc, where
        else:
            pytest.fail(f"unexpected opcode issued: {where}")

    # The MATVECs of one step read each weight word of the model exactly once.
    position = 0
    for start, words in sorted(weight_ranges):
        assert start == position
        position += words
    assert position == layout.weight_words


CORE_FOR_REJECT = CoreParams(rows=2, inputs=8, vector_lanes=2, max_hidden=16, max_intermediate=32, max_vocab=16,
                             max_layers=1, weight_depth=64, program_depth=8)


def run_core_program(program, token=0):
    """Write ``program`` into a Core of CORE_FOR_REJECT through its host port, RUN it; return the reply status."""
    core = Core(CORE_FOR_REJECT)
    outcome = {}

    async def bench(ctx):
        data = b"".join(word.to_bytes(INSTRUCTION_BITS // 8, "little") for word in program)
        ctx.set(core.write.target, Target.PROGRAM)
        for address, byte in enumerate(data):
            ctx.set(core.write.valid, 1)
            ctx.set(core.write.first, address == 0)
            ctx.set(core.write.address, address)
            ctx.set(core.write.data, byte)
            await ctx.tick().until(core.write.ready)
        ctx.set(core.write.valid, 0)
        ctx.set(core.run.token, token)
        ctx.set(core.run.start, 1)
        for _ in range(5000):
            _, _, done, status = await ctx.tick().sample(core.run.done, core.run.status)
            if done:
                outcome["status"] = status
                break
        ctx.set(core.run.start, 0)

    sim = Simulator(core)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return outcome.get("status")


@pytest.mark.parametrize("fields", [
    dict(weights=0, row_groups=1, col_tiles=0, code=0),        # no tile: no accumulators would come back
    dict(weights=0, row_groups=0, col_tiles=1, code=0),
    dict(weights=60, row_groups=2, col_tiles=4, code=0),       # words 60..67 of a 64-word bank
    dict(weights=0, row_groups=1, col_tiles=2, code=3),        # code words past the slot's 4
    dict(weights=0, row_groups=1, col_tiles=1, slot=3),        # a fourth code slot
])
@pytest.mark.parametrize("after_valid", [False, True], ids=["first", "after-valid-matvec"])
def test_core_rejects_matvec_outside_its_memories(fields, after_valid):
    # A MATVEC that would reach past the weight banks or the code buffer, or run no
    # tile, ends the RUN with NOT_LOADED instead of reading undefined data or hanging.
    # After a valid MATVEC, the check must be the new word's, not the one before.
    program = [encode(Opcode.MATVEC, acc_dst=0, dst_max=0, **fields), encode(Opcode.END)]
    if after_valid:
        program.insert(0, encode(Opcode.MATVEC, weights=0, row_groups=1, col_tiles=1, slot=0, code=0, acc_dst=0,
                                 dst_max=0))
    assert run_core_program(program) == Status.NOT_LOADED


def test_core_runs_matvec_at_memory_end():
    program = [encode(Opcode.MATVEC, weights=56, row_groups=2, col_tiles=4, slot=2, code=0, acc_dst=0, dst_max=0),
               encode(Opcode.END)]
    assert memory_sizes(CORE_FOR_REJECT)["code_words"] == 4
    assert run_core_program(program) == Status.OK
