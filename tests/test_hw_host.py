"""HostInterface in simulation: real protocol frames against a fake core.

Every test sends the bytes that ``firmware.protocol`` builds, with random
idle gaps between request bytes, random backpressure on the reply stream
and random stalls of the fake core, and decodes the replies with the host
decoder.
"""

import random

import pytest
from amaranth.lib.crc import catalog
from amaranth.sim import Simulator

from firmware.protocol import (CRC_SIZE, HEADER_SIZE, MAX_PAYLOAD, MAX_READ_COUNT, PROTOCOL_VERSION, REPLY_FLAG, STATUS_FIELDS,
                               STATUS_REPLY_SIZE, SYNC, Command, Frame, FrameDecoder, Status, StatusFlag, Target,
                               crc16, decode_status, encode_frame, read_payload, run_payload, write_payload)
from hw.host import HostInterface

TIMEOUT_CYCLES = 40
# Maximum wait for a reply in cycles. The largest exchange here moves about 300 bytes.
REPLY_CYCLES = 4000

MEMORY_BYTES = {
    Target.PROGRAM: 64,
    Target.WEIGHTS: 512,
    Target.VECTORS: 128,
    Target.EMBEDDINGS: 96,
    Target.SCALARS: 16,
    Target.STATE: 32,
    Target.ACCUMULATORS: 512,
    Target.LOWER_BOUNDS: 24,
}
VOCAB = 100

CORE_STATUS = {
    "rows": 16,
    "inputs": 32,
    "vector_lanes": 4,
    "max_hidden": 128,
    "max_intermediate": 512,
    "max_vocab": 256,
    "max_layers": 4,
    **{f"{target.name.lower()}_bytes": size for target, size in MEMORY_BYTES.items()},
    "loaded_hidden": 96,
    "loaded_intermediate": 256,
    "loaded_vocab": VOCAB,
    "loaded_layers": 3,
    "flags": StatusFlag.LOADED,
}


def expected_argmax(token):
    return (token * 31 + 7) % VOCAB


class FakeCore:
    """A core made of one bytearray per target, serving every port after random stalls."""

    def __init__(self, rng, stall):
        self.rng = rng
        self.stall = stall
        self.memories = {target: bytearray(rng.randbytes(size)) for target, size in MEMORY_BYTES.items()}
        self.writes = []
        self.reads = []
        self.runs = []
        self.resets = 0

    def _wait_cycles(self):
        return self.rng.randrange(4) if self.rng.random() < self.stall else 0

    async def serve(self, ctx, dut):
        run_countdown = reset_countdown = None
        while True:
            ctx.set(dut.run.done, 0)
            ctx.set(dut.reset_state.done, 0)
            ctx.set(dut.write.ready, self.rng.random() >= self.stall)
            ctx.set(dut.read.ready, self.rng.random() >= self.stall)
            if ctx.get(dut.read.valid):
                memory = self.memories[Target(ctx.get(dut.read.target))]
                ctx.set(dut.read.data, memory[ctx.get(dut.read.address)])

            if run_countdown is None and ctx.get(dut.run.start):
                run_countdown = self._wait_cycles()
            if run_countdown == 0:
                token = ctx.get(dut.run.token)
                self.runs.append(token)
                ctx.set(dut.run.done, 1)
                if token >= VOCAB:
                    ctx.set(dut.run.status, Status.TOKEN_OUT_OF_RANGE)
                else:
                    ctx.set(dut.run.status, Status.OK)
                    ctx.set(dut.run.argmax, expected_argmax(token))
                    ctx.set(dut.run.cycles, 1000 + token)
            if run_countdown is not None:
                run_countdown = run_countdown - 1 if run_countdown else None

            if reset_countdown is None and ctx.get(dut.reset_state.start):
                reset_countdown = self._wait_cycles()
            if reset_countdown == 0:
                self.resets += 1
                ctx.set(dut.reset_state.done, 1)
                ctx.set(dut.reset_state.status, Status.OK)
            if reset_countdown is not None:
                reset_countdown = reset_countdown - 1 if reset_countdown else None

            _, _, *sampled = await ctx.tick().sample(
                dut.write.valid, dut.write.ready, dut.write.target, dut.write.address, dut.write.data,
                dut.read.valid, dut.read.ready, dut.read.address)
            write_valid, write_ready, target, address, byte, read_valid, read_ready, read_address = sampled
            if write_valid and write_ready:
                self.writes.append((Target(target), address, byte))
                self.memories[Target(target)][address] = byte
            if read_valid and read_ready:
                self.reads.append(read_address)


class Bench:
    """HostInterface, a FakeCore and a host that sends frames and collects the replies."""

    def __init__(self, seed=0, *, gap=0.3, backpressure=0.3, stall=0.3):
        self.rng = random.Random(seed)
        self.gap = gap
        self.backpressure = backpressure
        self.dut = HostInterface(timeout_cycles=TIMEOUT_CYCLES)
        self.core = FakeCore(self.rng, stall)
        self.decoder = FrameDecoder()
        self.events = []
        self.cycle = 0
        self.reply_cycles = []  # cycle of the first reply byte offered, per reply
        self.request_end_cycles = []  # cycle in which the last byte of a request was accepted
        self.reply_byte_cycles = []  # cycle of every reply byte accepted
        self.request_byte_cycles = []  # cycle of every request byte accepted

    async def _receive(self, ctx):
        stream = self.dut.o_stream
        offered = False
        while True:
            ctx.set(stream.ready, self.rng.random() >= self.backpressure)
            _, _, valid, ready, byte = await ctx.tick().sample(stream.valid, stream.ready, stream.payload)
            self.cycle += 1
            if valid and not offered and byte == SYNC:
                self.reply_cycles.append(self.cycle)
            offered = valid and not ready
            if valid and ready:
                self.reply_byte_cycles.append(self.cycle)
                self.events += self.decoder.feed(bytes([byte]))

    async def send(self, ctx, data):
        stream = self.dut.i_stream
        for byte in data:
            while self.rng.random() < self.gap:
                await ctx.tick()
            ctx.set(stream.valid, 1)
            ctx.set(stream.payload, byte)
            await ctx.tick().until(stream.ready)
            self.request_byte_cycles.append(self.cycle)
            ctx.set(stream.valid, 0)
        self.request_end_cycles.append(self.cycle)

    async def reply(self, ctx, request):
        """Send one request frame and return the next reply Frame."""
        count = len(self.events)
        await self.send(ctx, request)
        for _ in range(REPLY_CYCLES):
            if len(self.events) > count:
                break
            await ctx.tick()
        assert len(self.events) > count, f"no reply within {REPLY_CYCLES} cycles"
        assert len(self.events) == count + 1, f"expected one reply, received {self.events[count:]}"
        reply = self.events[-1]
        assert isinstance(reply, Frame), f"expected a valid reply frame, received {reply}"
        return reply

    async def idle(self, ctx, cycles):
        for _ in range(cycles):
            await ctx.tick()

    async def status(self, ctx, seq):
        reply = await self.reply(ctx, encode_frame(seq, Command.STATUS))
        assert reply.payload[0] == Status.OK
        return decode_status(reply.payload[1:])

    def run(self, script):
        sim = Simulator(self.dut)
        sim.add_clock(1e-6)

        async def core(ctx):
            await self.core.serve(ctx, self.dut)

        async def main(ctx):
            ctx.set(self.dut.status, CORE_STATUS)
            await script(ctx)

        sim.add_testbench(core, background=True)
        sim.add_testbench(self._receive, background=True)
        sim.add_testbench(main)
        sim.run()


def check_reply(reply, seq, command, status, data=None):
    assert reply.seq == seq
    assert reply.command == command | REPLY_FLAG
    assert reply.payload[0] == status, f"expected {status!r}, received {Status(reply.payload[0])!r}"
    if data is not None:
        assert reply.payload[1:] == data


def test_crc_matches_amaranth_catalog():
    rng = random.Random(1)
    parameters = catalog.CRC16_CCITT_FALSE(data_width=8)
    for size in [0, 1, 9, 100]:
        data = rng.randbytes(size)
        assert crc16(data) == parameters.compute(data)


def test_write_then_read_round_trip():
    bench = Bench(seed=1)
    data = bench.rng.randbytes(200)
    address = 37

    async def script(ctx):
        reply = await bench.reply(ctx, encode_frame(1, Command.WRITE, write_payload(Target.ACCUMULATORS, address, data)))
        check_reply(reply, 1, Command.WRITE, Status.OK, b"")
        reply = await bench.reply(ctx, encode_frame(2, Command.READ, read_payload(Target.ACCUMULATORS, address, len(data))))
        check_reply(reply, 2, Command.READ, Status.OK, data)

        # The last byte of every other target, so each target number reaches the core.
        for seq, target in enumerate(Target, start=3):
            last = MEMORY_BYTES[target] - 1
            reply = await bench.reply(ctx, encode_frame(seq, Command.WRITE, write_payload(target, last, b"\x5a")))
            check_reply(reply, seq, Command.WRITE, Status.OK)

    bench.run(script)
    assert bench.core.writes[:len(data)] == [(Target.ACCUMULATORS, address + i, byte) for i, byte in enumerate(data)]
    assert bench.core.reads == list(range(address, address + len(data)))
    assert bench.core.writes[len(data):] == [(target, MEMORY_BYTES[target] - 1, 0x5a) for target in Target]


def test_read_of_whole_target():
    bench = Bench(seed=2)

    async def script(ctx):
        size = MEMORY_BYTES[Target.VECTORS]
        reply = await bench.reply(ctx, encode_frame(0, Command.READ, read_payload(Target.VECTORS, 0, size)))
        check_reply(reply, 0, Command.READ, Status.OK, bytes(bench.core.memories[Target.VECTORS]))
        reply = await bench.reply(ctx, encode_frame(1, Command.READ, read_payload(Target.VECTORS, size, 0)))
        check_reply(reply, 1, Command.READ, Status.OK, b"")

    bench.run(script)


def test_status_reply_contents():
    bench = Bench(seed=3)

    async def script(ctx):
        reply = await bench.reply(ctx, encode_frame(0, Command.STATUS))
        check_reply(reply, 0, Command.STATUS, Status.OK)
        assert len(reply.payload) == STATUS_REPLY_SIZE
        fields = decode_status(reply.payload[1:])
        expected = {**CORE_STATUS, "protocol_version": PROTOCOL_VERSION,
                    "checksum_errors": 0, "length_errors": 0, "timeouts": 0}
        assert fields == expected

    bench.run(script)
    assert {field.name for field in STATUS_FIELDS} == set(CORE_STATUS) | {
        "protocol_version", "checksum_errors", "length_errors", "timeouts"}


def test_run_and_reset_state_handshakes():
    bench = Bench(seed=4)

    async def script(ctx):
        reply = await bench.reply(ctx, encode_frame(10, Command.RESET_STATE))
        check_reply(reply, 10, Command.RESET_STATE, Status.OK, b"")
        for seq, token in [(11, 5), (12, 99), (13, 0)]:
            reply = await bench.reply(ctx, encode_frame(seq, Command.RUN, run_payload(token)))
            result = expected_argmax(token).to_bytes(4, "little") + (1000 + token).to_bytes(4, "little")
            check_reply(reply, seq, Command.RUN, Status.OK, result)

        # The core's status code goes into a reply of the status byte alone.
        reply = await bench.reply(ctx, encode_frame(14, Command.RUN, run_payload(VOCAB)))
        check_reply(reply, 14, Command.RUN, Status.TOKEN_OUT_OF_RANGE, b"")

    bench.run(script)
    assert bench.core.resets == 1
    assert bench.core.runs == [5, 99, 0, VOCAB]


def test_flipped_bit_gives_bad_checksum_and_no_write():
    bench = Bench(seed=5)
    frame = encode_frame(20, Command.WRITE, write_payload(Target.STATE, 0, b"\x01\x02\x03\x04"))
    damaged = bytearray(frame)
    damaged[9] ^= 0x10  # a data byte

    async def script(ctx):
        reply = await bench.reply(ctx, bytes(damaged))
        check_reply(reply, 20, Command.WRITE, Status.BAD_CHECKSUM, b"")
        fields = await bench.status(ctx, 21)
        assert fields["checksum_errors"] == 1
        assert bench.core.writes == []

        # The retry with the same seq is a new good frame, not a duplicate.
        reply = await bench.reply(ctx, frame)
        check_reply(reply, 20, Command.WRITE, Status.OK, b"")

    bench.run(script)
    assert bench.core.writes == [(Target.STATE, i, i + 1) for i in range(4)]


def test_damaged_unknown_command_is_silent():
    bench = Bench(seed=6)
    frame = bytearray(encode_frame(30, 0x42, b"xyz"))
    frame[-1] ^= 0xFF

    async def script(ctx):
        await bench.send(ctx, bytes(frame))
        await bench.idle(ctx, 200)
        assert bench.events == []
        fields = await bench.status(ctx, 31)
        assert fields["checksum_errors"] == 1

    bench.run(script)


def test_cut_frame_times_out():
    bench = Bench(seed=7)
    frame = encode_frame(40, Command.WRITE, write_payload(Target.PROGRAM, 0, b"abcdefgh"))

    async def script(ctx):
        await bench.send(ctx, frame[:len(frame) // 2])
        await bench.idle(ctx, TIMEOUT_CYCLES + 10)
        assert bench.events == []
        fields = await bench.status(ctx, 41)
        assert fields["timeouts"] == 1

    bench.run(script)
    assert bench.core.writes == []


@pytest.mark.parametrize("gap", [TIMEOUT_CYCLES - 1, TIMEOUT_CYCLES])
def test_timeout_boundary(gap):
    # A frame survives gaps of timeout_cycles - 1 idle cycles between its bytes; one more drops it.
    bench = Bench(seed=8, gap=0)
    frame = encode_frame(42, Command.STATUS)

    async def script(ctx):
        for byte in frame:
            await bench.send(ctx, bytes([byte]))
            await bench.idle(ctx, gap)
        await bench.idle(ctx, 200)
        if gap < TIMEOUT_CYCLES:
            assert len(bench.events) == 1
            check_reply(bench.events[0], 42, Command.STATUS, Status.OK)
        else:
            assert bench.events == []
            fields = await bench.status(ctx, 43)
            assert fields["timeouts"] == 1

    bench.run(script)


def test_duplicate_run_replays_reply():
    bench = Bench(seed=9)
    frame = encode_frame(50, Command.RUN, run_payload(17))

    async def script(ctx):
        first = await bench.reply(ctx, frame)
        second = await bench.reply(ctx, frame)
        assert second == first
        check_reply(first, 50, Command.RUN, Status.OK)

        # A new seq runs again.
        reply = await bench.reply(ctx, encode_frame(51, Command.RUN, run_payload(17)))
        assert reply.payload == first.payload

    bench.run(script)
    assert bench.core.runs == [17, 17]


def test_duplicate_read_replays_stored_data():
    bench = Bench(seed=10)
    request = encode_frame(60, Command.READ, read_payload(Target.SCALARS, 0, 16))

    async def script(ctx):
        first = await bench.reply(ctx, request)
        second = await bench.reply(ctx, request)
        assert second == first

    bench.run(script)
    assert len(bench.core.reads) == 16


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_garbage_then_status(seed):
    bench = Bench(seed=seed)
    garbage = bytearray(bench.rng.randbytes(120))
    # Plenty of false sync bytes, some followed by a plausible header.
    for position in bench.rng.sample(range(len(garbage) - 5), 12):
        garbage[position] = SYNC
    garbage[40:45] = bytes([SYNC, 0x07, Command.WRITE, 0x10, 0x00])

    async def script(ctx):
        await bench.send(ctx, bytes(garbage))
        # Any false frame in progress times out.
        await bench.idle(ctx, TIMEOUT_CYCLES + 10)
        count = len(bench.events)
        fields = await bench.status(ctx, 70)
        assert bench.events[count].seq == 70
        assert fields["rows"] == CORE_STATUS["rows"]

    bench.run(script)
    assert bench.core.writes == []


def test_garbage_without_sync_then_status():
    # Without a sync byte in the garbage, nothing can swallow the frame that follows at once.
    bench = Bench(seed=19)
    garbage = bytes(byte for byte in bench.rng.randbytes(200) if byte != SYNC)

    async def script(ctx):
        reply = await bench.reply(ctx, garbage + encode_frame(71, Command.STATUS))
        check_reply(reply, 71, Command.STATUS, Status.OK)

    bench.run(script)


def test_rejected_requests():
    bench = Bench(seed=14)
    end = MEMORY_BYTES[Target.EMBEDDINGS]
    cases = [
        (encode_frame(80, 0x42, b"abc"), Status.UNKNOWN_COMMAND),
        (encode_frame(81, Command.WRITE, write_payload(9, 0, b"a")), Status.UNKNOWN_TARGET),
        (encode_frame(82, Command.READ, read_payload(len(Target), 0, 1)), Status.UNKNOWN_TARGET),
        (encode_frame(83, Command.WRITE, write_payload(Target.EMBEDDINGS, end - 2, b"abc")),
         Status.ADDRESS_OUT_OF_RANGE),
        (encode_frame(84, Command.WRITE, write_payload(Target.EMBEDDINGS, 0xFFFF_FFFF, b"a")),
         Status.ADDRESS_OUT_OF_RANGE),
        (encode_frame(85, Command.READ, read_payload(Target.EMBEDDINGS, end, 1)), Status.ADDRESS_OUT_OF_RANGE),
        (encode_frame(86, Command.STATUS, b"\x00"), Status.BAD_LENGTH),
        (encode_frame(87, Command.WRITE, b"\x01\x00\x00\x00"), Status.BAD_LENGTH),
        (encode_frame(88, Command.READ, read_payload(Target.WEIGHTS, 0, MAX_READ_COUNT + 1)), Status.BAD_LENGTH),
        (encode_frame(89, Command.READ, read_payload(Target.WEIGHTS, 0, 1) + b"\x00"), Status.BAD_LENGTH),
        (encode_frame(90, Command.RUN, b"\x01\x00"), Status.BAD_LENGTH),
        (encode_frame(91, Command.RESET_STATE, b"\x01"), Status.BAD_LENGTH),
    ]

    async def script(ctx):
        for frame, status in cases:
            reply = await bench.reply(ctx, frame)
            check_reply(reply, frame[1], frame[2], status, b"")

    bench.run(script)
    assert bench.core.writes == []
    assert bench.core.reads == []
    assert bench.core.runs == []
    assert bench.core.resets == 0


def test_length_above_max_payload_is_dropped():
    bench = Bench(seed=15)
    header = bytes([SYNC, 0x05, Command.WRITE]) + (MAX_PAYLOAD + 1).to_bytes(2, "little")

    async def script(ctx):
        await bench.send(ctx, header)
        await bench.idle(ctx, 100)
        assert bench.events == []
        fields = await bench.status(ctx, 6)
        assert fields["length_errors"] == 1
        assert fields["timeouts"] == 0

    bench.run(script)


def test_largest_write_frame():
    bench = Bench(seed=16, gap=0, backpressure=0, stall=0)
    data = bench.rng.randbytes(MAX_PAYLOAD - 5)

    async def script(ctx):
        # ACCUMULATORS has 512 bytes, so the full frame must be rejected whole.
        reply = await bench.reply(ctx, encode_frame(0, Command.WRITE, write_payload(Target.ACCUMULATORS, 0, data)))
        check_reply(reply, 0, Command.WRITE, Status.ADDRESS_OUT_OF_RANGE)

    bench.run(script)
    assert bench.core.writes == []


def test_reply_latency():
    # Without gaps, backpressure or stalls: the numbers that the HostInterface docstring states.
    bench = Bench(seed=17, gap=0, backpressure=0, stall=0)
    run = encode_frame(4, Command.RUN, run_payload(3))
    damaged = bytearray(encode_frame(5, Command.STATUS))
    damaged[-1] ^= 1
    damaged = bytes(damaged)

    async def script(ctx):
        await bench.reply(ctx, encode_frame(0, Command.WRITE, write_payload(Target.STATE, 0, b"")))
        await bench.reply(ctx, encode_frame(1, Command.WRITE, write_payload(Target.STATE, 0, bytes(10))))
        await bench.reply(ctx, encode_frame(2, Command.READ, read_payload(Target.STATE, 0, 10)))
        await bench.reply(ctx, encode_frame(3, Command.STATUS))
        await bench.reply(ctx, run)
        await bench.reply(ctx, run)
        await bench.reply(ctx, damaged)

    bench.run(script)
    latencies = [reply - end for reply, end in zip(bench.reply_cycles, bench.request_end_cycles)]
    # Each latency is 3 cycles, plus 1 per data byte moved or per cycle until done,
    # plus 1 per reply byte built. A duplicate or a BAD_CHECKSUM reply takes 2.
    assert latencies == [3 + 1, 3 + 10 + 1, 3 + 10 + 1, 3 + STATUS_REPLY_SIZE, 3 + 1 + 9, 2, 2]


def test_one_byte_per_cycle():
    bench = Bench(seed=18, gap=0, backpressure=0, stall=0)
    request = encode_frame(0, Command.STATUS)

    async def script(ctx):
        await bench.reply(ctx, request)

    bench.run(script)
    reply_size = HEADER_SIZE + STATUS_REPLY_SIZE + CRC_SIZE
    assert len(bench.reply_byte_cycles) == reply_size
    assert bench.reply_byte_cycles[-1] - bench.reply_byte_cycles[0] == reply_size - 1
    assert bench.request_byte_cycles[-1] - bench.request_byte_cycles[0] == len(request) - 1
