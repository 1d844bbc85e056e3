"""cocotb test bench of the whole accelerator, driven through its link.

The bench starts the clock; the simulation-only :class:`sim.shim.LinkShim`
feeds the byte stream in with random idle cycles and takes the byte stream
out with random backpressure, a whole frame at a time. The host
driver (:class:`firmware.device.Device` over :class:`firmware.protocol.Link`),
the same code that talks to a board, runs in a thread and reaches the
simulation through :class:`SimulatedPort`, so the bench exercises exactly
the bytes a board would see. A scoreboard compares, for every token, the
argmax, the LM head's accumulators and every layer's recurrent state with
the integer golden model.

Settings come from environment variables (set by :mod:`sim.build`):

``MMFREE_CORE``      the core parameters (JSON)
``MMFREE_MODEL``     a model directory, or ``random:H,I,V,L,SEED``
``MMFREE_PROMPT``    prompt text (byte-level models) or comma-separated token ids
``MMFREE_TOKENS``    tokens to generate after the prompt
``MMFREE_IDLE``      probability of an idle cycle on either stream (0 to 1)
``MMFREE_DEMO``      when 1, print the generated text as it comes
``MMFREE_CHECK_STATE`` when 0, skip reading back the recurrent state (the demo)
"""

import json
import os
import sys
import time

import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer

from firmware.device import Device
from firmware.isa import CoreParams
from firmware.protocol import Link
from golden.checkpoint import load_checkpoint
from golden.config import ModelConfig
from golden.int_model import IntModel, prepare
from golden.synthetic import random_tensors

CLOCK_NS = 10
# The link's timeouts are in seconds; in simulation one second is this many cycles.
CYCLES_PER_SECOND = 1_000_000
# A write gives up when the accelerator has not taken the previous bytes for
# this many cycles, over 200 times the longest decoding step of the benches.
WRITE_STALL_CYCLES = 2_000_000


async def send_through_shim(dut, data):
    """Deposit ``data`` in the link shim's receive buffer and start sending it; return after two clock edges.

    ``rx_busy``, set at the first edge, reads as set only after the second.
    """
    for index, byte in enumerate(data):
        dut.rx_buffer[index].value = byte
    dut.rx_length.value = len(data)
    dut.rx_start.value = 1
    await RisingEdge(dut.clk)
    dut.rx_start.value = 0
    await RisingEdge(dut.clk)


class SimulatedPort:
    """A byte port (``write``, ``read(n, timeout)``) on the simulated accelerator.

    Frames go through :class:`sim.shim.LinkShim`: a write deposits the bytes
    in the shim's receive buffer through VPI and starts it, and a read sleeps
    until the shim has captured enough reply bytes, so no Python runs per
    clock cycle. The methods block the calling thread while the simulation
    runs; they must be called from a function started with
    :func:`cocotb.task.bridge`.
    """

    def __init__(self, dut, idle):
        self.dut = dut
        self.rx_capacity = len(dut.rx_buffer)
        self.tx_capacity = len(dut.tx_buffer)
        self.consumed = 0
        self.bytes_in = 0
        dut.idle_threshold.value = min(255, round(idle * 256))
        dut.tx_wanted.value = 0

    @resume
    async def _write(self, data):
        dut = self.dut
        for offset in range(0, len(data), self.rx_capacity):
            chunk = data[offset:offset + self.rx_capacity]
            while dut.rx_busy.value:
                await First(FallingEdge(dut.rx_busy), Timer(WRITE_STALL_CYCLES * CLOCK_NS, "ns"))
                if dut.rx_busy.value:
                    # A serial port would not block here, but this bench would wait forever.
                    raise RuntimeError(f"the accelerator has not taken a byte for {WRITE_STALL_CYCLES} cycles: "
                                       f"it is stuck in a command and needs a reset")
            await send_through_shim(dut, chunk)
            self.bytes_in += len(chunk)

    @resume
    async def _read(self, count, cycles):
        dut = self.dut
        wanted = self.consumed + count
        if int(dut.tx_count.value) < wanted:
            dut.tx_wanted.value = wanted
            await First(RisingEdge(dut.tx_reached), Timer(cycles * CLOCK_NS, "ns"))
        available = min(wanted, int(dut.tx_count.value))
        if available - self.consumed > self.tx_capacity:
            raise RuntimeError("the simulated link's transmit ring overflowed; read replies sooner")
        data = bytes(int(dut.tx_buffer[i % self.tx_capacity].value) for i in range(self.consumed, available))
        self.consumed = available
        return data

    @property
    def bytes_out(self):
        return self.consumed

    def write(self, data):
        self._write(bytes(data))

    def read(self, count, timeout):
        return self._read(count, max(1, int(timeout * CYCLES_PER_SECOND)))


def load_model(spec):
    """Return ``(config, tensors)`` of a model directory or of ``random:H,I,V,L,SEED``."""
    if spec.startswith("random:"):
        H, I, V, L, seed = (int(part) for part in spec[len("random:"):].split(","))
        config = ModelConfig(vocab_size=V, hidden_size=H, intermediate_size=I, num_layers=L)
        return config, random_tensors(config, seed)
    return load_checkpoint(spec)


def prompt_tokens(text, vocab_size):
    if text.startswith("ids:"):
        tokens = [int(part) for part in text[4:].split(",") if part.strip()]
    else:
        tokens = list(text.encode("utf-8"))
    if not tokens:
        raise ValueError(f"MMFREE_PROMPT {text!r} is empty; give prompt text or token ids such as 'ids:1,2,3'")
    return tokens


class Scoreboard:
    """Compares the accelerator with the integer model, value for value."""

    def __init__(self, log):
        self.log = log
        self.tokens = 0
        self.mismatches = 0
        self.values = 0

    def compare(self, step, name, expected, actual):
        expected, actual = list(map(int, expected)), list(map(int, actual))
        self.values += len(expected)
        if expected != actual:
            wrong = [i for i, (a, b) in enumerate(zip(expected, actual)) if a != b]
            self.mismatches += 1
            first = wrong[0] if wrong else min(len(expected), len(actual))
            self.log.error("token %d: %s differs at %d of %d values (first at index %d: expected %s, got %s)",
                           step, name, len(wrong), len(expected), first,
                           expected[first] if first < len(expected) else "nothing",
                           actual[first] if first < len(actual) else "nothing")


def host_session(port, log, settings):
    """Load the model, generate and compare every token: the host side of a test, run in a thread."""
    config, tensors = load_model(settings["model"])
    params = prepare(config, tensors)
    golden = IntModel(params)
    device = Device(Link(port, timeout=0.5, retries=2))
    started = time.monotonic()
    device.load(params)
    log.info("loaded the model in %.1f s of wall time", time.monotonic() - started)
    device.reset_state()

    scoreboard = Scoreboard(log)
    prompt = prompt_tokens(settings["prompt"], config.vocab_size)
    demo = settings["demo"]
    cycles = []
    generated = []
    token = prompt[0]
    total = len(prompt) - 1 + settings["tokens"]
    started = time.monotonic()
    if demo:
        sys.stdout.write(settings["prompt"])
        sys.stdout.flush()
    for step in range(total):
        result = device.run(token, timeout=2.0)
        expected = golden.step(token)
        cycles.append(result.cycles)
        scoreboard.compare(step, "argmax", [expected.token], [result.argmax])
        scoreboard.compare(step, "head accumulators", expected.head_acc, device.head_accumulators())
        if settings["check_state"]:
            scoreboard.compare(step, "recurrent state", expected.states.ravel(), device.states().ravel())
        scoreboard.tokens += 1
        if step + 1 < len(prompt):
            token = prompt[step + 1]
        else:
            token = result.argmax
            generated.append(token)
            if demo:
                sys.stdout.buffer.write(bytes([token]) if token < 256 else b"?")
                sys.stdout.flush()
    elapsed = time.monotonic() - started
    if demo:
        sys.stdout.write("\n")
    mean_cycles = sum(cycles) / len(cycles)
    summary = (f"{settings['tokens']} tokens, {scoreboard.mismatches} mismatches against golden, "
               f"{mean_cycles:.0f} cycles/token")
    log.info("%s; %d values compared; %.2f s wall per token", summary, scoreboard.values, elapsed / total)
    return scoreboard, summary, mean_cycles


def settings_from_environment():
    return {
        "model": os.environ.get("MMFREE_MODEL", "random:24,40,64,2,1"),
        "prompt": os.environ.get("MMFREE_PROMPT", "ids:1,2,3"),
        "tokens": int(os.environ.get("MMFREE_TOKENS", "4")),
        "idle": float(os.environ.get("MMFREE_IDLE", "0.2")),
        "demo": os.environ.get("MMFREE_DEMO") == "1",
        "check_state": os.environ.get("MMFREE_CHECK_STATE", "1") == "1",
    }


async def start_bench(dut, settings):
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    dut.rx_start.value = 0
    dut.rx_write_en.value = 0
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    return SimulatedPort(dut, settings["idle"])


@cocotb.test()
async def generate_and_compare(dut):
    """Load a model through the link, generate tokens and compare each with the golden model."""
    settings = settings_from_environment()
    core = CoreParams(**json.loads(os.environ["MMFREE_CORE"]))
    dut._log.info("core: %d lanes (%d x %d), %d vector lanes; model %s",
                  core.lanes, core.rows, core.inputs, core.vector_lanes, settings["model"])
    port = await start_bench(dut, settings)
    started = time.monotonic()
    start_ns = get_sim_time("ns")
    scoreboard, summary, _ = await bridge(host_session)(port, dut._log, settings)
    simulated = (get_sim_time("ns") - start_ns) / CLOCK_NS
    wall = time.monotonic() - started
    dut._log.info("simulated %d cycles in %.1f s: %.0f cycles/s; %d bytes in, %d bytes out",
                  simulated, wall, simulated / wall, port.bytes_in, port.bytes_out)
    if settings["demo"]:
        print(f"demo: {summary}", flush=True)
    assert scoreboard.mismatches == 0, f"{scoreboard.mismatches} mismatches against the golden model"
    assert scoreboard.tokens > 0
