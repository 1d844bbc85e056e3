"""Host link protocol: frame format, commands, status codes and the host-side client.

The host and the accelerator exchange frames over a byte stream (a serial
link on a board, the same bytes in simulation). ``docs/PROTOCOL.md`` is the
reference. This module defines every number it names, and the device side
(:mod:`hw.host`) imports them from here.

Frame layout, both directions (integers little-endian)::

    sync     u8   0xA5
    seq      u8   request number; a reply echoes it
    command  u8   a Command; a reply carries command | 0x80
    length   u16  payload bytes, at most MAX_PAYLOAD
    payload       length bytes; a reply payload starts with a Status byte
    crc      u16  CRC-16/CCITT-FALSE over seq, command, length and payload

This module is pure Python (no Amaranth), so the host runtime can import it.
"""

import enum
import logging
import struct
import time
from dataclasses import dataclass

__all__ = [
    "SYNC", "MAX_PAYLOAD", "HEADER_SIZE", "CRC_SIZE", "MIN_FRAME_SIZE", "REPLY_FLAG", "PROTOCOL_VERSION",
    "CRC_POLYNOMIAL", "CRC_INIT", "WRITE_HEADER_SIZE", "READ_PAYLOAD_SIZE", "RUN_PAYLOAD_SIZE",
    "RUN_REPLY_SIZE", "MAX_WRITE_DATA", "MAX_READ_COUNT",
    "Command", "Status", "Target", "StatusFlag", "StatusField", "STATUS_FIELDS", "STATUS_REPLY_SIZE",
    "crc16", "encode_frame", "encode_reply", "write_payload", "read_payload", "run_payload",
    "encode_status", "decode_status",
    "Frame", "BadFrame", "BadFrameKind", "FrameDecoder",
    "RunResult", "LinkError", "DeviceError", "Link",
]

logger = logging.getLogger(__name__)

SYNC = 0xA5
# Largest payload of a frame in either direction. The device buffers a whole
# payload before it checks the CRC, so this also sizes its frame buffer.
MAX_PAYLOAD = 1024
# sync, seq, command and length.
HEADER_SIZE = 5
CRC_SIZE = 2
MIN_FRAME_SIZE = HEADER_SIZE + CRC_SIZE
REPLY_FLAG = 0x80
PROTOCOL_VERSION = 1

# CRC-16/CCITT-FALSE: not reflected, no final XOR.
CRC_POLYNOMIAL = 0x1021
CRC_INIT = 0xFFFF

# WRITE payload: target u8, address u32, then the data bytes.
WRITE_HEADER_SIZE = 5
# READ payload: target u8, address u32, count u16.
READ_PAYLOAD_SIZE = 7
# RUN payload: token u32. RUN reply: status u8, argmax token u32, cycles u32.
RUN_PAYLOAD_SIZE = 4
RUN_REPLY_SIZE = 9
MAX_WRITE_DATA = MAX_PAYLOAD - WRITE_HEADER_SIZE
# The READ reply carries a status byte in front of the data.
MAX_READ_COUNT = MAX_PAYLOAD - 1


class Command(enum.IntEnum):
    """Request command codes. A reply carries ``command | REPLY_FLAG``."""
    STATUS = 0x01
    WRITE = 0x02
    READ = 0x03
    RESET_STATE = 0x04
    RUN = 0x05


class Status(enum.IntEnum):
    """Status byte at the start of every reply payload."""
    OK = 0
    # The request's CRC did not match, so nothing was executed. The device
    # sends it only when the header names a known command, because only then
    # are seq and command plausible enough to address a reply to.
    BAD_CHECKSUM = 1
    # The payload length does not fit the command, or a READ count exceeds MAX_READ_COUNT.
    BAD_LENGTH = 2
    UNKNOWN_COMMAND = 3
    UNKNOWN_TARGET = 4
    # A WRITE or READ reaches past the end of the target memory. Nothing was written.
    ADDRESS_OUT_OF_RANGE = 5
    BUSY = 6
    NOT_LOADED = 7
    TOKEN_OUT_OF_RANGE = 8


class Target(enum.IntEnum):
    """Memories that WRITE and READ address, each byte-addressed from 0."""
    PROGRAM = 0
    WEIGHTS = 1
    VECTORS = 2
    EMBEDDINGS = 3
    SCALARS = 4
    STATE = 5
    ACCUMULATORS = 6
    LOWER_BOUNDS = 7


class StatusFlag(enum.IntFlag):
    """Bits of the ``flags`` field of the STATUS reply. Other bits read as 0."""
    LOADED = 1  # a program and a model image are loaded, so RUN can start


@dataclass(frozen=True)
class StatusField:
    """One unsigned little-endian field of the STATUS reply."""
    name: str
    size: int  # bytes
    source: str  # "link" if the host interface fills it, "core" if the core's status input supplies it
    description: str


def _status_fields():
    def link(name, size, description):
        return StatusField(name, size, "link", description)

    def core(name, size, description):
        return StatusField(name, size, "core", description)

    return (
        link("protocol_version", 2, "PROTOCOL_VERSION of the device"),
        core("rows", 2, "engine output rows per cycle (R)"),
        core("inputs", 2, "trits per row per cycle (K)"),
        core("vector_lanes", 2, "vector-unit elements per cycle (P)"),
        core("max_hidden", 2, "largest hidden size the memories hold"),
        core("max_intermediate", 2, "largest intermediate size the memories hold"),
        core("max_vocab", 4, "largest vocabulary the memories hold"),
        core("max_layers", 2, "largest layer count the memories hold"),
        *(core(f"{target.name.lower()}_bytes", 4,
               f"addressable bytes of the {target.name} target; WRITE and READ must stay below it")
          for target in Target),
        core("loaded_hidden", 2, "hidden size of the loaded model, 0 when none is loaded"),
        core("loaded_intermediate", 2, "intermediate size of the loaded model"),
        core("loaded_vocab", 4, "vocabulary size of the loaded model; RUN tokens must be below it"),
        core("loaded_layers", 2, "layer count of the loaded model"),
        core("flags", 2, "StatusFlag bits"),
        link("checksum_errors", 4, "frames dropped for a CRC mismatch since reset"),
        link("length_errors", 4, "frames dropped for a length above MAX_PAYLOAD since reset"),
        link("timeouts", 4, "frames dropped because their bytes stopped arriving, since reset"),
    )


# The STATUS reply payload: a Status byte, then these fields in this order.
STATUS_FIELDS = _status_fields()
STATUS_REPLY_SIZE = 1 + sum(field.size for field in STATUS_FIELDS)


def _crc16_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = (crc << 1) ^ CRC_POLYNOMIAL if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
        table.append(crc)
    return tuple(table)


_CRC16_TABLE = _crc16_table()


def crc16(data, crc=CRC_INIT):
    """Compute the CRC-16/CCITT-FALSE of ``data``, continuing from ``crc``."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[(crc >> 8) ^ byte]
    return crc


def _check_range(name, value, limit):
    if not isinstance(value, int) or not 0 <= value < limit:
        raise ValueError(f"{name} must be an integer in 0..{limit - 1}, not {value!r}")


def encode_frame(seq, command, payload=b""):
    """Build the bytes of one frame, sync byte and CRC included."""
    _check_range("seq", seq, 256)
    _check_range("command", command, 256)
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload must be at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    body = struct.pack("<BBH", seq, command, len(payload)) + payload
    return bytes([SYNC]) + body + struct.pack("<H", crc16(body))


def encode_reply(seq, command, status, data=b""):
    """Build a reply frame: the command with REPLY_FLAG set, a status byte, then ``data``."""
    return encode_frame(seq, command | REPLY_FLAG, bytes([status]) + bytes(data))


def write_payload(target, address, data):
    """Build a WRITE payload with at most MAX_WRITE_DATA bytes of ``data``."""
    _check_range("target", target, 256)
    _check_range("address", address, 1 << 32)
    return struct.pack("<BI", target, address) + bytes(data)


def read_payload(target, address, count):
    """Build a READ payload for ``count`` bytes."""
    _check_range("target", target, 256)
    _check_range("address", address, 1 << 32)
    _check_range("count", count, 1 << 16)
    return struct.pack("<BIH", target, address, count)


def run_payload(token):
    """Build a RUN payload for one input token."""
    _check_range("token", token, 1 << 32)
    return struct.pack("<I", token)


def encode_status(values):
    """Pack STATUS fields (a mapping of field name to value) into reply bytes, without the status byte."""
    missing = [field.name for field in STATUS_FIELDS if field.name not in values]
    if missing:
        raise ValueError(f"STATUS values are missing the fields {', '.join(missing)}")
    data = bytearray()
    for field in STATUS_FIELDS:
        _check_range(field.name, values[field.name], 1 << (8 * field.size))
        data += values[field.name].to_bytes(field.size, "little")
    return bytes(data)


def decode_status(data):
    """Unpack the STATUS fields that follow the status byte into a dict of field name to value."""
    expected = STATUS_REPLY_SIZE - 1
    if len(data) != expected:
        raise ValueError(f"STATUS fields must be {expected} bytes, not {len(data)}")
    values = {}
    offset = 0
    for field in STATUS_FIELDS:
        values[field.name] = int.from_bytes(data[offset:offset + field.size], "little")
        offset += field.size
    return values


def _describe_command(code):
    base = code & ~REPLY_FLAG
    try:
        name = Command(base).name
    except ValueError:
        return f"command 0x{code:02x}"
    return f"{name} reply" if code & REPLY_FLAG else name


@dataclass(frozen=True)
class Frame:
    """A decoded frame whose CRC matched."""
    seq: int
    command: int
    payload: bytes


class BadFrameKind(enum.Enum):
    """Reason the decoder rejected the bytes after a sync byte."""
    BAD_CHECKSUM = "checksum mismatch"
    BAD_LENGTH = "length above MAX_PAYLOAD"
    INCOMPLETE = "stream went idle before the frame was complete"


@dataclass(frozen=True)
class BadFrame:
    """A frame that FrameDecoder rejected, returned as an event and never raised.

    ``seq``, ``command`` and ``length`` come from an unchecked header and may be wrong.
    """
    kind: BadFrameKind
    seq: int | None  # None when the stream went idle before this header byte
    command: int | None
    length: int | None
    received_bytes: int
    expected_crc: int | None = None
    received_crc: int | None = None

    def __str__(self):
        if self.command is None:
            return (f"incomplete frame: expected at least {MIN_FRAME_SIZE} bytes, "
                    f"received {self.received_bytes} before the stream went idle")
        where = f"frame seq {self.seq} {_describe_command(self.command)}"
        if self.kind is BadFrameKind.BAD_CHECKSUM:
            return (f"checksum mismatch in {where}: expected 0x{self.expected_crc:04x}, "
                    f"received 0x{self.received_crc:04x}")
        if self.kind is BadFrameKind.BAD_LENGTH:
            return f"invalid length in {where}: expected at most {MAX_PAYLOAD}, received {self.length}"
        if self.length is None:
            expected = f"at least {MIN_FRAME_SIZE}"
        else:
            expected = HEADER_SIZE + self.length + CRC_SIZE
        return (f"incomplete {where}: expected {expected} bytes, "
                f"received {self.received_bytes} before the stream went idle")


class FrameDecoder:
    """Incremental frame decoder: feed it bytes, get Frame and BadFrame events.

    The decoder never raises on input. After a rejected frame it hunts for
    the next sync byte starting one byte after the rejected frame's sync
    byte, so a frame that garbage had swallowed into a false header is still
    found. ``discarded`` counts the bytes that belong to no good frame.
    """

    def __init__(self):
        self._buffer = bytearray()
        self.discarded = 0

    def feed(self, data):
        """Add received bytes and return the events they complete, in stream order."""
        self._buffer += data
        return self._scan()

    def flush(self):
        """Declare the stream idle: reject any partial frame and rescan the bytes behind it.

        Returns the events this produces. Afterwards the decoder is empty,
        so bytes of a partial frame that arrive later are treated as garbage.
        """
        events = self._scan()
        while self._buffer:
            events.append(self._reject_head(BadFrameKind.INCOMPLETE))
            events += self._scan()
        return events

    def bytes_needed(self):
        """Return how many more bytes the frame in progress needs at least (a safe read size)."""
        if len(self._buffer) < HEADER_SIZE:
            return MIN_FRAME_SIZE - len(self._buffer)
        length = self._buffer[3] | self._buffer[4] << 8
        return HEADER_SIZE + length + CRC_SIZE - len(self._buffer)

    def _reject_head(self, kind, **details):
        header = self._buffer[:HEADER_SIZE]
        seq = header[1] if len(header) > 1 else None
        command = header[2] if len(header) > 2 else None
        length = header[3] | header[4] << 8 if len(header) == HEADER_SIZE else None
        if length is None or length > MAX_PAYLOAD:
            frame_size = HEADER_SIZE
        else:
            frame_size = HEADER_SIZE + length + CRC_SIZE
        event = BadFrame(kind, seq, command, length, min(len(self._buffer), frame_size), **details)
        # Resume the hunt one byte after this sync byte.
        del self._buffer[:1]
        self.discarded += 1
        return event

    def _scan(self):
        events = []
        while True:
            start = self._buffer.find(SYNC)
            if start < 0:
                self.discarded += len(self._buffer)
                self._buffer.clear()
                return events
            self.discarded += start
            del self._buffer[:start]
            if len(self._buffer) < HEADER_SIZE:
                return events

            seq, command, length = struct.unpack_from("<BBH", self._buffer, 1)
            if length > MAX_PAYLOAD:
                events.append(self._reject_head(BadFrameKind.BAD_LENGTH))
                continue
            end = HEADER_SIZE + length + CRC_SIZE
            if len(self._buffer) < end:
                return events

            expected = crc16(self._buffer[1:end - CRC_SIZE])
            received = self._buffer[end - 2] | self._buffer[end - 1] << 8
            if expected != received:
                events.append(self._reject_head(BadFrameKind.BAD_CHECKSUM,
                                                expected_crc=expected, received_crc=received))
                continue
            events.append(Frame(seq, command, bytes(self._buffer[HEADER_SIZE:end - CRC_SIZE])))
            del self._buffer[:end]


@dataclass(frozen=True)
class RunResult:
    """Outcome of one RUN: the argmax token of the logits and the core's cycle count."""
    argmax: int
    cycles: int


class LinkError(Exception):
    """A command got no valid reply within the allowed tries, or its reply had the wrong form."""

    def __init__(self, command, seq, tries, problems):
        self.command = command
        self.seq = seq
        self.tries = tries
        self.problems = list(problems)
        details = "; ".join(f"try {number}: {problem}" for number, problem in enumerate(self.problems, 1))
        super().__init__(f"{_describe_command(command)} (seq {seq}) failed after {tries} "
                         f"{'try' if tries == 1 else 'tries'}: {details}")


class DeviceError(Exception):
    """The device executed or checked a command and replied with a status other than OK."""

    def __init__(self, command, seq, status):
        self.command = command
        self.seq = seq
        self.status = status
        try:
            status_name = Status(status).name
        except ValueError:
            status_name = "an unknown status"
        super().__init__(f"{_describe_command(command)} (seq {seq}) was rejected by the device: "
                         f"expected status OK, received {status_name} ({status})")


class Link:
    """Client that runs commands on the device over a byte port.

    ``port`` is any object with ``write(data)`` and ``read(n, timeout)``;
    ``read`` returns at most ``n`` bytes and returns fewer only when
    ``timeout`` seconds passed first (as a pyserial port does). Each command
    gets a new seq (mod 256). A try fails on a reply timeout, a reply with a
    bad CRC, a reply that lost bytes, or a BAD_CHECKSUM status. A failed try
    is repeated with the same seq up to ``retries`` times, which the device's
    duplicate rule makes safe for RUN. Then :class:`LinkError` is raised.
    """

    def __init__(self, port, *, timeout=1.0, retries=3, first_seq=0):
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, not {retries!r}")
        _check_range("first_seq", first_seq, 256)
        self._port = port
        self._timeout = timeout
        self._retries = retries
        self._seq = first_seq
        self._decoder = FrameDecoder()
        self._synchronized = False
        self._last_tries = 0

    @property
    def timeout(self):
        return self._timeout

    @property
    def retries(self):
        return self._retries

    @property
    def last_tries(self):
        """Tries that the last command with a valid reply took: 1 when the first try got it.

        More than 1 means a request or a reply was lost or damaged, and also
        that the device may have been reset while the command was pending.
        """
        return self._last_tries

    def execute(self, command, payload=b"", *, reply_size=None, timeout=None):
        """Run one command and return its reply payload after the status byte.

        ``reply_size`` is the expected number of bytes after the status byte,
        if known. ``timeout`` overrides the link's reply timeout in seconds.
        Raises :class:`DeviceError` for a status other than OK and
        :class:`LinkError` when no valid reply came or it had the wrong size.
        """
        if not self._synchronized:
            self._synchronize()
        seq = self._next_seq()
        return self._exchange(seq, command, payload, timeout or self._timeout, reply_size=reply_size)

    def status(self):
        """Return the STATUS fields as a dict of field name to value."""
        return decode_status(self.execute(Command.STATUS, reply_size=STATUS_REPLY_SIZE - 1))

    def write(self, target, address, data):
        """Write ``data`` to a target memory from ``address`` on, in frames of MAX_WRITE_DATA bytes."""
        data = bytes(data)
        for offset in range(0, len(data), MAX_WRITE_DATA):
            chunk = data[offset:offset + MAX_WRITE_DATA]
            self.execute(Command.WRITE, write_payload(target, address + offset, chunk), reply_size=0)

    def read(self, target, address, count):
        """Read ``count`` bytes of a target memory from ``address`` on, in frames of MAX_READ_COUNT bytes."""
        data = bytearray()
        for offset in range(0, count, MAX_READ_COUNT):
            chunk = min(MAX_READ_COUNT, count - offset)
            data += self.execute(Command.READ, read_payload(target, address + offset, chunk), reply_size=chunk)
        return bytes(data)

    def reset_state(self):
        """Clear the recurrent state of the loaded model."""
        self.execute(Command.RESET_STATE, reply_size=0)

    def run(self, token, *, timeout=None):
        """Run one decoding step on ``token``. ``timeout`` in seconds should cover the whole step."""
        reply = self.execute(Command.RUN, run_payload(token), reply_size=RUN_REPLY_SIZE - 1, timeout=timeout)
        argmax, cycles = struct.unpack("<II", reply)
        return RunResult(argmax, cycles)

    def _next_seq(self):
        seq = self._seq
        self._seq = (self._seq + 1) % 256
        return seq

    def _synchronize(self):
        # The device replies to a frame whose seq equals that of its previous
        # good frame with the stored reply, without executing it. A seq left
        # over from an earlier session could thus make the device skip a
        # WRITE, so the first frame of a link is a STATUS, which is harmless
        # to skip. Its reply may therefore belong to any command.
        seq = self._next_seq()
        self._exchange(seq, Command.STATUS, b"", self._timeout, any_command=True)
        self._synchronized = True

    def _exchange(self, seq, command, payload, timeout, *, reply_size=None, any_command=False):
        frame = encode_frame(seq, command, payload)
        problems = []
        tries = self._retries + 1
        for attempt in range(1, tries + 1):
            if attempt > 1:
                logger.warning("retrying %s seq %d (try %d of %d) after: %s",
                               _describe_command(command), seq, attempt, tries, problems[-1])
            self._port.write(frame)
            reply, problem = self._await_reply(seq, command, timeout, any_command)
            if reply is None:
                problems.append(problem)
                continue
            if not reply.payload:
                problems.append("reply has no status byte, expected at least 1 payload byte")
                continue

            status = reply.payload[0]
            if status == Status.BAD_CHECKSUM:
                problems.append("device reported a checksum mismatch in the request")
                continue
            if status != Status.OK and not any_command:
                raise DeviceError(command, seq, status)
            data = reply.payload[1:]
            if reply_size is not None and len(data) != reply_size:
                # A well-formed reply of the wrong size; a retry would get the same reply.
                problems.append(f"reply has {len(data)} bytes after the status byte, expected {reply_size}")
                raise LinkError(command, seq, attempt, problems)
            self._last_tries = attempt
            return data
        raise LinkError(command, seq, tries, problems)

    def _await_reply(self, seq, command, timeout, any_command):
        """Read until the reply to ``seq`` arrives. Return (frame, None), or (None, problem) on failure."""
        expected_command = command | REPLY_FLAG
        notes = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            needed = self._decoder.bytes_needed()
            data = self._port.read(needed, remaining)
            reply, damaged = self._match_reply(self._decoder.feed(data), seq, expected_command, any_command, notes)
            if reply is not None:
                return reply, None
            if damaged:
                # The reply itself arrived with a bad CRC, and waiting longer cannot repair it.
                return None, notes[-1]
            if len(data) < needed:
                break

        # The port went idle: a partial frame in the decoder is dead, but a
        # reply may sit behind a false sync byte that claimed a long payload.
        reply, damaged = self._match_reply(self._decoder.flush(), seq, expected_command, any_command, notes)
        if reply is not None:
            return reply, None
        detail = f" ({'; '.join(notes)})" if notes else ""
        return None, f"timed out after {timeout} s waiting for the reply{detail}"

    @staticmethod
    def _match_reply(events, seq, expected_command, any_command, notes):
        """Return (the reply to ``seq`` or None, whether that reply came damaged), noting other events."""
        damaged = False
        for event in events:
            if isinstance(event, BadFrame):
                notes.append(str(event))
                if (event.kind is BadFrameKind.BAD_CHECKSUM and event.seq == seq
                        and (any_command or event.command == expected_command)):
                    damaged = True
            elif event.seq != seq:
                # A late copy of an earlier reply, which its seq distinguishes.
                logger.debug("ignoring reply seq %d while waiting for seq %d", event.seq, seq)
            elif any_command or event.command == expected_command:
                return event, False
            else:
                notes.append(f"reply seq {seq} has command 0x{event.command:02x}, "
                             f"expected 0x{expected_command:02x}")
        return None, damaged
