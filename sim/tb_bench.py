"""cocotb test that measures the accelerator's cycles per token for :mod:`sim.bench`.

It runs the same host session as :mod:`sim.tb_accelerator` (load the model
through the link, then generate and compare every token with the integer
model) and writes the result as JSON to the path in ``MMFREE_REPORT``. The
other settings are the environment variables that
:mod:`sim.tb_accelerator` documents.

The report's ``mean_cycles`` is the mean, over every decoding step of the
prompt and of the generated tokens, of the cycles from RUN to done that the
sequencer counts and returns in each RUN reply.
"""

import json
import os
from pathlib import Path

import cocotb
from cocotb.task import bridge

from sim.tb_accelerator import host_session, settings_from_environment, start_bench


@cocotb.test()
async def measure_cycles(dut):
    """Generate tokens, compare each with the golden model and write the mean cycles per token."""
    report_path = Path(os.environ["MMFREE_REPORT"])
    settings = settings_from_environment()
    port = await start_bench(dut, settings)
    scoreboard, _, mean_cycles = await bridge(host_session)(port, dut._log, settings)
    report = {
        "steps": scoreboard.tokens,
        "mismatches": scoreboard.mismatches,
        "values_compared": scoreboard.values,
        "mean_cycles": mean_cycles,
    }
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    assert scoreboard.mismatches == 0, f"{scoreboard.mismatches} mismatches against the golden model"
    assert scoreboard.tokens > 0
