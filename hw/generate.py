"""Generate the accelerator's Verilog for a named core configuration.

    python -m hw.generate --config bundled --output build/verilog/bundled
"""

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

from amaranth.back import verilog

from .configs import CONFIGS
from .top import Accelerator

__all__ = ["generate", "main"]

logger = logging.getLogger(__name__)

TOP_NAME = "mmfree_accelerator"


def generate(config_name, output_dir):
    """Write ``<output_dir>/mmfree_accelerator.v`` and ``core.json``; return the Verilog path."""
    if config_name not in CONFIGS:
        raise ValueError(f"unknown core configuration {config_name!r}; choose one of {', '.join(sorted(CONFIGS))}")
    params = CONFIGS[config_name]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    start = time.monotonic()
    logger.info("elaborating %s: %d lanes (%d rows x %d inputs), %d vector lanes",
                config_name, params.lanes, params.rows, params.inputs, params.vector_lanes)
    top = Accelerator(params)
    text = verilog.convert(top, name=TOP_NAME, emit_src=False)
    path = output_dir / f"{TOP_NAME}.v"
    path.write_text(text)
    (output_dir / "core.json").write_text(json.dumps(asdict(params), indent=2) + "\n")
    logger.info("wrote %s (%d lines) in %.1f s", path, text.count("\n"), time.monotonic() - start)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hw.generate", description="Write the accelerator's Verilog.")
    parser.add_argument("--config", default="bundled", help=f"core configuration: {', '.join(sorted(CONFIGS))}")
    parser.add_argument("--output", default=None, help="output directory (default build/verilog/CONFIG)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        generate(args.config, args.output or f"build/verilog/{args.config}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
