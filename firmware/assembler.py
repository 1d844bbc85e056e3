"""Assembler: the program of one decoding step, generated from the model shape.

The program depends only on the model's shape and the core's memory map, so
one program serves every token; the token arrives with the RUN command.
"""

import argparse
import sys

from golden.config import ModelConfig
from golden.int_model import stage_layout
from golden.numerics import ACT_FRAC, CODE_MAX, bit_length

from .isa import INSTRUCTION_BITS, CoreParams, Opcode, decode, encode
from .layout import ModelLayout, check_fit

__all__ = ["MaxRegister", "ScaleRegister", "assemble", "program_bytes", "disassemble"]


class MaxRegister:
    """Absmax register of each vector the program writes.

    A MUL2 that measures a product sets PRODUCT to ``PRODUCT_BOUND`` (for
    both products), and a RESID that measures x sets X_BOUND to x's bound.
    """
    X = 0
    SILU_H = 1
    G = 2
    PRODUCT = 3
    SILU_GATE = 4
    UP = 5
    X_BOUND = 6
    SCRATCH = 7


class ScaleRegister:
    F = 0
    I = 1
    O = 2
    GATE = 3
    DOWN = 4
    HEAD = 5


def assemble(layout: ModelLayout, embed_exp):
    """Return the program (a list of instruction words) for ``layout``.

    ``embed_exp`` is the model's embedding exponent (``IntParams.embed_exp``):
    EMBED shifts the int16 embeddings to Q16 by ``embed_exp - 16``.
    """
    config, core = layout.config, layout.core
    H, I, V = config.hidden_size, config.intermediate_size, config.vocab_size
    vec, acc = layout.vec, layout.acc
    shift = embed_exp - ACT_FRAC
    if not -16 <= shift <= 31:
        # int16 embeddings shifted left by more than 16 bits leave the Q16 range.
        raise ValueError(f"embedding exponent {embed_exp} gives an EMBED shift of {shift}; "
                         f"it must be in [-16, 31] (the embeddings' absmax must be below 2**15)")
    program = [encode(Opcode.EMBED, vec_dst=vec["x"], count=H, shift=shift,
                      dst_max=MaxRegister.X, vocab=V)]

    def quantize(stage, src, src_max, count, slots, measured=False):
        """STATS (unless the MUL2 or RESID that wrote ``src`` has ``measured`` it), the SCALEs and QUANT of a stage."""
        const = layout.stage_const[stage]
        if not measured:
            program.append(encode(Opcode.STATS, vec_src=src, src_max=src_max, const=const, count=count,
                                  slots=len(slots)))
        for slot, (projection, scale) in enumerate(slots):
            if scale is not None:
                program.append(encode(Opcode.SCALE, dst_scale=scale,
                                      constant=layout.projection_index[projection], slot=slot))
        program.append(encode(Opcode.QUANT, vec_src=src, src_max=src_max, const=const, count=count,
                              slots=len(slots), code=0))

    def matvec(projection, slot, destination, dst_max, row_start=0):
        block = layout.block(projection, row_start)
        program.append(encode(Opcode.MATVEC, weights=block.base, row_groups=block.row_groups,
                              col_tiles=block.col_tiles, slot=slot, code=0, acc_dst=acc[destination],
                              dst_max=dst_max))

    stages = stage_layout(config)
    hidden_bits = bit_length(CODE_MAX * H)
    intermediate_bits = bit_length(CODE_MAX * I)

    def measure(stage):
        """Return the fields of a MUL2 or RESID that measures its result for ``stage``."""
        name, _, projections = stage
        return {"const": layout.stage_const[name], "slots": len(projections)}

    def resid(source, scale, magnitude_bits, next_stage):
        program.append(encode(Opcode.RESID, acc_src=acc[source], scale=scale, vec_dst=vec["x"],
                              dst_max=MaxRegister.X, count=H, bound_max=MaxRegister.X_BOUND,
                              magnitude_bits=magnitude_bits, **measure(next_stage)))

    # Only the first stage's input needs a STATS: each later stage's input is
    # measured by the MUL2 or RESID that writes it.
    for layer in range(config.num_layers):
        mlgru, mixed, glu, down = stages[4 * layer:4 * layer + 4]
        name, _, (f_proj, i_proj, g_proj) = mlgru
        x_max = MaxRegister.X if layer == 0 else MaxRegister.X_BOUND
        quantize(name, vec["x"], x_max, H,
                 [(f_proj, ScaleRegister.F), (i_proj, ScaleRegister.I), (g_proj, None)], measured=layer > 0)
        matvec(f_proj, 0, "f", MaxRegister.SCRATCH)
        matvec(i_proj, 1, "i", MaxRegister.SCRATCH)
        matvec(g_proj, 2, "g", MaxRegister.G)
        program.append(encode(Opcode.GATES, acc_f=acc["f"], acc_i=acc["i"], state=layer * layout.hidden_stride,
                              scale_f=ScaleRegister.F, scale_i=ScaleRegister.I, vec_dst=vec["silu_h"],
                              dst_max=MaxRegister.SILU_H, count=H))
        program.append(encode(Opcode.MUL2, acc_src=acc["g"], acc_max=MaxRegister.G, vec_src=vec["silu_h"],
                              vec_max=MaxRegister.SILU_H, vec_dst=vec["mixed"], dst_max=MaxRegister.PRODUCT,
                              count=H, **measure(mixed)))
        name, _, (o_proj,) = mixed
        quantize(name, vec["mixed"], MaxRegister.PRODUCT, H, [(o_proj, ScaleRegister.O)], measured=True)
        matvec(o_proj, 0, "o", MaxRegister.SCRATCH)
        resid("o", ScaleRegister.O, hidden_bits, glu)

        name, _, (gate_proj,) = glu
        quantize(name, vec["x"], MaxRegister.X_BOUND, H, [(gate_proj, ScaleRegister.GATE)], measured=True)
        matvec(gate_proj, 0, "gate", MaxRegister.SCRATCH)
        matvec(gate_proj, 0, "up", MaxRegister.UP, row_start=I)
        program.append(encode(Opcode.SILU, acc_src=acc["gate"], scale=ScaleRegister.GATE,
                              vec_dst=vec["silu_gate"], dst_max=MaxRegister.SILU_GATE, count=I))
        program.append(encode(Opcode.MUL2, acc_src=acc["up"], acc_max=MaxRegister.UP, vec_src=vec["silu_gate"],
                              vec_max=MaxRegister.SILU_GATE, vec_dst=vec["product"],
                              dst_max=MaxRegister.PRODUCT, count=I, **measure(down)))
        name, _, (down_proj,) = down
        quantize(name, vec["product"], MaxRegister.PRODUCT, I, [(down_proj, ScaleRegister.DOWN)], measured=True)
        matvec(down_proj, 0, "down", MaxRegister.SCRATCH)
        resid("down", ScaleRegister.DOWN, intermediate_bits, stages[4 * layer + 4])

    name, _, (head,) = stages[-1]
    quantize(name, vec["x"], MaxRegister.X_BOUND, H, [(head, ScaleRegister.HEAD)], measured=True)
    matvec(head, 0, "head", MaxRegister.SCRATCH)
    program.append(encode(Opcode.ARGMAX, acc_src=acc["head"], count=V))
    program.append(encode(Opcode.END))
    check_fit(config, core, len(program))
    return program


def program_bytes(program):
    """Serialize a program for the PROGRAM target: each word little-endian."""
    size = INSTRUCTION_BITS // 8
    return b"".join(word.to_bytes(size, "little") for word in program)


def disassemble(program):
    return "\n".join(f"{address:4d}  {decode(word)}" for address, word in enumerate(program))


def main(argv=None):
    from golden.checkpoint import load_checkpoint
    from golden.int_model import prepare
    from hw.configs import CONFIGS

    parser = argparse.ArgumentParser(prog="python -m firmware.assembler",
                                     description="Print the program of one decoding step for a model.")
    parser.add_argument("--model", required=True, help="Hugging Face model directory")
    parser.add_argument("--config", default="bundled", choices=sorted(CONFIGS), help="core configuration")
    args = parser.parse_args(argv)
    config, tensors = load_checkpoint(args.model)
    params = prepare(config, tensors)
    program = assemble(check_fit(config, CONFIGS[args.config]), params.embed_exp)
    print(disassemble(program))
    return 0


if __name__ == "__main__":
    sys.exit(main())
