"""Host side of the link protocol: CRC, frames, the decoder and the Link client."""

import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.protocol import (CRC_SIZE, HEADER_SIZE, MAX_PAYLOAD, MAX_READ_COUNT, MAX_WRITE_DATA,
                               PROTOCOL_VERSION, REPLY_FLAG, STATUS_FIELDS, STATUS_REPLY_SIZE, SYNC, BadFrame,
                               BadFrameKind, Command, DeviceError, Frame, FrameDecoder, Link, LinkError, RunResult,
                               Status, StatusFlag, Target, crc16, decode_status, encode_frame, encode_reply,
                               encode_status)

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


class FakeDevice:
    """In-memory device with the protocol's rules, and faults to inject into its traffic.

    Each fault attribute counts how many of the next requests or replies it hits.
    """

    def __init__(self, size=4096, vocab=50):
        self.memories = {target: bytearray(size) for target in Target}
        self.vocab = vocab
        self.decoder = FrameDecoder()
        self.output = bytearray()
        self.last = None  # (seq, reply bytes) of the previous good frame
        self.executed = []  # commands executed, in order
        self.frames_seen = 0
        self.drop_replies = 0
        self.corrupt_replies = 0
        self.lose_reply_bytes = 0
        self.corrupt_requests = 0
        self.delay_replies = 0  # replies sent only when the next request arrives
        self.delayed_output = bytearray()

    # Port methods, as Link calls them.
    def write(self, data):
        self.output += self.delayed_output
        self.delayed_output.clear()
        if self.corrupt_requests:
            self.corrupt_requests -= 1
            data = bytearray(data)
            data[-3] ^= 0x01
        for event in self.decoder.feed(data):
            self._handle(event)

    def read(self, n, timeout):
        data = bytes(self.output[:n])
        del self.output[:n]
        return data

    def _handle(self, event):
        if isinstance(event, BadFrame):
            if event.kind is BadFrameKind.BAD_CHECKSUM and event.command in list(Command):
                self._send(encode_reply(event.seq, event.command, Status.BAD_CHECKSUM))
            return
        self.frames_seen += 1
        if self.last is not None and event.seq == self.last[0]:
            self._send(self.last[1])
            return
        reply = encode_reply(event.seq, event.command, *self._execute(event))
        self.last = (event.seq, reply)
        self._send(reply)

    def _execute(self, frame):
        self.executed.append(Command(frame.command))
        payload = frame.payload
        if frame.command == Command.STATUS:
            values = {field.name: 0 for field in STATUS_FIELDS}
            values.update(protocol_version=PROTOCOL_VERSION, rows=16, loaded_vocab=self.vocab,
                          flags=StatusFlag.LOADED)
            return Status.OK, encode_status(values)
        if frame.command == Command.WRITE:
            target, address = struct.unpack_from("<BI", payload)
            data = payload[5:]
            memory = self.memories[Target(target)]
            if address + len(data) > len(memory):
                return (Status.ADDRESS_OUT_OF_RANGE,)
            memory[address:address + len(data)] = data
            return (Status.OK,)
        if frame.command == Command.READ:
            target, address, count = struct.unpack("<BIH", payload)
            return Status.OK, bytes(self.memories[Target(target)][address:address + count])
        if frame.command == Command.RESET_STATE:
            return (Status.OK,)
        if frame.command == Command.RUN:
            (token,) = struct.unpack("<I", payload)
            if token >= self.vocab:
                return (Status.TOKEN_OUT_OF_RANGE,)
            return Status.OK, struct.pack("<II", (token * 3) % self.vocab, 500 + token)
        return (Status.UNKNOWN_COMMAND,)

    def _send(self, reply):
        reply = bytearray(reply)
        if self.drop_replies:
            self.drop_replies -= 1
            return
        if self.corrupt_replies:
            self.corrupt_replies -= 1
            reply[-1] ^= 0x40
        if self.lose_reply_bytes:
            self.lose_reply_bytes -= 1
            del reply[HEADER_SIZE]
        if self.delay_replies:
            self.delay_replies -= 1
            self.delayed_output += reply
            return
        self.output += reply


def make_link(device, **options):
    options.setdefault("timeout", 0.5)
    return Link(device, **options)


# CRC and frames

def test_crc16_known_answer():
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


def test_crc16_continues_from_partial():
    assert crc16(b"56789", crc16(b"1234")) == 0x29B1


def test_encode_frame_layout():
    frame = encode_frame(0x12, Command.WRITE, b"\x01\x02\x03")
    assert frame[:HEADER_SIZE] == bytes([SYNC, 0x12, Command.WRITE, 3, 0])
    assert frame[HEADER_SIZE:-CRC_SIZE] == b"\x01\x02\x03"
    assert frame[-CRC_SIZE:] == crc16(frame[1:-CRC_SIZE]).to_bytes(2, "little")


def test_encode_reply_sets_flag_and_status():
    frame = encode_reply(7, Command.READ, Status.OK, b"ab")
    assert frame[2] == Command.READ | REPLY_FLAG
    assert frame[HEADER_SIZE:-CRC_SIZE] == b"\x00ab"


@pytest.mark.parametrize("size", [0, 1, 255, 256, MAX_PAYLOAD])
def test_frame_round_trip(size):
    payload = bytes(i * 7 % 256 for i in range(size))
    frame = encode_frame(200, Command.READ, payload)
    assert FrameDecoder().feed(frame) == [Frame(200, Command.READ, payload)]


def test_frame_round_trip_byte_by_byte():
    frames = [encode_frame(seq, Command.RUN, bytes([SYNC]) * seq) for seq in range(5)]
    decoder = FrameDecoder()
    events = []
    for byte in b"".join(frames):
        events += decoder.feed(bytes([byte]))
    assert events == [Frame(seq, Command.RUN, bytes([SYNC]) * seq) for seq in range(5)]
    assert decoder.discarded == 0


def test_encode_frame_rejects_long_payload():
    with pytest.raises(ValueError, match=f"payload must be at most {MAX_PAYLOAD} bytes, not {MAX_PAYLOAD + 1}"):
        encode_frame(0, Command.WRITE, bytes(MAX_PAYLOAD + 1))


def test_encode_frame_rejects_bad_seq():
    with pytest.raises(ValueError, match=r"seq must be an integer in 0\.\.255, not 256"):
        encode_frame(256, Command.STATUS)


# Decoder

def test_decoder_skips_garbage():
    frame = encode_frame(3, Command.STATUS)
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00\x11garbage" + frame) == [Frame(3, Command.STATUS, b"")]
    assert decoder.discarded == 9


def test_decoder_resynchronizes_after_corrupted_frame():
    bad = bytearray(encode_frame(1, Command.WRITE, b"data"))
    bad[7] ^= 0x04
    good = encode_frame(2, Command.STATUS)
    decoder = FrameDecoder()
    events = decoder.feed(bytes(bad) + good)
    assert len(events) == 2
    assert events[0].kind is BadFrameKind.BAD_CHECKSUM
    assert (events[0].seq, events[0].command, events[0].length) == (1, Command.WRITE, 4)
    assert events[1] == Frame(2, Command.STATUS, b"")
    assert decoder.discarded == len(bad)


def test_decoder_reports_length_above_max():
    header = bytes([SYNC, 9, Command.WRITE]) + (MAX_PAYLOAD + 1).to_bytes(2, "little")
    good = encode_frame(10, Command.STATUS)
    events = FrameDecoder().feed(header + good)
    assert events[0].kind is BadFrameKind.BAD_LENGTH
    assert str(events[0]) == (f"invalid length in frame seq 9 WRITE: expected at most {MAX_PAYLOAD}, "
                              f"received {MAX_PAYLOAD + 1}")
    assert events[1] == Frame(10, Command.STATUS, b"")


def test_decoder_finds_frame_behind_false_header():
    # A stray sync byte turns the real frame's first bytes into a header claiming a long payload.
    # Here the false length is WRITE | 3 << 8 = 770.
    frame = encode_frame(4, Command.WRITE, b"abc")
    decoder = FrameDecoder()
    assert decoder.feed(bytes([SYNC]) + frame) == []
    assert decoder.bytes_needed() == HEADER_SIZE + 770 + CRC_SIZE - 1 - len(frame)
    events = decoder.flush()
    assert events[0].kind is BadFrameKind.INCOMPLETE
    assert events[1] == Frame(4, Command.WRITE, b"abc")
    assert decoder.bytes_needed() == HEADER_SIZE + CRC_SIZE


def test_decoder_flush_of_partial_header():
    decoder = FrameDecoder()
    decoder.feed(bytes([SYNC, 1]))
    (event,) = decoder.flush()
    assert str(event) == ("incomplete frame: expected at least 7 bytes, "
                          "received 2 before the stream went idle")


def test_bad_checksum_message():
    frame = bytearray(encode_frame(5, Command.READ, b"abcdefg"))
    frame[-1] ^= 0x80
    (event, *_) = FrameDecoder().feed(bytes(frame))
    expected = crc16(frame[1:-2])
    received = frame[-2] | frame[-1] << 8
    assert str(event) == (f"checksum mismatch in frame seq 5 READ: expected 0x{expected:04x}, "
                          f"received 0x{received:04x}")


@st.composite
def frames(draw):
    seq = draw(st.integers(0, 255))
    command = draw(st.integers(0, 255))
    payload = draw(st.binary(max_size=64))
    return Frame(seq, command, payload)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_decoder_never_raises(data, cuts):
    decoder = FrameDecoder()
    bounds = sorted({0, len(data), *[cut for cut in cuts if cut <= len(data)]})
    for start, end in zip(bounds, bounds[1:]):
        for event in decoder.feed(data[start:end]):
            assert isinstance(event, (Frame, BadFrame))
            str(event)
        assert decoder.bytes_needed() >= 1
    for event in decoder.flush():
        str(event)


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=300), frame=frames(), syncs=st.lists(st.integers(0, 299), max_size=10))
def test_decoder_recovers_frame_after_any_garbage(garbage, frame, syncs):
    garbage = bytearray(garbage)
    for position in syncs:
        if position < len(garbage):
            garbage[position] = SYNC
    decoder = FrameDecoder()
    events = decoder.feed(bytes(garbage) + encode_frame(frame.seq, frame.command, frame.payload))
    events += decoder.flush()
    decoded = [event for event in events if isinstance(event, Frame)]
    assert decoded[-1] == frame


@settings(max_examples=100, deadline=None)
@given(frame=frames())
def test_bytes_needed_never_overshoots(frame):
    # Link reads bytes_needed() bytes at a time, so it must never ask for more than the frame has left.
    data = encode_frame(frame.seq, frame.command, frame.payload)
    decoder = FrameDecoder()
    position = 0
    while position < len(data):
        needed = decoder.bytes_needed()
        assert 1 <= needed <= len(data) - position
        decoder.feed(data[position:position + needed])
        position += needed
    assert decoder.bytes_needed() == HEADER_SIZE + CRC_SIZE


# STATUS fields

def test_status_round_trip():
    values = {field.name: index for index, field in enumerate(STATUS_FIELDS)}
    data = encode_status(values)
    assert len(data) == STATUS_REPLY_SIZE - 1
    assert decode_status(data) == values


def test_decode_status_rejects_wrong_size():
    with pytest.raises(ValueError, match=f"STATUS fields must be {STATUS_REPLY_SIZE - 1} bytes, not 3"):
        decode_status(b"abc")


def test_status_fields_have_memory_size_per_target():
    names = [field.name for field in STATUS_FIELDS]
    assert len(names) == len(set(names))
    for target in Target:
        assert f"{target.name.lower()}_bytes" in names


# Link

def test_link_commands_round_trip():
    device = FakeDevice()
    link = make_link(device)
    assert link.status()["rows"] == 16
    link.write(Target.WEIGHTS, 100, b"\x01\x02\x03")
    assert link.read(Target.WEIGHTS, 99, 5) == b"\x00\x01\x02\x03\x00"
    link.reset_state()
    assert link.run(7) == RunResult(argmax=21, cycles=507)
    # The first command is preceded by one STATUS that synchronizes the seq.
    assert device.executed == [Command.STATUS, Command.STATUS, Command.WRITE, Command.READ,
                               Command.RESET_STATE, Command.RUN]


def test_link_splits_long_transfers():
    device = FakeDevice()
    link = make_link(device)
    data = bytes(range(256)) * 10
    link.write(Target.EMBEDDINGS, 5, data)
    assert link.read(Target.EMBEDDINGS, 5, len(data)) == data
    assert device.executed.count(Command.WRITE) == -(-len(data) // MAX_WRITE_DATA)
    assert device.executed.count(Command.READ) == -(-len(data) // MAX_READ_COUNT)


def test_link_retries_dropped_run_reply_without_running_twice():
    device = FakeDevice()
    link = make_link(device, timeout=0.05)
    link.status()
    device.drop_replies = 1
    assert link.run(3) == RunResult(argmax=9, cycles=503)
    assert device.executed.count(Command.RUN) == 1
    assert device.frames_seen == 4  # synchronizing STATUS, STATUS, RUN and its retry


@pytest.mark.parametrize("fault", ["corrupt_replies", "lose_reply_bytes", "corrupt_requests"])
def test_link_retries_damaged_traffic(fault):
    device = FakeDevice()
    link = make_link(device, timeout=0.05)
    link.status()
    setattr(device, fault, 1)
    link.write(Target.STATE, 0, b"abc")
    assert device.memories[Target.STATE][:3] == b"abc"
    assert device.executed.count(Command.WRITE) == 1


def test_link_counts_tries_of_last_command():
    device = FakeDevice()
    link = make_link(device, timeout=0.05)
    link.status()
    assert link.last_tries == 1
    device.drop_replies = 1
    link.run(2)
    assert link.last_tries == 2
    link.reset_state()
    assert link.last_tries == 1


def test_link_ignores_late_duplicate_reply():
    device = FakeDevice()
    link = make_link(device, timeout=0.05)
    link.status()
    device.delay_replies = 1
    assert link.run(4) == RunResult(argmax=12, cycles=504)
    # The copy of the RUN reply that the retry caused is still queued; the next command skips it.
    assert link.run(5) == RunResult(argmax=15, cycles=505)
    assert device.executed.count(Command.RUN) == 2


def test_link_does_not_skip_command_after_seq_collision():
    device = FakeDevice()
    make_link(device, first_seq=8).write(Target.PROGRAM, 0, b"old")
    # A new session that starts on the seq of the device's previous good frame.
    link = make_link(device, first_seq=device.last[0])
    link.write(Target.PROGRAM, 0, b"new")
    assert device.memories[Target.PROGRAM][:3] == b"new"


def test_link_error_after_retries_exhausted():
    device = FakeDevice()
    link = make_link(device, timeout=0.01, retries=2, first_seq=40)
    link.status()
    device.drop_replies = 3
    with pytest.raises(LinkError) as info:
        link.run(1)
    error = info.value
    assert (error.command, error.seq, error.tries) == (Command.RUN, 42, 3)
    assert str(error) == ("RUN (seq 42) failed after 3 tries: "
                          "try 1: timed out after 0.01 s waiting for the reply; "
                          "try 2: timed out after 0.01 s waiting for the reply; "
                          "try 3: timed out after 0.01 s waiting for the reply")


def test_link_error_names_damaged_reply():
    device = FakeDevice()
    link = make_link(device, timeout=0.01, retries=0, first_seq=0)
    link.status()
    device.corrupt_replies = 1
    with pytest.raises(LinkError, match=r"READ \(seq 2\) failed after 1 try: try 1: checksum mismatch in frame "
                                        r"seq 2 READ reply: expected 0x[0-9a-f]{4}, received 0x[0-9a-f]{4}"):
        link.read(Target.VECTORS, 0, 4)


def test_link_error_on_unexpected_reply_size():
    device = FakeDevice()
    link = make_link(device)
    with pytest.raises(LinkError, match="reply has 2 bytes after the status byte, expected 3"):
        link.execute(Command.READ, struct.pack("<BIH", Target.STATE, 0, 2), reply_size=3)


def test_device_error_names_status():
    device = FakeDevice(vocab=50)
    link = make_link(device, first_seq=0)
    with pytest.raises(DeviceError) as info:
        link.run(50)
    assert info.value.status == Status.TOKEN_OUT_OF_RANGE
    assert str(info.value) == ("RUN (seq 1) was rejected by the device: "
                               "expected status OK, received TOKEN_OUT_OF_RANGE (8)")


def test_link_rejects_bad_options():
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds, not 0"):
        Link(FakeDevice(), timeout=0)
    with pytest.raises(ValueError, match="retries must be a non-negative integer, not -1"):
        Link(FakeDevice(), retries=-1)


# Specification

def test_doc_names_every_command_status_target_and_field():
    text = DOC.read_text()
    words = set(re.findall(r"[A-Za-z_]+", text))
    names = [*Command.__members__, *Status.__members__, *Target.__members__, *StatusFlag.__members__,
             *(field.name for field in STATUS_FIELDS)]
    missing = [name for name in names if name not in words]
    assert missing == []


def test_doc_states_the_numbers():
    text = DOC.read_text()
    for command in Command:
        assert re.search(rf"\b{command.name}\b.*0x{command.value:02x}", text), command.name
    for status in Status:
        assert re.search(rf"\|\s*{status.value}\s*\|\s*`?{status.name}`?", text), status.name
    assert f"{MAX_PAYLOAD}" in text
    assert f"{STATUS_REPLY_SIZE}" in text


def test_doc_status_table_matches_fields():
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d+) \|", DOC.read_text(), flags=re.MULTILINE)
    assert [(name, int(size)) for name, size in rows] == [(field.name, field.size) for field in STATUS_FIELDS]
