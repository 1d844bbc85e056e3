"""Named core configurations for `make verilog CONFIG=...`."""

from firmware.isa import CoreParams

__all__ = ["CONFIGS"]

CONFIGS = {
    # The bundled Shakespeare model (H 128, I 512, L 4, V 256) on an ECP5-85F:
    # 512 lanes. The model's 1,081,344 trits take 2,120 words per bank with
    # row and column padding; 2,304 words of 32 trits fill exactly 2,048 rows
    # of 36 trits, four 512 x 36 block RAMs deep in each of two columns.
    # Two vector lanes, with STATS, QUANT and MUL2 at four elements a cycle
    # (`quant_lanes_doubled`). It routes on the ULX3S-85F with that board's
    # nextpnr seed (55,219 LUT4). Four vector lanes did not route in an
    # earlier design (54,393 LUT4). SILU and RESID at four elements a cycle
    # (`scale_lanes_doubled`) would save 656 cycles a token, but router2 did
    # not converge on that core (57,359 LUT4, 206 EBR) with seeds 1 to 3.
    "bundled": CoreParams(rows=16, inputs=32, vector_lanes=2, max_hidden=128, max_intermediate=512,
                          max_vocab=256, max_layers=4, weight_depth=2304, program_depth=512,
                          quant_lanes_doubled=True),
    "small": CoreParams(rows=4, inputs=8, vector_lanes=2, max_hidden=96, max_intermediate=256,
                        max_vocab=1000, max_layers=6, weight_depth=13368, program_depth=512),
    "medium": CoreParams(rows=8, inputs=16, vector_lanes=4, max_hidden=96, max_intermediate=256,
                         max_vocab=1000, max_layers=6, weight_depth=3342, program_depth=512),
}
