"""`make demo`: the bundled model on the simulated accelerator, checked against the golden model.

Builds the Verilator model of the bundled core (cached under build/sim),
loads the model through the simulated link, prints the generated text as it
comes, and ends with one summary line. Exits non-zero on any mismatch.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

from firmware.layout import check_fit
from firmware.runtime import DEFAULT_PROMPT
from golden.checkpoint import load_checkpoint
from golden.generate import encode_prompt
from hw.configs import CONFIGS

from .build import ROOT, build_accelerator, run_bench


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sim.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "shakespeare-h128-l4"),
                        help="Hugging Face model directory (default: the bundled model)")
    parser.add_argument("--config", default="bundled", choices=sorted(CONFIGS), help="core configuration")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"prompt text (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--tokens", type=int, default=64, help="tokens to generate (default 64)")
    parser.add_argument("--waves", action="store_true", help="write an FST waveform of the run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.tokens < 1:
        print(f"error: --tokens must be at least 1, not {args.tokens}", file=sys.stderr)
        return 1
    # Check the model and the prompt before the simulator's build, which takes minutes.
    try:
        config, _ = load_checkpoint(args.model)
        check_fit(config, CONFIGS[args.config])
    except ValueError as error:
        print(f"error: --model: {error}", file=sys.stderr)
        return 1
    try:
        encode_prompt(args.prompt, config.vocab_size)
    except ValueError as error:
        print(f"error: --prompt: {error}", file=sys.stderr)
        return 1

    started = time.monotonic()
    # The simulator runs in its build directory, so the model path must be absolute.
    env = {"MMFREE_MODEL": str(Path(args.model).resolve()), "MMFREE_PROMPT": args.prompt, "MMFREE_TOKENS": args.tokens,
           "MMFREE_DEMO": 1, "MMFREE_IDLE": 0.05,
           # The demo checks every token's argmax and head accumulators; the
           # tests also read back and compare every recurrent state.
           "MMFREE_CHECK_STATE": 0, "COCOTB_LOG_LEVEL": "WARNING"}
    try:
        tests, failures = run_bench(CONFIGS[args.config], "generate_and_compare", env, waves=args.waves)
    except RuntimeError as error:
        # A failed or impossible Verilator build. The message names its log.
        print(f"demo: error: {error}", file=sys.stderr)
        return 1
    logging.info("demo finished in %.0f s", time.monotonic() - started)
    if args.waves:
        # The simulator writes its trace into the (cached) build directory.
        for trace in sorted(build_accelerator(CONFIGS[args.config], waves=True).glob("*.fst")):
            logging.info("waveform: %s", trace)
    if failures or not tests:
        print(f"demo: FAILED ({failures} of {tests} checks failed); see the log above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
