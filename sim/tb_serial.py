"""cocotb bench of the board's serial design, driven by the `mmfree` command through a pseudo-terminal.

The bench opens a pseudo-terminal pair, starts the host command (for
example ``mmfree run --check ...``) as a subprocess on the terminal's device
(``/dev/pts/N``), and bridges bytes between the terminal and the serial
lines of :class:`sim.serial_shim.SerialHarness`. The command opens an
ordinary serial port, and the design's pins carry 8N1 bits, so the bench
exercises exactly the bytes and the code path of a board.

No Python runs per clock cycle. The bench deposits the host's bytes in the
shim's receive buffer through VPI, and the hardware serializes them onto the
design's ``rx`` line at the UART divisor. The design's ``tx`` line is
deserialized into the shim's transmit ring, which the bench reads when a
reply frame is complete or at the latest every ``POLL_CYCLES``.

When every request has its reply and no byte is in flight, the design is
idle until the host sends again. The bench then waits for the host in
``select`` without advancing simulated time, so an idle simulator uses no
CPU while the host program works.

Settings come from environment variables (set by :mod:`sim.serial_demo`):

``MMFREE_HOST_COMMAND``    the host command as a JSON list, without ``--port``
``MMFREE_EXPECTED_OUTPUT`` hex of the host command's expected standard output (optional)
``MMFREE_IDLE``            probability of an idle cycle on the shim's byte streams (0 to 1)
``MMFREE_WALL_LIMIT``      seconds after which the host command is killed and the test fails
``MMFREE_DIVISOR``         clock cycles per bit of the serial lines, for the report
"""

import json
import os
import re
import select
import subprocess
import sys
import time
import tty
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer

from boards.uart import BITS_PER_FRAME
from firmware.protocol import REPLY_FLAG, Frame, FrameDecoder
from sim.tb_accelerator import send_through_shim

CLOCK_NS = 10
# The bench looks at both directions at least this often while the design works.
POLL_CYCLES = 2000
# Maximum wall-clock time of one select call that waits for the host while the design is idle.
HOST_WAIT_S = 0.1
ROOT = Path(__file__).resolve().parent.parent


class HostLimitExceeded(Exception):
    """The host command ran longer than MMFREE_WALL_LIMIT seconds."""


class PtyBridge:
    """Moves bytes between a pseudo-terminal's master side and the shim's frame buffers.

    Frame decoders on both directions count requests and replies, so the
    bridge can tell when the design is idle. They only count: every byte is
    forwarded as it is, frame or not.
    """

    def __init__(self, dut, master, idle):
        self.dut = dut
        self.master = master
        self.rx_capacity = len(dut.rx_buffer)
        self.tx_capacity = len(dut.tx_buffer)
        self.to_host = bytearray()
        self.consumed = 0
        self.bytes_to_device = 0
        self.host_frames = FrameDecoder()
        self.device_frames = FrameDecoder()
        self.requests = 0
        self.replies = 0
        dut.idle_threshold.value = min(255, round(idle * 256))
        dut.tx_wanted.value = 0

    @property
    def bytes_to_host(self):
        return self.consumed

    def design_idle(self):
        """Return True when the design has replied to every request and no byte is on its way either way."""
        return (self.replies >= self.requests and not self.to_host and not self.dut.rx_busy.value
                and int(self.dut.tx_count.value) == self.consumed)

    async def forward_to_device(self):
        """Start sending the bytes the host has written, if the receive buffer is free."""
        if self.dut.rx_busy.value:
            return
        try:
            data = os.read(self.master, self.rx_capacity)
        except BlockingIOError:
            return
        if not data:
            return
        await send_through_shim(self.dut, data)
        self.bytes_to_device += len(data)
        self.requests += sum(isinstance(event, Frame) for event in self.host_frames.feed(data))

    def forward_to_host(self):
        """Move the bytes the design has sent from the transmit ring to the terminal."""
        count = int(self.dut.tx_count.value)
        if count - self.consumed > self.tx_capacity:
            raise RuntimeError(f"the shim's transmit ring of {self.tx_capacity} bytes overflowed; "
                               f"lower POLL_CYCLES")
        if count > self.consumed:
            data = bytes(int(self.dut.tx_buffer[i % self.tx_capacity].value) for i in range(self.consumed, count))
            self.consumed = count
            self.to_host += data
            self.replies += sum(isinstance(event, Frame) and event.command & REPLY_FLAG != 0
                                for event in self.device_frames.feed(data))
        if self.to_host:
            try:
                written = os.write(self.master, self.to_host)
            except BlockingIOError:
                written = 0
            del self.to_host[:written]

    async def wait_for_design(self):
        """Advance simulated time until a reply frame is complete, the receive buffer empties, or POLL_CYCLES pass."""
        dut = self.dut
        triggers = [Timer(POLL_CYCLES * CLOCK_NS, "ns")]
        dut.tx_wanted.value = self.consumed + max(1, self.device_frames.bytes_needed())
        triggers.append(RisingEdge(dut.tx_reached))
        if dut.rx_busy.value:
            triggers.append(FallingEdge(dut.rx_busy))
        await First(*triggers)


# C0 control bytes other than tab and newline, and DEL. A random model's output
# contains them, and bytes such as ESC or SO would change the terminal's state.
CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")


def printable(chunk):
    """Return ``chunk`` with each control byte but tab and newline written as ``\\xNN``."""
    return CONTROL_BYTES.sub(lambda match: b"\\x%02x" % match[0][0], chunk)


class HostOutput:
    """Collects the host command's standard output and echoes it, control bytes escaped, as it arrives."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.data = bytearray()
        os.set_blocking(pipe.fileno(), False)

    def drain(self):
        while True:
            try:
                chunk = os.read(self.pipe.fileno(), 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self.data += chunk
            sys.stdout.buffer.write(printable(chunk))
            sys.stdout.flush()


def settings_from_environment():
    expected = os.environ.get("MMFREE_EXPECTED_OUTPUT")
    return {
        "command": json.loads(os.environ["MMFREE_HOST_COMMAND"]),
        "expected": bytes.fromhex(expected) if expected else None,
        "idle": float(os.environ.get("MMFREE_IDLE", "0.1")),
        "wall_limit": float(os.environ.get("MMFREE_WALL_LIMIT", "900")),
        "divisor": int(os.environ.get("MMFREE_DIVISOR", "0")),
    }


async def serve_host(dut, bridge, process, output, wall_limit):
    """Bridge bytes until the host command exits, and return the simulated cycles and the wall time spent."""
    started = time.monotonic()
    start_ns = get_sim_time("ns")
    while True:
        output.drain()
        await bridge.forward_to_device()
        bridge.forward_to_host()
        if process.poll() is not None:
            output.drain()
            break
        if time.monotonic() - started > wall_limit:
            raise HostLimitExceeded(f"the host command ran longer than {wall_limit:.0f} s")
        if bridge.design_idle():
            # Simulated time does not advance while the host works.
            select.select([bridge.master, output.pipe], [], [], HOST_WAIT_S)
        else:
            await bridge.wait_for_design()
    return (get_sim_time("ns") - start_ns) / CLOCK_NS, time.monotonic() - started


@cocotb.test()
async def host_command_over_pty(dut):
    """Run the host command on a pseudo-terminal bridged to the design's serial lines and check its exit and output."""
    settings = settings_from_environment()
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    dut.rx_start.value = 0
    dut.rx_write_en.value = 0
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)

    master, slave = os.openpty()
    # Set raw mode before the host opens the terminal, because with echo on
    # the line discipline would send the design's replies back to the design.
    tty.setraw(slave)
    os.set_blocking(master, False)
    command = settings["command"] + ["--port", os.ttyname(slave)]
    dut._log.info("host command: %s", " ".join(command))
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, cwd=ROOT)
    output = HostOutput(process.stdout)
    bridge = PtyBridge(dut, master, settings["idle"])
    try:
        cycles, wall = await serve_host(dut, bridge, process, output, settings["wall_limit"])
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()
        os.close(slave)
        os.close(master)

    total_bytes = bridge.bytes_to_device + bridge.bytes_to_host
    dut._log.info("host command exited with status %d after %.1f s; %d requests, %d replies",
                  process.returncode, wall, bridge.requests, bridge.replies)
    dut._log.info("serial link: %d bytes to the design, %d bytes to the host, %.0f bytes/s of wall time; "
                  "%d simulated cycles, %.0f cycles/s", bridge.bytes_to_device, bridge.bytes_to_host,
                  total_bytes / wall, cycles, cycles / wall)
    if settings["divisor"]:
        line_cycles = bridge.bytes_to_device * BITS_PER_FRAME * settings["divisor"]
        dut._log.info("the host-to-design line was busy for %d of the %d cycles (%.0f %%)",
                      line_cycles, cycles, 100 * line_cycles / max(cycles, 1))

    assert process.returncode == 0, f"the host command exited with status {process.returncode}; see its messages above"
    if settings["expected"] is not None:
        assert bytes(output.data) == settings["expected"], \
            f"the host command printed {bytes(output.data)!r}, expected {settings['expected']!r}"
    assert int(dut.error.value) == 0, "the design's receiver dropped a byte or the core reports a weights error"
    assert int(dut.host_error.value) == 0, "the host-side receiver dropped a byte of the design's output"
