# amaranth: UnusedElaboratable=no
"""The arithmetic pipelines of hw/arith.py against golden.numerics, bit for bit.

Each test streams one input per cycle through a component and compares every
output, taken exactly ``latency`` cycles later, with the golden function. So
the tests also check the documented latency and throughput.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from amaranth.back import verilog
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.sim import Simulator

from golden import numerics as nx
from hw.arith import (ApplyScale, Norm16, QuantizeCode, SCALAR_EXPONENT_BITS, Sigma, Silu, bit_length,
                      norm16_shift, saturate, saturation_limit, shift_window, signed_leading_one, window_fits,
                      window_offset)

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def stream(dut, inputs, outputs):
    """Feed ``inputs`` one set per cycle and return each output ``dut.latency`` cycles after its input.

    ``inputs`` is a list of ``(port, values)`` with one value per cycle, and
    ``outputs`` a list of ports. Returns one list of integers per output port.
    """
    count = len(inputs[0][1])
    results = [[] for _ in outputs]

    async def testbench(ctx):
        for cycle in range(count + dut.latency):
            if cycle < count:
                for port, values in inputs:
                    ctx.set(port, values[cycle])
            await ctx.tick()
            index = cycle + 1 - dut.latency
            if 0 <= index < count:
                for result, port in zip(results, outputs):
                    result.append(ctx.get(port))

    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    return results


def evaluate(width_by_name, expression, samples):
    """Evaluate a combinational ``expression(**signals)`` for each sample dict and return the results."""
    signals = {name: Signal(shape, name=name) for name, shape in width_by_name.items()}
    output = Signal(expression(**signals).shape())
    m = Module()
    m.d.comb += output.eq(expression(**signals))
    results = []

    async def testbench(ctx):
        for sample in samples:
            for name, value in sample.items():
                ctx.set(signals[name], value)
            results.append(ctx.get(output))

    simulator = Simulator(m)
    simulator.add_testbench(testbench)
    simulator.run()
    return results


def sigma_inputs():
    """Edge cases and every table boundary of sigma, both signs, plus random values."""
    limit = nx.SIGMA_LIMIT
    values = {0, 1, -1, 2, -2, limit, -limit, limit - 1, -(limit - 1), limit + 1, -(limit + 1),
              INT32_MIN, INT32_MIN + 1, INT32_MAX, INT32_MAX - 1}
    for index in range(nx.SIGMA_ENTRIES + 1):
        boundary = index << nx.SIGMA_FRAC_BITS
        for offset in (-1, 0, 1, (1 << (nx.SIGMA_FRAC_BITS - 1)) - 1, 1 << (nx.SIGMA_FRAC_BITS - 1)):
            values.update({boundary + offset, -(boundary + offset)})
    rng = np.random.default_rng(1)
    values.update(int(x) for x in rng.integers(-2 * limit, 2 * limit, 1000))
    values.update(int(x) for x in rng.integers(INT32_MIN, INT32_MAX, 200, endpoint=True))
    return sorted(values)


def test_sigma_matches_golden():
    dut = Sigma()
    assert dut.latency == 6
    x = sigma_inputs()
    (result,) = stream(dut, [(dut.x, x)], [dut.sigma])
    expected = nx.sigma(np.array(x, dtype=np.int64))
    mismatches = [(x[i], result[i], int(expected[i])) for i in np.flatnonzero(np.array(result) != expected)]
    assert mismatches == []


def test_silu_matches_golden():
    dut = Silu()
    assert dut.latency == 9
    x = sigma_inputs()
    (result,) = stream(dut, [(dut.x, x)], [dut.silu])
    expected = nx.silu(np.array(x, dtype=np.int64))
    mismatches = [(x[i], result[i], int(expected[i])) for i in np.flatnonzero(np.array(result) != expected)]
    assert mismatches == []


@pytest.mark.slow
def test_sigma_and_silu_dense_sweep():
    # Every fraction of every table interval, both signs, at a stride of 7.
    x = list(range(-nx.SIGMA_LIMIT - 70, nx.SIGMA_LIMIT + 70, 7))
    dut = Sigma()
    (result,) = stream(dut, [(dut.x, x)], [dut.sigma])
    assert np.array_equal(np.array(result), nx.sigma(np.array(x, dtype=np.int64)))

    dut = Silu()
    (result,) = stream(dut, [(dut.x, x)], [dut.silu])
    assert np.array_equal(np.array(result), nx.silu(np.array(x, dtype=np.int64)))


def exact_apply_scale(acc, mantissa, exponent):
    """Return ``apply_scale`` in unbounded integers: what golden computes while int64 does not overflow."""
    if mantissa == 0:
        return 0
    product = acc * mantissa
    if exponent >= 0:
        value = product << exponent
    else:
        value = (product + (1 << (-exponent - 1))) >> -exponent
    return max(INT32_MIN, min(INT32_MAX, value))


def golden_is_exact(acc, mantissa, exponent):
    """Whether these operands are in golden's domain and it computes them without int64 overflow.

    golden shifts in int64: the rounding constant ``1 << (s - 1)`` overflows
    from a right shift of 64, and a left shift overflows past 63 bits.
    """
    if mantissa and not nx.MANT_MIN <= mantissa < 2 * nx.MANT_MIN:
        return False        # golden's Scalar holds normalized mantissas only
    return exponent > -64 and (abs(acc * mantissa)).bit_length() + exponent < 63


def apply_scale_inputs(width, count, seed):
    rng = np.random.default_rng(seed)
    acc_min, acc_max = -(1 << (width - 1)), (1 << (width - 1)) - 1
    product_bits = width + nx.MANT_BITS
    exp_min, exp_max = -(1 << (SCALAR_EXPONENT_BITS - 1)), (1 << (SCALAR_EXPONENT_BITS - 1)) - 1

    accs = [acc_min, acc_max, 0, 1, -1, acc_min + 1]
    mantissas = [0, nx.MANT_MIN, (1 << nx.MANT_BITS) - 1, 1]
    exponents = [exp_min, exp_max, -1, 0, 1, 31, 32, 33, -63, -64, -65,
                 -product_bits, -product_bits + 1, -product_bits - 1, -product_bits + 2]
    cases = [(a, m, e) for a in accs for m in mantissas for e in exponents]

    for _ in range(count):
        acc = int(rng.integers(acc_min, acc_max, endpoint=True))
        if rng.random() < 0.3:
            acc >>= int(rng.integers(0, width))        # small accumulators too
        mantissa = int(rng.integers(nx.MANT_MIN, 1 << nx.MANT_BITS))
        draw = rng.random()
        if draw < 0.05:
            mantissa = 0
        elif draw < 0.15:
            mantissa = int(rng.integers(1, nx.MANT_MIN))   # the port allows an unnormalized mantissa
        if rng.random() < 0.8:
            exponent = int(rng.integers(-product_bits - 4, 34))
        else:
            exponent = int(rng.integers(exp_min, exp_max, endpoint=True))
        cases.append((acc, mantissa, exponent))
    return cases


@pytest.mark.parametrize("width", [17, 25, 8])
def test_apply_scale_matches_golden(width):
    dut = ApplyScale(width)
    assert dut.latency == 4
    cases = apply_scale_inputs(width, 3000, seed=width)
    accs = [acc for acc, _, _ in cases]
    scales = [{"mantissa": mantissa, "exponent": exponent} for _, mantissa, exponent in cases]
    (result,) = stream(dut, [(dut.acc, accs), (dut.scale, scales)], [dut.value])

    expected = [exact_apply_scale(*case) for case in cases]
    mismatches = [(case, got, want) for case, got, want in zip(cases, result, expected) if got != want]
    assert mismatches == []

    # Where golden computes in range, the exact reference is golden.
    in_range = [case for case in cases if golden_is_exact(*case)]
    golden = [int(nx.apply_scale(np.array([acc]), SimpleNamespace(mantissa=mantissa, exponent=exponent))[0])
              for acc, mantissa, exponent in in_range]
    assert golden == [exact_apply_scale(*case) for case in in_range]


def test_apply_scale_saturates_and_zeroes():
    dut = ApplyScale(17)
    cases = [(65535, 65535, 0), (-65536, 65535, 0), (1, nx.MANT_MIN, 16), (-1, nx.MANT_MIN, 16),
             (1, nx.MANT_MIN, 15), (-1, nx.MANT_MIN, 16), (5, 40000, 511), (-5, 40000, 511),
             (5, 40000, -512), (-5, 40000, -512), (65535, 0, 20), (-65536, 0, -20)]
    accs = [acc for acc, _, _ in cases]
    scales = [{"mantissa": mantissa, "exponent": exponent} for _, mantissa, exponent in cases]
    (result,) = stream(dut, [(dut.acc, accs), (dut.scale, scales)], [dut.value])
    assert result == [INT32_MAX, INT32_MIN, INT32_MAX, INT32_MIN, 1 << 30, INT32_MIN, INT32_MAX, INT32_MIN,
                      0, 0, 0, 0]


def quantize_vectors(width, seed):
    """Return ``[(absmax, z values)]``: the edge absmax values and random ones, each with its edge z values."""
    rng = np.random.default_rng(seed)
    top = (1 << (width - 1)) - 1
    absmaxes = [0, 1, 2, 3, (1 << 15) - 1, 1 << 15, (1 << 15) + 1, (1 << 16) - 1, 1 << 16, (1 << 16) + 1,
                top, top - 1, 1 << (width - 2), 100, 12345]
    absmaxes += [int(rng.integers(1, 1 << int(rng.integers(1, width)))) for _ in range(25)]
    vectors = []
    for absmax in absmaxes:
        z = [absmax, -absmax, 0, 1, -1, absmax - 1, -(absmax - 1), absmax // 2, -(absmax // 2)]
        z += [int(v) for v in rng.integers(-absmax, absmax, 40, endpoint=True)]
        # Beyond golden's precondition |z| <= absmax, the port still allows it.
        z += [absmax + 1, -(absmax + 1), top, -top - 1]
        vectors.append((absmax, [max(-top - 1, min(top, v)) for v in z]))
    return vectors


def expected_codes(z, absmax):
    """Return golden's codes, taking +-127 where ``|z| > absmax`` and golden's int64 product overflows.

    Beyond golden's precondition ``|z| <= absmax`` the code is the clamp,
    +-127, which golden computes while ``|z| << 15`` times a 16-bit table
    entry fits in int64, that is for ``|z| < 2**32``. An absmax of 0 gives
    all-zero codes.
    """
    z = np.asarray(z, dtype=np.int64)
    codes = nx.quantize_codes(z, absmax)
    beyond = (np.abs(z) > absmax) & (absmax > 0)
    clamped = np.where(z < 0, -nx.CODE_MAX, nx.CODE_MAX)
    in_int64 = beyond & (np.abs(z) < 1 << 32)
    assert np.array_equal(codes[in_int64], clamped[in_int64])
    return np.where(beyond, clamped, codes)


def quantize_schedule(dut, vectors, gap):
    """Lay ``vectors`` out cycle by cycle, each ``load`` as late as the contract allows.

    With ``gap`` 0 a vector's first z follows the previous vector's last z,
    so each load falls one cycle before the previous vector's last z.
    Returns the per-cycle port values and the expected code of each z.
    """
    lanes = dut.lanes
    cycles = []
    expected = []
    first_load = dut.setup_latency
    cycles += [{"load": 0, "absmax": 0, "z": [0] * lanes}] * first_load
    for absmax, z in vectors:
        rows = [z[i:i + lanes] + [0] * (lanes - len(z[i:i + lanes])) for i in range(0, len(z), lanes)]
        codes = expected_codes(np.array(rows, dtype=np.int64).ravel(), absmax).reshape(len(rows), lanes)
        start = len(cycles)
        cycles += [{"load": 0, "absmax": 0, "z": row} for row in rows]
        cycles += [{"load": 0, "absmax": 0, "z": [0] * lanes} for _ in range(gap)]
        load = cycles[start - dut.setup_latency]
        cycles[start - dut.setup_latency] = dict(load, load=1, absmax=absmax)
        expected += [[int(c) for c in row] for row in codes] + [None] * gap
    return cycles, expected


@pytest.mark.parametrize("width,lanes,gap", [(32, 1, 0), (32, 3, 2), (40, 2, 0), (20, 1, 1)])
def test_quantize_code_matches_golden(width, lanes, gap):
    dut = QuantizeCode(width=width, lanes=lanes)
    assert (dut.latency, dut.setup_latency) == (5, 2)
    vectors = quantize_vectors(width, seed=width + lanes)
    cycles, expected = quantize_schedule(dut, vectors, gap)

    inputs = [(dut.load, [c["load"] for c in cycles]), (dut.absmax, [c["absmax"] for c in cycles])]
    inputs += [(dut.z[lane], [c["z"][lane] for c in cycles]) for lane in range(lanes)]
    results = stream(dut, inputs, list(dut.code))

    codes = [list(row) for row in zip(*results)][dut.setup_latency:]
    mismatches = [(cycle, got, want) for cycle, (got, want) in enumerate(zip(codes, expected))
                  if want is not None and got != want]
    assert mismatches == []


@pytest.mark.parametrize("lanes", [1, 2])
def test_quantize_code_several_vectors(lanes):
    # Three vectors side by side, each with its own absmax, sharing one table.
    # Each load follows the previous round's last z by as little as the
    # contract allows, and each round's z follow their load by setup_latency.
    vectors = 3
    dut = QuantizeCode(lanes=lanes, vectors=vectors)
    assert (dut.latency, dut.setup_latency) == (5, vectors + 1)
    pool = quantize_vectors(32, seed=lanes)
    idle = {"load": 0, "absmax": [0] * vectors, "z": [[0] * lanes for _ in range(vectors)]}
    cycles, expected = [dict(idle)], [None]
    for first in range(0, len(pool) - vectors + 1, vectors):
        chosen = pool[first:first + vectors]
        groups = -(-max(len(z) for _, z in chosen) // lanes)
        padded = [(absmax, (z + [0] * (groups * lanes))[:groups * lanes]) for absmax, z in chosen]
        codes = [expected_codes(z, absmax).reshape(groups, lanes) for absmax, z in padded]
        # The load comes one cycle before the previous round's last z, the earliest it may.
        load = len(cycles) - 2 if first else 0
        cycles[load] = dict(cycles[load], load=1, absmax=[absmax for absmax, _ in padded])
        cycles += [dict(idle) for _ in range(load + dut.setup_latency - len(cycles))]
        expected += [None] * (len(cycles) - len(expected))
        for group in range(groups):
            cycles.append(dict(idle, z=[z[group * lanes:(group + 1) * lanes] for _, z in padded]))
            expected.append([[int(code) for code in vector[group]] for vector in codes])

    inputs = [(dut.load, [c["load"] for c in cycles])]
    inputs += [(dut.absmax[v], [c["absmax"][v] for c in cycles]) for v in range(vectors)]
    inputs += [(dut.z[v * lanes + lane], [c["z"][v][lane] for c in cycles])
               for v in range(vectors) for lane in range(lanes)]
    results = stream(dut, inputs, list(dut.code))
    codes = [list(row) for row in zip(*results)]
    checked = 0
    for cycle, want in enumerate(expected):
        if want is not None:
            got = [codes[cycle][v * lanes:(v + 1) * lanes] for v in range(vectors)]
            assert got == want, f"cycle {cycle}"
            checked += 1
    assert checked > 100


@pytest.mark.slow
def test_quantize_code_every_16_bit_absmax():
    # Every absmax below 2**17, so every table entry and every left shift,
    # each with z = absmax, -absmax and one random z.
    dut = QuantizeCode()
    rng = np.random.default_rng(8)
    vectors = [(absmax, [absmax, -absmax, int(rng.integers(-absmax, absmax, endpoint=True))])
               for absmax in range(1, 1 << 17)]
    cycles, expected = quantize_schedule(dut, vectors, gap=0)
    inputs = [(dut.load, [c["load"] for c in cycles]), (dut.absmax, [c["absmax"] for c in cycles]),
              (dut.z[0], [c["z"][0] for c in cycles])]
    (codes,) = stream(dut, inputs, [dut.code[0]])
    assert codes[dut.setup_latency:] == [row[0] for row in expected]


def test_quantize_code_zero_before_load():
    dut = QuantizeCode()
    z = [5, -5, INT32_MIN, INT32_MAX]
    (codes,) = stream(dut, [(dut.z[0], z), (dut.load, [0] * 4), (dut.absmax, [7] * 4)], [dut.code[0]])
    assert codes == [0, 0, 0, 0]


def test_quantize_code_rejects_bad_width():
    with pytest.raises(TypeError, match=r"`width` must be an integer, not 3.0"):
        QuantizeCode(width=3.0)
    with pytest.raises(ValueError, match=r"`lanes` must be at least 1, not 0"):
        QuantizeCode(lanes=0)


def norm16_reference(value, shift):
    normalized = value >> shift if shift >= 0 else value << -shift
    return max(-(1 << 15), min((1 << 15) - 1, normalized))


def test_norm16_matches_golden():
    dut = Norm16()
    assert dut.latency == 3
    rng = np.random.default_rng(5)
    values, shifts, expected = [], [], []
    for length in list(range(0, 32)) * 3:
        absmax = int(rng.integers(1 << length >> 1, 1 << length, endpoint=True)) if length else 0
        vector = [absmax, -absmax] + [int(v) for v in rng.integers(-absmax, absmax, 10, endpoint=True)]
        normalized, shift = nx.norm16(vector, absmax)
        values += vector
        shifts += [shift] * len(vector)
        expected += [int(v) for v in normalized]
    (result,) = stream(dut, [(dut.value, values), (dut.shift, shifts)], [dut.normalized])
    assert result == expected


def test_norm16_whole_port_range():
    dut = Norm16()
    rng = np.random.default_rng(6)
    shift_min, shift_max = -(1 << (len(dut.shift) - 1)), (1 << (len(dut.shift) - 1)) - 1
    values = [INT32_MIN, INT32_MAX, 0, 1, -1] * 8 + [int(v) >> int(s) for v, s in
                                                     zip(rng.integers(INT32_MIN, INT32_MAX, 2000),
                                                         rng.integers(0, 32, 2000))]
    shifts = list(range(shift_min, shift_max + 1))[:40] + [int(s) for s in rng.integers(shift_min, shift_max,
                                                                                         2000, endpoint=True)]
    (result,) = stream(dut, [(dut.value, values), (dut.shift, shifts)], [dut.normalized])
    assert result == [norm16_reference(v, s) for v, s in zip(values, shifts)]


def test_norm16_shift_matches_golden():
    rng = np.random.default_rng(7)
    absmaxes = [0, 1, 2, 3, (1 << 15) - 1, 1 << 15, INT32_MAX, 1 << 31, (1 << 32) - 1]
    absmaxes += [1 << k for k in range(32)] + [(1 << k) - 1 for k in range(1, 33)]
    absmaxes += [int(rng.integers(0, 1 << int(rng.integers(1, 33)))) for _ in range(300)]
    result = evaluate({"absmax": unsigned(32)}, lambda absmax: norm16_shift(absmax),
                      [{"absmax": a} for a in absmaxes])
    assert result == [nx.norm16([0], a)[1] for a in absmaxes]


def test_bit_length_all_small_values():
    for width in (1, 2, 5, 8, 11):
        values = list(range(1 << width))
        result = evaluate({"value": unsigned(width)}, lambda value: bit_length(value),
                          [{"value": v} for v in values])
        assert result == [v.bit_length() for v in values]


def test_saturate_all_small_values():
    for width, bits in ((8, 5), (5, 5), (3, 5)):
        values = list(range(-(1 << (width - 1)), 1 << (width - 1)))
        result = evaluate({"value": signed(width)}, lambda value: saturate(value, bits),
                          [{"value": v} for v in values])
        assert result == [max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, v)) for v in values]


def test_shift_window_all_small_values():
    # Every 7-bit value and every shift of a 6-bit signed amount, into 5 bits.
    samples = [{"value": v, "shift": s} for v in range(-64, 64) for s in range(-32, 32)]

    def saturated(value, shift):
        offset = window_offset(shift, len(value), 5)
        index, differs = signed_leading_one(value)
        fits = window_fits(index, differs, value == 0, offset)
        return Mux(fits, shift_window(value, offset, 5), saturation_limit(value[-1], 5))

    result = evaluate({"value": signed(7), "shift": signed(6)}, saturated, samples)
    expected = [s["value"] >> s["shift"] if s["shift"] >= 0 else s["value"] << -s["shift"] for s in samples]
    assert result == [max(-16, min(15, e)) for e in expected]


@pytest.mark.parametrize("make", [
    Sigma, Silu, lambda: ApplyScale(17), lambda: QuantizeCode(), lambda: QuantizeCode(lanes=4),
    lambda: Norm16(),
], ids=["sigma", "silu", "apply_scale", "quantize_code", "quantize_code_4_lanes", "norm16"])
def test_converts_to_verilog(make):
    dut = make()
    text = verilog.convert(dut, name="top")
    assert "module top" in text
