"""Whole-accelerator simulations on Verilator: every token compared with the integer model.

Each test builds (or reuses, from build/sim) the Verilator model of one core
configuration and runs the cocotb bench `sim.tb_accelerator`, which loads a
model through the link and compares the argmax, the head's accumulators and
every layer's recurrent state after each token. `MMFREE_SIM_TOKENS` sets how
many tokens the sweep generates per shape.
"""

import os
from pathlib import Path

import pytest

from hw.configs import CONFIGS
from sim import demo
from sim.build import run_bench

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODEL = ROOT / "models" / "shakespeare-h128-l4"
SWEEP_TOKENS = int(os.environ.get("MMFREE_SIM_TOKENS", "2"))

# (H, I, V, L): H not a power of two, I not 8H/3, L from 1 to 6, V of 256 and 1000.
SHAPES = [(40, 100, 256, 1), (96, 256, 1000, 3), (24, 72, 256, 6), (72, 200, 1000, 2)]


def run(config, model, prompt, tokens, idle=0.1):
    tests, failures = run_bench(CONFIGS[config], "generate_and_compare",
                                {"MMFREE_MODEL": model, "MMFREE_PROMPT": prompt, "MMFREE_TOKENS": tokens,
                                 "MMFREE_IDLE": idle})
    assert tests == 1
    assert failures == 0, "the accelerator differs from the golden model; see the log above"


def test_bundled_model_sixteen_tokens():
    run("bundled", str(BUNDLED_MODEL), "KING HENRY:\n", 16)


@pytest.mark.parametrize("config", ["small", "medium"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: "h{}-i{}-v{}-l{}".format(*shape))
def test_random_shapes(config, shape):
    H, I, V, L = shape
    run(config, f"random:{H},{I},{V},{L},{H + L}", "ids:1,5,9", SWEEP_TOKENS)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["small", "medium"])
def test_long_generation(config):
    run(config, "random:96,256,1000,3,5", "ids:3", 64, idle=0.3)


@pytest.mark.parametrize("arguments, message", [
    (["--prompt", ""], "error: --prompt: the prompt is empty; give at least one character\n"),
    # Command-line bytes that are not UTF-8 arrive as lone surrogates.
    (["--prompt", "ab\udcff"], "error: --prompt: the prompt is not valid UTF-8 text (character 2); "
                               "give the prompt in UTF-8\n"),
    (["--tokens", "0"], "error: --tokens must be at least 1, not 0\n"),
    (["--model", "/nonexistent"], "error: --model: /nonexistent: model directory not found\n"),
    (["--config", "small"], "error: --model: model does not fit the core: hidden_size 128 exceeds the core's maximum "
                            "of 96; intermediate_size 512 exceeds the core's maximum of 256; the trits need 33792 "
                            "words per weight bank, the core has 13368\n"),
])
def test_demo_rejects_arguments_before_building(arguments, message, capsys):
    assert demo.main(arguments) == 1
    assert capsys.readouterr().err == message
