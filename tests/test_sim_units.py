"""Verilator simulations of single units: the ternary engine and the vector unit.

Each test builds (or reuses, from build/sim) the Verilator model of one unit
and runs its cocotb bench. `sim.tb_engine` compares every accumulator beat
with `trits @ codes`. `sim.tb_vector` compares the vector unit with the
program model after every instruction of a random model's program.
`MMFREE_SIM_TILES` sets how many random tiles each engine test sends, and
`MMFREE_SIM_VECTOR_TOKENS` how many tokens the vector-unit run executes
before its state reset.
"""

import hashlib
import json
import os
from dataclasses import asdict

import pytest

from firmware.isa import CoreParams
from firmware.loader import memory_image
from golden.config import ModelConfig
from golden.int_model import prepare
from golden.synthetic import random_tensors
from hw.engine import TernaryEngine
from hw.vector import VectorUnit
from sim.build import build_component, run_component_bench

# The benches simulate only for seconds, so an unoptimized C++ build pays off.
# For the 16 x 32 engine on 2 shared cores it cut the build from about 110 s
# to 40 s and slowed its random test from 0.7 s to 1.8 s.
UNIT_BUILD_ARGS = ["-CFLAGS", "-O0"]
ENGINE_TOP = "mmfree_engine"
VECTOR_TOP = "mmfree_vector"
SIM_TILES = int(os.environ.get("MMFREE_SIM_TILES", "2000"))
SIM_VECTOR_TOKENS = int(os.environ.get("MMFREE_SIM_VECTOR_TOKENS", "2"))

# (R, K, max fan-in): a small engine, and the bundled core's 16 x 32 with its fan-in of 512.
ENGINE_SHAPES = [(4, 8, 96), (16, 32, 512)]

# A small core and a random model whose sizes are not powers of two. H = 37
# leaves a partial group of P = 2 at the end of every hidden-size pass.
VECTOR_CORE = CoreParams(rows=4, inputs=8, vector_lanes=2, max_hidden=40, max_intermediate=96, max_vocab=64,
                         max_layers=2, weight_depth=1536)
VECTOR_MODEL = (37, 90, 61, 2, 3)          # H, I, V, L, seed
# Four lanes, and a hidden size that leaves a partial group of one element.
WIDE_VECTOR_CORE = CoreParams(rows=8, inputs=16, vector_lanes=4, max_hidden=48, max_intermediate=112,
                              max_vocab=80, max_layers=2, weight_depth=1024)
WIDE_VECTOR_MODEL = (45, 106, 77, 2, 8)


def run_engine(shape, testcase, *, tiles, seed=1):
    rows, inputs, max_fan_in = shape
    build_dir = build_component(lambda: TernaryEngine(rows, inputs, max_fan_in=max_fan_in), ENGINE_TOP,
                                f"engine-{rows}x{inputs}-f{max_fan_in}", extra_build_args=UNIT_BUILD_ARGS)
    env = {
        "MMFREE_ENGINE": json.dumps({"rows": rows, "inputs": inputs, "max_fan_in": max_fan_in}),
        "MMFREE_TILES": tiles,
        "MMFREE_SEED": seed,
    }
    tests, failures = run_component_bench(build_dir, ENGINE_TOP, "sim.tb_engine", testcase, env)
    assert tests == 1
    assert failures == 0, "the engine differs from trits @ codes; see the log above"


def run_vector_unit(core, model, *, tokens, idle, seed=1):
    H, I, V, L, model_seed = model
    spec = f"random:{H},{I},{V},{L},{model_seed}"

    def build_unit():
        config = ModelConfig(vocab_size=V, hidden_size=H, intermediate_size=I, num_layers=L)
        return VectorUnit(core, image=memory_image(prepare(config, random_tensors(config, model_seed)), core))

    # The key names the lane shape and hashes every core field and the model, which the preload depends on.
    parameters = hashlib.sha256(json.dumps([asdict(core), spec], sort_keys=True).encode()).hexdigest()[:8]
    key = f"vector-{core.rows}x{core.inputs}p{core.vector_lanes}-{parameters}"
    build_dir = build_component(build_unit, VECTOR_TOP, key, extra_build_args=UNIT_BUILD_ARGS)
    env = {
        "MMFREE_CORE": json.dumps(asdict(core)),
        "MMFREE_MODEL": spec,
        "MMFREE_TOKENS": tokens,
        "MMFREE_IDLE": idle,
        "MMFREE_SEED": seed,
    }
    tests, failures = run_component_bench(build_dir, VECTOR_TOP, "sim.tb_vector", "program_matches_model", env)
    assert tests == 1
    assert failures == 0, "the vector unit differs from the program model; see the log above"


@pytest.mark.parametrize("testcase", ["random_dot_products", "latency_and_throughput"])
@pytest.mark.parametrize("shape", ENGINE_SHAPES, ids=lambda shape: "{}x{}-f{}".format(*shape))
def test_engine_against_numpy(shape, testcase):
    run_engine(shape, testcase, tiles=SIM_TILES)


def test_vector_unit_against_model():
    run_vector_unit(VECTOR_CORE, VECTOR_MODEL, tokens=SIM_VECTOR_TOKENS, idle=0.3)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4])
@pytest.mark.parametrize("shape", ENGINE_SHAPES, ids=lambda shape: "{}x{}-f{}".format(*shape))
def test_engine_long_random_runs(shape, seed):
    run_engine(shape, "random_dot_products", tiles=20 * SIM_TILES, seed=seed)


@pytest.mark.slow
def test_vector_unit_many_tokens():
    run_vector_unit(VECTOR_CORE, VECTOR_MODEL, tokens=8 * SIM_VECTOR_TOKENS, idle=0.6, seed=2)


@pytest.mark.slow
def test_vector_unit_four_lanes():
    run_vector_unit(WIDE_VECTOR_CORE, WIDE_VECTOR_MODEL, tokens=SIM_VECTOR_TOKENS, idle=0.3, seed=3)


def test_verilator_build_waits_for_another_builder(tmp_path):
    # A second process that builds the same design waits on the lock file
    # instead of compiling in the same directory at the same time.
    import fcntl
    import threading

    from sim.build import _verilate

    build_dir = tmp_path / "design"
    build_dir.mkdir()
    (build_dir / "top.v").write_text("module top; endmodule\n")
    (build_dir / "built").touch()
    finished = threading.Event()

    def build():
        _verilate(build_dir, "top", lambda: "", waves=False, description="a finished design")
        finished.set()

    with open(tmp_path / "design.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        thread = threading.Thread(target=build)
        thread.start()
        assert not finished.wait(0.5)
    thread.join(10)
    assert finished.is_set()


def test_verilator_build_failure_names_its_log(tmp_path, caplog):
    # The compiler output goes to a log file. A failed build names that file
    # and repeats its last lines.
    from sim.build import BUILD_LOG, _verilate

    build_dir = tmp_path / "design"
    with pytest.raises(RuntimeError, match=f"Verilator build of a broken design failed .*{BUILD_LOG}"):
        _verilate(build_dir, "top", lambda: "module top; this is not verilog\nendmodule\n", waves=False,
                  description="a broken design")
    assert (build_dir / BUILD_LOG).exists()
    assert not (build_dir / "built").exists()
    assert any("verilator: | %Error" in record.getMessage() for record in caplog.records)


def test_verilator_trace_needs_lz4_headers(tmp_path, monkeypatch):
    # A compiler that finds no lz4.h stops a waveform build before Verilator runs.
    import sim.build
    from sim.build import _verilate

    monkeypatch.setattr(sim.build, "TRACE_COMPILER", "false")
    with pytest.raises(RuntimeError, match="lz4.h"):
        _verilate(tmp_path / "design", "top", lambda: "module top; endmodule\n", waves=True,
                  description="a traced design")
    assert not (tmp_path / "design-waves" / "built-waves").exists()


def test_verilator_traced_model_has_own_directory(tmp_path):
    # The traced model goes beside the untraced one, so a traced run never
    # reuses an untraced binary, or the other way round.
    from sim.build import _verilate

    for name in ("design", "design-waves"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "top.v").write_text("module top; endmodule\n")
    (tmp_path / "design" / "built").touch()
    (tmp_path / "design-waves" / "built-waves").touch()
    untraced = _verilate(tmp_path / "design", "top", lambda: "", waves=False, description="a design")
    traced = _verilate(tmp_path / "design", "top", lambda: "", waves=True, description="a design")
    assert untraced == tmp_path / "design"
    assert traced == tmp_path / "design-waves"
