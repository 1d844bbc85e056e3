"""Model image: the packed binary that the accelerator loads.

Layout (all integers little-endian)::

    header   64 bytes
      magic          4s   b"MMFI"
      version        u16  IMAGE_VERSION
      header_size    u16  64
      vocab_size     u32
      hidden_size    u32
      intermediate   u32
      num_layers     u16
      flags          u16  bit 0: use_lower_bound
      section_count  u16
      reserved       u16
      file_size      u64  total bytes, header included
      reserved       24 bytes of zero
      header_crc     u32  CRC-32 of the 60 bytes before it
    section table  section_count x 16 bytes: kind u32, offset u32, length u32, crc u32
    sections       each 4-byte aligned, in the order of SECTION_KINDS

Sections:

- ``trits``: every projection in step order (:func:`golden.int_model.stage_layout`),
  row-major, five trits per byte in base 3 (``sum((t_i + 1) * 3**i)``), each
  projection starting on a fresh byte.
- ``scales``: per stage the norm exponent (i16) and per projection the
  float32 ``beta``, the i16 ``c`` exponent, and ``K`` as u16 mantissa and i16 exponent.
- ``vectors``: per stage ``n`` and per projection ``c`` as int16, then the
  lower bounds as u16 (L x H).
- ``embeddings``: the i16 exponent, 2 bytes of padding, then V x H int16.
- ``tables``: the lookup tables of :mod:`golden.numerics` as u32 arrays.
"""

import argparse
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

from . import numerics as nx
from .config import ModelConfig
from .int_model import IntParams, Projection, Stage, stage_layout

__all__ = ["IMAGE_VERSION", "ImageError", "write_image", "read_image", "pack_trits", "unpack_trits",
           "image_bytes", "SECTION_KINDS"]

IMAGE_MAGIC = b"MMFI"
IMAGE_VERSION = 1
HEADER_SIZE = 64
SECTION_ENTRY = 16
SECTION_KINDS = {"trits": 1, "scales": 2, "vectors": 3, "embeddings": 4, "tables": 5}
TRITS_PER_BYTE = 5

_HEADER = struct.Struct("<4sHHIIIHHHHQ24s")
assert _HEADER.size == HEADER_SIZE - 4


class ImageError(ValueError):
    """A model image is truncated, corrupted, of another version or inconsistent."""


def pack_trits(trits):
    """Pack a flat array of trits in {-1, 0, 1} five to a byte in base 3."""
    trits = np.asarray(trits, dtype=np.int64).ravel()
    if trits.size and (trits.min() < -1 or trits.max() > 1):
        raise ValueError("trits must be -1, 0 or 1")
    padded = np.zeros(-(-trits.size // TRITS_PER_BYTE) * TRITS_PER_BYTE, dtype=np.int64)
    padded[:trits.size] = trits + 1
    digits = padded.reshape(-1, TRITS_PER_BYTE)
    return (digits @ (3 ** np.arange(TRITS_PER_BYTE))).astype(np.uint8).tobytes()


def unpack_trits(data, count):
    """Unpack ``count`` trits from base-3 bytes; raise on a byte above 242."""
    values = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    if values.size and values.max() >= 3 ** TRITS_PER_BYTE:
        raise ImageError(f"trit byte {int(values.max())} is not a base-3 packing of five trits (at most 242)")
    digits = (values[:, None] // (3 ** np.arange(TRITS_PER_BYTE))) % 3
    return (digits.ravel()[:count] - 1).astype(np.int8)


def packed_size(rows, cols):
    return -(-rows * cols // TRITS_PER_BYTE)


def _align(data):
    return data + b"\0" * (-len(data) % 4)


def _sections(params: IntParams):
    trits = b"".join(pack_trits(p.trits) for s in params.stages for p in s.projections)

    scales = bytearray()
    for stage in params.stages:
        scales += struct.pack("<h", stage.n_exp)
        for proj in stage.projections:
            scales += struct.pack("<fhHh", proj.beta, proj.c_exp, proj.k.mantissa, proj.k.exponent)

    vectors = bytearray()
    for stage in params.stages:
        vectors += stage.n.astype("<i2").tobytes()
        for proj in stage.projections:
            vectors += proj.c.astype("<i2").tobytes()
    vectors += params.lower_bounds.astype("<u2").tobytes()

    embeddings = struct.pack("<hxx", params.embed_exp) + params.embeddings.astype("<i2").tobytes()
    tables = b"".join(table.astype("<u4").tobytes() for table in nx.tables().values())
    return {"trits": trits, "scales": bytes(scales), "vectors": bytes(vectors),
            "embeddings": embeddings, "tables": tables}


def image_bytes(params: IntParams):
    """Serialize ``params`` to a model image."""
    config = params.config
    sections = _sections(params)
    offset = HEADER_SIZE + SECTION_ENTRY * len(sections)
    table, body = b"", b""
    for name, data in sections.items():
        table += struct.pack("<IIII", SECTION_KINDS[name], offset + len(body), len(data), zlib.crc32(data))
        body += _align(data)
    file_size = HEADER_SIZE + len(table) + len(body)
    header = _HEADER.pack(IMAGE_MAGIC, IMAGE_VERSION, HEADER_SIZE, config.vocab_size, config.hidden_size,
                          config.intermediate_size, config.num_layers, int(config.use_lower_bound),
                          len(sections), 0, file_size, b"\0" * 24)
    return header + struct.pack("<I", zlib.crc32(header)) + table + body


def write_image(path, params: IntParams):
    """Write ``params`` to ``path``; return the number of bytes written."""
    data = image_bytes(params)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    return len(data)


class _Reader:
    def __init__(self, data, name, where):
        self.data, self.pos, self.name, self.where = data, 0, name, where

    def take(self, count, what):
        if self.pos + count > len(self.data):
            raise ImageError(f"{self.where}: section `{self.name}` ends early: {what} needs "
                             f"{count} bytes at offset {self.pos}, the section has {len(self.data)}")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def unpack(self, fmt, what):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def array(self, dtype, count, what):
        dtype = np.dtype(dtype)
        return np.frombuffer(self.take(dtype.itemsize * count, what), dtype=dtype).astype(np.int64)

    def finish(self):
        if self.pos != len(self.data):
            raise ImageError(f"{self.where}: section `{self.name}` has {len(self.data) - self.pos} "
                             f"bytes more than the model shape needs")


def read_image(source):
    """Read a model image (a path or bytes) back into :class:`IntParams`, checking everything."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, where = bytes(source), "model image"
    else:
        where = str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as error:
            raise ImageError(f"{where}: cannot read: {error.strerror}") from None

    if len(data) < HEADER_SIZE:
        raise ImageError(f"{where}: truncated: {len(data)} bytes, the header alone is {HEADER_SIZE}")
    fields = _HEADER.unpack_from(data, 0)
    magic, version, header_size, vocab, hidden, inter, layers, flags, count, _, file_size, _ = fields
    if magic != IMAGE_MAGIC:
        raise ImageError(f"{where}: not a model image: magic {magic!r}, expected {IMAGE_MAGIC!r}")
    if version != IMAGE_VERSION:
        raise ImageError(f"{where}: image version {version} is not supported; this reader "
                         f"reads version {IMAGE_VERSION}: write the image again with this release")
    (header_crc,) = struct.unpack_from("<I", data, HEADER_SIZE - 4)
    if zlib.crc32(data[:HEADER_SIZE - 4]) != header_crc:
        raise ImageError(f"{where}: header checksum mismatch: the header is corrupted")
    if header_size != HEADER_SIZE:
        raise ImageError(f"{where}: header size {header_size}, expected {HEADER_SIZE}")
    if len(data) != file_size:
        state = "truncated" if len(data) < file_size else "has trailing bytes"
        raise ImageError(f"{where}: {state}: {len(data)} bytes, the header says {file_size}")

    try:
        config = ModelConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                             num_layers=layers, use_lower_bound=bool(flags & 1))
    except ValueError as error:
        raise ImageError(f"{where}: invalid model shape in the header: {error}") from None

    table_end = HEADER_SIZE + SECTION_ENTRY * count
    if table_end > len(data):
        raise ImageError(f"{where}: the section table of {count} entries ends at byte {table_end}, "
                         f"past the end of the file at {len(data)}")
    sections = {}
    kinds = {kind: name for name, kind in SECTION_KINDS.items()}
    for index in range(count):
        entry_at = HEADER_SIZE + SECTION_ENTRY * index
        kind, offset, length, crc = struct.unpack_from("<IIII", data, entry_at)
        if kind not in kinds:
            raise ImageError(f"{where}: section {index} has unknown kind {kind}")
        if kinds[kind] in sections:
            raise ImageError(f"{where}: section {index} is a second `{kinds[kind]}` section")
        if offset + length > len(data):
            raise ImageError(f"{where}: section `{kinds[kind]}` spans bytes {offset}..{offset + length}, "
                             f"past the end of the file at {len(data)}")
        payload = data[offset:offset + length]
        if zlib.crc32(payload) != crc:
            raise ImageError(f"{where}: section `{kinds[kind]}` checksum mismatch: the section is corrupted")
        sections[kinds[kind]] = payload
    for name in SECTION_KINDS:
        if name not in sections:
            raise ImageError(f"{where}: missing section `{name}`")
    return _decode(config, sections, where)


def _decode(config, sections, where):
    layout = stage_layout(config)
    shapes = {name: (rows, cols) for name, rows, cols in config.projections}

    reader = _Reader(sections["tables"], "tables", where)
    for name, table in nx.tables().items():
        stored = reader.array("<u4", table.size, f"table {name}")
        if not np.array_equal(stored, table):
            raise ImageError(f"{where}: lookup table `{name}` differs from this release's numerics; "
                             f"write the image again with this release")
    reader.finish()

    trit_reader = _Reader(sections["trits"], "trits", where)
    scale_reader = _Reader(sections["scales"], "scales", where)
    vector_reader = _Reader(sections["vectors"], "vectors", where)
    stages = []
    for stage_name, _, proj_names in layout:
        fan_in = shapes[proj_names[0]][1]
        (n_exp,) = scale_reader.unpack("<h", f"norm exponent of {stage_name}")
        n = vector_reader.array("<i2", fan_in, f"norm of {stage_name}")
        projections = []
        for name in proj_names:
            rows, cols = shapes[name]
            trits = unpack_trits(trit_reader.take(packed_size(rows, cols), f"trits of {name}"), rows * cols)
            beta, c_exp, k_mant, k_exp = scale_reader.unpack("<fhHh", f"scales of {name}")
            c = vector_reader.array("<i2", cols, f"constants of {name}")
            try:
                k = nx.Scalar(k_mant, k_exp)
            except ValueError as error:
                raise ImageError(f"{where}: output scale of {name}: {error}") from None
            projections.append(Projection(name, trits.reshape(rows, cols), beta, c, c_exp, k))
        stages.append(Stage(stage_name, n, n_exp, projections))
    bounds = vector_reader.array("<u2", config.num_layers * config.hidden_size, "lower bounds")
    for reader in (trit_reader, scale_reader, vector_reader):
        reader.finish()

    embed_reader = _Reader(sections["embeddings"], "embeddings", where)
    (embed_exp,) = embed_reader.unpack("<hxx", "embedding exponent")
    embeddings = embed_reader.array("<i2", config.vocab_size * config.hidden_size, "embedding table")
    embed_reader.finish()
    return IntParams(config, embeddings.reshape(config.vocab_size, config.hidden_size), embed_exp,
                     bounds.reshape(config.num_layers, config.hidden_size), stages)


def main(argv=None):
    from .checkpoint import load_checkpoint
    from .int_model import prepare

    parser = argparse.ArgumentParser(prog="python -m golden.image",
                                     description="Write the model image of a Hugging Face checkpoint.")
    parser.add_argument("--model", required=True, help="Hugging Face model directory")
    parser.add_argument("--output", required=True, help="image file to write")
    args = parser.parse_args(argv)
    try:
        config, tensors = load_checkpoint(args.model)
        params = prepare(config, tensors)
        size = write_image(args.output, params)
        read_image(args.output)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    trit_bytes = sum(packed_size(rows, cols) for _, rows, cols in config.projections)
    print(f"wrote {args.output}: {size} bytes ({trit_bytes} of packed trits, "
          f"{config.trit_count} trits)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
