"""Board top level: the accelerator behind the USB-serial UART of an ECP5 board.

:class:`BoardTop` requests the board's clock, reset button, serial bridge and
LEDs through amaranth-boards and runs the accelerator from an EHXPLLL at the
target clock. A :class:`SerialAccelerator` (UART receiver, receive FIFO and
UART transmitter around ``hw.top.Accelerator``) sits behind the serial pins.
:data:`BOARDS` lists the supported boards.
"""

import math
from dataclasses import dataclass, field
from fractions import Fraction

from amaranth.hdl import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out
from amaranth.lib.cdc import ResetSynchronizer
from amaranth_boards.ecp5_5g_evn import ECP55GEVNPlatform
from amaranth_boards.ecpix5 import ECPIX585Platform
from amaranth_boards.ulx3s import ULX3S_85F_Platform
from amaranth_boards.versa_ecp5 import VersaECP5Platform

from hw.top import Accelerator

from .uart import UARTReceiver, UARTTransmitter, divisor_for_baud, receive_fifo

__all__ = ["Board", "BOARDS", "board_by_name", "PLLSettings", "ecp5_pll_settings", "SerialAccelerator", "BoardTop",
           "FRAME_TIMEOUT_S", "BUSY_LED_HOLD_S"]

# The host interface drops a partial frame after this long without a byte.
# Full-speed USB (the FT231X) moves a host write in packets scheduled in 1 ms
# frames, so the gaps inside a request are about a millisecond. 100 ms leaves
# a wide margin and stays well below the 1 s default reply timeout of
# firmware.protocol.Link.
FRAME_TIMEOUT_S = 0.1

# The busy LED stays on at least this long after each RUN, so that a short
# RUN shows as a visible blink.
BUSY_LED_HOLD_S = 0.05

# Default baud rates and their sources. FTDI's FT231X datasheet (FT_000565,
# version 1.4) gives "data transfer rates from 300 baud to 3 Mbaud". The other
# boards have an FT2232-family bridge (USB id 0403:6010 in amaranth-boards'
# OpenOCD files, and the ft2232 cable for the ECPIX-5). FTDI's AN_120, as
# quoted in a Stack Overflow answer (question 76130485), gives up to 12 Mbaud
# for the FT2232H, with 8 Mbaud the next rate down. From the 30 MHz default
# clock below those need 2.5 and 3.75 cycles per bit, whereas 3 Mbaud needs
# exactly 10, and it is the same rate on every board.
# NOTE: no board has run the link at 3 Mbaud on hardware yet.
_FT231X_BAUD = 3_000_000
_FT2232_BAUD = 3_000_000

# Default accelerator clock of every board. The bundled core closes timing
# at 30 MHz on the ULX3S-85F (speed grade 6), with an Fmax of about 47 MHz.
# From the ULX3S's 25 MHz input the PLL's input divider is at most 8, because
# the phase detector needs at least 3.125 MHz. So the clocks with a whole
# number of cycles per 3 Mbaud bit are multiples of 15 MHz, and a build for
# the next one, 45 MHz, failed timing at 42.1 MHz.
_CLOCK_HZ = 30_000_000


@dataclass(frozen=True)
class Board:
    """An ECP5 board with a USB-serial bridge that the accelerator runs on.

    ``reset`` and the ``leds`` values name amaranth-boards resources as
    ``(name, number)`` or ``(name, number, subsignal)``. ``loader_args``
    selects the board or cable for openFPGALoader. ``seed`` is the default
    nextpnr placement seed of its builds.
    """

    name: str
    platform: type
    bridge: str
    baud: int
    clock_hz: int
    reset: tuple
    leds: dict
    loader_args: tuple
    note: str = field(default="")
    seed: int = 1


BOARDS = {board.name: board for board in [
    Board(
        name="ulx3s-85f",
        platform=ULX3S_85F_Platform,
        bridge="FT231X",
        baud=_FT231X_BAUD,
        clock_hz=_CLOCK_HZ,
        # The PWR button (D6) is a PinsN resource in amaranth_boards.ulx3s,
        # so it reads as 1 while pressed.
        reset=("button_pwr", 0),
        leds={"idle": ("led", 0), "busy": ("led", 1), "error": ("led", 7)},
        loader_args=("-b", "ulx3s"),
        # Seed 1 did not route the bundled core with the measuring RESID:
        # router2 came down to 77 overused wires, then rose past 1,400.
        # Seed 2 routes it, and the doubled lanes after it.
        seed=2,
    ),
    Board(
        name="ecpix5-85f",
        platform=ECPIX585Platform,
        bridge="FT2232 family",
        baud=_FT2232_BAUD,
        clock_hz=_CLOCK_HZ,
        reset=("rst", 0),
        leds={"idle": ("rgb_led", 0, "g"), "busy": ("rgb_led", 1, "b"), "error": ("rgb_led", 2, "r")},
        loader_args=("-b", "ecpix5"),
        # With seed 1 router2 still had 30 to 70 overused wires after 270
        # iterations on the bundled core; seed 2 routed it at iteration 71.
        seed=2,
    ),
    Board(
        name="versa-ecp5",
        platform=VersaECP5Platform,
        bridge="FT2232 family",
        baud=_FT2232_BAUD,
        clock_hz=_CLOCK_HZ,
        reset=("rst", 0),
        leds={"idle": ("led", 0), "busy": ("led", 1), "error": ("led", 7)},
        # openFPGALoader 1.1.1 has no Versa board entry; its JTAG is on the
        # FT2232H's first channel, the generic ft2232 cable's default.
        loader_args=("-c", "ft2232"),
        note="LFE5UM-45F, a smaller device than the 85F of the other boards",
    ),
    Board(
        name="ecp5-5g-evn",
        platform=ECP55GEVNPlatform,
        bridge="FT2232 family",
        baud=_FT2232_BAUD,
        clock_hz=_CLOCK_HZ,
        reset=("rst", 0),
        leds={"idle": ("led", 0), "busy": ("led", 1), "error": ("led", 7)},
        loader_args=("-b", "ecp5_evn"),
        note="the UART needs two resistor jumpers swapped and possibly the FTDI chip "
             "reconfigured, per the comment in amaranth_boards.ecp5_5g_evn",
    ),
]}


def board_by_name(name):
    """Return the :class:`Board` called ``name``, or raise ValueError listing the known boards."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}") from None


# EHXPLLL limits as Project Trellis' ecppll tool (libtrellis/tools/ecppll.cpp)
# applies them, in Hz, with the feedback taken from CLKOP.
PLL_INPUT_RANGE = (8_000_000, 400_000_000)
PLL_PFD_RANGE = (3_125_000, 400_000_000)
PLL_VCO_RANGE = (400_000_000, 800_000_000)
PLL_OUTPUT_RANGE = (10_000_000, 400_000_000)
PLL_CLKI_DIV_MAX = 128
PLL_CLKFB_DIV_MAX = 80
PLL_CLKOP_DIV_MAX = 128
PLL_TOLERANCE = 0.001


@dataclass(frozen=True)
class PLLSettings:
    """EHXPLLL dividers for one output on CLKOP, with CLKOP as the feedback.

    The output is ``input_hz * clkfb_div / clki_div`` and the VCO runs at
    ``clkop_div`` times the output.
    """

    input_hz: int
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def pfd_hz(self):
        return Fraction(self.input_hz, self.clki_div)

    @property
    def output_hz(self):
        return self.pfd_hz * self.clkfb_div

    @property
    def vco_hz(self):
        return self.output_hz * self.clkop_div


def _check_range(quantity, value_hz, value_range):
    low, high = value_range
    if not low <= value_hz <= high:
        raise ValueError(f"the ECP5 PLL {quantity} must be between {low / 1e6:g} and {high / 1e6:g} MHz, "
                         f"not {float(value_hz) / 1e6:g} MHz")


def ecp5_pll_settings(input_hz, target_hz, *, tolerance=PLL_TOLERANCE):
    """Compute the EHXPLLL dividers that turn ``input_hz`` into ``target_hz``.

    Among the settings whose output is nearest to the target, the one with
    the VCO nearest to the middle of its 400-800 MHz range wins, then the one
    with the higher phase detector frequency. Raises ValueError when the
    input or target is outside the PLL's range, or when no setting comes
    within ``tolerance`` (relative) of the target.
    """
    _check_range("input", input_hz, PLL_INPUT_RANGE)
    _check_range("output", target_hz, PLL_OUTPUT_RANGE)
    target = Fraction(target_hz)
    vco_middle = Fraction(sum(PLL_VCO_RANGE), 2)

    best_key = None
    best = None
    for clki_div in range(1, PLL_CLKI_DIV_MAX + 1):
        pfd = Fraction(input_hz, clki_div)
        if not PLL_PFD_RANGE[0] <= pfd <= PLL_PFD_RANGE[1]:
            continue
        for clkfb_div in range(1, PLL_CLKFB_DIV_MAX + 1):
            output = pfd * clkfb_div
            if not PLL_OUTPUT_RANGE[0] <= output <= PLL_OUTPUT_RANGE[1]:
                continue
            # The CLKOP divider only places the VCO, so take the one that puts
            # it nearest to the middle of its range.
            lowest_div = max(1, math.ceil(PLL_VCO_RANGE[0] / output))
            highest_div = min(PLL_CLKOP_DIV_MAX, math.floor(PLL_VCO_RANGE[1] / output))
            if lowest_div > highest_div:
                continue
            middle_div = vco_middle / output
            candidates = {min(max(div, lowest_div), highest_div)
                          for div in (math.floor(middle_div), math.ceil(middle_div))}
            clkop_div = min(sorted(candidates), key=lambda div: abs(output * div - vco_middle))
            key = (abs(output - target), abs(output * clkop_div - vco_middle), clki_div)
            if best_key is None or key < best_key:
                best_key = key
                best = PLLSettings(input_hz=input_hz, clki_div=clki_div, clkfb_div=clkfb_div,
                                   clkop_div=clkop_div)

    error = abs(best.output_hz - target) / target
    if error > tolerance:
        raise ValueError(f"no ECP5 PLL setting turns {input_hz / 1e6:g} MHz into {target_hz / 1e6:g} MHz "
                         f"within {tolerance:.1%}: the nearest output is {float(best.output_hz) / 1e6:.4f} MHz "
                         f"(CLKI_DIV {best.clki_div}, CLKFB_DIV {best.clkfb_div}, CLKOP_DIV {best.clkop_div}); "
                         f"choose a target clock that the input clock times a ratio of small integers reaches")
    return best


def _request_buffer(m, platform, resource, direction, name):
    """Request a resource (``(name, number)`` or ``(name, number, subsignal)``) and buffer it."""
    port = platform.request(resource[0], resource[1], dir="-")
    if len(resource) == 3:
        port = getattr(port, resource[2])
    m.submodules[name] = buffer = io.Buffer(direction, port)
    return buffer


class SerialAccelerator(wiring.Component):
    """The accelerator behind an 8N1 UART, with a receive FIFO in front of it.

    Bytes from the serial line pass a :class:`~boards.uart.UARTReceiver` and
    a receive FIFO with room for a whole protocol frame, so a request sent
    while the accelerator still executes or replies waits in the FIFO.
    Replies go straight to a :class:`~boards.uart.UARTTransmitter`.

    Parameters
    ----------
    accelerator : hw.top.Accelerator
    divisor : int
        Clock cycles per bit of the serial link.

    Members
    -------
    rx : ``In(1)``
        Serial line from the host, high when idle. Asynchronous to the clock.
    tx : ``Out(1)``
        Serial line to the host, high when idle.
    busy : ``Out(1)``
        A RUN is in progress.
    error : ``Out(1)``
        The core reports a weights error, or the UART dropped a received byte
        (framing error or FIFO overrun) since reset.
    """

    def __init__(self, accelerator, *, divisor):
        self._accelerator = accelerator
        self._receiver = UARTReceiver(divisor=divisor)
        self._transmitter = UARTTransmitter(divisor=divisor)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "busy": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = receiver = self._receiver
        m.submodules.transmitter = transmitter = self._transmitter
        m.submodules.receive_fifo = fifo = receive_fifo()
        m.submodules.accelerator = accelerator = self._accelerator

        m.d.comb += [
            receiver.rx.eq(self.rx),
            self.tx.eq(transmitter.tx),
        ]
        wiring.connect(m, receiver.data, fifo.w_stream)
        wiring.connect(m, fifo.r_stream, accelerator.rx)
        wiring.connect(m, accelerator.tx, transmitter.data)

        link_error = Signal()
        with m.If(receiver.framing_error | receiver.overrun):
            m.d.sync += link_error.eq(1)
        m.d.comb += [
            self.busy.eq(accelerator.busy),
            self.error.eq(link_error | accelerator.weights_error),
        ]
        return m


class BoardTop(Elaboratable):
    """The accelerator on an ECP5 board, reached through the board's USB-serial UART.

    The ``sync`` domain runs from an EHXPLLL at ``clock_hz``. It stays in
    reset until the PLL locks and while the board's reset button is pressed.
    Its reset synchronizer starts out asserted when the FPGA is configured,
    which makes the power-on reset.

    The board's USB-serial UART pins connect to a :class:`SerialAccelerator`.

    Three LEDs show the state, and all are dark in reset. Idle is on when no
    RUN is in progress. Busy is on during a RUN and for at least 50 ms after
    it, so that short runs show. Error is :attr:`SerialAccelerator.error`.

    Parameters
    ----------
    board_name : str
        A key of :data:`BOARDS`, such as ``"ulx3s-85f"``.
    core_params : firmware.isa.CoreParams
        The core configuration, as in ``hw.configs.CONFIGS``.
    baud : int or None
        Bit rate of the serial link in bit/s; None takes the board's default.
    clock_hz : int or None
        Target clock of the accelerator in Hz; None takes the board's default.
    """

    def __init__(self, board_name, core_params, *, baud=None, clock_hz=None):
        self._board = board_by_name(board_name)
        self._baud = self._board.baud if baud is None else baud
        target_hz = self._board.clock_hz if clock_hz is None else clock_hz

        input_hz = self._board.platform().default_clk_frequency
        self._pll = ecp5_pll_settings(int(input_hz), target_hz)
        # The design runs at the PLL's real output, which may differ from the
        # target by up to PLL_TOLERANCE; the divisor and timeouts follow it.
        self._clock_hz = float(self._pll.output_hz)
        self._divisor = divisor_for_baud(self._clock_hz, self._baud)

        accelerator = Accelerator(core_params, timeout_cycles=round(self._clock_hz * FRAME_TIMEOUT_S))
        self._link = SerialAccelerator(accelerator, divisor=self._divisor)

    @property
    def board(self):
        return self._board

    @property
    def baud(self):
        return self._baud

    @property
    def pll(self):
        return self._pll

    @property
    def clock_hz(self):
        """The accelerator's clock in Hz: the PLL output."""
        return self._clock_hz

    @property
    def divisor(self):
        return self._divisor

    def create_platform(self):
        """Create the amaranth-boards platform instance of this board."""
        return self._board.platform()

    def elaborate(self, platform):
        if not isinstance(platform, self._board.platform):
            raise TypeError(f"BoardTop for {self._board.name} needs a {self._board.platform.__name__}, "
                            f"not {platform!r}")
        m = Module()

        self._elaborate_clock(m, platform)
        self._elaborate_link(m, platform)
        self._elaborate_leds(m, platform)

        return m

    def _elaborate_clock(self, m, platform):
        clock_in = _request_buffer(m, platform, (platform.default_clk, 0), "i", "clock_buffer")
        reset_button = _request_buffer(m, platform, self._board.reset, "i", "reset_buffer")

        pll = self._pll
        clock = Signal(name="pll_clock")
        locked = Signal(name="pll_locked")
        m.submodules.pll = Instance(
            "EHXPLLL",
            p_PLLRST_ENA="DISABLED",
            p_INTFB_WAKE="DISABLED",
            p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA",
            p_CLKI_DIV=pll.clki_div,
            p_CLKFB_DIV=pll.clkfb_div,
            p_FEEDBK_PATH="CLKOP",
            p_CLKOP_ENABLE="ENABLED",
            p_CLKOP_DIV=pll.clkop_div,
            # The output's phase does not matter, because no I/O is timed
            # against the board clock.
            p_CLKOP_CPHASE=pll.clkop_div - 1,
            p_CLKOP_FPHASE=0,
            # Loop filter settings that ecppll emits for every configuration.
            a_ICP_CURRENT="12",
            a_LPF_RESISTOR="8",
            a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            a_FREQUENCY_PIN_CLKI=f"{pll.input_hz / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{self._clock_hz / 1e6:g}",
            i_CLKI=clock_in.i,
            i_CLKFB=clock,
            i_RST=Const(0),
            i_STDBY=Const(0),
            i_PHASESEL0=Const(0),
            i_PHASESEL1=Const(0),
            i_PHASEDIR=Const(0),
            i_PHASESTEP=Const(0),
            i_PHASELOADREG=Const(0),
            i_PLLWAKESYNC=Const(0),
            i_ENCLKOP=Const(0),
            o_CLKOP=clock,
            o_LOCK=locked,
        )
        # No constraint on `clock` itself: nextpnr-ecp5 derives the PLL output's
        # frequency from the board clock's FREQUENCY PORT constraint and the
        # dividers, whereas a constraint on a net name is lost when Yosys
        # renames the net while flattening.

        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(clock)
        m.submodules.reset_synchronizer = ResetSynchronizer(~locked | reset_button.i, domain="sync")

    def _elaborate_link(self, m, platform):
        """Connect the UART pins to the serial accelerator."""
        uart_pins = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buffer = rx_buffer = io.Buffer("i", uart_pins.rx)
        m.submodules.uart_tx_buffer = tx_buffer = io.Buffer("o", uart_pins.tx)
        m.submodules.link = link = self._link
        m.d.comb += [
            link.rx.eq(rx_buffer.i),
            tx_buffer.o.eq(link.tx),
        ]

    def _elaborate_leds(self, m, platform):
        busy = self._link.busy
        error = self._link.error
        hold_cycles = round(self._clock_hz * BUSY_LED_HOLD_S)
        busy_hold = Signal(range(hold_cycles + 1))
        with m.If(busy):
            m.d.sync += busy_hold.eq(hold_cycles)
        with m.Elif(busy_hold != 0):
            m.d.sync += busy_hold.eq(busy_hold - 1)

        # Registered in the sync domain, so every LED is dark while it is in reset.
        states = {
            "idle": Signal(name="idle_led"),
            "busy": Signal(name="busy_led"),
            "error": Signal(name="error_led"),
        }
        m.d.sync += [
            states["idle"].eq(~busy),
            states["busy"].eq(busy | (busy_hold != 0)),
            states["error"].eq(error),
        ]
        for role, state in states.items():
            led = _request_buffer(m, platform, self._board.leds[role], "o", f"{role}_led_buffer")
            m.d.comb += led.o.eq(state)
