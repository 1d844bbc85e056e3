"""Invariants of the integer numerics that the hardware implements."""

import math

import numpy as np
import pytest

from golden import numerics as nx


def test_sigma_symmetric_and_centred():
    x = np.arange(-(20 << 16), 20 << 16, 4099, dtype=np.int64)
    assert nx.sigma(np.array([0]))[0] == 32768
    assert np.array_equal(nx.sigma(-x), nx.GATE_ONE - nx.sigma(x))


def test_sigma_monotone_and_bounded():
    x = np.arange(-(17 << 16), 17 << 16, 97, dtype=np.int64)
    s = nx.sigma(x)
    assert np.all(np.diff(s) >= 0)
    assert s.min() >= 0
    assert s.max() <= nx.GATE_ONE


def test_sigma_accuracy():
    x = np.arange(-(20 << 16), 20 << 16, 1237, dtype=np.int64)
    exact = 1 / (1 + np.exp(-x / 65536.0))
    assert np.max(np.abs(nx.sigma(x) / 65536.0 - exact)) < 3e-5


def test_sigma_extremes():
    x = np.array([nx.ACT_MIN, nx.ACT_MAX, 16 << 16, -(16 << 16), (16 << 16) - 1])
    assert nx.sigma(x).tolist()[:4] == [0, 65536, 65536, 0]


def test_silu_accuracy():
    x = np.arange(-(20 << 16), 20 << 16, 1237, dtype=np.int64)
    real = x / 65536.0
    exact = real / (1 + np.exp(-real))
    assert np.max(np.abs(nx.silu(x) / 65536.0 - exact)) < 1e-3


def test_quantize_codes_close_to_exact_rounding():
    rng = np.random.default_rng(0)
    for absmax in [1, 7, 1000, 32767, 32768, 65535, 65536, 123456789, 2**31 - 1]:
        z = rng.integers(-absmax, absmax + 1, 5000)
        z[0] = absmax
        codes = nx.quantize_codes(z, absmax)
        exact = np.sign(z) * np.floor(np.abs(z) * 127 / absmax + 0.5)
        assert np.max(np.abs(codes - exact)) <= 1
        assert np.mean(codes != exact) < 0.01
        assert codes[0] == 127
        assert codes.min() >= -127
        assert codes.max() <= 127


def test_quantize_codes_zero_and_sign():
    assert not nx.quantize_codes(np.zeros(4), 0).any()
    codes = nx.quantize_codes(np.array([-100, 100, -40, 40, 0]), 100)
    assert codes.tolist() == [-127, 127, -51, 51, 0]


def test_quantize_codes_ignore_positive_scale():
    # The codes of v and of 2**k * v agree: only the ratio z / absmax matters.
    rng = np.random.default_rng(1)
    z = rng.integers(-30000, 30000, 200)
    absmax = int(np.max(np.abs(z)))
    assert np.array_equal(nx.quantize_codes(z, absmax), nx.quantize_codes(z << 7, absmax << 7))


def test_norm16_range():
    rng = np.random.default_rng(2)
    for absmax in [1, 5, 2**14, 2**15 - 1, 2**15, 2**31 - 1]:
        v = rng.integers(-absmax, absmax + 1, 1000)
        v[0] = -absmax
        normalized, shift = nx.norm16(v, absmax)
        assert normalized.min() >= -(2**15)
        assert normalized.max() < 2**15
        assert np.max(np.abs(normalized)) >= 2**14


def test_product_bound_is_the_largest_product():
    # norm16 rounds towards minus infinity, so -absmax can become -2**15, and
    # the product of two such results reaches PRODUCT_BOUND.
    for absmax in [2**15 - 1, 2**15, 2**15 + 1, 3 * 2**20 - 1, 2**31 - 1]:
        extremes = np.array([-absmax, absmax])
        normalized, _ = nx.norm16(extremes, absmax)
        products = np.outer(normalized, normalized)
        assert np.max(np.abs(products)) <= nx.PRODUCT_BOUND
    smallest, _ = nx.norm16(np.array([-(2**31 - 1)]), 2**31 - 1)
    assert int(smallest[0]) ** 2 == nx.PRODUCT_BOUND
    # The bound's shift makes every product 16 bits.
    shifted, shift = nx.norm16(np.array([nx.PRODUCT_BOUND, -nx.PRODUCT_BOUND + 1]), nx.PRODUCT_BOUND)
    assert shift == 16
    assert shifted.tolist() == [2**14, -(2**14)]


def test_scalar_rsqrt_accuracy():
    for value in [1, 2, 3, 255, 2**14, 2**16 - 1, 10**9, 2**47 + 12345, 2**48 - 1]:
        scalar = nx.scalar_rsqrt(value)
        assert nx.MANT_MIN <= scalar.mantissa < 2 * nx.MANT_MIN
        assert nx.scalar_to_float(scalar) * math.sqrt(value) == pytest.approx(1, abs=6e-4)
    assert nx.scalar_rsqrt(0) == nx.ZERO


def test_scalar_mul_and_from_int():
    a = nx.scalar_from_int(3 << 20)
    b = nx.scalar_from_float(0.75)
    assert nx.scalar_to_float(nx.scalar_mul(a, b)) == pytest.approx(0.75 * (3 << 20), rel=1e-4)
    assert nx.scalar_from_int(0) == nx.ZERO
    assert nx.scalar_mul(nx.ZERO, b) == nx.ZERO
    assert nx.scalar_from_int(1) == nx.Scalar(32768, -15)


def test_scalar_rejects_unnormalized_mantissa():
    with pytest.raises(ValueError, match=r"scalar mantissa must be in \[32768, 65536\), not 5"):
        nx.Scalar(5, 0)


def test_apply_scale_rounds_and_saturates():
    half = nx.Scalar(32768, -16)                     # 0.5
    assert nx.apply_scale(np.array([3, -3, 4]), half).tolist() == [2, -1, 2]
    huge = nx.Scalar(65535, 20)
    assert nx.apply_scale(np.array([1 << 20, -(1 << 20)]), huge).tolist() == [nx.ACT_MAX, nx.ACT_MIN]
    assert nx.apply_scale(np.array([5]), nx.ZERO).tolist() == [0]


def test_accumulator_bits():
    assert nx.accumulator_bits(1) == 8
    assert nx.accumulator_bits(512) == 17
    assert nx.accumulator_bits(2816) == 20


def test_tables_are_hardware_sized():
    tables = nx.tables()
    assert tables["sigma_base"].max() <= nx.GATE_ONE
    assert tables["sigma_slope"].min() >= 0
    assert tables["quant_recip"].max() < 2**16
    assert tables["rsqrt"].min() >= 2**15
    assert tables["rsqrt"].max() < 2**16


def test_apply_scale_extreme_exponents_exact():
    values = np.array([0, 1, -1, 2**20, -(2**20)])
    tiny = nx.Scalar(40000, -70)
    assert nx.apply_scale(values, tiny).tolist() == [0, 0, 0, 0, 0]
    big = nx.Scalar(32768, 30)
    assert nx.apply_scale(values, big).tolist() == [0, nx.ACT_MAX, nx.ACT_MIN, nx.ACT_MAX, nx.ACT_MIN]
