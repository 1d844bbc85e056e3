"""Contents of every on-chip memory for one model on one core.

:func:`memory_image` turns the integer model's parameters into what each
memory of the core holds, addressed as :mod:`firmware.layout` lays it out;
the host sends these contents over the link, and the reference interpreter
(:mod:`firmware.program_model`) runs the program on them.
"""

from dataclasses import dataclass

import numpy as np

from golden.int_model import IntParams

from .assembler import assemble
from .layout import ModelLayout, check_fit
from .isa import CoreParams

__all__ = ["MemoryImage", "memory_image", "linear_trits", "target_payloads", "weight_rows", "weight_frames"]


@dataclass
class MemoryImage:
    """What the core's memories hold for one model.

    Members
    -------
    program : list of int
        Instruction words.
    weights : numpy.ndarray
        int8 trits, shape (weight words, R, K): word-major, then bank, then lane,
        which is the loader's linear order.
    const : numpy.ndarray
        int16 values, shape (entries, 4): per input channel of each stage the
        norm constant ``n`` and the three projection constants ``c``.
    scalars : numpy.ndarray
        Per projection the output-scale constant, shape (projections, 2):
        mantissa and exponent.
    embeddings, lower_bounds : numpy.ndarray
        int16 and uint16, one row of ``hidden_stride`` elements per token or layer.
    """
    layout: ModelLayout
    program: list
    weights: np.ndarray
    const: np.ndarray
    scalars: np.ndarray
    embeddings: np.ndarray
    lower_bounds: np.ndarray


def linear_trits(trits, rows_per_group, inputs):
    """Arrange a projection's trits (rows x cols) as bank words: shape (groups, col tiles, R, K).

    Rows and columns are padded with zero trits to whole groups and tiles.
    """
    rows, cols = trits.shape
    groups, tiles = -(-rows // rows_per_group), -(-cols // inputs)
    padded = np.zeros((groups * rows_per_group, tiles * inputs), dtype=np.int8)
    padded[:rows, :cols] = trits
    return padded.reshape(groups, rows_per_group, tiles, inputs).transpose(0, 2, 1, 3)


def memory_image(params: IntParams, core: CoreParams):
    """Lay ``params`` out on ``core``; raise :class:`~firmware.layout.FitError` if it does not fit."""
    config = params.config
    layout = check_fit(config, core)
    R, K = core.rows, core.inputs
    stride = layout.hidden_stride

    weights = np.zeros((layout.weight_words, R, K), dtype=np.int8)
    for block in layout.blocks:
        trits = params.projection(block.projection).trits[block.row_start:block.row_start + block.rows]
        words = linear_trits(trits, R, K).reshape(-1, R, K)
        weights[block.base:block.base + block.words] = words

    const = np.zeros((layout.const_entries, 4), dtype=np.int64)
    scalars = np.zeros((len(config.projections), 2), dtype=np.int64)
    for stage in params.stages:
        base = layout.stage_const[stage.name]
        count = stage.n.size
        const[base:base + count, 0] = stage.n
        for slot, proj in enumerate(stage.projections):
            const[base:base + count, 1 + slot] = proj.c
            scalars[layout.projection_index[proj.name]] = (proj.k.mantissa, proj.k.exponent)

    embeddings = np.zeros((config.vocab_size, stride), dtype=np.int64)
    embeddings[:, :config.hidden_size] = params.embeddings
    bounds = np.zeros((config.num_layers, stride), dtype=np.int64)
    bounds[:, :config.hidden_size] = params.lower_bounds

    program = assemble(layout, params.embed_exp)
    return MemoryImage(layout, program, weights, const, scalars, embeddings.ravel(), bounds.ravel())


def target_payloads(image: MemoryImage):
    """Return ``[(target name, byte address, bytes)]`` for every byte-addressed target.

    Element formats are little-endian: VECTORS 4 x int16 per element,
    EMBEDDINGS and LOWER_BOUNDS 16 bits, SCALARS mantissa u16 then exponent
    i16, PROGRAM one instruction word of 16 bytes.
    """
    from .assembler import program_bytes

    return [
        ("PROGRAM", 0, program_bytes(image.program)),
        ("VECTORS", 0, image.const.astype("<i2").tobytes()),
        ("EMBEDDINGS", 0, image.embeddings.astype("<i2").tobytes()),
        ("LOWER_BOUNDS", 0, image.lower_bounds.astype("<u2").tobytes()),
        ("SCALARS", 0, np.column_stack([image.scalars[:, 0].astype("<u2").view("<i2"),
                                        image.scalars[:, 1].astype("<i2")]).astype("<i2").tobytes()),
    ]


def weight_rows(weights, row_trits):
    """Arrange bank words (shape ``(words, R, K)``) as memory rows: shape ``(rows, R, T)``.

    Each bank stores its words end to end, in rows of ``row_trits`` (T)
    trits; the last row is padded with zero trits. Flattened, the result is
    the weight loader's linear order: row major, then bank, then trit.
    """
    words, banks, inputs = weights.shape
    rows = -(-words * inputs // row_trits)
    streams = np.zeros((banks, rows * row_trits), dtype=weights.dtype)
    streams[:, :words * inputs] = weights.transpose(1, 0, 2).reshape(banks, words * inputs)
    return streams.reshape(banks, rows, row_trits).transpose(1, 0, 2)


def weight_frames(image: MemoryImage, max_bytes):
    """Split the weight memory into WRITE frames of whole rows.

    Yields ``(row address, base-3 bytes)``. Each frame holds as many whole
    rows (:func:`weight_rows`) as fit in ``max_bytes``; the trits of the
    last byte past the last row are padding, which the loader drops.
    """
    from golden.image import pack_trits

    rows = weight_rows(image.weights, image.layout.core.weight_row_trits)
    count, R, T = rows.shape
    per_row = R * T
    rows_per_frame = max(1, (max_bytes * 5) // per_row)
    if -(-per_row // 5) > max_bytes:
        raise ValueError(f"a weight row of {per_row} trits needs {-(-per_row // 5)} bytes, "
                         f"more than a frame's {max_bytes}")
    for start in range(0, count, rows_per_frame):
        chunk = rows[start:start + rows_per_frame]
        yield start, pack_trits(chunk.ravel())
