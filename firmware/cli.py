"""The ``mmfree`` command: run a model on an accelerator board over its serial port.

``mmfree run`` loads a model into the board, feeds a prompt and streams the
generated text to standard output. With ``--check`` it steps the integer
golden model alongside and stops at the first token that differs.
``mmfree status`` prints what the board reports about its core.

Exit status: 0 on success, 1 when the port, the model or the link fails,
2 for invalid arguments, 3 when a token differs from the golden model, and
130 when interrupted. Errors end in one line on standard error.
"""

import argparse
import logging
import os
import sys
import time

from .protocol import PROTOCOL_VERSION, DeviceError, LinkError, StatusFlag
from .runtime import DEFAULT_BAUD, DEFAULT_PROMPT

__all__ = ["main"]

logger = logging.getLogger("mmfree")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_MISMATCH = 3
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A failure that ends the command with its message on one line and exit status 1."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mmfree", description="Run a MatMul-free language model on an accelerator board over its serial port.",
        epilog="Exit status: 0 on success, 1 on a port, model or link error, 2 for invalid arguments, "
               "3 when a token differs from the golden model (run --check).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="load a model, feed a prompt and stream the generated text",
                              description="Load a model into the board, feed a prompt and stream the generated "
                                          "text (greedy decoding) to standard output.")
    run.set_defaults(command_parser=run)
    _add_port_arguments(run)
    model = run.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", metavar="DIR", help="Hugging Face model directory")
    model.add_argument("--image", metavar="FILE", help="model image written by `python -m golden.image`")
    run.add_argument("--prompt", default=DEFAULT_PROMPT,
                     help=f"prompt text, fed as UTF-8 bytes (default: {DEFAULT_PROMPT!r})")
    run.add_argument("--tokens", type=int, default=64, metavar="N", help="tokens to generate (default 64)")
    run.add_argument("--check", action="store_true",
                     help="run the integer golden model alongside and stop at the first token that differs")
    run.add_argument("--run-timeout", type=float, metavar="SECONDS",
                     help="reply timeout of each decoding step (default: --timeout)")

    status = commands.add_parser("status", help="print the core and the loaded model that the board reports",
                                 description="Print the STATUS fields that the board reports.")
    status.set_defaults(command_parser=status)
    _add_port_arguments(status)
    return parser


def _add_port_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port of the board, such as /dev/ttyUSB0")
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                        help=f"bit rate of the serial link in bit/s, which must match the bitstream "
                             f"(default {DEFAULT_BAUD})")
    parser.add_argument("--timeout", type=float, default=1.0, metavar="SECONDS",
                        help="reply timeout of each request in seconds (default 1)")
    parser.add_argument("--retries", type=int, default=3,
                        help="times a request is sent again after its reply was lost or damaged (default 3)")
    parser.add_argument("--verbose", action="store_true", help="also log each memory as it is loaded")


def _check_arguments(parser, args):
    if args.baud <= 0:
        parser.error(f"--baud must be a positive bit rate, not {args.baud}")
    if not args.timeout > 0:
        parser.error(f"--timeout must be a positive number of seconds, not {args.timeout}")
    if args.retries < 0:
        parser.error(f"--retries must be 0 or more, not {args.retries}")
    if args.command == "run":
        if args.tokens < 1:
            parser.error(f"--tokens must be at least 1, not {args.tokens}")
        if not args.prompt:
            parser.error("--prompt is empty; give at least one character")
        if args.run_timeout is not None and not args.run_timeout > 0:
            parser.error(f"--run-timeout must be a positive number of seconds, not {args.run_timeout}")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    # The subcommand's parser prints its own usage line, as argparse does for a value of the wrong type.
    _check_arguments(args.command_parser, args)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="mmfree: %(message)s", stream=sys.stderr)
    handler = run_command if args.command == "run" else status_command
    try:
        return handler(args)
    except CommandError as error:
        _print_error(str(error))
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stdout.flush()
        _print_error("interrupted")
        return EXIT_INTERRUPTED


# Whether generated text without a final newline is on standard output, so
# that an error message starts on a line of its own in a terminal.
_stdout_mid_line = False


def _print_error(message):
    prefix = "\n" if _stdout_mid_line else ""
    print(f"{prefix}mmfree: error: {message}", file=sys.stderr, flush=True)


def _connect(args):
    """Open the port, read the device's STATUS and return ``(port, device)``."""
    import serial

    from .device import Device
    from .protocol import Link
    from .runtime import open_serial_port

    try:
        port = open_serial_port(args.port, args.baud)
    except (serial.SerialException, OSError, ValueError) as error:
        # pyserial nests the OS error's text in its own message, so the message comes from the errno.
        reason = os.strerror(error.errno) if getattr(error, "errno", None) else str(error)
        raise CommandError(f"cannot open serial port {args.port}: {reason}") from None
    try:
        device = Device(Link(port, timeout=args.timeout, retries=args.retries))
    except (LinkError, DeviceError) as error:
        port.close()
        raise CommandError(f"no valid STATUS reply from {args.port} at {args.baud} bit/s: {error}. Check that "
                           f"the board runs the accelerator bitstream and that --baud matches it") from None
    except serial.SerialException as error:
        port.close()
        raise CommandError(f"serial port {args.port} failed: {error}") from None
    version = device.status["protocol_version"]
    if version != PROTOCOL_VERSION:
        port.close()
        raise CommandError(f"the device on {args.port} speaks link protocol version {version}, and this host "
                           f"runtime speaks version {PROTOCOL_VERSION}; use the matching release")
    return port, device


def _describe_core(core):
    return (f"{core.lanes} lanes ({core.rows} x {core.inputs}), {core.vector_lanes} vector lanes; "
            f"holds H {core.max_hidden}, I {core.max_intermediate}, V {core.max_vocab}, L {core.max_layers}")


def _describe_model(config):
    return (f"H {config.hidden_size}, I {config.intermediate_size}, V {config.vocab_size}, "
            f"L {config.num_layers} ({config.trit_count:,} trits)")


def status_command(args):
    port, device = _connect(args)
    with port:
        status = device.status
        print(f"port: {args.port} at {args.baud} bit/s")
        print(f"core: {_describe_core(device.core)}")
        if status["flags"] & StatusFlag.LOADED:
            print(f"loaded model: H {status['loaded_hidden']}, I {status['loaded_intermediate']}, "
                  f"V {status['loaded_vocab']}, L {status['loaded_layers']}")
        else:
            print("loaded model: none")
        print(f"frames dropped since reset: {status['checksum_errors']} checksum mismatches, "
              f"{status['length_errors']} invalid lengths, {status['timeouts']} timeouts")
        print("STATUS fields:")
        width = max(map(len, status))
        for name, value in status.items():
            print(f"  {name:<{width}}  {value}")
    return EXIT_OK


class LoadProgress:
    """Progress display of a model load on standard error, called as ``progress(done, total)`` in bytes.

    On a terminal one line is redrawn; otherwise a line is printed at every
    tenth of the load, so that logs stay short.
    """

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.redraw = self.stream.isatty()
        self.started = time.monotonic()
        self.next_tenth = 1

    def __call__(self, done, total):
        elapsed = max(time.monotonic() - self.started, 1e-9)
        line = (f"loading the model: {100 * done / total:3.0f} % ({done:,} of {total:,} bytes, "
                f"{done / elapsed / 1000:.1f} kB/s)")
        if self.redraw:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
            self.stream.flush()
        elif done * 10 >= self.next_tenth * total:
            while done * 10 >= self.next_tenth * total:
                self.next_tenth += 1
            print(line, file=self.stream, flush=True)


def _load_model(args):
    from .runtime import load_params

    try:
        return load_params(model_dir=args.model, image=args.image)
    except ValueError as error:
        # The checkpoint and image readers name the file in their messages.
        raise CommandError(f"cannot load the model: {error}") from None
    except OSError as error:
        raise CommandError(f"cannot load the model {args.model or args.image}: {error}") from None


def _prompt_tokens(prompt, config):
    from golden.generate import encode_prompt

    try:
        tokens = encode_prompt(prompt, config.vocab_size)
    except ValueError as error:
        raise CommandError(f"--prompt: {error}") from None
    if max(tokens) >= config.vocab_size:
        raise CommandError(f"the prompt has byte {max(tokens)}, outside the model's vocabulary of "
                           f"{config.vocab_size}")
    return tokens


def run_command(args):
    import serial

    from golden.int_model import IntModel

    from .device import DeviceResetError
    from .layout import FitError

    params = _load_model(args)
    config = params.config
    prompt = _prompt_tokens(args.prompt, config)
    port, device = _connect(args)
    with port:
        print(f"mmfree: device on {args.port}: {_describe_core(device.core)}", file=sys.stderr)
        print(f"mmfree: model: {_describe_model(config)}", file=sys.stderr)
        try:
            _load_into_device(device, params)
            golden = IntModel(params) if args.check else None
            return _generate(args, device, prompt, golden)
        except FitError as error:
            raise CommandError(f"{error}. The device on {args.port} has a core of {_describe_core(device.core)}") \
                from None
        except (LinkError, DeviceError) as error:
            raise CommandError(f"link to {args.port} failed: {error}") from None
        except DeviceResetError as error:
            raise CommandError(f"the device on {args.port} lost the model: {error}") from None
        except serial.SerialException as error:
            raise CommandError(f"serial port {args.port} failed: {error}") from None


def _load_into_device(device, params):
    """Write the model into every memory of the device and check the device reports it loaded."""
    started = time.monotonic()
    device.load(params, progress=LoadProgress())
    elapsed = time.monotonic() - started
    status = device.link.status()
    if not status["flags"] & StatusFlag.LOADED:
        raise CommandError("the device does not report the LOADED flag after the load")
    # NOTE: the core reports loaded_hidden and the other loaded_* fields as 0
    # for now, so the shape is compared only when the device reports one.
    config = params.config
    loaded = (status["loaded_hidden"], status["loaded_intermediate"], status["loaded_vocab"], status["loaded_layers"])
    expected = (config.hidden_size, config.intermediate_size, config.vocab_size, config.num_layers)
    if status["loaded_hidden"] != 0 and loaded != expected:
        raise CommandError(f"after the load the device reports a model of H, I, V, L = {loaded}, expected {expected}")
    print(f"mmfree: loaded in {elapsed:.1f} s", file=sys.stderr, flush=True)


def _generate(args, device, prompt, golden):
    """Stream the generated text and return the exit status."""
    global _stdout_mid_line
    from golden.generate import token_bytes

    from .runtime import generate

    out = sys.stdout.buffer
    out.write(args.prompt.encode("utf-8"))
    out.flush()
    _stdout_mid_line = not args.prompt.endswith("\n")

    cycles = []
    started = time.monotonic()
    for step in generate(device, prompt, args.tokens, golden=golden, run_timeout=args.run_timeout):
        cycles.append(step.result.cycles)
        if not step.matches:
            phase = "generating" if step.generated else "feeding the prompt"
            _print_error(f"step {step.index} ({phase}, input token {step.token}) differs from the golden model: "
                         f"the device's argmax is {step.result.argmax}, the golden model's is "
                         f"{step.expected.token}")
            return EXIT_MISMATCH
        if step.generated:
            text = token_bytes(step.result.argmax)
            out.write(text)
            out.flush()
            _stdout_mid_line = not text.endswith(b"\n")
    elapsed = time.monotonic() - started
    if _stdout_mid_line:
        out.write(b"\n")
        out.flush()
        _stdout_mid_line = False

    summary = (f"mmfree: {len(cycles)} steps ({args.tokens} generated) in {elapsed:.1f} s, "
               f"{len(cycles) / elapsed:.1f} steps/s; {sum(cycles) / len(cycles):.0f} device cycles per step")
    if golden is not None:
        summary += f"; all {len(cycles)} tokens equal to the golden model"
    print(summary, file=sys.stderr, flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
