"""Instruction set of the accelerator's sequencer, and the core parameters.

This module is the single definition of the instruction encoding: the
assembler (:mod:`firmware.assembler`) packs instructions with it and the
hardware decoder (:mod:`hw.sequencer`) builds its field layout from it. It is
plain Python, so the host runtime imports it without Amaranth.

An instruction is ``INSTRUCTION_BITS`` wide, little-endian when sent over
the link. The opcode sits in the low ``OPCODE_BITS``; the remaining fields
depend on the opcode (:data:`FIELDS`) and follow it from bit
``OPCODE_BITS`` upwards in the order listed. Instructions run strictly one
after another.

The code buffer has ``SLOTS`` slots of code words: QUANT writes the codes
of every slot that the last STATS (or MUL2 with slots) measured in one pass, and MATVEC names
the slot and the word of its first codes.

Registers: ``MAX_REGISTERS`` absmax registers (each vector-writing pass
stores the absmax of what it wrote into one), ``SCALE_REGISTERS`` Scalar
registers (written by ``SCALE``), the sum of squares and the per-slot
``absmax(z)`` of the last ``STATS``, and the argmax of the last ``ARGMAX``.

A MUL2 with ``slots`` above 0 sets its absmax register to
:data:`golden.numerics.PRODUCT_BOUND` instead of the product's absmax, and
sets the sum of squares and the ``absmax(z)`` of its first ``slots`` slots
as a STATS of the product (``vec_src = vec_dst``, ``src_max = dst_max``,
its ``const``) would. So one pass both writes a stage's input and measures it.
A RESID with ``slots`` above 0 does the same for its sum. Its bound is
:func:`golden.numerics.residual_bound` of its ``dst_max`` register before
the add, ``magnitude_bits`` and its scale. It sets ``dst_max`` to the sum's
absmax as always, ``bound_max`` to the bound, and the sum of squares and
zmax as a STATS with ``src_max = bound_max`` would.
"""

import enum
from dataclasses import dataclass

from golden import numerics as nx

__all__ = ["Opcode", "FIELDS", "INSTRUCTION_BITS", "OPCODE_BITS", "MAX_REGISTERS", "SCALE_REGISTERS",
           "SLOTS", "CoreParams", "encode", "decode", "Instruction"]

INSTRUCTION_BITS = 128
OPCODE_BITS = 5
MAX_REGISTERS = 8
SCALE_REGISTERS = 8
SLOTS = 3                 # projections that one STATS pass quantizes for (f, i, g)
ADDRESS_BITS = 20
CONST_ADDRESS_BITS = 24
WEIGHT_ADDRESS_BITS = 24
COUNT_BITS = 16


class Opcode(enum.IntEnum):
    """Sequencer operations. 0 is reserved so that an unloaded (zeroed) program stops at once."""
    ILLEGAL = 0
    END = 1
    EMBED = 2       # x = embeddings[token] in Q16; checks the token against `vocab`
    STATS = 3       # sum of squares and per-slot absmax(z) of a stage input
    QUANT = 4       # int8 codes of slots 0 .. slots - 1 into the code buffer, one pass
    SCALE = 5       # output scale K * absmax(z) * rsqrt(sumsq) into a scale register
    MATVEC = 6      # ternary accumulate of one weight block into the accumulator memory
    GATES = 7       # forget gate, input, recurrence; writes the state and silu(h)
    MUL2 = 8        # norm16(a) * norm16(b); with slots, also the STATS of the product
    SILU = 9        # silu(apply_scale(acc, scale))
    RESID = 10      # x = saturate(x + apply_scale(acc, scale)); with slots, also the STATS of x
    ARGMAX = 11     # argmax over the accumulators


# Field name -> width in bits, per opcode, in bit order after the opcode.
# Address fields name their memory: `vec_*` the vector memory, `acc_*` the
# accumulator memory, `const` the constant memory, `state` the state and
# lower-bound memories, `code` a word of a code-buffer slot, `weights` a weight word.
FIELDS = {
    Opcode.ILLEGAL: {},
    Opcode.END: {},
    Opcode.EMBED: {"vec_dst": ADDRESS_BITS, "count": COUNT_BITS, "shift": 8, "dst_max": 3, "vocab": 24},
    Opcode.STATS: {"vec_src": ADDRESS_BITS, "src_max": 3, "const": CONST_ADDRESS_BITS, "count": COUNT_BITS,
                   "slots": 2},
    Opcode.QUANT: {"vec_src": ADDRESS_BITS, "src_max": 3, "const": CONST_ADDRESS_BITS, "count": COUNT_BITS,
                   "slots": 2, "code": COUNT_BITS},
    Opcode.SCALE: {"dst_scale": 3, "constant": 16, "slot": 2},
    Opcode.MATVEC: {"weights": WEIGHT_ADDRESS_BITS, "row_groups": COUNT_BITS, "col_tiles": 12,
                    "slot": 2, "code": COUNT_BITS, "acc_dst": ADDRESS_BITS, "dst_max": 3},
    Opcode.GATES: {"acc_f": ADDRESS_BITS, "acc_i": ADDRESS_BITS, "state": ADDRESS_BITS, "scale_f": 3,
                   "scale_i": 3, "vec_dst": ADDRESS_BITS, "dst_max": 3, "count": COUNT_BITS},
    Opcode.MUL2: {"acc_src": ADDRESS_BITS, "acc_max": 3, "vec_src": ADDRESS_BITS, "vec_max": 3,
                  "vec_dst": ADDRESS_BITS, "dst_max": 3, "count": COUNT_BITS, "const": CONST_ADDRESS_BITS,
                  "slots": 2},
    Opcode.SILU: {"acc_src": ADDRESS_BITS, "scale": 3, "vec_dst": ADDRESS_BITS, "dst_max": 3, "count": COUNT_BITS},
    Opcode.RESID: {"acc_src": ADDRESS_BITS, "scale": 3, "vec_dst": ADDRESS_BITS, "dst_max": 3, "count": COUNT_BITS,
                   "const": CONST_ADDRESS_BITS, "slots": 2, "bound_max": 3, "magnitude_bits": 6},
    Opcode.ARGMAX: {"acc_src": ADDRESS_BITS, "count": COUNT_BITS},
}

SIGNED_FIELDS = {"shift"}

for _opcode, _fields in FIELDS.items():
    assert OPCODE_BITS + sum(_fields.values()) <= INSTRUCTION_BITS, _opcode


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction: its opcode and field values."""
    opcode: Opcode
    fields: dict

    def __getattr__(self, name):
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(f"{self.opcode.name} has no field `{name}`") from None

    def __str__(self):
        args = ", ".join(f"{name}={value}" for name, value in self.fields.items())
        return f"{self.opcode.name}({args})"


def encode(opcode, **fields):
    """Pack one instruction into an integer of ``INSTRUCTION_BITS`` bits."""
    opcode = Opcode(opcode)
    layout = FIELDS[opcode]
    unknown = set(fields) - set(layout)
    if unknown:
        raise ValueError(f"{opcode.name} has no field {sorted(unknown)[0]!r}; its fields are {list(layout)}")
    word, position = int(opcode), OPCODE_BITS
    for name, width in layout.items():
        value = int(fields.get(name, 0))
        if name in SIGNED_FIELDS:
            low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
        else:
            low, high = 0, (1 << width) - 1
        if not low <= value <= high:
            raise ValueError(f"{opcode.name} field `{name}` must be in [{low}, {high}] ({width} bits), not {value}")
        word |= (value & ((1 << width) - 1)) << position
        position += width
    return word


def decode(word):
    """Unpack an instruction word into an :class:`Instruction`."""
    opcode = Opcode(word & ((1 << OPCODE_BITS) - 1))
    fields, position = {}, OPCODE_BITS
    for name, width in FIELDS[opcode].items():
        value = (word >> position) & ((1 << width) - 1)
        if name in SIGNED_FIELDS and value >> (width - 1):
            value -= 1 << width
        fields[name] = value
        position += width
    return Instruction(opcode, fields)


def _positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be an integer, not {value!r}")
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, not {value}")


@dataclass(frozen=True)
class CoreParams:
    """The parameters of one generated core.

    Members
    -------
    rows, inputs : int
        Engine rows (R) and trits per row per cycle (K, at least 5); lanes = R * K.
    vector_lanes : int
        Elements per cycle of the vector unit (P): a power of two that
        divides ``rows`` and ``inputs``. STATS and QUANT take
        :attr:`quant_lanes` elements per cycle, and so may MUL2, SILU and RESID.
    max_hidden, max_intermediate, max_vocab, max_layers : int
        The largest model shape the memories hold.
    weight_depth : int
        Words per weight bank (each word contains K trits).
    program_depth : int
        Instructions the program memory holds.
    quant_lanes_doubled : bool
        Give STATS and QUANT (and MUL2, where ACC words allow) P lanes of
        their own, so that they take 2P elements per cycle
        (:attr:`quant_lanes`). True by default; False saves their logic.
    scale_lanes_doubled : bool
        Give SILU and RESID those P lanes too where MUL2 takes 2P elements
        per cycle. Each lane gets an ApplyScale, a residual adder and a SiLU
        whose sigma table takes a block RAM. False by default.
    silu_h_table_in_logic : bool
        Build the sigma table of GATES's ``silu(h)``, one of the three tables
        of each vector lane, in logic (about a thousand LUTs) rather than in
        a block RAM, for a device short of block RAM.
    """
    rows: int
    inputs: int
    vector_lanes: int
    max_hidden: int
    max_intermediate: int
    max_vocab: int
    max_layers: int
    weight_depth: int
    program_depth: int = 1024
    quant_lanes_doubled: bool = True
    scale_lanes_doubled: bool = False
    silu_h_table_in_logic: bool = False

    def __post_init__(self):
        for name in ("rows", "inputs", "vector_lanes", "max_hidden", "max_intermediate", "max_vocab",
                     "max_layers", "weight_depth", "program_depth"):
            _positive(name, getattr(self, name))
        for name in ("quant_lanes_doubled", "scale_lanes_doubled", "silu_h_table_in_logic"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be a bool, not {getattr(self, name)!r}")
        if self.inputs < 5:
            # The weight loader takes five trits per byte and drops the
            # trits after a frame's last whole word; with fewer than five
            # trits per word those padding trits could complete a word.
            raise ValueError(f"`inputs` must be at least 5, not {self.inputs}")
        if self.vector_lanes & (self.vector_lanes - 1):
            raise ValueError(f"`vector_lanes` must be a power of two, not {self.vector_lanes}")
        if self.inputs % self.vector_lanes:
            raise ValueError(f"`vector_lanes` must divide `inputs` ({self.inputs}), not {self.vector_lanes}")
        if self.rows % self.vector_lanes:
            # The accumulator writer stores a row group as whole vector words.
            raise ValueError(f"`vector_lanes` must divide `rows` ({self.rows}), not {self.vector_lanes}")

    @property
    def lanes(self):
        return self.rows * self.inputs

    @property
    def quant_lanes(self):
        """Elements per cycle of STATS and QUANT: 2P with :attr:`quant_lanes_doubled` where 2P divides K, else P.

        These two passes need no table and no scale, so the vector unit can
        give them P more lanes of their own cheaply. MUL2, SILU and RESID may
        use those lanes too (:attr:`scale_lanes_doubled`). QUANT writes that
        many codes per cycle, which must fill whole K-code words.
        """
        wide = 2 * self.vector_lanes
        return wide if self.quant_lanes_doubled and self.inputs % wide == 0 else self.vector_lanes

    def quant_padded(self, count):
        """Round an element count up to a whole number of :attr:`quant_lanes` groups."""
        return -(-count // self.quant_lanes) * self.quant_lanes

    @property
    def max_fan_in(self):
        return max(self.max_hidden, self.max_intermediate)

    @property
    def acc_bits(self):
        return nx.accumulator_bits(self.max_fan_in)

    @property
    def weight_row_trits(self):
        """T, the trits in one row of a weight bank's memory.

        A row is the narrowest block-RAM-friendly width that holds a K-trit
        word at two bits a trit: 18 bits, or a multiple of 36 (the data widths
        of FPGA block RAMs, 9-bit bytes included). K-trit words pack
        into such rows end to end, so no bit of a row is left unused. The
        weight memory reads the one or two rows that a word touches.
        """
        word_bits = self.inputs * nx.TRIT_BITS
        row_bits = 18 if word_bits <= 18 else -(-word_bits // 36) * 36
        return row_bits // nx.TRIT_BITS

    @property
    def weight_rows(self):
        """Rows per weight bank: ``weight_depth`` words of K trits, packed into rows of T trits."""
        return -(-self.weight_depth * self.inputs // self.weight_row_trits)

    def padded(self, count):
        """Round an element count up to a whole number of vector words."""
        return -(-count // self.vector_lanes) * self.vector_lanes
