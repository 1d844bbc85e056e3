"""Simulation-only serial harness: the board's serial design behind a host-side UART pair.

A board top (``boards.top.BoardTop``) puts a :class:`~boards.top.SerialAccelerator`
behind the pins of a USB-serial bridge. :class:`SerialHarness` plays the
bridge: a :class:`~boards.uart.UARTTransmitter` drives the design's ``rx``
pin and a :class:`~boards.uart.UARTReceiver` samples its ``tx`` pin, both at
the design's divisor. Every byte therefore crosses the serial lines as 8N1
bits. The harness has the byte streams of ``hw.top.Accelerator``, so
:class:`sim.shim.LinkShim` buffers whole frames on them and no Python runs
per clock cycle (see :mod:`sim.tb_serial`).

The board's PLL (an ECP5 EHXPLLL) has no Verilator model, so the
simulation starts at the serial design and runs it from the bench's clock.
"""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from boards.top import SerialAccelerator
from boards.uart import UARTReceiver, UARTTransmitter
from firmware.isa import CoreParams
from hw.top import Accelerator

from .shim import LinkShim

__all__ = ["SerialHarness", "serial_link_shim", "SERIAL_TOP_NAME", "SIM_DIVISOR", "SIM_TIMEOUT_CYCLES"]

SERIAL_TOP_NAME = "mmfree_serial_top"

# Clock cycles per bit in simulation: those of a board at its default 30 MHz
# and 3 Mbit/s, so the design gets the bit timing of a real link.
SIM_DIVISOR = 10

# The host interface's frame timeout in simulation. The bench feeds a frame's
# bytes without gaps longer than its poll interval, far below this.
SIM_TIMEOUT_CYCLES = 200_000


class SerialHarness(wiring.Component):
    """A :class:`~boards.top.SerialAccelerator` seen through a host-side UART pair.

    Parameters
    ----------
    core : CoreParams
    divisor : int
        Clock cycles per bit on both serial lines.
    timeout_cycles : int
        The host interface's frame timeout.

    Members
    -------
    rx : ``In(stream.Signature(8))``
        Bytes from the host, sent on the design's ``rx`` line.
    tx : ``Out(stream.Signature(8))``
        Bytes received from the design's ``tx`` line. The receiver cannot be
        stalled: a byte not taken within about 10 bit times is lost, and
        ``host_error`` rises.
    busy : ``Out(1)``
        A RUN is in progress.
    error : ``Out(1)``
        :attr:`SerialAccelerator.error`: the core's weights error, or the
        design's receiver dropped a byte since reset.
    host_error : ``Out(1)``
        The host-side receiver dropped a byte (framing error or overrun) since reset.
    """

    def __init__(self, core: CoreParams, *, divisor, timeout_cycles):
        self._design = SerialAccelerator(Accelerator(core, timeout_cycles=timeout_cycles), divisor=divisor)
        self._transmitter = UARTTransmitter(divisor=divisor)
        self._receiver = UARTReceiver(divisor=divisor)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "busy": Out(1),
            "error": Out(1),
            "host_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.design = design = self._design
        m.submodules.host_transmitter = transmitter = self._transmitter
        m.submodules.host_receiver = receiver = self._receiver

        wiring.connect(m, wiring.flipped(self.rx), transmitter.data)
        wiring.connect(m, receiver.data, wiring.flipped(self.tx))
        m.d.comb += [
            design.rx.eq(transmitter.tx),
            receiver.rx.eq(design.tx),
            self.busy.eq(design.busy),
            self.error.eq(design.error),
        ]

        with m.If(receiver.framing_error | receiver.overrun):
            m.d.sync += self.host_error.eq(1)
        return m


def serial_link_shim(core: CoreParams, *, divisor=SIM_DIVISOR, timeout_cycles=SIM_TIMEOUT_CYCLES):
    """Create the simulation top: frame buffers (:class:`LinkShim`) on a :class:`SerialHarness`."""
    return LinkShim(SerialHarness(core, divisor=divisor, timeout_cycles=timeout_cycles))
