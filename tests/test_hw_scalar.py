"""The scalar unit of hw/scalar.py against golden.numerics, bit for bit.

Commands stream in one per cycle, with idle cycles mixed in, and every result
is compared with golden exactly ``latency`` cycles after its command.
"""

import numpy as np
import pytest

from amaranth.back import verilog
from amaranth.sim import Simulator

from golden import numerics as nx
from golden.config import ModelConfig
from golden.int_model import IntModel, prepare
from golden.synthetic import random_tensors
from hw.scalar import SCALAR_EXPONENT_BITS, ScalarOp, ScalarUnit

EXPONENT_MIN = -(1 << (SCALAR_EXPONENT_BITS - 1))
EXPONENT_MAX = (1 << (SCALAR_EXPONENT_BITS - 1)) - 1
VALUE_MAX = (1 << nx.SUMSQ_BITS) - 1


def golden_result(op, value, a, b):
    if op is ScalarOp.FROM_INT:
        return nx.scalar_from_int(value)
    if op is ScalarOp.RSQRT:
        return nx.scalar_rsqrt(value)
    return nx.scalar_mul(a, b)


def run_commands(commands, idle_every=0):
    """Stream ``commands`` (``(op, value, a, b)``) through a ScalarUnit and return the results as Scalars.

    With ``idle_every`` n > 0, every n-th cycle has ``command.valid`` low.
    The testbench checks that ``result.valid`` is high exactly ``latency``
    cycles after each valid command.
    """
    dut = ScalarUnit()
    assert dut.latency == 5
    schedule = []
    for command in commands:
        if idle_every and len(schedule) % idle_every == idle_every - 1:
            schedule.append(None)
        schedule.append(command)
    results = []
    valid_pattern = []

    async def testbench(ctx):
        for cycle in range(len(schedule) + dut.latency):
            command = schedule[cycle] if cycle < len(schedule) else None
            if command is None:
                ctx.set(dut.command.valid, 0)
            else:
                op, value, a, b = command
                ctx.set(dut.command.valid, 1)
                ctx.set(dut.command.payload, {
                    "op": op, "value": value,
                    "a": {"mantissa": a.mantissa, "exponent": a.exponent},
                    "b": {"mantissa": b.mantissa, "exponent": b.exponent},
                })
            await ctx.tick()
            if cycle + 1 >= dut.latency:
                valid_pattern.append(ctx.get(dut.result.valid))
                if ctx.get(dut.result.valid):
                    payload = ctx.get(dut.result.payload)
                    results.append(nx.Scalar(payload.mantissa, payload.exponent))

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()

    assert valid_pattern[:len(schedule)] == [int(command is not None) for command in schedule]
    assert not any(valid_pattern[len(schedule):])
    return results


def integer_operands(seed):
    """Zero, one, every power of two and its neighbours up to 48 bits, the maximum, and random values."""
    rng = np.random.default_rng(seed)
    values = {0, 1, 2, 3, VALUE_MAX, VALUE_MAX - 1}
    for k in range(nx.SUMSQ_BITS):
        values.update({1 << k, (1 << k) - 1, (1 << k) + 1})
    values.update(int(rng.integers(0, 1 << int(rng.integers(1, nx.SUMSQ_BITS + 1)))) for _ in range(600))
    return sorted(v for v in values if 0 <= v <= VALUE_MAX)


def random_scalar(rng, exponent_range=(-200, 200)):
    mantissa = int(rng.integers(nx.MANT_MIN, 1 << nx.MANT_BITS))
    return nx.Scalar(mantissa, int(rng.integers(*exponent_range)))


def check(commands, results):
    expected = [golden_result(*command) for command in commands]
    mismatches = [(command, got, want) for command, got, want in zip(commands, results, expected) if got != want]
    assert mismatches == []
    assert len(results) == len(commands)


@pytest.mark.parametrize("op", [ScalarOp.FROM_INT, ScalarOp.RSQRT], ids=["from_int", "rsqrt"])
def test_integer_operations_match_golden(op):
    commands = [(op, value, nx.ZERO, nx.ZERO) for value in integer_operands(seed=op.value)]
    check(commands, run_commands(commands))


def test_mul_matches_golden():
    rng = np.random.default_rng(3)
    largest = nx.Scalar((1 << nx.MANT_BITS) - 1, 0)
    smallest = nx.Scalar(nx.MANT_MIN, 0)
    # 46340**2 < 2**31 < 46341**2: products on both sides of the normalization step.
    below, above = nx.Scalar(46340, 0), nx.Scalar(46341, -7)
    pairs = [(nx.ZERO, nx.ZERO), (nx.ZERO, largest), (largest, nx.ZERO), (largest, largest),
             (smallest, smallest), (smallest, largest), (below, below), (above, above),
             (nx.Scalar(nx.MANT_MIN, EXPONENT_MIN // 2), nx.Scalar(nx.MANT_MIN, EXPONENT_MIN // 2)),
             (nx.Scalar(nx.MANT_MIN, EXPONENT_MAX // 2 - 16), nx.Scalar(nx.MANT_MIN, EXPONENT_MAX // 2 - 16))]
    pairs += [(random_scalar(rng), random_scalar(rng)) for _ in range(1500)]
    pairs += [(nx.ZERO, random_scalar(rng)) for _ in range(20)] + [(random_scalar(rng), nx.ZERO) for _ in range(20)]
    commands = [(ScalarOp.MUL, 0, a, b) for a, b in pairs]
    check(commands, run_commands(commands))


def test_mixed_commands_with_idle_cycles():
    rng = np.random.default_rng(4)
    values = integer_operands(seed=5)
    commands = []
    for _ in range(800):
        op = ScalarOp(int(rng.integers(0, 3)))
        value = values[int(rng.integers(0, len(values)))]
        commands.append((op, value, random_scalar(rng), random_scalar(rng)))
    check(commands, run_commands(commands, idle_every=3))


def test_exponents_fit_the_layout():
    # Every 48-bit operand of FROM_INT and RSQRT: the exponent depends only
    # on the bit length, so one value per bit length covers them all.
    for length in range(nx.SUMSQ_BITS + 1):
        value = (1 << length) - 1
        for scalar in (nx.scalar_from_int(value), nx.scalar_rsqrt(value)):
            assert EXPONENT_MIN <= scalar.exponent <= EXPONENT_MAX

    # The scales of a decoding step and their intermediate products.
    config = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=256, num_layers=2)
    params = prepare(config, random_tensors(config, seed=3))
    model = IntModel(params)
    exponents = []
    for token in (1, 5, 9, 33):
        trace = model.step(token, trace=True).trace
        for name, record in trace.items():
            if "scale" not in record:
                continue
            k = params.projection(name).k
            from_int = nx.scalar_from_int(record["absmax"])
            rsqrt = nx.scalar_rsqrt(record["sumsq"])
            exponents += [k.exponent, from_int.exponent, rsqrt.exponent,
                          nx.scalar_mul(k, from_int).exponent, record["scale"].exponent]
    assert min(exponents) >= EXPONENT_MIN
    assert max(exponents) <= EXPONENT_MAX


def test_unit_converts_to_verilog():
    text = verilog.convert(ScalarUnit(), name="top")
    assert "module top" in text
