"""cocotb test bench of the accelerator under link faults, resets and random bytes.

Every test loads a small random-weight model through the real host driver
(:class:`firmware.device.Device` over :class:`firmware.protocol.Link`) and
runs a greedy generation. Each step is compared with the integer golden
model: the argmax, the LM head's accumulators and every layer's recurrent
state. :class:`FaultyPort` sits between the Link and
:class:`sim.tb_accelerator.SimulatedPort` and damages the bytes by a seeded
schedule, so the hardware receives, and the host reads, the damaged bytes.
Each test then checks how the hardware responded (its replies and its
STATUS error counters) and that the host either finished with every step
equal to the golden model or stopped with an error that names the fault.

Settings come from environment variables, which tests/test_sim_faults.py
passes through :func:`sim.build.run_bench`:

``MMFREE_SEED``   seed of the fault schedules and of the random bytes (default 1)
``MMFREE_TOKENS`` tokens to generate after the prompt (default 3)
"""

import os
import random

import cocotb
import numpy as np
from cocotb.simtime import get_sim_time
from cocotb.task import bridge
from cocotb.triggers import ClockCycles, RisingEdge

from firmware.device import Device, DeviceResetError
from firmware.protocol import (HEADER_SIZE, MAX_PAYLOAD, MIN_FRAME_SIZE, SYNC, Command, DeviceError, Link,
                               LinkError, Status, StatusFlag, Target, read_payload)
from golden.int_model import IntModel, prepare

from .tb_accelerator import CLOCK_NS, CYCLES_PER_SECOND, load_model, start_bench

MODEL = "random:24,40,64,2,1"
PROMPT = [1, 2, 3]
# The accelerators of sim.build drop a partial frame after 200,000 cycles
# without a byte, 0.2 s at CYCLES_PER_SECOND. The host waits longer for a
# reply, so a frame that lost bytes has been dropped before its retry comes.
# Link times its timeout on the wall clock and SimulatedPort turns the time
# left into cycles, so the margin also covers the host's own wall time.
LINK_TIMEOUT = 0.25
RETRIES = 2
# Probability of an idle cycle on either simulated stream.
IDLE = 0.05


def settings_from_environment():
    return {
        "seed": int(os.environ.get("MMFREE_SEED", "1")),
        "tokens": int(os.environ.get("MMFREE_TOKENS", "3")),
    }


class GoldenRun:
    """The greedy generation of the integer model: each step's input token and :class:`StepResult`."""

    def __init__(self, params, prompt, count):
        model = IntModel(params)
        self.inputs, self.results = [], []
        token = prompt[0]
        for index in range(len(prompt) - 1 + count):
            result = model.step(token)
            self.inputs.append(token)
            self.results.append(result)
            token = prompt[index + 1] if index + 1 < len(prompt) else result.token

    @property
    def steps(self):
        return len(self.inputs)


def _first_difference(expected, actual):
    expected, actual = np.ravel(expected), np.ravel(actual)
    index = int(np.flatnonzero(expected != actual)[0])
    return f"first at index {index}: expected {int(expected[index])}, received {int(actual[index])}"


def check_step(device, golden, index, result):
    """Compare step ``index`` of the device with the golden model; raise AssertionError at the first difference."""
    expected = golden.results[index]
    where = f"step {index} (input token {golden.inputs[index]})"
    assert result.argmax == expected.token, \
        f"{where}: argmax expected {expected.token}, received {result.argmax}"
    accumulators = device.head_accumulators()
    assert np.array_equal(accumulators, expected.head_acc), \
        f"{where}: head accumulators differ, {_first_difference(expected.head_acc, accumulators)}"
    states = device.states()
    assert np.array_equal(states, expected.states), \
        f"{where}: recurrent states differ, {_first_difference(expected.states, states)}"


def run_steps(device, golden, start, stop):
    """Run golden steps ``start .. stop - 1`` on the device and compare each."""
    for index in range(start, stop):
        check_step(device, golden, index, device.run(golden.inputs[index]))


class HostStopped(Exception):
    """Raised by :class:`FaultyPort` in place of the rest of a frame, as if the host program died mid-frame."""


class FaultyPort:
    """A byte port that damages the traffic of the port it wraps by a seeded schedule.

    Link writes one whole frame per ``write``, so a write is a frame. The
    port injects the faults of ``schedule``, ``(kind, command)`` pairs, in
    order: each into the first request of ``command`` at least ``gap``
    writes (a random integer in that range) after the fault before it. The
    kinds are:

    ``flip``         flip one bit of the request's payload or CRC
    ``flip_header``  flip one bit of the request's seq or command byte
    ``drop``         drop one byte of the request, any byte but the sync byte
    ``cut``          send only the first bytes of the request, never the rest
    ``reply_flip``   flip one bit of reply byte 5, 6 or 7, which follow the header
    ``reply_drop``   drop one of the first 8 bytes of the reply

    Every reply has at least 8 bytes: the 5-byte header, a status byte and
    the CRC. A retry (a write of the same bytes as the write before it) is
    never damaged, so that each fault costs the Link one retry or a few.
    Setting ``damage_every_try`` flips a payload or CRC bit of every write
    instead, retries included, and clearing ``enabled`` pauses the schedule.
    ``stop_at`` makes the write of that index send half of its frame and
    raise :class:`HostStopped`.
    """

    def __init__(self, port, rng, schedule=(), gap=(2, 4)):
        self.port = port
        self.rng = rng
        self.schedule = list(schedule)
        self.gap = gap
        self.enabled = True
        self.damage_every_try = False
        self.stop_at = None
        self.writes = 0
        self.repeats = 0
        self.faults = []            # (kind, description) of every fault injected
        self._previous = None
        self._next_fault = rng.randint(*gap)
        self._reply_fault = None    # (kind, offset into the reply stream)

    def write(self, data):
        frame = bytearray(data)
        index = self.writes
        self.writes += 1
        repeat = bytes(frame) == self._previous
        self.repeats += repeat
        self._previous = bytes(frame)
        name = f"write {index} (seq {frame[1]}, command 0x{frame[2]:02x}, {len(frame)} bytes)"

        if index == self.stop_at:
            self.port.write(bytes(frame[:len(frame) // 2]))
            self.faults.append(("stop", f"{name}: host stopped after {len(frame) // 2} bytes"))
            raise HostStopped(f"the host stopped in the middle of {name}")
        if self.damage_every_try:
            self._flip(frame, HEADER_SIZE, name)
        elif (self.enabled and self.schedule and not repeat and index >= self._next_fault
              and frame[2] == self.schedule[0][1]):
            self._next_fault = index + self.rng.randint(*self.gap)
            kind, _ = self.schedule.pop(0)
            self._damage(frame, kind, name)
        self.port.write(bytes(frame))

    def read(self, count, timeout):
        data = bytearray(self.port.read(count, timeout))
        if self._reply_fault is None:
            return bytes(data)
        kind, offset = self._reply_fault
        if offset >= len(data):
            self._reply_fault = (kind, offset - len(data))
            return bytes(data)
        self._reply_fault = None
        if kind == "reply_flip":
            data[offset] ^= 1 << self.rng.randrange(8)
        else:
            del data[offset]
            # The byte never arrives, so the read waits for one more byte as a serial port would.
            data += self.port.read(1, timeout)
        return bytes(data)

    def _flip(self, frame, start, name):
        position = self.rng.randrange(start, len(frame))
        bit = self.rng.randrange(8)
        frame[position] ^= 1 << bit
        return f"{name}: flipped bit {bit} of byte {position}"

    def _damage(self, frame, kind, name):
        if kind == "flip":
            description = self._flip(frame, HEADER_SIZE, name)
        elif kind == "flip_header":
            position, bit = self.rng.choice([1, 2]), self.rng.randrange(8)
            frame[position] ^= 1 << bit
            description = f"{name}: flipped bit {bit} of header byte {position}"
        elif kind == "drop":
            position = self.rng.randrange(1, len(frame))
            del frame[position]
            description = f"{name}: dropped byte {position}"
        elif kind == "cut":
            keep = self.rng.randrange(1, len(frame))
            del frame[keep:]
            description = f"{name}: cut after {keep} bytes"
        elif kind == "reply_flip":
            # Past the header, so the Link finds the damage by the CRC without waiting.
            offset = self.rng.randrange(HEADER_SIZE, MIN_FRAME_SIZE + 1)
            self._reply_fault = (kind, offset)
            description = f"{name}: flip a bit of reply byte {offset}"
        elif kind == "reply_drop":
            offset = self.rng.randrange(MIN_FRAME_SIZE + 1)
            self._reply_fault = (kind, offset)
            description = f"{name}: drop reply byte {offset}"
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        self.faults.append((kind, description))


def new_device(port):
    return Device(Link(port, timeout=LINK_TIMEOUT, retries=RETRIES))


def model_params():
    config, tensors = load_model(MODEL)
    return prepare(config, tensors)


def log_faults(log, port):
    for _, description in port.faults:
        log.info("fault: %s", description)
    log.info("%d faults, %d writes, %d retries", len(port.faults), port.writes, port.repeats)


def error_counters(status):
    return {name: status[name] for name in ("checksum_errors", "length_errors", "timeouts")}


async def start(dut):
    """Start the clock, reset the accelerator and return its SimulatedPort."""
    return await start_bench(dut, {"idle": IDLE})


@cocotb.test()
async def request_bit_flips(dut):
    """Flip a bit in requests: each gets a BAD_CHECKSUM reply or none, executes nothing, and its retry succeeds."""
    settings = settings_from_environment()
    port = FaultyPort(await start(dut), random.Random(settings["seed"]),
                      [("flip", Command.WRITE), ("flip_header", Command.WRITE), ("flip", Command.RESET_STATE),
                       ("flip", Command.RUN), ("flip", Command.READ), ("flip", Command.RUN)])

    def host():
        params = model_params()
        golden = GoldenRun(params, PROMPT, settings["tokens"])
        device = new_device(port)
        device.load(params)
        device.reset_state()
        run_steps(device, golden, 0, golden.steps - 1)

        # A WRITE of junk to the recurrent state whose every try arrives damaged.
        port.damage_every_try = True
        junk = bytes(range(64))
        try:
            device.link.write(Target.STATE, 0, junk)
        except LinkError as error:
            persistent = error
        else:
            raise AssertionError("a WRITE damaged on every try was expected to raise LinkError")
        port.damage_every_try = False

        state_after = device.states()
        check_step(device, golden, golden.steps - 1, device.run(golden.inputs[-1]))
        port.enabled = False
        return golden, persistent, state_after, device.link.status()

    golden, persistent, state_after, status = await bridge(host)()
    log_faults(dut._log, port)
    assert not port.schedule, f"{len(port.schedule)} faults of the schedule were not injected"
    flips = len(port.faults)
    # Each scheduled flip cost one retry, and the persistent fault cost three tries of one WRITE.
    assert port.repeats == flips + RETRIES
    assert error_counters(status) == {"checksum_errors": flips + RETRIES + 1, "length_errors": 0, "timeouts": 0}
    tries = "; ".join(f"try {n}: device reported a checksum mismatch in the request" for n in range(1, RETRIES + 2))
    assert str(persistent).endswith(f"failed after {RETRIES + 1} tries: {tries}"), str(persistent)
    assert np.array_equal(state_after, golden.results[-2].states), "the rejected WRITE changed the recurrent state"


@cocotb.test()
async def request_bytes_dropped_and_cut(dut):
    """Drop a byte of a request and cut another short: both sides time out and the host's retry succeeds."""
    settings = settings_from_environment()
    port = FaultyPort(await start(dut), random.Random(settings["seed"]),
                      [("drop", Command.WRITE), ("cut", Command.RUN)])

    def host():
        params = model_params()
        golden = GoldenRun(params, PROMPT, settings["tokens"])
        device = new_device(port)
        device.load(params)
        device.reset_state()
        run_steps(device, golden, 0, golden.steps)
        port.enabled = False
        return device.link.status()

    status = await bridge(host)()
    log_faults(dut._log, port)
    assert not port.schedule, f"{len(port.schedule)} faults of the schedule were not injected"
    faults = len(port.faults)
    assert faults <= port.repeats <= RETRIES * faults
    # Every damaged frame started with its sync byte, so the device dropped each one for a reason it counts.
    counters = error_counters(status)
    assert sum(counters.values()) >= faults, f"{counters} for {faults} damaged frames"


@cocotb.test()
async def reply_bytes_flipped_and_dropped(dut):
    """Damage replies: the host retries, and the device sends the stored reply again without executing twice."""
    settings = settings_from_environment()
    port = FaultyPort(await start(dut), random.Random(settings["seed"]),
                      [("reply_flip", Command.WRITE), ("reply_drop", Command.RUN), ("reply_flip", Command.RUN),
                       ("reply_flip", Command.READ), ("reply_flip", Command.RUN)])

    def host():
        params = model_params()
        golden = GoldenRun(params, PROMPT, settings["tokens"])
        device = new_device(port)
        device.load(params)
        device.reset_state()
        # A RUN executed twice would advance the recurrent state twice, which check_step compares.
        run_steps(device, golden, 0, golden.steps)
        port.enabled = False
        return device.link.status()

    status = await bridge(host)()
    log_faults(dut._log, port)
    assert not port.schedule, f"{len(port.schedule)} faults of the schedule were not injected"
    faults = len(port.faults)
    assert faults <= port.repeats <= RETRIES * faults
    assert error_counters(status) == {"checksum_errors": 0, "length_errors": 0, "timeouts": 0}


@cocotb.test()
async def host_stops_mid_load_and_restarts(dut):
    """Stop the host in the middle of a WRITE frame, then restart it: the new host loads and generates."""
    settings = settings_from_environment()
    simulated = await start(dut)
    rng = random.Random(settings["seed"])
    # Writes 0 and 1 are the STATUS of the Link and of the Device, then the load begins.
    stopping = FaultyPort(simulated, rng)
    stopping.stop_at = rng.randrange(4, 12)
    restarted = FaultyPort(simulated, rng)

    def host():
        params = model_params()
        golden = GoldenRun(params, PROMPT, settings["tokens"])
        try:
            new_device(stopping).load(params)
        except HostStopped as error:
            dut._log.info("%s", error)
        else:
            raise AssertionError("the host was expected to stop in the middle of the load")

        # The restarted host comes back within the device's frame timeout, so its
        # first frame lands in the partial frame and is lost.
        device = new_device(restarted)
        device.load(params)
        device.reset_state()
        run_steps(device, golden, 0, golden.steps)
        return device.link.status()

    status = await bridge(host)()
    log_faults(dut._log, stopping)
    assert 1 <= restarted.repeats <= RETRIES
    counters = error_counters(status)
    assert counters["checksum_errors"] + counters["timeouts"] >= 1, f"{counters} after a partial frame"


@cocotb.test()
async def reset_during_generation(dut):
    """Reset the accelerator in the middle of a RUN: the host finds it, reloads, replays the prompt and finishes."""
    settings = settings_from_environment()
    simulated = await start(dut)
    port = FaultyPort(simulated, random.Random(settings["seed"]))
    reset_run = 3           # the RUN command, counted from 1, that the reset interrupts
    reset_after = 600       # cycles into that RUN, which the test checks is still in progress then
    reset_seen = {}

    async def reset_in_run():
        for _ in range(reset_run):
            await RisingEdge(dut.busy)
        await ClockCycles(dut.clk, reset_after)
        reset_seen["busy"] = int(dut.busy.value)
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        # The shim's transmit count restarts at 0 with the reset.
        simulated.consumed = 0

    def host():
        params = model_params()
        golden = GoldenRun(params, PROMPT, settings["tokens"])
        device = new_device(port)
        device.load(params)
        device.reset_state()
        recoveries = []
        index = 0
        while index < golden.steps:
            try:
                result = device.run(golden.inputs[index])
            except DeviceResetError as error:
                dut._log.info("step %d: %s", index, error)
                recoveries.append((index, str(error)))
                device.load(params)
                device.reset_state()
                run_steps(device, golden, 0, index)
                continue
            check_step(device, golden, index, result)
            index += 1
        return recoveries

    cocotb.start_soon(reset_in_run())
    recoveries = await bridge(host)()
    assert reset_seen == {"busy": 1}, "the reset did not happen while a RUN was in progress"
    assert [index for index, _ in recoveries] == [reset_run - 1]
    token = PROMPT[reset_run - 1]
    assert recoveries[0][1] == (f"after RUN of token {token} needed 2 tries, STATUS reports no loaded model: "
                                f"the accelerator was reset or powered off; load the model again and replay "
                                f"the prompt")


@cocotb.test()
async def board_never_replies(dut):
    """Hold the accelerator in reset: the first STATUS fails after its tries with an error that names the timeouts."""
    port = await start(dut)
    dut.rst.value = 1       # held in reset for the whole test, so it never sends a byte
    timeout = 0.05

    def host():
        try:
            Device(Link(port, timeout=timeout, retries=RETRIES))
        except LinkError as error:
            return error
        raise AssertionError("a board that never replies was expected to raise LinkError")

    started = get_sim_time("ns")
    error = await bridge(host)()
    elapsed = (get_sim_time("ns") - started) / CLOCK_NS / CYCLES_PER_SECOND
    tries = "; ".join(f"try {n}: timed out after {timeout} s waiting for the reply" for n in range(1, RETRIES + 2))
    assert str(error) == f"STATUS (seq 0) failed after {RETRIES + 1} tries: {tries}"
    # Each try waits at most its timeout (less the host's own wall time), and
    # writing a frame takes a few cycles.
    bound = (RETRIES + 1) * timeout
    assert bound / 2 <= elapsed <= bound + 0.001, \
        f"gave up after {elapsed:.4f} s of simulated time, expected at most {bound} s"


def random_garbage(rng, size):
    """Return ``size`` random bytes with many sync bytes, some followed by a plausible header."""
    data = bytearray(rng.randbytes(size))
    for position in rng.sample(range(size - HEADER_SIZE), size // 64):
        data[position] = SYNC
    for position in rng.sample(range(size - HEADER_SIZE), size // 256):
        command = rng.choice([Command.WRITE, Command.READ, 0x00, 0x42])
        length = rng.randrange(MAX_PAYLOAD + 1)
        data[position:position + HEADER_SIZE] = bytes([SYNC, rng.randrange(256), command]) + length.to_bytes(2, "little")
    return bytes(data)


@cocotb.test()
async def random_bytes_to_decoder(dut):
    """Send random bytes between two frames: the command decoder does not wedge and the model is untouched."""
    settings = settings_from_environment()
    simulated = await start(dut)
    rng = random.Random(settings["seed"])
    port = FaultyPort(simulated, rng)
    garbage = random_garbage(rng, 4096)

    def host():
        params = model_params()
        golden = GoldenRun(params, PROMPT, settings["tokens"])
        device = new_device(port)
        device.load(params)
        device.reset_state()
        run_steps(device, golden, 0, 2)
        for offset in range(0, len(garbage), 512):
            simulated.write(garbage[offset:offset + 512])
        # The first frame after the garbage may land in a false frame, which costs a retry.
        status = device.link.status()
        run_steps(device, golden, 2, golden.steps)
        return device, status

    device, status = await bridge(host)()
    assert port.repeats <= RETRIES
    for name in ("rows", "inputs", "vector_lanes", "max_hidden", "max_vocab"):
        assert status[name] == device.status[name], f"STATUS field {name} changed after random bytes"
    assert status["flags"] & StatusFlag.LOADED
    counters = error_counters(status)
    dut._log.info("after %d random bytes: %s", len(garbage), counters)
    assert counters["checksum_errors"] > 0
    assert counters["length_errors"] > 0


@cocotb.test()
async def rejected_commands_keep_state(dut):
    """Send requests that the device rejects: each gets its status, and the model and its state stay intact."""
    settings = settings_from_environment()
    port = FaultyPort(await start(dut), random.Random(settings["seed"]))

    def host():
        params = model_params()
        golden = GoldenRun(params, PROMPT, settings["tokens"])
        device = new_device(port)
        device.load(params)
        device.reset_state()
        run_steps(device, golden, 0, 2)

        link, vocab = device.link, params.config.vocab_size
        state_bytes = device.status["state_bytes"]
        requests = [
            ("RUN of the first token past the vocabulary", lambda: link.run(vocab), Status.TOKEN_OUT_OF_RANGE),
            ("RUN of token 2**32 - 1", lambda: link.run(2**32 - 1), Status.TOKEN_OUT_OF_RANGE),
            ("RUN with a 1-byte payload", lambda: link.execute(Command.RUN, b"\x01"), Status.BAD_LENGTH),
            ("WRITE past the end of STATE", lambda: link.write(Target.STATE, state_bytes - 2, b"\x7f" * 4),
             Status.ADDRESS_OUT_OF_RANGE),
            ("READ of target 8", lambda: link.execute(Command.READ, read_payload(8, 0, 4)), Status.UNKNOWN_TARGET),
            ("READ of 1024 bytes", lambda: link.execute(Command.READ, read_payload(Target.STATE, 0, 1024)),
             Status.BAD_LENGTH),
            ("command 0x7e", lambda: link.execute(0x7E), Status.UNKNOWN_COMMAND),
        ]

        outcomes = []
        for name, request, expected in requests:
            try:
                request()
            except DeviceError as error:
                outcomes.append((name, Status(error.status), expected))
            else:
                outcomes.append((name, Status.OK, expected))

        try:
            device.run(vocab)
        except ValueError as error:
            host_check = str(error)
        else:
            host_check = None

        states = device.states()
        run_steps(device, golden, 2, golden.steps)
        return golden, outcomes, host_check, states

    golden, outcomes, host_check, states = await bridge(host)()
    for name, received, expected in outcomes:
        assert received == expected, f"{name}: expected status {expected.name}, received {received.name}"
    assert host_check == "token id 64 is outside the vocabulary 0..63"
    assert np.array_equal(states, golden.results[1].states), "a rejected request changed the recurrent state"
