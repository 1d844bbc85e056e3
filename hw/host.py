"""Host interface: the device side of the link protocol in ``firmware/protocol.py``.

:class:`HostInterface` turns the byte stream from the host into memory
writes, memory reads, state resets and runs on the core, and sends one reply
frame per request. ``docs/PROTOCOL.md`` specifies the frames and the rules
implemented here.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import crc, data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from firmware.protocol import (MAX_PAYLOAD, MAX_READ_COUNT, PROTOCOL_VERSION, READ_PAYLOAD_SIZE, REPLY_FLAG,
                               RUN_PAYLOAD_SIZE, RUN_REPLY_SIZE, STATUS_FIELDS, STATUS_REPLY_SIZE, SYNC,
                               WRITE_HEADER_SIZE, Command, Status, Target)

__all__ = ["TARGET_SHAPE", "CORE_STATUS_LAYOUT", "WritePortSignature", "ReadPortSignature",
           "ResetStatePortSignature", "RunPortSignature", "HostInterface"]

TARGET_SHAPE = Shape.cast(range(max(Target) + 1))
ADDRESS_BITS = 32
TOKEN_BITS = 32
STATUS_CODE_BITS = 8

# The fields of the STATUS reply that the core supplies. The host interface
# fills the others (protocol version and link error counters) itself.
CORE_STATUS_LAYOUT = data.StructLayout({
    field.name: unsigned(8 * field.size) for field in STATUS_FIELDS if field.source == "core"
})


class WritePortSignature(wiring.Signature):
    """Byte writes of a WRITE command into a core memory.

    Members
    -------
    valid : Out(1)
        A byte is offered. ``target``, ``address`` and ``data`` stay stable until ``ready``.
    target : Out(TARGET_SHAPE)
        A :class:`firmware.protocol.Target` value.
    address : Out(32)
        Byte address within the target, incremented by one per byte within a WRITE.
    data : Out(8)
        The byte to write.
    first : Out(1)
        This is the first data byte of its WRITE frame.
    ready : In(1)
        The core accepts the byte in this cycle. It may depend on ``valid``.
    """

    def __init__(self):
        super().__init__({
            "valid": Out(1),
            "target": Out(TARGET_SHAPE),
            "address": Out(ADDRESS_BITS),
            "data": Out(8),
            "first": Out(1),
            "ready": In(1),
        })


class ReadPortSignature(wiring.Signature):
    """Byte reads of a READ command from a core memory.

    Members
    -------
    valid : Out(1)
        A byte is requested. ``target`` and ``address`` stay stable until ``ready``.
    target : Out(TARGET_SHAPE)
        A :class:`firmware.protocol.Target` value.
    address : Out(32)
        Byte address within the target, incremented by one per byte within a READ.
    ready : In(1)
        ``data`` holds the requested byte in this cycle, which ends the request.
    data : In(8)
        The byte read, sampled only while ``valid`` and ``ready`` are both high.
    """

    def __init__(self):
        super().__init__({
            "valid": Out(1),
            "target": Out(TARGET_SHAPE),
            "address": Out(ADDRESS_BITS),
            "ready": In(1),
            "data": In(8),
        })


class ResetStatePortSignature(wiring.Signature):
    """Start/done handshake of RESET_STATE.

    Members
    -------
    start : Out(1)
        Rises when a RESET_STATE frame has been checked and stays high until the cycle of ``done``.
    done : In(1)
        The core finished. It is sampled only while ``start`` is high and must be high for one cycle per start.
    status : In(8)
        A :class:`firmware.protocol.Status` value for the reply, valid with ``done``.
    """

    def __init__(self):
        super().__init__({
            "start": Out(1),
            "done": In(1),
            "status": In(STATUS_CODE_BITS),
        })


class RunPortSignature(wiring.Signature):
    """Start/done handshake of RUN: one decoding step on one input token.

    Members
    -------
    start : Out(1)
        Rises when a RUN frame has been checked and stays high until the cycle of ``done``.
    token : Out(32)
        The input token; stable while ``start`` is high. The core checks its range.
    done : In(1)
        The core finished. It is sampled only while ``start`` is high and must be high for one cycle per start.
    status : In(8)
        A :class:`firmware.protocol.Status` value for the reply (OK, NOT_LOADED,
        TOKEN_OUT_OF_RANGE, BUSY), valid with ``done``.
    argmax : In(32)
        The argmax token of the logits, valid with ``done`` and sent only with status OK.
    cycles : In(32)
        The cycle count of the step as the core counts it, valid with ``done`` and sent only with status OK.
    """

    def __init__(self):
        super().__init__({
            "start": Out(1),
            "token": Out(TOKEN_BITS),
            "done": In(1),
            "status": In(STATUS_CODE_BITS),
            "argmax": In(32),
            "cycles": In(32),
        })


def _crc_engine():
    return crc.catalog.CRC16_CCITT_FALSE(data_width=8).create()


class HostInterface(wiring.Component):
    """Device side of the link protocol: frame checking, command execution and replies.

    The interface handles one frame at a time: it receives a frame, checks
    it, executes it on the core, sends the reply, and only then accepts the
    next byte. ``i_stream.ready`` is therefore low from the last CRC byte
    until the last reply byte has been sent. A board top level whose host
    may send during that time needs a FIFO in front.

    A frame's payload goes into a frame buffer (one block RAM, half for the
    payload received, half for the reply sent), and nothing reaches the core
    before the CRC matched. WRITE and READ ranges are checked against the
    ``<target>_bytes`` fields of ``status`` before the first byte moves, so a
    rejected WRITE writes nothing. A good frame whose seq equals that of the
    previous good frame gets the stored reply again and is not executed.

    Parameters
    ----------
    timeout_cycles : int
        A frame is dropped, and the interface hunts for the next sync byte,
        after this many consecutive clock cycles without a byte of it.

    Members
    -------
    i_stream : In(stream.Signature(8))
        Bytes from the host.
    o_stream : Out(stream.Signature(8))
        Bytes to the host. ``payload`` stays stable while ``valid`` is high and ``ready`` low.
    write : Out(WritePortSignature())
        Byte writes of WRITE.
    read : Out(ReadPortSignature())
        Byte reads of READ.
    reset_state : Out(ResetStatePortSignature())
        Handshake of RESET_STATE.
    run : Out(RunPortSignature())
        Handshake of RUN.
    status : In(CORE_STATUS_LAYOUT)
        The core's fields of the STATUS reply, sampled while the reply is built.

    Latency and throughput
    ----------------------
    Clock cycles without gaps, backpressure or core stalls, as
    ``tests/test_hw_host.py`` measures them. ``o_stream.valid`` rises
    3 + E + F cycles after the cycle that accepts a request's last CRC byte:
    E is 1 per WRITE or READ data byte (0 for an empty transfer or STATUS),
    or the cycles from ``start`` to ``done`` of RUN and RESET_STATE (at
    least 1); F is the number of reply bytes built (75 for STATUS, 9 for a
    RUN reply with status OK, 1 otherwise). The reply to a duplicate or a
    BAD_CHECKSUM reply follows after 2 cycles. Both streams and the core
    ports move up to one byte per cycle.
    """

    def __init__(self, *, timeout_cycles):
        if not isinstance(timeout_cycles, int) or isinstance(timeout_cycles, bool):
            raise TypeError(f"timeout_cycles must be an integer, not {timeout_cycles!r}")
        if timeout_cycles < 1:
            raise ValueError(f"timeout_cycles must be a positive integer, not {timeout_cycles}")
        self._timeout_cycles = timeout_cycles
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "o_stream": Out(stream.Signature(8)),
            "write": Out(WritePortSignature()),
            "read": Out(ReadPortSignature()),
            "reset_state": Out(ResetStatePortSignature()),
            "run": Out(RunPortSignature()),
            "status": In(CORE_STATUS_LAYOUT),
        })

    @property
    def timeout_cycles(self):
        return self._timeout_cycles

    @property
    def max_payload(self):
        return MAX_PAYLOAD

    def _status_reply_bytes(self, link_values):
        """Return the STATUS reply payload as one value, byte 0 first: OK, then STATUS_FIELDS.

        ``link_values`` maps the names of the fields whose source is "link" to their values.
        """
        parts = [Const(Status.OK, 8)]
        for field in STATUS_FIELDS:
            if field.source == "core":
                value = Value.cast(self.status[field.name])
            else:
                value = link_values[field.name]
            if len(value) != 8 * field.size:
                raise ValueError(f"STATUS field {field.name} is {len(value)} bits, expected {8 * field.size}")
            parts.append(value)
        return Cat(*parts)

    def elaborate(self, platform):
        m = Module()

        m.submodules.crc = crc_engine = _crc_engine()
        # Half 0 contains the payload received and half 1 the reply, so that a new
        # frame never overwrites the reply that a duplicate must get again.
        m.submodules.buffer = buffer = Memory(shape=8, depth=2 * MAX_PAYLOAD, init=[])
        buffer_write = buffer.write_port()
        buffer_read = buffer.read_port(transparent_for=())
        reply_base = MAX_PAYLOAD

        rx = self.i_stream
        tx = self.o_stream
        rx_byte = rx.valid & rx.ready
        tx_byte = tx.valid & tx.ready

        # Request fields.
        seq = Signal(8)
        command = Signal(8)
        length = Signal(range(MAX_PAYLOAD + 1))
        length_low = Signal(8)
        received_crc = Signal(16)
        index = Signal(range(MAX_PAYLOAD + 1))
        # The first payload bytes, which contain every command's arguments.
        arguments = Signal(8 * READ_PAYLOAD_SIZE)
        target = arguments[0:8]
        address = arguments[8:40]
        read_count = arguments[40:56]
        token = arguments[0:32]

        # The stored reply of the previous good frame, in buffer half 1.
        last_valid = Signal()
        last_seq = Signal(8)
        last_command = Signal(8)
        last_length = Signal(range(MAX_PAYLOAD + 1))

        # The reply in progress. reply_word contains status, argmax and cycles,
        # and FILL copies fill_count bytes of it (or of the STATUS bytes) into the buffer.
        reply_word = Signal(8 * RUN_REPLY_SIZE)
        reply_length = Signal(range(MAX_PAYLOAD + 1))
        fill_count = Signal(range(MAX_PAYLOAD + 1))
        fill_from_status = Signal()
        reply_command = Signal(8)
        # An inline reply is the status byte in reply_word and bypasses the
        # buffer, so a BAD_CHECKSUM reply leaves the stored reply intact.
        reply_inline = Signal()
        port_address = Signal(ADDRESS_BITS)

        idle_cycles = Signal(range(self._timeout_cycles + 1))
        timed_out = Signal()

        # Link error counters, sized by their STATUS fields. They wrap around.
        sizes = {field.name: field.size for field in STATUS_FIELDS}
        checksum_errors = Signal(8 * sizes["checksum_errors"])
        length_errors = Signal(8 * sizes["length_errors"])
        timeouts = Signal(8 * sizes["timeouts"])

        status_bytes = self._status_reply_bytes({
            "protocol_version": Const(PROTOCOL_VERSION, 8 * sizes["protocol_version"]),
            "checksum_errors": checksum_errors,
            "length_errors": length_errors,
            "timeouts": timeouts,
        })
        assert len(status_bytes) == 8 * STATUS_REPLY_SIZE
        # Byte `index` of the reply that FILL copies into the buffer.
        status_byte = Array(status_bytes.word_select(i, 8) for i in range(STATUS_REPLY_SIZE))
        word_byte = Array(reply_word.word_select(i, 8) for i in range(RUN_REPLY_SIZE))
        fill_byte = Mux(fill_from_status, status_byte[index], word_byte[index])

        known_command = Cat(*(command == code for code in Command)).any()
        known_target = target < len(Target)
        target_size = Array(self.status[f"{member.name.lower()}_bytes"] for member in Target)[target]
        write_count = Signal(range(MAX_PAYLOAD + 1))
        m.d.comb += write_count.eq(length - WRITE_HEADER_SIZE)
        # A WEIGHTS frame's address is the word where its trits start, not a
        # byte address, so only that start is checked; the core's weight
        # loader drops words past the end and flags them.
        write_in_range = Mux(target == Target.WEIGHTS, address < target_size,
                             address + write_count <= target_size)
        read_in_range = address + read_count <= target_size

        m.d.comb += [
            self.write.target.eq(target),
            self.write.address.eq(port_address),
            self.write.data.eq(buffer_read.data),
            self.write.first.eq(index == WRITE_HEADER_SIZE),
            self.read.target.eq(target),
            self.read.address.eq(port_address),
            self.run.token.eq(token),
            crc_engine.data.eq(Mux(tx.valid, tx.payload, rx.payload)),
            buffer_read.addr.eq(index),
            buffer_write.data.eq(rx.payload),
        ]

        def finish(status):
            """End the execution of a good frame with a reply of one status byte."""
            m.d.sync += [
                reply_word.eq(status),
                reply_length.eq(1),
                fill_count.eq(1),
                fill_from_status.eq(0),
                index.eq(0),
            ]
            m.next = "FILL"

        def drop_on_timeout():
            with m.If(timed_out):
                m.d.sync += timeouts.eq(timeouts + 1)
                m.next = "HUNT"

        receiving = Signal()
        with m.FSM():
            # Receive a frame.
            with m.State("HUNT"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx_byte & (rx.payload == SYNC)):
                    m.d.comb += crc_engine.start.eq(1)
                    m.next = "SEQ"

            with m.State("SEQ"):
                m.d.comb += [rx.ready.eq(1), receiving.eq(1), crc_engine.valid.eq(rx_byte)]
                with m.If(rx_byte):
                    m.d.sync += seq.eq(rx.payload)
                    m.next = "COMMAND"
                drop_on_timeout()

            with m.State("COMMAND"):
                m.d.comb += [rx.ready.eq(1), receiving.eq(1), crc_engine.valid.eq(rx_byte)]
                with m.If(rx_byte):
                    m.d.sync += command.eq(rx.payload)
                    m.next = "LENGTH_LOW"
                drop_on_timeout()

            with m.State("LENGTH_LOW"):
                m.d.comb += [rx.ready.eq(1), receiving.eq(1), crc_engine.valid.eq(rx_byte)]
                with m.If(rx_byte):
                    m.d.sync += length_low.eq(rx.payload)
                    m.next = "LENGTH_HIGH"
                drop_on_timeout()

            with m.State("LENGTH_HIGH"):
                m.d.comb += [rx.ready.eq(1), receiving.eq(1), crc_engine.valid.eq(rx_byte)]
                full_length = Cat(length_low, rx.payload)
                with m.If(rx_byte):
                    m.d.sync += [length.eq(full_length), index.eq(0), arguments.eq(0)]
                    with m.If(full_length > MAX_PAYLOAD):
                        # The header cannot be trusted, so the frame is dropped silently.
                        m.d.sync += length_errors.eq(length_errors + 1)
                        m.next = "HUNT"
                    with m.Elif(full_length == 0):
                        m.next = "CRC_LOW"
                    with m.Else():
                        m.next = "PAYLOAD"
                drop_on_timeout()

            with m.State("PAYLOAD"):
                m.d.comb += [
                    rx.ready.eq(1),
                    receiving.eq(1),
                    crc_engine.valid.eq(rx_byte),
                    buffer_write.addr.eq(index),
                    buffer_write.en.eq(rx_byte),
                ]
                with m.If(rx_byte):
                    for position in range(READ_PAYLOAD_SIZE):
                        with m.If(index == position):
                            m.d.sync += arguments.word_select(position, 8).eq(rx.payload)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == length - 1):
                        m.next = "CRC_LOW"
                drop_on_timeout()

            with m.State("CRC_LOW"):
                m.d.comb += [rx.ready.eq(1), receiving.eq(1)]
                with m.If(rx_byte):
                    m.d.sync += received_crc[0:8].eq(rx.payload)
                    m.next = "CRC_HIGH"
                drop_on_timeout()

            with m.State("CRC_HIGH"):
                m.d.comb += [rx.ready.eq(1), receiving.eq(1)]
                with m.If(rx_byte):
                    m.d.sync += received_crc[8:16].eq(rx.payload)
                    m.next = "CHECK"
                drop_on_timeout()

            # Check the frame. Only a good, new frame reaches the core.
            with m.State("CHECK"):
                m.d.sync += reply_command.eq(command | REPLY_FLAG)
                with m.If(received_crc != crc_engine.crc):
                    m.d.sync += checksum_errors.eq(checksum_errors + 1)
                    with m.If(known_command):
                        m.d.sync += [
                            reply_word.eq(Status.BAD_CHECKSUM),
                            reply_length.eq(1),
                            reply_inline.eq(1),
                        ]
                        m.next = "SEND_SYNC"
                    with m.Else():
                        m.next = "HUNT"
                with m.Elif(last_valid & (seq == last_seq)):
                    m.d.sync += [
                        reply_command.eq(last_command | REPLY_FLAG),
                        reply_length.eq(last_length),
                        reply_inline.eq(0),
                    ]
                    m.next = "SEND_SYNC"
                with m.Else():
                    # The reply in buffer half 1 is about to be overwritten.
                    m.d.sync += [last_valid.eq(0), reply_inline.eq(0), port_address.eq(address)]
                    m.next = "DISPATCH"

            with m.State("DISPATCH"):
                with m.Switch(command):
                    with m.Case(Command.STATUS):
                        with m.If(length != 0):
                            finish(Status.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += [
                                reply_length.eq(STATUS_REPLY_SIZE),
                                fill_count.eq(STATUS_REPLY_SIZE),
                                fill_from_status.eq(1),
                                index.eq(0),
                            ]
                            m.next = "FILL"
                    with m.Case(Command.WRITE):
                        with m.If(length < WRITE_HEADER_SIZE):
                            finish(Status.BAD_LENGTH)
                        with m.Elif(~known_target):
                            finish(Status.UNKNOWN_TARGET)
                        with m.Elif(~write_in_range):
                            finish(Status.ADDRESS_OUT_OF_RANGE)
                        with m.Elif(length == WRITE_HEADER_SIZE):
                            finish(Status.OK)
                        with m.Else():
                            # Fetch the first data byte so that it is on the port in WRITE_DATA.
                            m.d.comb += buffer_read.addr.eq(WRITE_HEADER_SIZE)
                            m.d.sync += index.eq(WRITE_HEADER_SIZE)
                            m.next = "WRITE_DATA"
                    with m.Case(Command.READ):
                        with m.If((length != READ_PAYLOAD_SIZE) | (read_count > MAX_READ_COUNT)):
                            finish(Status.BAD_LENGTH)
                        with m.Elif(~known_target):
                            finish(Status.UNKNOWN_TARGET)
                        with m.Elif(~read_in_range):
                            finish(Status.ADDRESS_OUT_OF_RANGE)
                        with m.Elif(read_count == 0):
                            finish(Status.OK)
                        with m.Else():
                            m.d.sync += index.eq(0)
                            m.next = "READ_DATA"
                    with m.Case(Command.RESET_STATE):
                        with m.If(length != 0):
                            finish(Status.BAD_LENGTH)
                        with m.Else():
                            m.next = "RESET_STATE"
                    with m.Case(Command.RUN):
                        with m.If(length != RUN_PAYLOAD_SIZE):
                            finish(Status.BAD_LENGTH)
                        with m.Else():
                            m.next = "RUN"
                    with m.Default():
                        finish(Status.UNKNOWN_COMMAND)

            # Execute the command.
            with m.State("WRITE_DATA"):
                m.d.comb += self.write.valid.eq(1)
                with m.If(self.write.ready):
                    # Fetch the next byte in the same cycle, so a byte can move every cycle.
                    m.d.comb += buffer_read.addr.eq(index + 1)
                    m.d.sync += [index.eq(index + 1), port_address.eq(port_address + 1)]
                    with m.If(index == length - 1):
                        finish(Status.OK)

            with m.State("READ_DATA"):
                m.d.comb += [
                    self.read.valid.eq(1),
                    buffer_write.addr.eq(reply_base + 1 + index),
                    buffer_write.data.eq(self.read.data),
                    buffer_write.en.eq(self.read.ready),
                ]
                with m.If(self.read.ready):
                    m.d.sync += [index.eq(index + 1), port_address.eq(port_address + 1)]
                    with m.If(index == read_count - 1):
                        m.d.sync += [
                            reply_word.eq(Status.OK),
                            reply_length.eq(1 + read_count),
                            fill_count.eq(1),
                            fill_from_status.eq(0),
                            index.eq(0),
                        ]
                        m.next = "FILL"

            with m.State("RESET_STATE"):
                m.d.comb += self.reset_state.start.eq(1)
                with m.If(self.reset_state.done):
                    finish(self.reset_state.status)

            with m.State("RUN"):
                m.d.comb += self.run.start.eq(1)
                with m.If(self.run.done):
                    m.d.sync += reply_word.eq(Cat(self.run.status, self.run.argmax, self.run.cycles))
                    with m.If(self.run.status == Status.OK):
                        m.d.sync += [reply_length.eq(RUN_REPLY_SIZE), fill_count.eq(RUN_REPLY_SIZE)]
                    with m.Else():
                        m.d.sync += [reply_length.eq(1), fill_count.eq(1)]
                    m.d.sync += [fill_from_status.eq(0), index.eq(0)]
                    m.next = "FILL"

            # Store the reply in buffer half 1. From here on, a duplicate gets this reply.
            with m.State("FILL"):
                m.d.comb += [
                    buffer_write.addr.eq(reply_base + index),
                    buffer_write.data.eq(fill_byte),
                    buffer_write.en.eq(1),
                ]
                m.d.sync += index.eq(index + 1)
                with m.If(index == fill_count - 1):
                    m.d.sync += [
                        last_valid.eq(1),
                        last_seq.eq(seq),
                        last_command.eq(command),
                        last_length.eq(reply_length),
                    ]
                    m.next = "SEND_SYNC"

            # Send the reply frame.
            with m.State("SEND_SYNC"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(SYNC)]
                with m.If(tx_byte):
                    m.d.comb += crc_engine.start.eq(1)
                    m.next = "SEND_SEQ"

            with m.State("SEND_SEQ"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(seq), crc_engine.valid.eq(tx_byte)]
                with m.If(tx_byte):
                    m.next = "SEND_COMMAND"

            with m.State("SEND_COMMAND"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(reply_command), crc_engine.valid.eq(tx_byte)]
                with m.If(tx_byte):
                    m.next = "SEND_LENGTH_LOW"

            with m.State("SEND_LENGTH_LOW"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(reply_length[0:8]), crc_engine.valid.eq(tx_byte)]
                with m.If(tx_byte):
                    m.next = "SEND_LENGTH_HIGH"

            with m.State("SEND_LENGTH_HIGH"):
                m.d.comb += [
                    tx.valid.eq(1),
                    tx.payload.eq(reply_length >> 8),
                    crc_engine.valid.eq(tx_byte),
                    # Fetch reply byte 0 for SEND_PAYLOAD.
                    buffer_read.addr.eq(reply_base),
                ]
                with m.If(tx_byte):
                    m.d.sync += index.eq(0)
                    m.next = "SEND_PAYLOAD"

            with m.State("SEND_PAYLOAD"):
                m.d.comb += [
                    tx.valid.eq(1),
                    tx.payload.eq(Mux(reply_inline, reply_word[0:8], buffer_read.data)),
                    crc_engine.valid.eq(tx_byte),
                    buffer_read.addr.eq(reply_base + index),
                ]
                with m.If(tx_byte):
                    m.d.comb += buffer_read.addr.eq(reply_base + index + 1)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == reply_length - 1):
                        m.next = "SEND_CRC_LOW"

            with m.State("SEND_CRC_LOW"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(crc_engine.crc[0:8])]
                with m.If(tx_byte):
                    m.next = "SEND_CRC_HIGH"

            with m.State("SEND_CRC_HIGH"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(crc_engine.crc[8:16])]
                with m.If(tx_byte):
                    m.next = "HUNT"

        # Inter-byte timeout of a frame being received.
        with m.If(receiving & ~rx_byte):
            m.d.sync += idle_cycles.eq(idle_cycles + 1)
        with m.Else():
            m.d.sync += idle_cycles.eq(0)
        m.d.comb += timed_out.eq(receiving & ~rx_byte & (idle_cycles == self._timeout_cycles - 1))

        return m
