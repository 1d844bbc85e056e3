"""The accelerator core: sequencer, projection unit and vector unit, with host access.

The core runs one decoding step per ``run`` and gives its host byte-level
access to every memory. The link protocol is not part of it: :mod:`hw.top`
puts the protocol's :class:`~hw.host.HostInterface` in front of it.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from firmware.isa import INSTRUCTION_BITS, SLOTS, CoreParams, Opcode
from firmware.layout import memory_sizes
from firmware.protocol import Status, StatusFlag, Target

from .host import CORE_STATUS_LAYOUT, ReadPortSignature, ResetStatePortSignature, RunPortSignature, WritePortSignature
from .matvec import MatVec
from .sequencer import RunStatus, Sequencer
from .vector import HOST_ELEMENT_BYTES, VectorUnit

__all__ = ["Core"]

class Core(wiring.Component):
    """One accelerator core: runs the loaded program for one token at a time.

    Its host ports are those of :class:`hw.host.HostInterface`, flipped. For
    PROGRAM a WRITE's address is a byte address into the instruction words;
    for WEIGHTS the address of a frame's first byte (``write.first``) is the
    weight row (``CoreParams.weight_row_trits`` trits per bank) where the
    frame's base-3 trits start, and the weight loader starts a new row there; every other target goes to the vector unit's
    byte-addressed host port. READ serves STATE and ACCUMULATORS. The host
    interface sends nothing to the core while a command runs.

    A RUN executes the program; its status maps :class:`hw.sequencer.RunStatus`
    to the protocol's OK, NOT_LOADED and TOKEN_OUT_OF_RANGE.

    Parameters
    ----------
    core : CoreParams

    Members
    -------
    write : ``In(WritePortSignature())``
    read : ``In(ReadPortSignature())``
    reset_state : ``In(ResetStatePortSignature())``
    run : ``In(RunPortSignature())``
    status : ``Out(CORE_STATUS_LAYOUT)``
        The core's fields of the STATUS reply.
    weights_error : ``Out(1)``
        The weight loader saw an invalid byte or a row past the end since the last frame.
    """

    def __init__(self, core: CoreParams):
        if not isinstance(core, CoreParams):
            raise TypeError(f"`core` must be a CoreParams, not {core!r}")
        self._params = core
        self._sequencer = Sequencer(core.program_depth)
        sizes = memory_sizes(core)
        self._matvec = MatVec(core.rows, core.inputs, weight_depth=core.weight_depth,
                              code_depth=sizes["code_words"], code_write_width=core.quant_lanes,
                              max_fan_in=core.max_fan_in, acc_bits=core.acc_bits,
                              weight_row_trits=core.weight_row_trits, code_slots=SLOTS)
        self._vector = VectorUnit(core)
        super().__init__({
            "write": In(WritePortSignature()),
            "read": In(ReadPortSignature()),
            "reset_state": In(ResetStatePortSignature()),
            "run": In(RunPortSignature()),
            "status": Out(CORE_STATUS_LAYOUT),
            "weights_error": Out(1),
        })

    @property
    def params(self):
        return self._params

    def elaborate(self, platform):
        m = Module()
        m.submodules.sequencer = sequencer = self._sequencer
        m.submodules.matvec = matvec = self._matvec
        m.submodules.vector = vector = self._vector

        self._elaborate_control(m, sequencer, matvec, vector)
        self._elaborate_host_writes(m, sequencer, matvec, vector)
        self._elaborate_host_reads(m, vector)
        self._elaborate_status(m, sequencer)
        return m

    def _elaborate_control(self, m, sequencer, matvec, vector):
        instruction = sequencer.instruction
        m.d.comb += [
            sequencer.token.eq(self.run.token),
            vector.instruction.eq(instruction),
            vector.start.eq(sequencer.start),
            vector.token.eq(self.run.token),
            sequencer.unit_done.eq(vector.done),
        ]
        wiring.connect(m, matvec.results, vector.results)
        wiring.connect(m, vector.code_write, matvec.code_write)

        # RUN: start the sequencer once per request and reply at its `done`.
        running = Signal()
        with m.If(self.run.start & ~running & ~sequencer.busy):
            m.d.comb += sequencer.run.eq(1)
            m.d.sync += running.eq(1)
        with m.If(sequencer.done):
            m.d.sync += running.eq(0)
        m.d.comb += [
            self.run.done.eq(sequencer.done & running),
            self.run.argmax.eq(vector.argmax),
            self.run.cycles.eq(sequencer.cycles),
        ]
        with m.Switch(sequencer.status):
            with m.Case(RunStatus.OK):
                m.d.comb += self.run.status.eq(Status.OK)
            with m.Case(RunStatus.NOT_LOADED):
                m.d.comb += self.run.status.eq(Status.NOT_LOADED)
            with m.Default():
                m.d.comb += self.run.status.eq(Status.TOKEN_OUT_OF_RANGE)

        # RESET_STATE: the vector unit clears the state memory.
        resetting = Signal()
        with m.If(self.reset_state.start & ~resetting):
            m.d.comb += vector.reset_state.eq(1)
            m.d.sync += resetting.eq(1)
        with m.If(vector.reset_done):
            m.d.sync += resetting.eq(0)
        m.d.comb += [
            self.reset_state.done.eq(vector.reset_done & resetting),
            self.reset_state.status.eq(Status.OK),
        ]

        # A MATVEC must stay inside the weight banks and a slot of the code buffer, and
        # run at least one tile: with no tile the projection unit returns no
        # accumulators while the vector unit waits for them. Field values
        # wider than the projection unit's command are rejected too.
        fields = instruction.matvec
        command = matvec.command.payload
        tiles = Signal(range(self._params.weight_depth * max(1, matvec.code_depth) + 1))
        bad_matvec = Signal()
        m.d.comb += [
            tiles.eq(fields.row_groups * fields.col_tiles),
            bad_matvec.eq((fields.row_groups == 0) | (fields.col_tiles == 0)
                          | (fields.row_groups > self._params.weight_depth)
                          | (fields.col_tiles > matvec.code_depth)
                          | (fields.slot >= SLOTS)
                          | (fields.code + fields.col_tiles > matvec.code_depth)
                          | (fields.weights + tiles > self._params.weight_depth)),
            sequencer.reject.eq((fields.opcode == Opcode.MATVEC) & bad_matvec),
        ]
        assert len(command.row_groups) >= bits_for(self._params.weight_depth)
        assert len(command.col_tiles) >= bits_for(matvec.code_depth)

        # A MATVEC starts the projection unit and, in the same cycle, the
        # vector unit's accumulator writer; the command waits here until the
        # projection unit takes it.
        command_pending = Signal()
        with m.If(sequencer.start & (instruction.matvec.opcode == Opcode.MATVEC)):
            m.d.sync += [
                command_pending.eq(1),
                matvec.command.payload.weight_base.eq(instruction.matvec.weights),
                matvec.command.payload.row_groups.eq(instruction.matvec.row_groups),
                matvec.command.payload.col_tiles.eq(instruction.matvec.col_tiles),
                matvec.command.payload.code_slot.eq(instruction.matvec.slot),
                matvec.command.payload.code_base.eq(instruction.matvec.code),
            ]
        with m.Elif(matvec.command.ready):
            m.d.sync += command_pending.eq(0)
        m.d.comb += matvec.command.valid.eq(command_pending)

    def _elaborate_host_writes(self, m, sequencer, matvec, vector):
        write = self.write
        word_bytes = INSTRUCTION_BITS // 8
        is_program = write.target == Target.PROGRAM
        is_weights = write.target == Target.WEIGHTS

        # PROGRAM: one byte lane of an instruction word.
        lane_bits = (word_bytes - 1).bit_length()
        with m.If(write.valid & is_program):
            m.d.comb += [
                sequencer.program_write.en.eq(1 << write.address[:lane_bits]),
                sequencer.program_write.addr.eq(write.address[lane_bits:]),
                sequencer.program_write.data.eq(write.data.replicate(word_bytes)),
            ]

        # WEIGHTS: the first byte of a frame first sets the loader's row address.
        address_set = Signal()
        m.d.comb += [
            matvec.load_start.payload.eq(write.address),
            matvec.load_data.payload.eq(write.data),
            self.weights_error.eq(matvec.load_error),
        ]
        with m.If(write.valid & is_weights):
            with m.If(write.first & ~address_set):
                m.d.comb += matvec.load_start.valid.eq(1)
                with m.If(matvec.load_start.ready):
                    m.d.sync += address_set.eq(1)
            with m.Else():
                m.d.comb += [
                    matvec.load_data.valid.eq(1),
                    write.ready.eq(matvec.load_data.ready),
                ]
                with m.If(matvec.load_data.ready):
                    m.d.sync += address_set.eq(0)

        # Everything else: the vector unit's memories.
        with m.If(write.valid & ~is_program & ~is_weights):
            m.d.comb += [
                vector.host_write.en.eq(1),
                vector.host_write.target.eq(write.target),
                vector.host_write.address.eq(write.address),
                vector.host_write.data.eq(write.data),
            ]
        with m.If(~is_weights):
            m.d.comb += write.ready.eq(1)

    def _elaborate_host_reads(self, m, vector):
        # The vector unit returns a read byte a fixed number of cycles after the
        # address; the request is acknowledged when the byte is there.
        latency = vector.host_read_latency
        m.d.comb += [
            vector.host_read.target.eq(self.read.target),
            vector.host_read.address.eq(self.read.address),
        ]
        waited = Signal(range(latency + 1))
        with m.If(self.read.valid & (waited == latency)):
            m.d.comb += [self.read.ready.eq(1), self.read.data.eq(vector.host_read.data)]
            m.d.sync += waited.eq(0)
        with m.Elif(self.read.valid):
            m.d.sync += waited.eq(waited + 1)

    def _elaborate_status(self, m, sequencer):
        params = self._params
        status = self.status
        sizes = {target: self._vector.target_bytes(target) for target in HOST_ELEMENT_BYTES}
        sizes[Target.PROGRAM] = params.program_depth * INSTRUCTION_BITS // 8
        # A WEIGHTS frame addresses a row, so its size is in rows.
        sizes[Target.WEIGHTS] = params.weight_rows
        m.d.comb += [
            status.rows.eq(params.rows),
            status.inputs.eq(params.inputs),
            status.vector_lanes.eq(params.vector_lanes),
            status.max_hidden.eq(params.max_hidden),
            status.max_intermediate.eq(params.max_intermediate),
            status.max_vocab.eq(params.max_vocab),
            status.max_layers.eq(params.max_layers),
        ]
        for target, size in sizes.items():
            m.d.comb += status[f"{target.name.lower()}_bytes"].eq(size)
        # TODO: report the loaded model's shape; the host keeps it for now, so
        # the loaded_* fields read 0 and LOADED means "a program was written".
        loaded = Signal()
        with m.If(self.write.valid & self.write.ready & (self.write.target == Target.PROGRAM)):
            m.d.sync += loaded.eq(1)
        m.d.comb += status.flags.eq(Mux(loaded, StatusFlag.LOADED, 0))
