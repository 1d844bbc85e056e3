"""Reference interpreter of the sequencer's program.

Runs a program instruction by instruction on the contents of the core's
memories (:class:`firmware.loader.MemoryImage`) with the numerics of
:mod:`golden.numerics`, exactly as the hardware does. The tests check it
against the integer model and the hardware against it, so that a
disagreement points either at the program and memory map or at the hardware.
"""

import numpy as np

from golden import numerics as nx

from .isa import MAX_REGISTERS, SCALE_REGISTERS, SLOTS, Opcode, decode
from .loader import MemoryImage

__all__ = ["ProgramModel", "RunError"]


class RunError(ValueError):
    """The program stopped with an error status (an unloaded program, a token out of range)."""


class ProgramModel:
    """The core's architectural state and an interpreter for its program."""

    def __init__(self, image: MemoryImage):
        self.image = image
        layout = image.layout
        self.core = layout.core
        self.vec = np.zeros(layout.vec_entries, dtype=np.int64)
        self.acc = np.zeros(layout.acc_entries, dtype=np.int64)
        self.state = np.zeros(layout.state_entries, dtype=np.int64)
        # One row of codes per code-buffer slot.
        self.codes = np.zeros((SLOTS, -(-self.core.max_fan_in // self.core.inputs) * self.core.inputs),
                              dtype=np.int64)
        self.max = [0] * MAX_REGISTERS
        self.scale = [nx.ZERO] * SCALE_REGISTERS
        self.sumsq = 0
        self.zmax = [0] * SLOTS
        self.argmax = 0
        self.cycles = 0

    def reset_state(self):
        self.state[:] = 0

    def _stage_input(self, instr):
        v = self.vec[instr.vec_src:instr.vec_src + instr.count]
        vs, _ = nx.norm16(v, self.max[instr.src_max])
        const = self.image.const[instr.const:instr.const + instr.count]
        return vs, const

    def _stats(self, vs, const, slots):
        w = (vs * const[:, 0]) >> nx.W_SHIFT
        self.sumsq = int(np.sum(w * w))
        for slot in range(slots):
            self.zmax[slot] = int(np.max(np.abs(vs * const[:, 1 + slot]))) if vs.size else 0

    def _write_vec(self, address, values, register):
        self.vec[address:address + values.size] = values
        self.max[register] = int(np.max(np.abs(values))) if values.size else 0

    def execute(self, instr, token):
        op = instr.opcode
        if op == Opcode.EMBED:
            if not 0 <= token < instr.vocab:
                raise RunError(f"token id {token} is outside the vocabulary 0..{instr.vocab - 1}")
            stride = self.image.layout.hidden_stride
            row = self.image.embeddings[token * stride:token * stride + instr.count]
            self._write_vec(instr.vec_dst, nx.round_shift(row, instr.shift), instr.dst_max)
        elif op == Opcode.STATS:
            self._stats(*self._stage_input(instr), instr.slots)
        elif op == Opcode.SCALE:
            mantissa, exponent = self.image.scalars[instr.constant]
            k = nx.Scalar(int(mantissa), int(exponent))
            self.scale[instr.dst_scale] = nx.scalar_mul(nx.scalar_mul(k, nx.scalar_from_int(self.zmax[instr.slot])),
                                                        nx.scalar_rsqrt(self.sumsq))
        elif op == Opcode.QUANT:
            vs, const = self._stage_input(instr)
            start = instr.code * self.core.inputs
            for slot in range(min(instr.slots, SLOTS)):
                codes = nx.quantize_codes(vs * const[:, 1 + slot], self.zmax[slot])
                self.codes[slot, start:start + instr.count] = codes
        elif op == Opcode.MATVEC:
            R, K = self.core.rows, self.core.inputs
            words = self.image.weights[instr.weights:instr.weights + instr.row_groups * instr.col_tiles]
            trits = words.reshape(instr.row_groups, instr.col_tiles, R, K).transpose(0, 2, 1, 3)
            trits = trits.reshape(instr.row_groups * R, instr.col_tiles * K).astype(np.int64)
            if instr.slot >= SLOTS:
                raise RunError(f"illegal instruction {instr}: the code buffer has {SLOTS} slots")
            start = instr.code * K
            codes = self.codes[instr.slot, start:start + instr.col_tiles * K]
            acc = trits @ codes
            self.acc[instr.acc_dst:instr.acc_dst + acc.size] = acc
            self.max[instr.dst_max] = int(np.max(np.abs(acc)))
            self.cycles += instr.row_groups * instr.col_tiles
        elif op == Opcode.GATES:
            n = instr.count
            acc_f = self.acc[instr.acc_f:instr.acc_f + n]
            acc_i = self.acc[instr.acc_i:instr.acc_i + n]
            lb = self.image.lower_bounds[instr.state:instr.state + n]
            h = self.state[instr.state:instr.state + n]
            f = lb + nx.round_shift((nx.GATE_ONE - lb) * nx.sigma(nx.apply_scale(acc_f, self.scale[instr.scale_f])),
                                    nx.GATE_FRAC)
            u = nx.round_shift(nx.silu(nx.apply_scale(acc_i, self.scale[instr.scale_i])) * (nx.GATE_ONE - f),
                               nx.GATE_FRAC)
            h = nx.saturate(nx.round_shift(f * h, nx.GATE_FRAC) + u)
            self.state[instr.state:instr.state + n] = h
            self._write_vec(instr.vec_dst, nx.silu(h), instr.dst_max)
        elif op == Opcode.MUL2:
            n = instr.count
            a = nx.norm16(self.acc[instr.acc_src:instr.acc_src + n], self.max[instr.acc_max])[0]
            b = nx.norm16(self.vec[instr.vec_src:instr.vec_src + n], self.max[instr.vec_max])[0]
            self._write_vec(instr.vec_dst, a * b, instr.dst_max)
            if instr.slots:
                self.max[instr.dst_max] = nx.PRODUCT_BOUND
                vs, _ = nx.norm16(a * b, nx.PRODUCT_BOUND)
                self._stats(vs, self.image.const[instr.const:instr.const + n], instr.slots)
        elif op == Opcode.SILU:
            acc = self.acc[instr.acc_src:instr.acc_src + instr.count]
            self._write_vec(instr.vec_dst, nx.silu(nx.apply_scale(acc, self.scale[instr.scale])), instr.dst_max)
        elif op == Opcode.RESID:
            n = instr.count
            acc = self.acc[instr.acc_src:instr.acc_src + n]
            x = nx.saturate(self.vec[instr.vec_dst:instr.vec_dst + n] + nx.apply_scale(acc, self.scale[instr.scale]))
            bound = nx.residual_bound(self.max[instr.dst_max], instr.magnitude_bits, self.scale[instr.scale])
            self._write_vec(instr.vec_dst, x, instr.dst_max)
            if instr.slots:
                self.max[instr.bound_max] = bound
                vs, _ = nx.norm16(x, bound)
                self._stats(vs, self.image.const[instr.const:instr.const + n], instr.slots)
        elif op == Opcode.ARGMAX:
            self.argmax = int(np.argmax(self.acc[instr.acc_src:instr.acc_src + instr.count]))
        else:
            raise RunError(f"illegal instruction {instr}: is a program loaded?")

    def run(self, token):
        """Run the program for ``token``; return the argmax."""
        for word in self.image.program:
            instr = decode(word)
            if instr.opcode == Opcode.END:
                return self.argmax
            self.execute(instr, token)
        raise RunError("the program ended without END")

    def head_accumulators(self):
        config = self.image.layout.config
        start = self.image.layout.acc["head"]
        return self.acc[start:start + config.vocab_size].copy()

    def states(self):
        config, stride = self.image.layout.config, self.image.layout.hidden_stride
        return self.state.reshape(config.num_layers, stride)[:, :config.hidden_size].copy()
