"""The whole accelerator under link faults, resets and random bytes, on Verilator.

Each test runs one cocotb test of `sim.tb_faults` on the small core, whose
Verilator build tests/test_sim_accelerator.py shares. That module describes
each fault and what its test checks.
"""

import pytest

from hw.configs import CONFIGS
from sim.build import run_bench

TESTCASES = [
    "request_bit_flips",
    "request_bytes_dropped_and_cut",
    "reply_bytes_flipped_and_dropped",
    "host_stops_mid_load_and_restarts",
    "reset_during_generation",
    "board_never_replies",
    "random_bytes_to_decoder",
    "rejected_commands_keep_state",
]


def run(testcase, seed, tokens=3):
    tests, failures = run_bench(CONFIGS["small"], testcase, {"MMFREE_SEED": seed, "MMFREE_TOKENS": tokens},
                                test_module="sim.tb_faults")
    assert tests == 1, f"cocotb ran {tests} tests for sim.tb_faults.{testcase}, expected 1"
    assert failures == 0, f"sim.tb_faults.{testcase} failed with seed {seed}; see the cocotb log above"


@pytest.mark.parametrize("testcase", TESTCASES)
def test_link_fault(testcase):
    run(testcase, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4, 5])
@pytest.mark.parametrize("testcase", TESTCASES)
def test_link_fault_more_seeds(testcase, seed):
    run(testcase, seed, tokens=8)
