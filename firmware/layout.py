"""Memory map of one model on one core.

The assembler takes its addresses from here, the host loader writes the
model image's contents to these addresses, and the hardware sizes its
memories by the map of the largest model it is built for. Every vector
starts on a whole vector word (a multiple of P elements).

Weight blocks: each projection is one block, except the GLU's 2I-row
``gate_proj``, which is two (``gate`` rows and ``up`` rows) so that the two
halves land in separate accumulator vectors with separate absmax.
"""

from dataclasses import dataclass, field

from golden.config import ModelConfig
from golden.int_model import stage_layout

from .isa import CoreParams

__all__ = ["WeightBlock", "ModelLayout", "FitError", "plan", "memory_sizes"]


class FitError(ValueError):
    """A model does not fit the memories of a generated core."""


def _ceil_div(a, b):
    return -(-a // b)


@dataclass(frozen=True)
class WeightBlock:
    """Rows ``row_start .. row_start + rows`` of one projection, in the weight memory."""
    projection: str
    row_start: int
    rows: int
    cols: int
    base: int
    row_groups: int
    col_tiles: int

    @property
    def words(self):
        return self.row_groups * self.col_tiles


@dataclass
class ModelLayout:
    """Addresses of everything one model keeps on chip (element addresses unless noted)."""
    config: ModelConfig
    core: CoreParams
    hidden_stride: int
    blocks: list = field(default_factory=list)
    stage_const: dict = field(default_factory=dict)     # stage name -> const memory base
    projection_index: dict = field(default_factory=dict)  # projection name -> scalar memory index
    vec: dict = field(default_factory=dict)
    acc: dict = field(default_factory=dict)

    @property
    def weight_words(self):
        return sum(block.words for block in self.blocks)

    @property
    def const_entries(self):
        return max(base for base in self.stage_const.values()) + self.core.quant_padded(self.config.max_fan_in)

    @property
    def vec_entries(self):
        return max(self.vec.values()) + self.core.quant_padded(max(self.config.hidden_size,
                                                                   self.config.intermediate_size))

    @property
    def acc_entries(self):
        head = self.acc["head"]
        return head + _ceil_div(self.config.vocab_size, self.core.rows) * self.core.rows

    @property
    def embed_entries(self):
        return self.config.vocab_size * self.hidden_stride

    @property
    def state_entries(self):
        return self.config.num_layers * self.hidden_stride

    def block(self, projection, row_start=0):
        for block in self.blocks:
            if block.projection == projection and block.row_start == row_start:
                return block
        raise KeyError(projection)


def plan(config: ModelConfig, core: CoreParams):
    """Lay out ``config`` on ``core``; does not check capacities (see :func:`check_fit`)."""
    R, K = core.rows, core.inputs
    H, I = config.hidden_size, config.intermediate_size
    layout = ModelLayout(config, core, hidden_stride=core.padded(H))

    base = 0
    for index, (name, rows, cols) in enumerate(config.projections):
        layout.projection_index[name] = index
        halves = [(0, I), (I, I)] if name.endswith("gate_proj") else [(0, rows)]
        for row_start, block_rows in halves:
            block = WeightBlock(name, row_start, block_rows, cols, base, _ceil_div(block_rows, R), _ceil_div(cols, K))
            layout.blocks.append(block)
            base += block.words

    const = 0
    for stage_name, _, proj_names in stage_layout(config):
        layout.stage_const[stage_name] = const
        fan_in = I if stage_name.endswith(".down") else H
        const += core.quant_padded(fan_in)

    vec = 0
    # STATS, QUANT and the wide passes read quant_lanes elements per cycle, so every vector starts on such a group.
    for name, length in (("x", H), ("silu_h", H), ("mixed", H), ("silu_gate", I), ("product", I)):
        layout.vec[name] = vec
        vec += core.quant_padded(length)

    acc = 0
    for name, length in (("f", H), ("i", H), ("g", H), ("o", H), ("gate", I), ("up", I), ("down", H),
                         ("head", config.vocab_size)):
        layout.acc[name] = acc
        acc += core.padded(_ceil_div(length, R) * R)
    return layout


def memory_sizes(core: CoreParams):
    """Return the entries each memory needs for the largest model ``core`` is built for."""
    largest = ModelConfig(vocab_size=core.max_vocab, hidden_size=core.max_hidden,
                          intermediate_size=core.max_intermediate, num_layers=core.max_layers)
    layout = plan(largest, core)
    return {
        "const": layout.const_entries,
        "vec": layout.vec_entries,
        "acc": layout.acc_entries,
        "embed": layout.embed_entries,
        "state": layout.state_entries,
        "scalars": len(largest.projections),
        # Words of K codes in each of the code buffer's SLOTS slots.
        "code_words": _ceil_div(core.max_fan_in, core.inputs),
    }


def check_fit(config: ModelConfig, core: CoreParams, program_length=None):
    """Raise :class:`FitError` naming every way ``config`` exceeds ``core``."""
    problems = []
    limits = [("hidden_size", config.hidden_size, core.max_hidden),
              ("intermediate_size", config.intermediate_size, core.max_intermediate),
              ("vocab_size", config.vocab_size, core.max_vocab),
              ("num_layers", config.num_layers, core.max_layers)]
    for name, value, limit in limits:
        if value > limit:
            problems.append(f"{name} {value} exceeds the core's maximum of {limit}")
    layout = plan(config, core)
    if layout.weight_words > core.weight_depth:
        problems.append(f"the trits need {layout.weight_words} words per weight bank, "
                        f"the core has {core.weight_depth}")
    if program_length is not None and program_length > core.program_depth:
        problems.append(f"the program has {program_length} instructions, the core holds {core.program_depth}")
    if problems:
        raise FitError("model does not fit the core: " + "; ".join(problems))
    return layout
