"""Serial link of a board: 8N1 UART receiver and transmitter with byte streams.

A board top level (``boards/top.py``) puts these between the pins of the
board's USB-serial bridge and the byte streams of ``hw.top.Accelerator``.
A :func:`receive_fifo` sits in front of the accelerator, because its host
interface does not accept bytes while it executes a command.

Both directions use 8N1 framing: a low start bit, 8 data bits with the least
significant bit first, and a high stop bit, each ``divisor`` clock cycles
long. The line is high when idle.
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

__all__ = ["UARTReceiver", "UARTTransmitter", "receive_fifo", "divisor_for_baud",
           "RX_MIN_DIVISOR", "TX_MIN_DIVISOR", "BITS_PER_FRAME", "RECEIVE_FIFO_DEPTH"]

# Start bit, 8 data bits, stop bit.
BITS_PER_FRAME = 10

# The receiver finds the middle of a bit by counting divisor // 2 cycles from
# the falling edge of the start bit, which it detects up to one cycle late. With
# 4 cycles per bit the sample lands within a quarter bit of the middle.
RX_MIN_DIVISOR = 4
TX_MIN_DIVISOR = 1

# SyncFIFOBuffered stores 2047 bytes in one EBR (DP16KD, 2048 x 9 bits) and
# one more in its output register. That is more than a whole frame of the link
# protocol (7 header and CRC bytes and 1024 payload bytes), so a host that
# resends a request while the accelerator still executes the previous one
# loses no byte.
RECEIVE_FIFO_DEPTH = 2048

# A receiver samples each bit once near its middle. From the start edge to the
# middle of the stop bit (9.5 bits) the bit clocks of the two ends may drift
# apart by less than half a bit, which is about 5 % in total. Allowing each end
# 2 % leaves a margin for the sampling jitter of one cycle.
MAX_BAUD_ERROR = 0.02


def _check_divisor(divisor, minimum):
    if not isinstance(divisor, int) or isinstance(divisor, bool):
        raise TypeError(f"divisor must be an integer number of clock cycles per bit, not {divisor!r}")
    if divisor < minimum:
        raise ValueError(f"divisor must be at least {minimum} clock cycles per bit, not {divisor}")


def divisor_for_baud(clock_hz, baud):
    """Return the divisor (clock cycles per bit) closest to ``clock_hz / baud``.

    Raises ValueError when the divisor is below the receiver's minimum of 4,
    or when the bit rate it gives differs from ``baud`` by more than 2 %.
    8N1 framing does not tolerate a larger error together with the host
    bridge's own error.
    """
    if not clock_hz > 0:
        raise ValueError(f"clock_hz must be a positive frequency in Hz, not {clock_hz!r}")
    if not baud > 0:
        raise ValueError(f"baud must be a positive bit rate in bit/s, not {baud!r}")
    divisor = round(clock_hz / baud)
    if divisor < RX_MIN_DIVISOR:
        raise ValueError(f"a {clock_hz / 1e6:g} MHz clock gives {clock_hz / baud:.2f} cycles per bit at "
                         f"{baud} bit/s, but the UART receiver needs at least {RX_MIN_DIVISOR}; "
                         f"lower the baud rate or raise the clock")
    actual_baud = clock_hz / divisor
    error = abs(actual_baud - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"{baud} bit/s from a {clock_hz / 1e6:g} MHz clock needs a divisor of "
                         f"{clock_hz / baud:.2f}; the nearest integer, {divisor}, gives {actual_baud:.0f} bit/s, "
                         f"{error:.1%} off, and at most {MAX_BAUD_ERROR:.0%} is allowed; choose a baud rate "
                         f"that divides the clock more evenly, or a clock that is a multiple of it")
    return divisor


class UARTReceiver(wiring.Component):
    """8N1 UART receiver that turns a serial line into a byte stream.

    The line passes a two-stage synchronizer first, so ``rx`` may come
    straight from a pin. The receiver waits for a falling edge and checks
    that the line is still low ``divisor // 2`` cycles later. If it is not,
    the edge was a glitch and the receiver goes back to waiting. Otherwise it
    samples the 8 data bits and the stop bit ``divisor`` cycles apart, each
    near the middle of its bit.

    A low stop bit is a framing error: the byte is dropped, ``framing_error``
    is high for one cycle, and the receiver waits for the line to go high
    before it looks for the next start bit. That is how it resynchronizes
    after a break or after locking onto a data bit instead of a start bit.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    rx : ``In(1)``
        The serial line, high when idle. Asynchronous to the clock.
    data : ``Out(stream.Signature(8))``
        Received bytes. ``payload`` stays stable while ``valid`` is high and ``ready`` low.
    framing_error : ``Out(1)``
        High for one cycle when a byte is dropped because its stop bit was low.
    overrun : ``Out(1)``
        High for one cycle when a byte is dropped because ``data`` still held
        the previous byte when the new one's stop bit was sampled.

    Latency and throughput
    ----------------------
    ``data.valid`` rises at clock edge ``3 + divisor // 2 + 9 * divisor``, where
    edge 1 is the first that samples ``rx`` low for the start bit: 2 edges for
    the synchronizer, 1 to see the falling edge, and ``divisor // 2 + 9 *
    divisor`` to the middle of the stop bit.

    The receiver is ready for the next start bit from the middle of the stop
    bit on, so it keeps up with a transmitter whose bit time is shorter by up
    to about 5 %. A byte in ``data`` must be read before the next byte's stop
    bit is sampled, about 10 bit times later, or the next byte is dropped.
    """

    def __init__(self, *, divisor):
        _check_divisor(divisor, RX_MIN_DIVISOR)
        self._divisor = divisor
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun": Out(1),
        })

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()

        line = Signal(init=1)
        m.submodules.synchronizer = FFSynchronizer(self.rx, line, init=1)

        # Cycles left until the next sample, and the data bits so far, LSB first.
        countdown = Signal(range(self._divisor))
        bit_index = Signal(range(8))
        shift = Signal(8)

        # A byte leaves when it is read. The FSM below may load the next one in
        # the same cycle, and its assignment then takes precedence.
        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += countdown.eq(self._divisor // 2 - 1)
                    m.next = "START"

            with m.State("START"):
                with m.If(countdown != 0):
                    m.d.sync += countdown.eq(countdown - 1)
                with m.Elif(line):
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [
                        countdown.eq(self._divisor - 1),
                        bit_index.eq(0),
                    ]
                    m.next = "DATA"

            with m.State("DATA"):
                with m.If(countdown != 0):
                    m.d.sync += countdown.eq(countdown - 1)
                with m.Else():
                    m.d.sync += [
                        shift.eq(Cat(shift[1:], line)),
                        countdown.eq(self._divisor - 1),
                        bit_index.eq(bit_index + 1),
                    ]
                    with m.If(bit_index == 7):
                        m.next = "STOP"

            with m.State("STOP"):
                with m.If(countdown != 0):
                    m.d.sync += countdown.eq(countdown - 1)
                with m.Elif(~line):
                    m.d.comb += self.framing_error.eq(1)
                    m.next = "BREAK"
                with m.Elif(self.data.valid & ~self.data.ready):
                    m.d.comb += self.overrun.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [
                        self.data.payload.eq(shift),
                        self.data.valid.eq(1),
                    ]
                    m.next = "IDLE"

            # After a framing error the line may be in a break (held low) or the
            # receiver may have taken a data bit for a start bit. Waiting for the
            # line to go high before the next start bit resynchronizes in both cases.
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"

        return m


class UARTTransmitter(wiring.Component):
    """8N1 UART transmitter that sends a byte stream on a serial line.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 1.

    Members
    -------
    data : ``In(stream.Signature(8))``
        Bytes to send. ``ready`` is high when the transmitter is idle or in the
        last cycle of a stop bit.
    tx : ``Out(1)``
        The serial line, driven from a register: high after reset and when idle.

    Latency and throughput
    ----------------------
    The start bit appears on ``tx`` in the cycle after the one that accepts
    the byte. While ``data.valid`` stays high, the transmitter sends one byte
    every ``10 * divisor`` cycles, with no idle time between stop bit and the
    next start bit.
    """

    def __init__(self, *, divisor):
        _check_divisor(divisor, TX_MIN_DIVISOR)
        self._divisor = divisor
        super().__init__({
            "data": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()

        # Bits on the line or still to go (the one on the line included), the
        # cycles left of the current bit, and the data and stop bits not yet sent.
        bits_left = Signal(range(BITS_PER_FRAME + 1))
        countdown = Signal(range(self._divisor))
        shift = Signal(9)

        bit_done = countdown == 0
        m.d.comb += self.data.ready.eq((bits_left == 0) | ((bits_left == 1) & bit_done))

        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [
                self.tx.eq(0),
                shift.eq(Cat(self.data.payload, Const(1, 1))),
                bits_left.eq(BITS_PER_FRAME),
                countdown.eq(self._divisor - 1),
            ]
        with m.Elif(bits_left != 0):
            with m.If(~bit_done):
                m.d.sync += countdown.eq(countdown - 1)
            with m.Else():
                m.d.sync += [
                    bits_left.eq(bits_left - 1),
                    countdown.eq(self._divisor - 1),
                ]
                # The stop bit is the last bit of the shift register, and the
                # line stays high after it.
                with m.If(bits_left > 1):
                    m.d.sync += [
                        self.tx.eq(shift[0]),
                        shift.eq(shift[1:]),
                    ]

        return m


def receive_fifo(depth=RECEIVE_FIFO_DEPTH):
    """Create the byte FIFO that buffers received bytes in front of the accelerator.

    Its ``w_stream`` takes :attr:`UARTReceiver.data` and its ``r_stream``
    feeds the accelerator's ``rx``. The default depth has room for a whole
    frame of the link protocol and fits one EBR.
    """
    return SyncFIFOBuffered(width=8, depth=depth)
