"""Generate text with the float or the integer golden model.

Prompts and outputs are byte-level, as the bundled model's vocabulary is the
256 byte values. A model with a larger vocabulary still takes the prompt as
UTF-8 bytes, and a generated token above 255 prints as ``<id>``.
"""

import argparse
import math
import sys

import numpy as np

from .checkpoint import load_checkpoint
from .float_model import FloatModel
from .int_model import IntModel, prepare

__all__ = ["DEFAULT_PROMPT", "check_temperature", "sample_token", "generate", "encode_prompt", "token_bytes", "main"]

# A speaker line in the format of the plays that the bundled model was trained
# on. After a bare "ROMEO:" with no newline, greedy decoding of that model
# writes only spaces.
DEFAULT_PROMPT = "ROMEO.\n"


def check_temperature(temperature):
    """Raise ValueError unless ``temperature`` is 0 (greedy) or a positive finite number."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be 0 (greedy) or a positive finite number, not {temperature}")


def sample_token(logits, temperature=0.0, top_k=0, rng=None):
    """Pick the next token: argmax when ``temperature`` is 0, else sample.

    Sampling keeps the ``top_k`` largest logits (all when 0), divides by
    ``temperature`` and draws from the softmax with ``rng``. Argmax ties go to
    the lowest token id.
    """
    logits = np.asarray(logits, dtype=np.float64)
    check_temperature(temperature)
    if temperature == 0:
        return int(np.argmax(logits))
    if rng is None:
        raise ValueError("sampling with a temperature needs a random generator (a seed)")
    candidates = np.arange(logits.size)
    if 0 < top_k < logits.size:
        candidates = np.argsort(-logits, kind="stable")[:top_k]
    scaled = logits[candidates] / temperature
    weights = np.exp(scaled - scaled.max())
    return int(rng.choice(candidates, p=weights / weights.sum()))


def encode_prompt(prompt, vocab_size):
    """Return the token ids of a prompt: its UTF-8 bytes for a byte-level model."""
    if not prompt:
        raise ValueError("the prompt is empty; give at least one character")
    if vocab_size < 256:
        raise ValueError(f"byte-level prompts need a vocabulary of 256, the model has {vocab_size}")
    try:
        return list(prompt.encode("utf-8"))
    except UnicodeEncodeError as error:
        # Command-line bytes that are not UTF-8 arrive as lone surrogates.
        raise ValueError(f"the prompt is not valid UTF-8 text (character {error.start}); "
                         f"give the prompt in UTF-8") from None


def token_bytes(token):
    """Return the text of ``token`` for a byte-level model: the byte itself, or ``<id>`` above 255."""
    return bytes([token]) if 0 <= token < 256 else f"<{token}>".encode()


def generate(model, prompt_tokens, count, temperature=0.0, top_k=0, seed=0, integer=False):
    """Feed ``prompt_tokens`` and yield ``count`` new tokens one by one."""
    rng = np.random.default_rng(seed)
    model.reset()
    if not prompt_tokens:
        raise ValueError("the prompt is empty; give at least one token")
    for token in prompt_tokens[:-1]:
        model.step(token)
    token = prompt_tokens[-1]
    for _ in range(count):
        output = model.step(token)
        logits = output.logits if integer else output
        if integer and temperature == 0:
            token = output.token
        else:
            token = sample_token(logits, temperature, top_k, rng)
        yield token


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m golden.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Hugging Face model directory")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"prompt text (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--tokens", type=int, default=200, help="tokens to generate (default 200)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 for greedy (default), else sampling")
    parser.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for sampling")
    parser.add_argument("--integer", action="store_true", help="use the integer model instead of the float one")
    args = parser.parse_args(argv)
    if args.tokens < 1:
        parser.error(f"--tokens must be at least 1, not {args.tokens}")
    try:
        check_temperature(args.temperature)
    except ValueError as error:
        parser.error(f"--{error}")
    if args.top_k < 0:
        parser.error(f"--top-k must be 0 (all tokens) or positive, not {args.top_k}")
    if args.seed < 0:
        parser.error(f"--seed must be 0 or more, not {args.seed}")
    try:
        config, tensors = load_checkpoint(args.model)
        prompt = encode_prompt(args.prompt, config.vocab_size)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    model = IntModel(prepare(config, tensors)) if args.integer else FloatModel(config, tensors)
    sys.stdout.write(args.prompt)
    for token in generate(model, prompt, args.tokens, args.temperature, args.top_k, args.seed, args.integer):
        sys.stdout.buffer.write(token_bytes(token))
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
