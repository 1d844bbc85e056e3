"""The `mmfree` command against a board stand-in written in Python.

`FakeBoard` replies to link requests the way the accelerator does, with
the integer golden model computing each RUN's argmax, so these tests cover
the command's flow, its output and its error paths in well under a second
each. tests/test_serial_sim.py runs the same command against the Verilated
board design.
"""

import json
import os
import struct
import threading
import tty

import pytest

import firmware.runtime
from boards.top import BOARDS
from firmware.cli import EXIT_ERROR, EXIT_MISMATCH, EXIT_OK, main
from firmware.isa import CoreParams
from firmware.protocol import (PROTOCOL_VERSION, STATUS_FIELDS, BadFrame, Command, FrameDecoder, Status,
                               StatusFlag, Target, encode_reply, encode_status)
from golden.checkpoint import save_checkpoint
from golden.config import ModelConfig
from golden.generate import generate
from golden.image import write_image
from golden.int_model import IntModel, prepare
from golden.synthetic import random_tensors

# The core of hw.configs.CONFIGS["small"].
SMALL_CORE = CoreParams(rows=4, inputs=8, vector_lanes=2, max_hidden=96, max_intermediate=256,
                        max_vocab=1000, max_layers=6, weight_depth=13368, program_depth=512)
MODEL_SHAPE = ModelConfig(vocab_size=256, hidden_size=24, intermediate_size=40, num_layers=2)


class FakeBoard:
    """A port whose far end replies to STATUS, WRITE, RESET_STATE and RUN like the accelerator.

    RUN replies with the argmax of the integer golden model of ``params``,
    except at the RUN numbered ``wrong_run`` (from 0), which replies with
    the next token id. ``corrupt_run`` damages the CRC of that RUN's first
    reply, so the host must retry. With ``silent`` the board never replies.
    """

    def __init__(self, params, core=SMALL_CORE, *, wrong_run=None, corrupt_run=None, silent=False):
        self.model = IntModel(params)
        self.core = core
        self.wrong_run = wrong_run
        self.corrupt_run = corrupt_run
        self.silent = silent
        self.decoder = FrameDecoder()
        self.output = bytearray()
        self.commands = []
        self.runs = 0
        self.loaded = False
        self.last = None

    def write(self, data):
        for event in self.decoder.feed(data):
            if isinstance(event, BadFrame) or self.silent:
                continue
            if self.last is not None and event.seq == self.last[0]:
                self.output += self.last[1]
                continue
            reply = encode_reply(event.seq, event.command, *self._execute(event))
            self.last = (event.seq, reply)
            if event.command == Command.RUN and self.runs - 1 == self.corrupt_run:
                self.corrupt_run = None
                reply = reply[:-1] + bytes([reply[-1] ^ 0x40])
            self.output += reply

    def read(self, count, timeout):
        data = bytes(self.output[:count])
        del self.output[:count]
        return data

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass

    def status_values(self):
        values = {field.name: 1 for field in STATUS_FIELDS}
        core = self.core
        values.update(protocol_version=PROTOCOL_VERSION, rows=core.rows, inputs=core.inputs,
                      vector_lanes=core.vector_lanes, max_hidden=core.max_hidden,
                      max_intermediate=core.max_intermediate, max_vocab=core.max_vocab,
                      max_layers=core.max_layers, program_bytes=core.program_depth * 16,
                      weights_bytes=core.weight_depth, loaded_hidden=0, loaded_intermediate=0,
                      loaded_vocab=0, loaded_layers=0, flags=StatusFlag.LOADED if self.loaded else 0,
                      checksum_errors=0, length_errors=0, timeouts=0)
        return values

    def _execute(self, frame):
        self.commands.append(Command(frame.command))
        if frame.command == Command.STATUS:
            return Status.OK, encode_status(self.status_values())
        if frame.command == Command.WRITE:
            if frame.payload[0] == Target.PROGRAM:
                self.loaded = True
            return (Status.OK,)
        if frame.command == Command.RESET_STATE:
            self.model.reset()
            return (Status.OK,)
        if frame.command == Command.RUN:
            (token,) = struct.unpack("<I", frame.payload)
            argmax = self.model.step(token).token
            if self.runs == self.wrong_run:
                argmax = (argmax + 1) % self.model.config.vocab_size
            self.runs += 1
            return Status.OK, struct.pack("<II", argmax, 1000 + token)
        return (Status.UNKNOWN_COMMAND,)


@pytest.fixture(scope="module")
def params():
    return prepare(MODEL_SHAPE, random_tensors(MODEL_SHAPE, seed=3))


@pytest.fixture(scope="module")
def image(params, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli-model") / "model.mmfi"
    write_image(path, params)
    return path


def attach(monkeypatch, board):
    """Make the command open ``board`` instead of a serial port."""
    monkeypatch.setattr(firmware.runtime, "open_serial_port", lambda name, baud: board)


def golden_text(params, prompt, tokens):
    return bytes(generate(IntModel(params), list(prompt.encode()), tokens, integer=True))


def test_run_streams_text_equal_to_golden(monkeypatch, capsysbinary, params, image):
    board = FakeBoard(params)
    attach(monkeypatch, board)
    status = main(["run", "--port", "fake", "--image", str(image), "--prompt", "ab", "--tokens", "6", "--check"])
    out, err = capsysbinary.readouterr()
    assert status == EXIT_OK, err.decode()
    expected = b"ab" + golden_text(params, "ab", 6)
    assert out.rstrip(b"\n") == expected.rstrip(b"\n")
    assert b"all 7 tokens equal to the golden model" in err
    assert b"loading the model: 100 %" in err


def test_run_resets_state_before_prompt(monkeypatch, params, image):
    board = FakeBoard(params)
    attach(monkeypatch, board)
    main(["run", "--port", "fake", "--image", str(image), "--prompt", "xyz", "--tokens", "2"])
    first_run = board.commands.index(Command.RUN)
    assert board.commands[first_run - 1] == Command.RESET_STATE
    assert board.runs == 4


def test_run_stops_at_first_mismatch(monkeypatch, capsysbinary, params, image):
    board = FakeBoard(params, wrong_run=3)
    attach(monkeypatch, board)
    status = main(["run", "--port", "fake", "--image", str(image), "--prompt", "ab", "--tokens", "6", "--check"])
    out, err = capsysbinary.readouterr()
    assert status == EXIT_MISMATCH
    assert board.runs == 4
    assert b"step 3 (generating" in err
    assert b"differs from the golden model" in err
    # Steps 1 and 2 generated two tokens, and the differing token of step 3 is not printed.
    assert out == b"ab" + golden_text(params, "ab", 2)


def test_run_without_check_ignores_mismatch(monkeypatch, params, image):
    attach(monkeypatch, FakeBoard(params, wrong_run=3))
    status = main(["run", "--port", "fake", "--image", str(image), "--prompt", "ab", "--tokens", "6"])
    assert status == EXIT_OK


def test_run_retries_damaged_reply(monkeypatch, capsysbinary, caplog, params, image):
    board = FakeBoard(params, corrupt_run=2)
    attach(monkeypatch, board)
    status = main(["run", "--port", "fake", "--image", str(image), "--prompt", "ab", "--tokens", "6", "--check"])
    _, err = capsysbinary.readouterr()
    assert status == EXIT_OK, err.decode()
    # Under pytest the retry warning goes to caplog instead of standard error.
    assert "retrying RUN" in caplog.text
    assert "checksum mismatch" in caplog.text
    # The board sent its stored reply again for the retry, so no step ran twice.
    assert board.runs == 7


def test_run_rejects_model_larger_than_core(monkeypatch, capsysbinary, params, image):
    tiny = CoreParams(rows=4, inputs=8, vector_lanes=2, max_hidden=16, max_intermediate=32, max_vocab=64,
                      max_layers=1, weight_depth=64, program_depth=64)
    board = FakeBoard(params, core=tiny)
    attach(monkeypatch, board)
    status = main(["run", "--port", "fake", "--image", str(image), "--check"])
    _, err = capsysbinary.readouterr()
    assert status == EXIT_ERROR
    assert err.count(b"\n") == 3, err.decode()
    assert b"mmfree: error: model does not fit the core: hidden_size 24 exceeds" in err
    assert Command.WRITE not in board.commands


def test_run_reports_silent_device(monkeypatch, capsysbinary, params, image):
    attach(monkeypatch, FakeBoard(params, silent=True))
    status = main(["run", "--port", "fake", "--image", str(image), "--timeout", "0.01", "--retries", "1"])
    _, err = capsysbinary.readouterr()
    assert status == EXIT_ERROR
    lines = err.decode().splitlines()
    assert lines[-1].startswith("mmfree: error: no valid STATUS reply from fake at 3000000 bit/s")
    assert "Traceback" not in err.decode()


def test_run_reports_missing_port(capsysbinary, image):
    status = main(["run", "--port", "/dev/mmfree-no-such-port", "--image", str(image)])
    _, err = capsysbinary.readouterr()
    assert status == EXIT_ERROR
    assert err.decode() == "mmfree: error: cannot open serial port /dev/mmfree-no-such-port: No such file or directory\n"


def test_run_reports_corrupted_image(capsysbinary, tmp_path, image):
    broken = tmp_path / "broken.mmfi"
    data = bytearray(image.read_bytes())
    data[-1] ^= 0xFF
    broken.write_bytes(data)
    status = main(["run", "--port", "/dev/mmfree-no-such-port", "--image", str(broken)])
    _, err = capsysbinary.readouterr()
    assert status == EXIT_ERROR
    assert b"mmfree: error: cannot load the model:" in err
    assert b"checksum mismatch" in err


@pytest.mark.parametrize("arguments, message", [
    (["--tokens", "0"], "--tokens must be at least 1, not 0"),
    (["--tokens", "-5"], "--tokens must be at least 1, not -5"),
    (["--prompt", ""], "--prompt is empty; give at least one character"),
    (["--timeout", "0"], "--timeout must be a positive number of seconds, not 0.0"),
    (["--timeout", "-1"], "--timeout must be a positive number of seconds, not -1.0"),
    (["--baud", "-1"], "--baud must be a positive bit rate, not -1"),
    (["--baud", "0"], "--baud must be a positive bit rate, not 0"),
    (["--run-timeout", "0"], "--run-timeout must be a positive number of seconds, not 0.0"),
])
def test_run_rejects_invalid_arguments(capsys, image, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--port", "fake", "--image", str(image)] + arguments)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("usage: mmfree run ")
    assert err.endswith(f"mmfree run: error: {message}\n")


def test_status_rejects_negative_retries(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["status", "--port", "fake", "--retries", "-1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("usage: mmfree status ")
    assert err.endswith("mmfree status: error: --retries must be 0 or more, not -1\n")


def test_run_names_config_path_once(capsysbinary, tmp_path):
    save_checkpoint(tmp_path, MODEL_SHAPE, random_tensors(MODEL_SHAPE, seed=3))
    config = json.loads((tmp_path / "config.json").read_text())
    del config["vocab_size"]
    (tmp_path / "config.json").write_text(json.dumps(config))

    status = main(["run", "--port", "/dev/mmfree-no-such-port", "--model", str(tmp_path)])
    _, err = capsysbinary.readouterr()
    assert status == EXIT_ERROR
    assert err.decode() == (f"mmfree: error: cannot load the model: {tmp_path / 'config.json'}: "
                            f"missing field `vocab_size`\n")


def test_status_prints_core(monkeypatch, capsysbinary, params):
    attach(monkeypatch, FakeBoard(params))
    status = main(["status", "--port", "fake"])
    out, _ = capsysbinary.readouterr()
    assert status == EXIT_OK
    assert b"core: 32 lanes (4 x 8), 2 vector lanes; holds H 96, I 256, V 1000, L 6" in out
    assert b"loaded model: none" in out


def serve_on_pty(board, master, stop):
    """Forward bytes between a pseudo-terminal's master side and ``board`` until ``stop`` is set."""
    os.set_blocking(master, False)
    while not stop.is_set():
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            data = b""
        if data:
            board.write(data)
        reply = board.read(len(board.output), 0)
        if reply:
            os.write(master, reply)
        if not data:
            stop.wait(0.001)


def test_run_over_pseudo_terminal(capsysbinary, params, image):
    board = FakeBoard(params)
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()
    server = threading.Thread(target=serve_on_pty, args=(board, master, stop))
    server.start()
    try:
        status = main(["run", "--port", os.ttyname(slave), "--image", str(image), "--prompt", "q", "--tokens", "4",
                       "--check"])
    finally:
        stop.set()
        server.join()
        os.close(slave)
        os.close(master)
    out, err = capsysbinary.readouterr()
    assert status == EXIT_OK, err.decode()
    assert out.rstrip(b"\n") == (b"q" + golden_text(params, "q", 4)).rstrip(b"\n")


def test_default_baud_matches_boards():
    for board in BOARDS.values():
        assert board.baud == firmware.runtime.DEFAULT_BAUD, board.name
