"""The benchmark's arithmetic, tables, CSV files and cache keys, without simulations or board builds."""

import csv
import itertools
import json
import math
import types
from dataclasses import replace

import pytest

import sim.bench
from boards.top import BOARDS
from golden.config import ModelConfig, load_config
from hw.configs import CONFIGS
from sim import bench_report as report
from sim.bench import (BLOCK_HIDDEN, BLOCK_INTERMEDIATE, ResultCache, block_ram_words, cache_key, core_for_model,
                       parse_core_shape, sweep_cores, time_decoding)
from sim.build import ROOT

BUNDLED_MODEL = ROOT / "models" / "shakespeare-h128-l4"
BUNDLED_TRITS = 1_081_344


def board_summary(*, lut4=20_000, ebr=100, fmax=110.0, constraint=100.0, closed=True):
    """A boards.build summary with the accelerator's clock and the board's 25 MHz input clock."""
    return {
        "resources": {
            "LUT4": {"cell": "TRELLIS_COMB", "used": lut4, "available": 83_640},
            "flip-flops": {"cell": "TRELLIS_FF", "used": 15_000, "available": 83_640},
            "EBR": {"cell": "DP16KD", "used": ebr, "available": 208},
            "DSP": {"cell": "MULT18X18D", "used": 12, "available": 156},
        },
        "clock_target_mhz": constraint,
        "clocks": {
            "clk25_0__io": {"achieved_mhz": 350.0, "constraint_mhz": 25.0},
            "sync_clk": {"achieved_mhz": fmax, "constraint_mhz": constraint},
        },
        "timing_closed": closed,
    }


def does_not_fit_summary():
    """The partial summary of a design that nextpnr could not place: resources, no clocks."""
    summary = board_summary(ebr=254)
    summary.update(clocks={}, timing_closed=False, error="place and route failed")
    return summary


def bundled_core():
    return CONFIGS["bundled"]


def test_ideal_cycles_bundled_model():
    assert report.ideal_cycles(BUNDLED_TRITS, 512) == 2112


def test_ideal_cycles_rejects_zero_lanes():
    with pytest.raises(ValueError, match="lanes"):
        report.ideal_cycles(BUNDLED_TRITS, 0)


def test_lane_utilization_ratio():
    assert report.lane_utilization(2112, 8032) == pytest.approx(0.26295, abs=1e-5)


def test_lane_utilization_rejects_zero_cycles():
    with pytest.raises(ValueError, match="cycles"):
        report.lane_utilization(2112, 0)


def test_tokens_per_second_at_clock():
    assert report.tokens_per_second(100.0, 2000) == pytest.approx(50_000)


def test_fmax_of_accelerator_clock():
    # The input clock is faster, but the accelerator's clock is the one constrained to the target.
    assert report.accelerator_fmax(board_summary(fmax=87.5)) == 87.5


def test_fmax_without_matching_clock():
    summary = board_summary(fmax=87.5)
    summary["clock_target_mhz"] = 50.0
    assert report.accelerator_fmax(summary) == 87.5


def test_fmax_of_unplaced_design():
    assert report.accelerator_fmax(does_not_fit_summary()) is None


def test_lane_row_meets_targets():
    row = report.lane_row("16x32", bundled_core(), BUNDLED_TRITS, 2200, board_summary(fmax=110.0))
    assert row["ideal_cycles"] == 2112
    assert row["utilization"] == pytest.approx(0.96)
    assert row["tokens_per_second"] == pytest.approx(50_000)
    assert row["lut4"] == 20_000
    assert row["ebr_available"] == 208
    assert row["fits"] is True
    assert row["board_status"] == "timing closed"
    assert row["utilization_target"] == "met"
    assert row["fmax_target"] == "met"
    assert row["tokens_per_second_target"] == "met"


def test_lane_row_tokens_ceiling():
    # 512 lanes cannot reach 50,000 tokens/s at 100 MHz even with every lane busy, but 1,024 can.
    row = report.lane_row("16x32", bundled_core(), BUNDLED_TRITS, 8032, None)
    assert row["tokens_per_second_ceiling"] == pytest.approx(100e6 / 2112)
    assert row["tokens_per_second_ceiling"] < report.TARGET_TOKENS_PER_SECOND
    wider = report.lane_row("32x32", replace(bundled_core(), rows=32), BUNDLED_TRITS, 8032, None)
    assert wider["tokens_per_second_ceiling"] == pytest.approx(100e6 / 1056)


def test_lane_row_misses_targets():
    row = report.lane_row("16x32", bundled_core(), BUNDLED_TRITS, 8032, board_summary(fmax=95.0, closed=False))
    assert row["utilization_target"] == "missed"
    assert row["fmax_target"] == "missed"
    assert row["tokens_per_second_target"] == "missed"
    assert row["board_status"] == "timing not closed"


def test_lane_row_fmax_needs_timing_closed():
    # Fmax above the target while another clock fails timing does not meet the target.
    row = report.lane_row("16x32", bundled_core(), BUNDLED_TRITS, 2200, board_summary(fmax=120.0, closed=False))
    assert row["fmax_target"] == "missed"


def test_lane_row_does_not_fit():
    row = report.lane_row("16x32", bundled_core(), BUNDLED_TRITS, 8032, does_not_fit_summary())
    assert row["fits"] is False
    assert row["board_status"] == "does not fit: EBR 254/208"
    assert row["ebr"] == 254
    assert row["fmax_mhz"] is None
    assert row["tokens_per_second"] is None
    assert row["fmax_target"] == "missed"
    assert row["tokens_per_second_target"] == "missed"
    assert row["utilization_target"] == "missed"


def test_lane_row_without_board():
    row = report.lane_row("16x32", bundled_core(), BUNDLED_TRITS, 8032, None)
    assert row["board_status"] == "not built"
    assert row["lut4"] is None
    assert row["fits"] is None
    assert row["fmax_target"] == "not measured"
    assert row["tokens_per_second_target"] == "not measured"


def test_lane_row_unrouted_build():
    summary = dict(does_not_fit_summary(), unrouted="place and route did not finish within 45 minutes")
    summary["resources"]["EBR"]["used"] = 202
    row = report.lane_row("32x32", bundled_core(), BUNDLED_TRITS, 8032, summary)
    assert row["board_status"] == "not routed within the time limit"
    assert row["ebr"] == 202
    assert row["fits"] is True
    assert row["fmax_mhz"] is None
    assert row["fmax_target"] == "not measured"


def test_lane_row_failed_build_and_simulation():
    row = report.lane_row("16x32", bundled_core(), BUNDLED_TRITS, None, {"failure": "synthesis failed"})
    assert row["board_status"] == "build failed: synthesis failed"
    assert row["utilization"] is None
    assert row["utilization_target"] == "not measured"
    assert row["fmax_target"] == "not measured"


def sample_rows():
    return [
        report.lane_row("8x16", CONFIGS["medium"], BUNDLED_TRITS, 20_000, None),
        report.lane_row("16x32", bundled_core(), BUNDLED_TRITS, 8032, does_not_fit_summary()),
        report.lane_row("16x32", bundled_core(), BUNDLED_TRITS, 2200, board_summary(fmax=110.0)),
    ]


def test_lane_table_marks_targets():
    lines = report.format_lane_table(sample_rows()).splitlines()
    assert len(lines) == 2 + 3
    assert lines[0].startswith("config")
    assert "26.3% missed" in lines[3]
    assert "does not fit: EBR 254/208" in lines[3]
    assert "96.0% met" in lines[4]
    assert "110.0 met" in lines[4]
    assert "50,000 met" in lines[4]
    assert "47,348" in lines[4]


def test_lane_table_columns_align():
    lines = report.format_lane_table(sample_rows()).splitlines()
    position = lines[0].index("cycles/token")
    assert lines[2][position:].startswith("20,000")
    assert lines[3][position:].startswith("8,032")


def test_lane_markdown_rows():
    lines = report.format_lane_markdown(sample_rows()).splitlines()
    assert len(lines) == 2 + 3
    assert all(line.startswith("|") and line.endswith("|") for line in lines)
    assert lines[1].count("---") == lines[0].count("|") - 1


def test_csv_round_trip(tmp_path):
    path = tmp_path / "lanes.csv"
    report.write_csv(path, report.LANE_FIELDS, sample_rows())
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == report.LANE_FIELDS
    assert len(rows) == 3
    assert rows[0]["lut4"] == ""
    assert rows[1]["ebr"] == "254"
    assert float(rows[2]["utilization"]) == pytest.approx(0.96)
    assert rows[2]["fmax_target"] == "met"


def test_cache_key_ignores_dict_order(tmp_path):
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    first = cache_key({"rows": 16, "inputs": 32}, [source], root=tmp_path)
    second = cache_key({"inputs": 32, "rows": 16}, [source], root=tmp_path)
    assert first == second
    assert len(first) == 16


def test_cache_key_follows_description(tmp_path):
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    assert cache_key({"rows": 16}, [source], root=tmp_path) != cache_key({"rows": 8}, [source], root=tmp_path)


def test_cache_key_follows_source_contents(tmp_path):
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    before = cache_key({"rows": 16}, [source], root=tmp_path)
    source.write_text("x = 2\n")
    assert cache_key({"rows": 16}, [source], root=tmp_path) != before


def test_cache_key_follows_source_names(tmp_path):
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    first.write_text("x = 1\n")
    second.write_text("x = 1\n")
    assert cache_key({}, [first], root=tmp_path) != cache_key({}, [second], root=tmp_path)


def test_cache_key_ignores_source_order(tmp_path):
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    first.write_text("x = 1\n")
    second.write_text("y = 2\n")
    assert cache_key({}, [first, second], root=tmp_path) == cache_key({}, [second, first], root=tmp_path)


def test_result_cache_round_trip(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    assert cache.load("cycles", "16x32", "0123") is None
    cache.store("cycles", "16x32", "0123", {"mean_cycles": 8032.0})
    assert cache.load("cycles", "16x32", "0123") == {"mean_cycles": 8032.0}
    assert cache.load("cycles", "16x32", "4567") is None
    assert cache.load("board", "16x32", "0123") is None


def test_result_cache_ignores_corrupt_file(tmp_path):
    cache = ResultCache(tmp_path)
    cache.path("cycles", "8x16", "0123").write_text("{not json")
    assert cache.load("cycles", "8x16", "0123") is None


def test_result_cache_leaves_no_partial_file(tmp_path):
    cache = ResultCache(tmp_path)
    cache.store("board", "8x16", "0123", {"clocks": {}})
    assert [path.name for path in tmp_path.iterdir()] == ["board-8x16-0123.json"]
    assert json.loads((tmp_path / "board-8x16-0123.json").read_text()) == {"clocks": {}}


@pytest.mark.parametrize("text, expected", [("16x32", (16, 32)), ("8X16", (8, 16)), (" 32x32 ", (32, 32))])
def test_parse_core_shape(text, expected):
    assert parse_core_shape(text) == expected


@pytest.mark.parametrize("text", ["16", "16x", "x32", "ax3", "16x32x2", "0x8", "-4x8", ""])
def test_parse_core_shape_rejects(text):
    with pytest.raises(ValueError, match="ROWSxINPUTS|positive"):
        parse_core_shape(text)


def test_core_for_bundled_shape():
    config = load_config(BUNDLED_MODEL)
    assert core_for_model(CONFIGS["bundled"], 16, 32, config) == CONFIGS["bundled"]


def test_core_for_smaller_lanes():
    config = load_config(BUNDLED_MODEL)
    core = core_for_model(CONFIGS["bundled"], 8, 16, config)
    assert core.lanes == 128
    assert core.vector_lanes == CONFIGS["bundled"].vector_lanes
    assert core.weight_depth % 256 == 0
    # 4 layers of 128 x 128 (f, i, g, o) and 1024 x 128 and 128 x 512 (GLU), plus the 256 x 128 head.
    words = 4 * (4 * 16 * 8 + 2 * 64 * 8 + 16 * 32) + 32 * 8
    assert words <= core.weight_depth < words + 256


def test_core_for_wider_lanes_fills_block_rams():
    # 1,056 words of 32 trits take 939 rows of 36, and each half of a bank fits one
    # 512-row block RAM. So the depth stops at the 1,152 words that they hold.
    config = load_config(BUNDLED_MODEL)
    core = core_for_model(CONFIGS["bundled"], 32, 32, config)
    assert core.weight_depth == 1152
    assert core.weight_rows == 1024


def test_block_ram_words_by_row_width():
    bundled = CONFIGS["bundled"]
    assert block_ram_words(bundled, 2112) == 2304
    assert block_ram_words(bundled, 2305) == 3456
    # 18-bit rows of 9 trits, 1,024 to a block RAM.
    narrow = replace(bundled, rows=4, inputs=8)
    assert block_ram_words(narrow, 1) == 2 * 1024 * 9 // 8


def test_core_for_model_grows_maxima():
    config = ModelConfig(vocab_size=64, hidden_size=BLOCK_HIDDEN, intermediate_size=BLOCK_INTERMEDIATE, num_layers=2)
    core = core_for_model(CONFIGS["bundled"], 16, 32, config)
    assert core.max_hidden == BLOCK_HIDDEN
    assert core.max_intermediate == BLOCK_INTERMEDIATE
    assert core.max_vocab == CONFIGS["bundled"].max_vocab
    assert core.max_layers == CONFIGS["bundled"].max_layers


def test_sweep_names_the_fixed_vector_lanes():
    config = load_config(BUNDLED_MODEL)
    with pytest.raises(ValueError, match=r"core configuration 3x16: .* bundled core's 2 vector lanes"):
        sweep_cores([(3, 16)], config)


def test_core_for_model_rejects_lane_shape():
    config = load_config(BUNDLED_MODEL)
    # The bundled core's two vector lanes do not divide seven rows.
    with pytest.raises(ValueError, match="vector_lanes"):
        core_for_model(CONFIGS["bundled"], 7, 16, config)


def test_time_decoding_chains_tokens():
    seen = []

    def step(token):
        seen.append(token)
        return token + 1

    ticks = itertools.count(0.0, 0.5)
    timing = time_decoding(step, 7, lambda output: output, min_seconds=2.0, min_tokens=3,
                           clock=lambda: next(ticks))
    # One warm-up step, then steps until 2 s have passed on a clock that advances 0.5 s per reading.
    assert seen == [7, 8, 9, 10, 11]
    assert timing["tokens"] == 4
    assert timing["seconds"] == 2.0
    assert timing["tokens_per_second"] == 2.0


def test_time_decoding_minimum_tokens():
    ticks = itertools.count(0.0, 10.0)
    timing = time_decoding(lambda token: token, 0, lambda output: output, min_seconds=1.0, min_tokens=5,
                           clock=lambda: next(ticks))
    assert timing["tokens"] == 5


def test_paper_block_cycles():
    assert report.PAPER_BLOCK_CYCLES == 2_580_000


def test_block_intermediate_size():
    assert BLOCK_INTERMEDIATE == 1536


def test_block_trits_of_one_layer():
    one_layer, two_layers = (ModelConfig(vocab_size=64, hidden_size=512, intermediate_size=1536, num_layers=layers)
                             for layers in (1, 2))
    # f, i, g and o are H x H; gate_proj is 2I x H and down_proj H x I.
    assert two_layers.trit_count - one_layer.trit_count == 4 * 512 * 512 + 3 * 512 * 1536


def test_block_comparison_streamed():
    comparison = report.block_comparison(3_407_872, 20_000, stream_bits_per_cycle=16, ebr_available=208)
    assert comparison["paper_ratio"] == pytest.approx(129.0)
    assert comparison["ebr_needed"] == math.ceil(3_407_872 / 9216)
    assert comparison["fits_on_chip"] is False
    assert comparison["stream_trits_per_cycle"] == 10
    assert comparison["stream_cycles"] == 340_788
    assert comparison["streamed_cycles"] == 340_788
    assert comparison["streamed_paper_ratio"] == pytest.approx(2_580_000 / 340_788)


def test_block_comparison_fits_on_chip():
    comparison = report.block_comparison(9216 * 10, 5000, stream_bits_per_cycle=16, ebr_available=10)
    assert comparison["ebr_needed"] == 10
    assert comparison["fits_on_chip"] is True
    # The stream bound (9,216 cycles) exceeds the 5,000 compute cycles here.
    assert comparison["streamed_cycles"] == 9216


def test_link_round_trip_seconds():
    assert report.link_round_trip(11, 16, 3_000_000, 10) == pytest.approx(90e-6)


def reference_inputs(fits_on_chip):
    cpu = {"float": {"model": "m", "tokens_per_second": 800.0, "tokens": 4000, "seconds": 5.0, "cpu": "cpu"}}
    ebr_available = 400 if fits_on_chip else 208
    block = report.block_comparison(3_407_872, 20_000, stream_bits_per_cycle=16, ebr_available=ebr_available)
    block.update(core="16x32", shape="H = 512, I = 1536", device="LFE5U-85F")
    link = {"board": "ulx3s-85f", "baud": 3_000_000, "bytes": 27, "seconds": 90e-6}
    return cpu, block, link


def test_reference_rows_streamed_block():
    rows = report.reference_rows(*reference_inputs(fits_on_chip=False))
    systems = [row["system"] for row in rows]
    assert systems == ["CPU, NumPy float model", "FPGA core of Zhu et al. (2024)",
                       "this core 16x32, weights on chip (simulated)", "this core 16x32, weights streamed",
                       "ulx3s-85f serial link"]
    assert "does not fit on chip" in rows[2]["note"]
    assert rows[3]["cycles"] == 340_788
    assert rows[4]["tokens_per_second"] == pytest.approx(11_111.1, abs=0.1)


def test_reference_rows_block_on_chip():
    rows = report.reference_rows(*reference_inputs(fits_on_chip=True))
    assert not any("streamed" in row["system"] for row in rows)
    assert "fits on chip" in rows[2]["note"]


def test_reference_table_ratio():
    table = report.format_reference_table(report.reference_rows(*reference_inputs(fits_on_chip=False)))
    assert "129.0x" in table
    assert "2,580,000" in table


def test_plot_without_board_results(tmp_path):
    path = tmp_path / "plot.png"
    rows = [report.lane_row("16x32", bundled_core(), BUNDLED_TRITS, 8032, None)]
    assert report.plot_tokens_per_lut4(rows, path) == 0
    assert not path.exists()


def test_plot_writes_png(tmp_path):
    path = tmp_path / "plot.png"
    assert report.plot_tokens_per_lut4(sample_rows(), path, lut4_available=83_640) == 1
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("seed, expected", [(None, 2), (5, 5)])
def test_sweep_seed_defaults_to_board(monkeypatch, seed, expected):
    assert BOARDS["ulx3s-85f"].seed == 2
    seeds = []
    monkeypatch.setattr(sim.bench, "build_for_board", lambda board, params, **options: seeds.append(options["seed"]))
    arguments = types.SimpleNamespace(board="ulx3s-85f", seed=seed, quick=True, route_minutes=1)
    cores = {"a": CONFIGS["small"], "b": CONFIGS["medium"]}

    sim.bench.build_sweep(cores, arguments, cache=None, build_root=None, failures=[])

    assert seeds == [expected, expected]
