"""The accelerator as a whole: the link protocol in front of one core.

Its only ports are a byte stream in and a byte stream out, so that a board
top puts a UART in front and a test bench drives the protocol's bytes.
"""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from firmware.isa import CoreParams

from .core import Core
from .host import HostInterface

__all__ = ["Accelerator"]


class Accelerator(wiring.Component):
    """Host interface and core.

    Parameters
    ----------
    core : CoreParams
    timeout_cycles : int
        Cycles without a byte after which the host interface drops a partial frame.

    Members
    -------
    rx : ``In(stream.Signature(8))``
        Bytes from the host.
    tx : ``Out(stream.Signature(8))``
        Bytes to the host.
    weights_error : ``Out(1)``
    busy : ``Out(1)``
        A RUN is in progress.
    """

    def __init__(self, core: CoreParams, *, timeout_cycles=1_000_000):
        self._core = Core(core)
        self._host = HostInterface(timeout_cycles=timeout_cycles)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "weights_error": Out(1),
            "busy": Out(1),
        })

    @property
    def params(self):
        return self._core.params

    def elaborate(self, platform):
        m = Module()
        m.submodules.host = host = self._host
        m.submodules.core = core = self._core
        wiring.connect(m, wiring.flipped(self.rx), host.i_stream)
        wiring.connect(m, host.o_stream, wiring.flipped(self.tx))
        wiring.connect(m, host.write, core.write)
        wiring.connect(m, host.read, core.read)
        wiring.connect(m, host.reset_state, core.reset_state)
        wiring.connect(m, host.run, core.run)
        m.d.comb += [
            host.status.eq(core.status),
            self.weights_error.eq(core.weights_error),
            self.busy.eq(host.run.start),
        ]
        return m
