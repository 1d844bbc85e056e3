"""Sequencer: fetches the program of one decoding step and dispatches it.

The instruction layout is built from :data:`firmware.isa.FIELDS`, the same
table the assembler packs with, so the encoding is defined once.
"""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from firmware.isa import FIELDS, INSTRUCTION_BITS, OPCODE_BITS, SIGNED_FIELDS, Opcode

from .engine import check_positive_int

__all__ = ["instruction_layout", "RunStatus", "Sequencer"]


def instruction_layout():
    """Return the union layout of an instruction word: one struct view per opcode."""
    variants = {}
    for opcode, fields in FIELDS.items():
        members = {"opcode": unsigned(OPCODE_BITS)}
        for name, width in fields.items():
            members[name] = signed(width) if name in SIGNED_FIELDS else unsigned(width)
        variants[opcode.name.lower()] = data.StructLayout(members)
    return data.UnionLayout(variants)


class RunStatus:
    """Outcome of a run, reported with ``done``."""
    OK = 0
    NOT_LOADED = 1          # an ILLEGAL or rejected instruction, or no END in the whole program memory
    TOKEN_OUT_OF_RANGE = 2  # the EMBED's vocabulary check failed; nothing was changed


class Sequencer(wiring.Component):
    """Runs the program stored in its program memory, one instruction at a time.

    A run starts on ``run`` (with ``token``) from address 0. For each
    instruction the sequencer presents the word on ``instruction`` and
    pulses ``start`` for one cycle, then waits for ``unit_done``, which the
    unit that executes the opcode pulses when it has finished (it may pulse
    in the cycle after ``start``). While it waits it reads the next word
    from the program memory, so the next ``start`` follows ``unit_done`` by
    one cycle. ``END`` finishes
    the run with status OK; ``ILLEGAL`` (a zeroed program memory) with
    NOT_LOADED; an ``EMBED`` whose ``vocab`` field is not above ``token``
    with TOKEN_OUT_OF_RANGE, before the embedding is touched. A run whose
    last program memory word is not ``END`` ends with NOT_LOADED after that
    word, so the program counter never wraps around to 0. An instruction
    that the core marks with ``reject`` while it is presented (one that
    would reach outside the core's memories) ends the run with NOT_LOADED
    before it starts. ``done`` pulses
    once per run, with ``status``, and ``cycles`` holds the cycles from ``run``
    to ``done``.

    Overhead: one cycle per instruction besides the unit's own time (the
    cycle from ``unit_done`` to the next ``start``), and two at the start
    of a run to read the first word.

    Parameters
    ----------
    program_depth : int
        Instructions the program memory holds.

    Members
    -------
    run : ``In(1)``
        Start a run; ignored while ``busy``.
    token : ``In(32)``
        The token of the run, sampled with ``run``.
    busy : ``Out(1)``
    done : ``Out(1)``
        One-cycle pulse at the end of a run.
    status : ``Out(2)``
        A :class:`RunStatus` value, valid from ``done`` until the next run.
    cycles : ``Out(32)``
    instruction : ``Out(instruction_layout())``
        The instruction being executed.
    start : ``Out(1)``
        One-cycle pulse: the unit of ``instruction.opcode`` starts.
    unit_done : ``In(1)``
    reject : ``In(1)``
        The instruction on ``instruction`` must not run; read in the cycle before ``start``.
    program_write : ``In(...)``
        ``en``, ``addr`` and ``data`` of the program memory's write port, with
        a byte-granular enable.
    """

    def __init__(self, program_depth):
        check_positive_int("program_depth", program_depth)
        self._program_depth = program_depth
        self._memory = Memory(shape=unsigned(INSTRUCTION_BITS), depth=program_depth, init=[])
        super().__init__({
            "run": In(1),
            "token": In(32),
            "busy": Out(1),
            "done": Out(1),
            "status": Out(2),
            "cycles": Out(32),
            "instruction": Out(instruction_layout()),
            "start": Out(1),
            "unit_done": In(1),
            "reject": In(1),
            "program_write": In(wiring.Signature({
                "en": Out(INSTRUCTION_BITS // 8),
                "addr": Out(ceil_log2(max(program_depth, 2))),
                "data": Out(INSTRUCTION_BITS),
            })),
        })

    @property
    def program_depth(self):
        return self._program_depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = memory = self._memory
        read = memory.read_port()
        write = memory.write_port(granularity=8)
        m.d.comb += [
            write.en.eq(self.program_write.en),
            write.addr.eq(self.program_write.addr),
            write.data.eq(self.program_write.data),
        ]

        pc = Signal(range(self._program_depth + 1))
        token = Signal(32)
        # The read port shows the word at `pc` in FETCH and, from ISSUE on,
        # the next word, which WAIT takes at `unit_done`. The host writes the
        # program memory only while no run is active.
        m.d.comb += read.addr.eq(pc)

        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        opcode = self.instruction.embed.opcode
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.run):
                    m.d.sync += [pc.eq(0), token.eq(self.token), self.cycles.eq(1), self.busy.eq(1)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                # The read port returns the word in the next cycle.
                m.next = "DECODE"
            with m.State("DECODE"):
                m.d.sync += self.instruction.eq(read.data)
                m.next = "ISSUE"
            with m.State("ISSUE"):
                # The next word's address does not wait for the checks below,
                # which start at a multiplier in the core (`reject`).
                m.d.comb += read.addr.eq(pc + 1)
                with m.If(opcode == Opcode.END):
                    m.d.sync += [self.status.eq(RunStatus.OK), self.done.eq(1), self.busy.eq(0)]
                    m.next = "IDLE"
                with m.Elif((opcode == Opcode.ILLEGAL) | (opcode > max(Opcode)) | self.reject):
                    m.d.sync += [self.status.eq(RunStatus.NOT_LOADED), self.done.eq(1), self.busy.eq(0)]
                    m.next = "IDLE"
                with m.Elif((opcode == Opcode.EMBED) & (token >= self.instruction.embed.vocab)):
                    m.d.sync += [self.status.eq(RunStatus.TOKEN_OUT_OF_RANGE), self.done.eq(1),
                                 self.busy.eq(0)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += self.start.eq(1)
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += read.addr.eq(pc + 1)
                with m.If(self.unit_done & (pc == self._program_depth - 1)):
                    # The last word of the program memory was not END. Fetching on
                    # would wrap around to address 0 and run the program forever.
                    m.d.sync += [self.status.eq(RunStatus.NOT_LOADED), self.done.eq(1), self.busy.eq(0)]
                    m.next = "IDLE"
                with m.Elif(self.unit_done):
                    m.d.sync += [pc.eq(pc + 1), self.instruction.eq(read.data)]
                    m.next = "ISSUE"
        with m.If(self.done):
            m.d.sync += self.done.eq(0)
        return m
