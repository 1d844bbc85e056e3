"""Simulation-only link shim: moves whole frames in and out of a byte-stream device in hardware.

A test bench that offered one byte per clock from Python would spend most
of its time waking Python every cycle. Instead, the bench deposits a frame
into ``rx_buffer`` through the simulator's VPI, sets ``rx_length`` and
pulses ``rx_start``; the shim then streams those bytes into the
accelerator's ``rx`` port, idling at random. Bytes the accelerator sends on
``tx`` land in the ring buffer ``tx_buffer`` (with random backpressure) and
count up ``tx_count``; ``tx_reached`` rises when ``tx_count`` reaches
``tx_wanted``, so the bench sleeps until a whole reply is there.

The random idle and backpressure cycles come from a 16-bit LFSR: a cycle
is idle (or stalled) when its low byte is below ``idle_threshold``, so the
probability is ``idle_threshold / 256``.

The device is ``hw.top.Accelerator`` for the accelerator's benches, or any
component with the same ``rx`` and ``tx`` byte streams, such as the board's
serial design behind a host-side UART (:mod:`sim.serial_shim`).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["LinkShim", "SIM_TOP_NAME"]

SIM_TOP_NAME = "mmfree_sim_top"


class LinkShim(wiring.Component):
    """A device with frame buffers on its byte streams, for simulation only.

    Parameters
    ----------
    device : wiring.Component
        ``hw.top.Accelerator`` or another component with an
        ``In(stream.Signature(8))`` named ``rx`` and an
        ``Out(stream.Signature(8))`` named ``tx``. Every other output of its
        signature is a port of the shim under the same name.
    rx_bytes, tx_bytes : int
        Sizes of the receive buffer (one frame at a time) and of the transmit ring.

    Members
    -------
    rx_length : ``In(16)``
        Bytes of ``rx_buffer`` to send, from index 0.
    rx_start : ``In(1)``
        Start sending; ignored while ``rx_busy``.
    rx_busy : ``Out(1)``
    rx_write_en, rx_write_addr, rx_write_data
        A write port of ``rx_buffer``, so that it stays a memory; the bench writes it through VPI.
    idle_threshold : ``In(8)``
    tx_count : ``Out(32)``
        Bytes received from the device since reset; byte ``i`` is at ``tx_buffer[i % tx_bytes]``.
    tx_wanted : ``In(32)``
    tx_reached : ``Out(1)``
        ``tx_count >= tx_wanted``.
    busy, weights_error : ``Out(1)``
        The accelerator's own status outputs, when the device is ``hw.top.Accelerator``.
    """

    def __init__(self, device, *, rx_bytes=2048, tx_bytes=8192):
        self._device = device
        self._rx_bytes = rx_bytes
        self._tx_bytes = tx_bytes
        self._status_outputs = [name for name, member in device.signature.members.items()
                                if name not in ("rx", "tx") and member.is_port and member.flow == Out]
        super().__init__({
            "rx_length": In(16),
            "rx_start": In(1),
            "rx_busy": Out(1),
            "rx_write_en": In(1),
            "rx_write_addr": In(range(rx_bytes)),
            "rx_write_data": In(8),
            "idle_threshold": In(8),
            "tx_count": Out(32),
            "tx_wanted": In(32),
            "tx_reached": Out(1),
            **{name: Out(device.signature.members[name].shape) for name in self._status_outputs},
        })

    def elaborate(self, platform):
        m = Module()
        # The submodule keeps the name `accelerator`, so that signal paths in
        # waveforms of the accelerator's benches stay as they were.
        m.submodules.accelerator = accelerator = self._device
        m.submodules.rx_buffer = rx_buffer = Memory(shape=8, depth=self._rx_bytes, init=[])
        m.submodules.tx_buffer = tx_buffer = Memory(shape=8, depth=self._tx_bytes, init=[])
        for name in self._status_outputs:
            m.d.comb += getattr(self, name).eq(getattr(accelerator, name))

        lfsr = Signal(16, init=0xACE1)
        m.d.sync += lfsr.eq(lfsr[1:] ^ (lfsr[0].replicate(16) & 0xB400))
        pause = lfsr[:8] < self.idle_threshold

        rx_write = rx_buffer.write_port()
        m.d.comb += [
            rx_write.en.eq(self.rx_write_en),
            rx_write.addr.eq(self.rx_write_addr),
            rx_write.data.eq(self.rx_write_data),
        ]
        rx_read = rx_buffer.read_port(domain="comb")
        index = Signal(16)
        m.d.comb += rx_read.addr.eq(index)
        with m.If(~self.rx_busy & self.rx_start & (self.rx_length != 0)):
            m.d.sync += [self.rx_busy.eq(1), index.eq(0)]
        with m.If(self.rx_busy):
            m.d.comb += [accelerator.rx.valid.eq(~pause), accelerator.rx.payload.eq(rx_read.data)]
            with m.If(accelerator.rx.valid & accelerator.rx.ready):
                m.d.sync += index.eq(index + 1)
                with m.If(index == self.rx_length - 1):
                    m.d.sync += self.rx_busy.eq(0)

        tx_write = tx_buffer.write_port()
        m.d.comb += [
            accelerator.tx.ready.eq(~pause),
            tx_write.addr.eq(self.tx_count),
            tx_write.data.eq(accelerator.tx.payload),
            tx_write.en.eq(accelerator.tx.valid & accelerator.tx.ready),
            self.tx_reached.eq(self.tx_count >= self.tx_wanted),
        ]
        with m.If(tx_write.en):
            m.d.sync += self.tx_count.eq(self.tx_count + 1)
        # The ring must stay readable from the bench: a read port keeps it a memory.
        tx_read = tx_buffer.read_port(domain="comb")
        m.d.comb += tx_read.addr.eq(0)
        return m
