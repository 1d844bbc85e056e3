"""Arithmetic, tables, CSV files and the plot of the benchmark (:mod:`sim.bench`).

Every function here works on numbers that :mod:`sim.bench` measured, so the
tests check it without a simulation or a board build.
"""

import csv
import math

from golden.image import TRITS_PER_BYTE
from golden.numerics import TRIT_BITS

__all__ = ["TARGET_UTILIZATION", "TARGET_FMAX_MHZ", "TARGET_TOKENS_PER_SECOND", "PAPER_BLOCK_CYCLES",
           "LANE_FIELDS", "REFERENCE_FIELDS", "ideal_cycles", "lane_utilization", "tokens_per_second",
           "accelerator_fmax", "overused_resources", "board_status", "lane_row", "target_status", "format_lane_table",
           "format_lane_markdown", "write_csv", "reference_rows", "format_reference_table", "format_reference_markdown",
           "block_comparison",
           "link_round_trip", "plot_tokens_per_lut4"]

# Targets for the bundled model on the ULX3S-85F.
TARGET_UTILIZATION = 0.80
TARGET_FMAX_MHZ = 100.0
TARGET_TOKENS_PER_SECOND = 50_000

# The FPGA core of Zhu et al., "Scalable MatMul-free Language Modeling"
# (arXiv 2406.02528), runs one block of hidden size 512 in 43 ms at 60 MHz.
# NOTE: these two figures are taken as quoted for that paper; they were not
# rechecked against its text here.
PAPER_HIDDEN = 512
PAPER_BLOCK_SECONDS = 0.043
PAPER_CLOCK_HZ = 60_000_000
PAPER_BLOCK_CYCLES = round(PAPER_BLOCK_SECONDS * PAPER_CLOCK_HZ)

# An ECP5 DP16KD block RAM has 18 Kbit. In its 36-bit by 512 mode every bit
# can hold a two-bit trit, which is the most trits one EBR can store.
EBR_BITS = 18 * 1024
TRITS_PER_EBR = EBR_BITS // TRIT_BITS

# Per-configuration columns of the lane sweep's CSV file, in order.
LANE_FIELDS = [
    "config", "rows", "inputs", "lanes", "vector_lanes", "weight_depth",
    "cycles_per_token", "ideal_cycles", "utilization", "tokens_per_second_ceiling",
    "lut4", "lut4_available", "flip_flops", "flip_flops_available", "ebr", "ebr_available",
    "dsp", "dsp_available", "fits", "fmax_mhz", "clock_target_mhz", "timing_closed", "tokens_per_second",
    "board_status", "utilization_target", "fmax_target", "tokens_per_second_target",
]
REFERENCE_FIELDS = ["system", "workload", "tokens_per_second", "cycles", "paper_ratio", "note"]

# Names of the resources in boards.build's summary, and the lane sweep's field for each.
BOARD_RESOURCES = {"LUT4": "lut4", "flip-flops": "flip_flops", "EBR": "ebr", "DSP": "dsp"}


def ideal_cycles(trits, lanes):
    """Return the cycles per token of an engine that uses every lane in every cycle: ``trits / lanes``."""
    if lanes <= 0:
        raise ValueError(f"lanes must be a positive integer, not {lanes}")
    return trits / lanes


def lane_utilization(ideal, measured):
    """Return the share of lane-cycles that do useful work: ideal cycles over measured cycles."""
    if measured <= 0:
        raise ValueError(f"measured cycles must be positive, not {measured}")
    return ideal / measured


def tokens_per_second(clock_mhz, cycles_per_token):
    """Return the tokens per second of a core that spends ``cycles_per_token`` at ``clock_mhz``."""
    if cycles_per_token <= 0:
        raise ValueError(f"cycles per token must be positive, not {cycles_per_token}")
    return clock_mhz * 1e6 / cycles_per_token


def accelerator_fmax(summary):
    """Return the Fmax in MHz of the accelerator's clock in a ``boards.build`` summary, or None.

    The accelerator's clock is the one constrained to the build's clock
    target; the board's input clock has a constraint of its own. When no
    clock matches the target, the slowest clock counts. Returns None for a
    summary without clocks (a design that was not placed and routed).
    """
    clocks = summary.get("clocks") or {}
    if not clocks:
        return None
    target = summary.get("clock_target_mhz")
    matching = [clock["achieved_mhz"] for clock in clocks.values()
                if target is not None and math.isclose(clock["constraint_mhz"], target, rel_tol=1e-3)]
    if matching:
        return min(matching)
    return min(clock["achieved_mhz"] for clock in clocks.values())


def overused_resources(summary):
    """Return ``[(label, used, available)]`` of the resources that exceed the device in a build summary."""
    return [(label, entry["used"], entry["available"])
            for label, entry in summary.get("resources", {}).items() if entry["used"] > entry["available"]]


def board_status(board):
    """Return a short description of a board build summary: fits, timing closed, or why not."""
    if board is None:
        return "not built"
    if "failure" in board:
        return f"build failed: {board['failure']}"
    if "unrouted" in board:
        return "not routed within the time limit"
    overused = overused_resources(board)
    if overused:
        return "does not fit: " + ", ".join(f"{label} {used}/{available}" for label, used, available in overused)
    if accelerator_fmax(board) is None:
        return "not placed"
    return "timing closed" if board.get("timing_closed") else "timing not closed"


def lane_row(name, params, trits, cycles, board):
    """Return the lane sweep's row of one core configuration.

    ``params`` is the core's ``CoreParams``, ``trits`` the model's trit
    count, ``cycles`` the measured mean cycles per token (None when the
    simulation failed) and ``board`` the ``boards.build`` summary (None when
    there was no board build, or ``{"failure": message}``).
    """
    row = {field: None for field in LANE_FIELDS}
    row.update(config=name, rows=params.rows, inputs=params.inputs, lanes=params.lanes,
               vector_lanes=params.vector_lanes, weight_depth=params.weight_depth,
               ideal_cycles=ideal_cycles(trits, params.lanes), cycles_per_token=cycles)
    # The maximum tokens per second of these lanes at the target clock, each busy in every cycle.
    row["tokens_per_second_ceiling"] = tokens_per_second(TARGET_FMAX_MHZ, row["ideal_cycles"])
    if cycles is not None:
        row["utilization"] = lane_utilization(row["ideal_cycles"], cycles)

    row["board_status"] = board_status(board)
    if board is not None and "resources" in board:
        for label, field in BOARD_RESOURCES.items():
            entry = board["resources"].get(label)
            if entry is not None:
                row[field] = entry["used"]
                row[f"{field}_available"] = entry["available"]
    if board is not None and "failure" not in board:
        row["fits"] = not overused_resources(board)
        row["fmax_mhz"] = accelerator_fmax(board)
        row["clock_target_mhz"] = board.get("clock_target_mhz")
        row["timing_closed"] = bool(board.get("timing_closed")) and row["fmax_mhz"] is not None
    if row["fmax_mhz"] is not None and cycles is not None:
        row["tokens_per_second"] = tokens_per_second(row["fmax_mhz"], cycles)

    row.update(target_status(row))
    return row


def _verdict(value, threshold):
    if value is None:
        return "not measured"
    return "met" if value >= threshold else "missed"


def target_status(row):
    """Return ``met``, ``missed`` or ``not measured`` for each target of a lane sweep row.

    The Fmax target counts as met only when timing closes at the clock
    target as well. A design that does not fit the device misses the Fmax
    and tokens per second targets.
    """
    fmax_verdict = _verdict(row.get("fmax_mhz"), TARGET_FMAX_MHZ)
    if fmax_verdict == "met" and not row.get("timing_closed"):
        fmax_verdict = "missed"
    tokens_verdict = _verdict(row.get("tokens_per_second"), TARGET_TOKENS_PER_SECOND)
    if row.get("fits") is False:
        fmax_verdict = tokens_verdict = "missed"
    return {
        "utilization_target": _verdict(row.get("utilization"), TARGET_UTILIZATION),
        "fmax_target": fmax_verdict,
        "tokens_per_second_target": tokens_verdict,
    }


def _number(value, digits=0):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _with_verdict(text, verdict):
    if verdict == "not measured":
        return text
    return f"{text} {verdict}"


def _lane_cells(row):
    utilization = "-" if row["utilization"] is None else f"{row['utilization']:.1%}"
    return [
        row["config"],
        _number(row["lanes"]),
        _number(row["cycles_per_token"]),
        _number(row["ideal_cycles"]),
        _with_verdict(utilization, row["utilization_target"]),
        _number(row["lut4"]),
        _number(row["flip_flops"]),
        _number(row["ebr"]),
        _number(row["dsp"]),
        _with_verdict(_number(row["fmax_mhz"], 1), row["fmax_target"]),
        _with_verdict(_number(row["tokens_per_second"]), row["tokens_per_second_target"]),
        _number(row["tokens_per_second_ceiling"]),
        row["board_status"],
    ]


def _lane_headers():
    return ["config", "lanes", "cycles/token", "ideal cycles", f"utilization (>= {TARGET_UTILIZATION:.0%})",
            "LUT4", "FF", "EBR", "DSP", f"Fmax MHz (>= {TARGET_FMAX_MHZ:.0f})",
            f"tokens/s at Fmax (>= {TARGET_TOKENS_PER_SECOND:,})",
            f"tokens/s at {TARGET_FMAX_MHZ:.0f} MHz, every lane busy", "board"]


def _text_table(headers, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
             for line in [headers, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def format_lane_table(rows):
    """Return the lane sweep as a text table; each value with a target is marked ``met`` or ``missed``."""
    return _text_table(_lane_headers(), [_lane_cells(row) for row in rows])


def format_lane_markdown(rows):
    """Return the lane sweep as a Markdown table with the same cells as :func:`format_lane_table`."""
    return _markdown_table(_lane_headers(), [_lane_cells(row) for row in rows])


def write_csv(path, fields, rows):
    """Write ``rows`` (dicts) to the CSV file ``path`` with the columns ``fields``; None becomes empty."""
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({field: "" if row.get(field) is None else row[field] for field in fields})


def block_comparison(block_trits, block_cycles, *, stream_bits_per_cycle, ebr_available):
    """Compare our cycles for one block with the published core's; return a dict of the figures.

    ``block_trits`` is the trit count of one block and ``block_cycles`` the
    simulated cycles of one block with every weight on chip. The block fits
    on chip when its trits, at two bits each and with nothing else in block
    RAM, fit ``ebr_available`` EBR. When they do not, the weights must stream
    in from external memory at ``stream_bits_per_cycle``, packed five trits
    per byte as in the model image. A block then takes at least
    ``block_trits / trits_per_cycle`` cycles, and ``streamed_cycles`` is the
    larger of that bound and ``block_cycles``.
    """
    ebr_needed = math.ceil(block_trits / TRITS_PER_EBR)
    trits_per_cycle = stream_bits_per_cycle / 8 * TRITS_PER_BYTE
    stream_cycles = math.ceil(block_trits / trits_per_cycle)
    streamed_cycles = max(block_cycles, stream_cycles)
    return {
        "paper_cycles": PAPER_BLOCK_CYCLES,
        "block_trits": block_trits,
        "block_cycles": block_cycles,
        "paper_ratio": PAPER_BLOCK_CYCLES / block_cycles,
        "ebr_needed": ebr_needed,
        "ebr_available": ebr_available,
        "fits_on_chip": ebr_needed <= ebr_available,
        "stream_bits_per_cycle": stream_bits_per_cycle,
        "stream_trits_per_cycle": trits_per_cycle,
        "stream_cycles": stream_cycles,
        "streamed_cycles": streamed_cycles,
        "streamed_paper_ratio": PAPER_BLOCK_CYCLES / streamed_cycles,
    }


def link_round_trip(request_bytes, reply_bytes, baud, bits_per_byte):
    """Return the seconds that one request and its reply spend on a serial link, without USB latency."""
    return (request_bytes + reply_bytes) * bits_per_byte / baud


def reference_rows(cpu, block, link):
    """Return the side-by-side rows: the CPU paths, the published core's block, ours, and the serial link.

    ``cpu`` maps a path name (``float``, ``integer``) to its timing dict.
    ``block`` is the result of :func:`block_comparison` plus ``core``,
    ``shape`` and ``device``, or None when the block was not simulated.
    ``link`` contains ``board``, ``baud``, ``bytes`` and ``seconds`` of a
    RUN round trip.
    """
    rows = []
    for path, timing in cpu.items():
        rows.append({"system": f"CPU, NumPy {path} model", "workload": timing["model"],
                     "tokens_per_second": timing["tokens_per_second"], "cycles": None, "paper_ratio": None,
                     "note": f"{timing['tokens']:,} tokens in {timing['seconds']:.1f} s on {timing['cpu']}"})
    rows.append({"system": "FPGA core of Zhu et al. (2024)", "workload": f"one block, H = {PAPER_HIDDEN}",
                 "tokens_per_second": None, "cycles": PAPER_BLOCK_CYCLES, "paper_ratio": 1.0,
                 "note": f"{PAPER_BLOCK_SECONDS * 1e3:.0f} ms at {PAPER_CLOCK_HZ / 1e6:.0f} MHz"})
    if block is not None:
        fit = ("fits on chip" if block["fits_on_chip"] else "does not fit on chip")
        rows.append({"system": f"this core {block['core']}, weights on chip (simulated)",
                     "workload": f"one block, {block['shape']}", "tokens_per_second": None,
                     "cycles": block["block_cycles"], "paper_ratio": block["paper_ratio"],
                     "note": f"{block['block_trits']:,} trits need at least {block['ebr_needed']} EBR, "
                             f"the {block['device']} has {block['ebr_available']}: {fit}"})
        if not block["fits_on_chip"]:
            rows.append({"system": f"this core {block['core']}, weights streamed",
                         "workload": f"one block, {block['shape']}", "tokens_per_second": None,
                         "cycles": block["streamed_cycles"], "paper_ratio": block["streamed_paper_ratio"],
                         "note": f"assumes {block['stream_bits_per_cycle']} bits per core clock from external "
                                 f"memory at peak, {block['stream_trits_per_cycle']:g} trits per cycle packed "
                                 f"{TRITS_PER_BYTE} per byte"})
    if link is not None:
        rows.append({"system": f"{link['board']} serial link", "workload": "one RUN request and reply",
                     "tokens_per_second": 1 / link["seconds"], "cycles": None, "paper_ratio": None,
                     "note": f"{link['bytes']} bytes at {link['baud']:,} bit/s, USB latency not counted: "
                             f"the limit of a token loop driven by the host"})
    return rows


REFERENCE_HEADERS = ["system", "workload", "tokens/s", "cycles", "paper/ours", "note"]


def _reference_cells(row):
    ratio = "-" if row["paper_ratio"] is None else f"{row['paper_ratio']:.1f}x"
    return [row["system"], row["workload"], _number(row["tokens_per_second"], 1), _number(row["cycles"]), ratio,
            row["note"]]


def format_reference_table(rows):
    """Return the side-by-side rows as a text table; ``paper/ours`` is the paper's cycles over ours."""
    return _text_table(REFERENCE_HEADERS, [_reference_cells(row) for row in rows])


def format_reference_markdown(rows):
    """Return the side-by-side rows as a Markdown table with the same cells as :func:`format_reference_table`."""
    return _markdown_table(REFERENCE_HEADERS, [_reference_cells(row) for row in rows])


def plot_tokens_per_lut4(rows, path, *, model_name="model", lut4_available=None):
    """Write a PNG plot of tokens per second at Fmax against LUT4 use; return the number of points.

    Rows without both figures (no board build, or a design that does not
    fit) are left out. Writes nothing and returns 0 when no row has both.
    """
    points = [row for row in rows if row["lut4"] is not None and row["tokens_per_second"] is not None]
    if not points:
        return 0

    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    axes.plot([row["lut4"] for row in points], [row["tokens_per_second"] for row in points], "o-")
    for row in points:
        axes.annotate(f"{row['config']} ({row['lanes']} lanes)", (row["lut4"], row["tokens_per_second"]),
                      textcoords="offset points", xytext=(5, 5), fontsize=8)
    axes.axhline(TARGET_TOKENS_PER_SECOND, linestyle="--", color="gray", label="target tokens/s")
    if lut4_available:
        axes.axvline(lut4_available, linestyle=":", color="red", label="LUT4 of the device")
    axes.set_xlabel("LUT4 used")
    axes.set_ylabel("tokens/s at Fmax")
    axes.set_title(f"{model_name}: tokens per second against LUT4")
    axes.set_xlim(left=0)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return len(points)
