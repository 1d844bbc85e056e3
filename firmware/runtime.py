"""Host runtime library: the serial port, the model files and greedy generation on the accelerator.

:mod:`firmware.cli` (the ``mmfree`` command) is built on these pieces. They
need no Amaranth, only NumPy and pyserial, so a machine that only talks to
a board needs nothing of the hardware generator.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from golden.generate import DEFAULT_PROMPT
from golden.int_model import IntModel, StepResult

from .device import Device
from .protocol import RunResult

__all__ = ["DEFAULT_BAUD", "DEFAULT_PROMPT", "SerialPort", "open_serial_port", "load_params",
           "TokenStep", "generate"]

# The bit rate of every board top in boards/top.py, which gives its sources.
# tests/test_cli.py checks that the two agree.
DEFAULT_BAUD = 3_000_000


# SerialPort.read waits for bytes in slices of this many seconds, so it may
# return up to this much later than its timeout.
READ_SLICE_S = 0.02


class SerialPort:
    """A pyserial port with the ``write(data)`` and ``read(count, timeout)`` that :class:`~firmware.protocol.Link` needs.

    pyserial keeps one timeout per port, and changing it reconfigures the
    port on every call. The port therefore keeps a fixed timeout of
    ``READ_SLICE_S`` and :meth:`read` repeats pyserial reads until its own
    deadline.
    """

    def __init__(self, serial_port):
        self._serial = serial_port
        self._serial.timeout = READ_SLICE_S

    @property
    def name(self):
        return self._serial.port

    def write(self, data):
        self._serial.write(bytes(data))

    def read(self, count, timeout):
        """Return up to ``count`` bytes, fewer only when ``timeout`` seconds (plus at most READ_SLICE_S) passed first."""
        deadline = time.monotonic() + timeout
        data = bytearray()
        while len(data) < count:
            data += self._serial.read(count - len(data))
            if time.monotonic() >= deadline:
                break
        return bytes(data)

    def close(self):
        self._serial.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def open_serial_port(name, baud=DEFAULT_BAUD):
    """Open the serial port ``name`` (8N1, no flow control) and drop any bytes already received.

    Raises ``serial.SerialException`` when the port does not exist or is in
    use by another process.
    """
    import serial

    # exclusive=True takes an advisory lock (flock), so that two host
    # programs on one port fail at once instead of interleaving frames.
    port = serial.Serial(port=name, baudrate=baud, timeout=READ_SLICE_S, exclusive=True)
    port.reset_input_buffer()
    return SerialPort(port)


def load_params(model_dir=None, image=None):
    """Return the :class:`~golden.int_model.IntParams` of a Hugging Face model directory or of a model image file.

    Exactly one of ``model_dir`` and ``image`` must be given. Raises
    ValueError (a ``CheckpointError``, ``ConfigError`` or ``ImageError``)
    naming the file when it is missing or malformed.
    """
    from golden.checkpoint import load_checkpoint
    from golden.image import read_image
    from golden.int_model import prepare

    if (model_dir is None) == (image is None):
        raise ValueError("give either a model directory or a model image, not both or neither")
    if image is not None:
        return read_image(Path(image))
    config, tensors = load_checkpoint(model_dir)
    return prepare(config, tensors)


@dataclass(frozen=True)
class TokenStep:
    """One decoding step on the device, with the golden model's step on the same input when checking.

    ``index`` counts every step from 0, prompt included. ``generated`` is
    False while the prompt is fed, when the argmax is not the next input.
    """
    index: int
    token: int
    generated: bool
    result: RunResult
    expected: "StepResult | None"

    @property
    def matches(self):
        """Whether the device's argmax equals the golden model's (True when not checking)."""
        return self.expected is None or self.expected.token == self.result.argmax


def generate(device: Device, prompt_tokens, count, *, golden: "IntModel | None" = None, run_timeout=None):
    """Clear the recurrent state, feed ``prompt_tokens`` and yield a :class:`TokenStep` per step.

    Decoding is greedy: after the prompt, each step's input is the previous
    step's argmax on the device. There are ``len(prompt_tokens) - 1 + count``
    steps, and the last ``count`` yield generated tokens. ``golden``, when
    given, is reset and stepped on the same inputs, and each step carries its
    result for the caller to compare. ``run_timeout`` is the reply timeout of
    each RUN in seconds (None: the link's timeout).
    """
    prompt_tokens = list(prompt_tokens)
    if not prompt_tokens:
        raise ValueError("the prompt is empty; give at least one token")
    if count < 0:
        raise ValueError(f"the token count must be 0 or more, not {count}")
    device.reset_state()
    if golden is not None:
        golden.reset()

    token = prompt_tokens[0]
    total = len(prompt_tokens) - 1 + count
    for index in range(total):
        result = device.run(token, timeout=run_timeout)
        expected = golden.step(token) if golden is not None else None
        generated = index + 1 >= len(prompt_tokens)
        yield TokenStep(index, token, generated, result, expected)
        token = result.argmax if generated else prompt_tokens[index + 1]
