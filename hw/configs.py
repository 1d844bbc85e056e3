"""Named core configurations for `make verilog CONFIG=...`."""

from firmware.isa import CoreParams

__all__ = ["CONFIGS"]

CONFIGS = {
    # The bundled Shakespeare model (H 128, I 512, L 4, V 256) on an ECP5-85F:
    # 512 lanes, and weight banks sized for that model's 1,081,344 trits
    # (2,120 words per bank, with row and column padding).
    "bundled": CoreParams(rows=16, inputs=32, vector_lanes=4, max_hidden=128, max_intermediate=512,
                          max_vocab=256, max_layers=4, weight_depth=2304, program_depth=512),
    # Two small cores of different lane counts for the simulations of the
    # tests' random-weight shapes (H up to 96, I up to 256, V up to 1000, L up
    # to 6); their weight banks hold the largest of those shapes.
    "small": CoreParams(rows=4, inputs=8, vector_lanes=2, max_hidden=96, max_intermediate=256,
                        max_vocab=1000, max_layers=6, weight_depth=13368, program_depth=512),
    "medium": CoreParams(rows=8, inputs=16, vector_lanes=4, max_hidden=96, max_intermediate=256,
                         max_vocab=1000, max_layers=6, weight_depth=3342, program_depth=512),
}
