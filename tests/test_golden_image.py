"""Model image: round trips, and every kind of damage gets a clear error."""

import struct
import zlib

import numpy as np
import pytest

from golden.checkpoint import load_checkpoint
from golden.image import (HEADER_SIZE, ImageError, image_bytes, pack_trits, read_image, unpack_trits,
                          write_image)
from golden.int_model import IntModel, prepare


@pytest.fixture(scope="module")
def odd_params(odd_checkpoint):
    return prepare(*load_checkpoint(odd_checkpoint))


@pytest.fixture(scope="module")
def odd_image(odd_params):
    return image_bytes(odd_params)


def test_trit_packing_round_trip():
    rng = np.random.default_rng(0)
    for count in [0, 1, 4, 5, 6, 1001]:
        trits = rng.integers(-1, 2, count)
        packed = pack_trits(trits)
        assert len(packed) == -(-count // 5)
        assert np.array_equal(unpack_trits(packed, count), trits)


def test_trit_packing_digit_order():
    # Trit i is base-3 digit i of (t + 1).
    assert pack_trits([1, -1, 0, 0, 0]) == bytes([2 + 0 * 3 + 1 * 9 + 1 * 27 + 1 * 81])


def test_trit_byte_above_242_rejected():
    with pytest.raises(ImageError, match="trit byte 243 is not a base-3 packing"):
        unpack_trits(bytes([243]), 5)


def test_image_round_trip_runs_identically(odd_params, odd_image, tmp_path):
    path = tmp_path / "model.mmfi"
    assert write_image(path, odd_params) == len(odd_image)
    loaded = read_image(path)
    original, restored = IntModel(odd_params), IntModel(loaded)
    for token in (0, 5, 999, 123):
        a, b = original.step(token), restored.step(token)
        assert np.array_equal(a.head_acc, b.head_acc)
        assert np.array_equal(a.states, b.states)


def test_image_writes_identical_bytes(odd_params, odd_image):
    assert image_bytes(read_image(odd_image)) == odd_image


def test_truncated_image(odd_image):
    with pytest.raises(ImageError, match=rf"truncated: {len(odd_image) - 10} bytes, the header says {len(odd_image)}"):
        read_image(odd_image[:-10])
    with pytest.raises(ImageError, match="truncated: 20 bytes, the header alone is 64"):
        read_image(odd_image[:20])


def test_trailing_bytes(odd_image):
    with pytest.raises(ImageError, match="has trailing bytes"):
        read_image(odd_image + b"\0")


def test_corrupted_section_named(odd_image):
    damaged = bytearray(odd_image)
    damaged[-100] ^= 0x01                       # inside the last section, the tables
    with pytest.raises(ImageError, match="section `tables` checksum mismatch"):
        read_image(bytes(damaged))


def test_corrupted_header(odd_image):
    damaged = bytearray(odd_image)
    damaged[12] ^= 0x40                         # the vocabulary size
    with pytest.raises(ImageError, match="header checksum mismatch"):
        read_image(bytes(damaged))


def test_wrong_version(odd_image):
    damaged = bytearray(odd_image)
    struct.pack_into("<H", damaged, 4, 99)
    struct.pack_into("<I", damaged, HEADER_SIZE - 4, zlib.crc32(bytes(damaged[:HEADER_SIZE - 4])))
    with pytest.raises(ImageError, match="image version 99 is not supported; this reader reads version 1"):
        read_image(bytes(damaged))


def test_wrong_magic(odd_image):
    with pytest.raises(ImageError, match="not a model image: magic b'GGUF'"):
        read_image(b"GGUF" + odd_image[4:])


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="cannot read: No such file or directory"):
        read_image(tmp_path / "absent.mmfi")
