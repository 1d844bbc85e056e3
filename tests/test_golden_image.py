"""Model image: round trips, and every kind of damage gets a clear error."""

import functools
import struct
import zlib

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from golden.checkpoint import load_checkpoint
from golden.config import ModelConfig
from golden.image import (HEADER_SIZE, SECTION_ENTRY, SECTION_KINDS, ImageError, image_bytes, pack_trits,
                          read_image, unpack_trits, write_image)
from golden.int_model import IntModel, prepare
from golden.synthetic import random_tensors


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


# Damage that the reader must catch, found by random search. A damaged image
# must raise ImageError, whose message starts with the image's name, or read
# back exactly the original parameters. Any other exception is a bug of the reader.

SMALL = ModelConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_layers=2)
# Byte offsets of header fields: (offset, struct format) of the shape fields, then these two.
SHAPE_FIELDS = [(8, "<I"), (12, "<I"), (16, "<I"), (20, "<H")]
SECTION_COUNT_AT = 24
FILE_SIZE_AT = 28


@functools.lru_cache(maxsize=None)
def small_image():
    return image_bytes(prepare(SMALL, random_tensors(SMALL, seed=1)))


def unchecked_bytes(image):
    """Return the positions of the alignment padding between sections, which no CRC covers."""
    count = struct.unpack_from("<H", image, SECTION_COUNT_AT)[0]
    covered = set(range(HEADER_SIZE + SECTION_ENTRY * count))
    for index in range(count):
        _, offset, length, _ = struct.unpack_from("<IIII", image, HEADER_SIZE + SECTION_ENTRY * index)
        covered.update(range(offset, offset + length))
    return set(range(len(image))) - covered


def read_damaged(data):
    """Read a damaged image; return the ImageError, or None when it reads back the original parameters."""
    try:
        params = read_image(bytes(data))
    except ImageError as error:
        assert str(error).startswith("model image: "), str(error)
        return error
    assert image_bytes(params) == small_image(), "a damaged image was read as different parameters"
    return None


def _tables_offset(image):
    for index in range(len(SECTION_KINDS)):
        kind, offset, _, _ = struct.unpack_from("<IIII", image, HEADER_SIZE + SECTION_ENTRY * index)
        if kind == SECTION_KINDS["tables"]:
            return offset
    raise AssertionError("the small image has no `tables` section")


# Positions anywhere in the image, or before the lookup tables, which fill most of
# it: in the header, the section table and the sections of the model itself.
IMAGE_SIZE = len(small_image())
positions = st.one_of(st.integers(0, _tables_offset(small_image()) - 1), st.integers(0, IMAGE_SIZE - 1))


def test_small_image_layout():
    # The properties below rely on this image having a header CRC, five sections and no padding.
    image = small_image()
    assert struct.unpack_from("<H", image, SECTION_COUNT_AT)[0] == len(SECTION_KINDS)
    assert unchecked_bytes(image) == set()


@settings(max_examples=100, deadline=None)
@given(length=st.integers(0, IMAGE_SIZE - 1))
def test_image_truncated_anywhere(length):
    assert read_damaged(small_image()[:length]) is not None


def check_byte_changes(changes):
    image = bytearray(small_image())
    for position, value in changes:
        image[position] = value
    error = read_damaged(image)
    assert (error is None) == (image == bytearray(small_image()))


@settings(max_examples=200, deadline=None)
@given(position=positions, bit=st.integers(0, 7))
def test_image_bit_flip_caught(position, bit):
    image = bytearray(small_image())
    image[position] ^= 1 << bit
    assert read_damaged(image) is not None


@settings(max_examples=100, deadline=None)
@given(changes=st.lists(st.tuples(positions, st.integers(0, 255)), min_size=1, max_size=8))
def test_image_byte_changes_caught(changes):
    check_byte_changes(changes)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None)
@given(changes=st.lists(st.tuples(positions, st.integers(0, 255)), min_size=1, max_size=8))
def test_image_byte_changes_caught_long(changes):
    check_byte_changes(changes)


@settings(max_examples=100, deadline=None)
@given(entry=st.integers(0, len(SECTION_KINDS) - 1), field=st.integers(0, 3), value=st.integers(0, 2**32 - 1))
def test_image_section_table_damage_caught(entry, field, value):
    # The section table is outside the header CRC, so each entry's fields are checked on their own.
    image = bytearray(small_image())
    position = HEADER_SIZE + SECTION_ENTRY * entry + 4 * field
    assume(struct.unpack_from("<I", image, position)[0] != value)
    struct.pack_into("<I", image, position, value)
    assert read_damaged(image) is not None


def _reseal_header(image):
    struct.pack_into("<I", image, HEADER_SIZE - 4, zlib.crc32(bytes(image[:HEADER_SIZE - 4])))


@settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(SHAPE_FIELDS + [(SECTION_COUNT_AT, "<H"), (FILE_SIZE_AT, "<Q")]),
       value=st.integers(0, 2**16 - 1))
def test_image_resealed_header_damage_caught(field, value):
    # A header with a valid CRC but another shape, section count or file size, as a faulty writer would make it.
    offset, fmt = field
    image = bytearray(small_image())
    assume(struct.unpack_from(fmt, image, offset)[0] != value)
    struct.pack_into(fmt, image, offset, value)
    _reseal_header(image)
    assert read_damaged(image) is not None


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_rejected(data):
    assert read_damaged(b"MMFI" + data) is not None
    assert read_damaged(data) is not None


def test_section_table_past_end_of_file():
    image = bytearray(small_image())
    struct.pack_into("<H", image, SECTION_COUNT_AT, 2000)
    _reseal_header(image)
    with pytest.raises(ImageError, match=rf"the section table of 2000 entries ends at byte 32064, "
                                         rf"past the end of the file at {IMAGE_SIZE}$"):
        read_image(bytes(image))


def test_duplicate_section_rejected():
    image = bytearray(small_image())
    # Entry 2 (vectors) becomes a second copy of entry 0 (trits).
    image[HEADER_SIZE + 2 * SECTION_ENTRY:HEADER_SIZE + 3 * SECTION_ENTRY] = image[HEADER_SIZE:HEADER_SIZE + SECTION_ENTRY]
    with pytest.raises(ImageError, match=r"section 2 is a second `trits` section"):
        read_image(bytes(image))
