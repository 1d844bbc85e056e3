"""The `mmfree` command against the Verilated board design, through a pseudo-terminal.

The test builds (or reuses, from build/sim) the Verilator model of the
serial design of the `small` core and runs `mmfree run --check` on a
pseudo-terminal bridged to its UART pins (sim.tb_serial). The command loads a
random model of 256 byte tokens over the simulated serial link, at a
board's 10 clock cycles per bit, and compares every token with the integer
golden model. The bench checks the command's exit status and its whole output. The run takes
about 30 s on 2 cores, after a build of about 2 minutes.
"""

from golden.config import ModelConfig
from golden.int_model import prepare
from golden.synthetic import random_tensors
from sim.serial_demo import expected_output, run_serial_demo
from sim.tb_serial import printable

MODEL = "random:16,32,256,1,7"


def test_mmfree_run_over_simulated_serial_link():
    tests, failures = run_serial_demo("small", MODEL, "KING:\n", 8)
    assert tests == 1
    assert failures == 0, "`mmfree run --check` failed against the simulated board; see the log above"


def test_echo_escapes_control_bytes():
    assert printable(b"a\x1b[2Jb\x0e\x7f") == b"a\\x1b[2Jb\\x0e\\x7f"
    # Tab, newline and the bytes of UTF-8 text stay as they are.
    assert printable("ROMEO:\n\tthé".encode()) == "ROMEO:\n\tthé".encode()


def test_expected_output_names_ids_above_255():
    # mmfree prints a token above the byte values as <id>, so the expected output must too.
    config = ModelConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_layers=1)
    output = expected_output(prepare(config, random_tensors(config, seed=0)), "ab", 8)
    assert output.startswith(b"ab")
    assert b"<" in output
