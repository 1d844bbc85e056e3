"""`make serial-demo`: the `mmfree` command against the Verilated board design, through a pseudo-terminal.

Builds (or reuses, from build/sim) the Verilator model of the board's serial
design (:mod:`sim.serial_shim`) and runs the bench :mod:`sim.tb_serial`, which
starts ``mmfree run --check`` on a pseudo-terminal bridged to the design's
serial pins. The command loads the model over the simulated serial link,
streams the generated text and compares every token with the integer golden
model. The bench also compares the whole output with the golden model's.

The serial lines run at ``SIM_DIVISOR`` clock cycles per bit, as on a board at
its default 30 MHz and 3 Mbit/s.
"""

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from firmware.runtime import DEFAULT_PROMPT
from golden.config import ModelConfig
from golden.generate import encode_prompt, generate, token_bytes
from golden.image import write_image
from golden.int_model import IntModel, IntParams, prepare
from golden.synthetic import random_tensors
from hw.configs import CONFIGS

from .build import build_component, run_component_bench
from .serial_shim import SERIAL_TOP_NAME, SIM_DIVISOR, SIM_TIMEOUT_CYCLES, serial_link_shim

__all__ = ["build_serial_design", "random_model_image", "host_command", "expected_output", "run_serial_demo", "main"]

DEFAULT_MODEL = "random:16,32,256,1,7"
# Reply timeout of the host command in wall-clock seconds. A 1 KB request
# takes about 82,000 simulated cycles at a divisor of 8, which took 2.3 s at
# the 36,000 cycles per second measured on 2 shared cores. The margin covers
# a slower machine.
HOST_TIMEOUT_S = 30


def build_serial_design(config, divisor=SIM_DIVISOR, *, waves=False):
    """Generate and Verilate the serial design of core ``config`` (a key of CONFIGS) and return the build directory."""
    core = CONFIGS[config]
    return build_component(lambda: serial_link_shim(core, divisor=divisor), SERIAL_TOP_NAME,
                           f"serial-{config}-d{divisor}-t{SIM_TIMEOUT_CYCLES}", sources=["sim/serial_shim.py"],
                           waves=waves)


def random_model_image(spec, directory):
    """Write the model image of ``random:H,I,V,L,SEED`` into ``directory`` and return ``(path, params)``."""
    try:
        H, I, V, L, seed = (int(part) for part in spec[len("random:"):].split(","))
    except ValueError:
        raise ValueError(f"a random model is `random:H,I,V,L,SEED` with five integers, not {spec!r}") from None
    config = ModelConfig(vocab_size=V, hidden_size=H, intermediate_size=I, num_layers=L)
    params = prepare(config, random_tensors(config, seed))
    path = Path(directory) / f"random-h{H}-i{I}-v{V}-l{L}-s{seed}.mmfi"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, params)
    return path, params


def host_command():
    """Return the command that starts the host runtime: the installed `mmfree` script, else the module."""
    script = Path(sys.executable).parent / "mmfree"
    if script.exists():
        return [str(script)]
    found = shutil.which("mmfree")
    return [found] if found else [sys.executable, "-m", "firmware.cli"]


def expected_output(params: IntParams, prompt, tokens):
    """Return what `mmfree run` prints on standard output when every token equals the golden model."""
    generated = b"".join(token_bytes(token) for token in generate(
        IntModel(params), encode_prompt(prompt, params.config.vocab_size), tokens, integer=True))
    text = prompt.encode() + generated
    return text if text.endswith(b"\n") else text + b"\n"


def run_serial_demo(config="small", model=DEFAULT_MODEL, prompt=DEFAULT_PROMPT, tokens=16, *,
                    divisor=SIM_DIVISOR, idle=0.1, waves=False):
    """Run `mmfree run --check` against the simulated board and return ``(tests, failures)`` of the bench.

    ``model`` is a Hugging Face model directory or ``random:H,I,V,L,SEED``.
    """
    build_dir = build_serial_design(config, divisor, waves=waves)
    if model.startswith("random:"):
        image, params = random_model_image(model, build_dir / "models")
        model_arguments = ["--image", str(image)]
    else:
        from golden.checkpoint import load_checkpoint

        model_config, tensors = load_checkpoint(model)
        params = prepare(model_config, tensors)
        model_arguments = ["--model", str(Path(model).resolve())]
    command = host_command() + ["run", *model_arguments, "--prompt", prompt, "--tokens", str(tokens), "--check",
                                "--timeout", str(HOST_TIMEOUT_S)]
    env = {
        "MMFREE_HOST_COMMAND": json.dumps(command),
        "MMFREE_EXPECTED_OUTPUT": expected_output(params, prompt, tokens).hex(),
        "MMFREE_IDLE": idle,
        "MMFREE_DIVISOR": divisor,
        "COCOTB_LOG_LEVEL": "INFO",
    }
    results = run_component_bench(build_dir, SERIAL_TOP_NAME, "sim.tb_serial", "host_command_over_pty", env,
                                  waves=waves)
    if waves:
        for trace in sorted(build_dir.glob("*.fst")):
            logging.info("waveform: %s", trace)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sim.serial_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small", choices=sorted(CONFIGS), help="core configuration (default small)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"Hugging Face model directory, or random:H,I,V,L,SEED (default {DEFAULT_MODEL})")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"prompt text (default {DEFAULT_PROMPT!r})")
    parser.add_argument("--tokens", type=int, default=16, help="tokens to generate (default 16)")
    parser.add_argument("--divisor", type=int, default=SIM_DIVISOR,
                        help=f"clock cycles per bit of the simulated serial lines, at least 4 (default {SIM_DIVISOR})")
    parser.add_argument("--waves", action="store_true", help="write an FST waveform of the run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.prompt:
        parser.error("--prompt is empty; give at least one character")
    if args.tokens < 1:
        parser.error(f"--tokens must be at least 1, not {args.tokens}")

    started = time.monotonic()
    try:
        tests, failures = run_serial_demo(args.config, args.model, args.prompt, args.tokens, divisor=args.divisor,
                                          waves=args.waves)
    except (ValueError, RuntimeError) as error:
        # A bad model argument, or a failed or impossible Verilator build.
        print(f"serial demo: error: {error}", file=sys.stderr)
        return 1
    logging.info("serial demo finished in %.0f s", time.monotonic() - started)
    if failures or not tests:
        print(f"serial demo: FAILED ({failures} of {tests} checks failed); see the log above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
