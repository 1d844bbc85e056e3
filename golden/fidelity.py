"""Measure how closely the integer model follows the float reference.

Both models read the same held-out text byte by byte (teacher forcing). The
command prints the top-1 next-token agreement between the two and the
cross-entropy and perplexity of each against the text.
"""

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import load_checkpoint
from .float_model import FloatModel
from .int_model import IntModel, prepare

__all__ = ["FidelityReport", "measure", "main"]


@dataclass
class FidelityReport:
    tokens: int
    agreement: float
    float_nll: float
    int_nll: float

    @property
    def float_perplexity(self):
        return math.exp(self.float_nll)

    @property
    def int_perplexity(self):
        return math.exp(self.int_nll)

    @property
    def perplexity_gap(self):
        """Relative perplexity increase of the integer model over the float one."""
        return self.int_perplexity / self.float_perplexity - 1

    def table(self):
        return "\n".join([
            f"tokens scored          {self.tokens}",
            f"top-1 agreement        {100 * self.agreement:.2f} %",
            f"float cross-entropy    {self.float_nll:.4f} nats/token   perplexity {self.float_perplexity:.4f}",
            f"integer cross-entropy  {self.int_nll:.4f} nats/token   perplexity {self.int_perplexity:.4f}",
            f"perplexity gap         {100 * self.perplexity_gap:+.2f} %",
        ])


def _nll(logits, target):
    logits = np.asarray(logits, dtype=np.float64)
    peak = logits.max()
    return float(peak + math.log(np.exp(logits - peak).sum()) - logits[target])


def measure(config, tensors, tokens, progress=None):
    """Run both models over ``tokens`` and return a :class:`FidelityReport`."""
    float_model = FloatModel(config, tensors)
    int_model = IntModel(prepare(config, tensors))
    agree, float_nll, int_nll = 0, 0.0, 0.0
    for position, (token, target) in enumerate(zip(tokens[:-1], tokens[1:])):
        float_logits = float_model.step(token)
        result = int_model.step(token)
        agree += int(np.argmax(float_logits) == result.token)
        float_nll += _nll(float_logits, target)
        int_nll += _nll(result.logits, target)
        if progress:
            progress(position + 1, len(tokens) - 1)
    scored = len(tokens) - 1
    return FidelityReport(scored, agree / scored, float_nll / scored, int_nll / scored)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m golden.fidelity", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Hugging Face model directory with heldout.txt")
    parser.add_argument("--text", help="held-out text file (default: MODEL/heldout.txt)")
    parser.add_argument("--bytes", type=int, default=20000, help="bytes of the text to score (default 20000)")
    args = parser.parse_args(argv)

    text_path = Path(args.text) if args.text else Path(args.model) / "heldout.txt"
    try:
        config, tensors = load_checkpoint(args.model)
        data = text_path.read_bytes()[:args.bytes]
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if config.vocab_size < 256:
        print(f"error: {args.model} has a vocabulary of {config.vocab_size}; "
              f"byte-level text needs 256", file=sys.stderr)
        return 1
    if len(data) < 2:
        print(f"error: {text_path} contains {len(data)} bytes; at least 2 are needed", file=sys.stderr)
        return 1

    start = time.monotonic()

    def progress(done, total):
        if done % 1000 == 0 or done == total:
            rate = done / (time.monotonic() - start)
            print(f"  {done}/{total} tokens, {rate:.0f} tokens/s", file=sys.stderr, flush=True)

    report = measure(config, tensors, list(data), progress)
    print(f"model {args.model}, text {text_path}")
    print(report.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
