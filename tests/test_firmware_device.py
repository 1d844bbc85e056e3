"""Host driver (firmware.device) against an in-memory accelerator: fit checks, token checks and resets."""

import pytest

from firmware.device import Device, DeviceResetError
from firmware.isa import INSTRUCTION_BITS, CoreParams
from firmware.layout import FitError
from firmware.protocol import STATUS_FIELDS, Command, Link, Status, StatusFlag, Target, encode_status
from golden.config import ModelConfig
from golden.image import image_bytes, read_image
from golden.int_model import prepare
from golden.synthetic import random_tensors
from test_protocol import FakeDevice

CONFIG = ModelConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_layers=1)
CORE = CoreParams(rows=2, inputs=8, vector_lanes=2, max_hidden=8, max_intermediate=16, max_vocab=16,
                  max_layers=1, weight_depth=256, program_depth=64)


class FakeAccelerator(FakeDevice):
    """FakeDevice with the STATUS of ``core``, whose LOADED flag a PROGRAM write sets and ``power_cycle`` clears."""

    def __init__(self, core=CORE):
        super().__init__(size=1 << 16, vocab=CONFIG.vocab_size)
        self.core = core
        self.loaded = False
        self.keep_program = True
        self.run_status = None      # a Status that every RUN gets instead of running

    def power_cycle(self):
        self.loaded = False
        self.last = None

    def _execute(self, frame):
        if frame.command == Command.STATUS:
            self.executed.append(Command.STATUS)
            return Status.OK, encode_status(self._status_values())
        if frame.command == Command.WRITE and frame.payload[0] == Target.PROGRAM and self.keep_program:
            self.loaded = True
        if frame.command == Command.RUN and self.run_status is not None:
            self.executed.append(Command.RUN)
            return (self.run_status,)
        return super()._execute(frame)

    def _status_values(self):
        core = self.core
        values = {field.name: 0 for field in STATUS_FIELDS}
        values.update(protocol_version=1, rows=core.rows, inputs=core.inputs, vector_lanes=core.vector_lanes,
                      max_hidden=core.max_hidden, max_intermediate=core.max_intermediate, max_vocab=core.max_vocab,
                      max_layers=core.max_layers, weights_bytes=core.weight_rows,
                      program_bytes=core.program_depth * INSTRUCTION_BITS // 8,
                      flags=StatusFlag.LOADED if self.loaded else 0)
        for target in Target:
            if target not in (Target.PROGRAM, Target.WEIGHTS):
                values[f"{target.name.lower()}_bytes"] = len(self.memories[target])
        return values


def params_of(config, seed=3):
    return prepare(config, random_tensors(config, seed=seed))


def loaded_device(fake):
    device = Device(Link(fake, timeout=0.05, retries=2))
    device.load(params_of(CONFIG))
    return device


def test_fake_status_describes_core():
    assert Device(Link(FakeAccelerator(), timeout=0.05)).core == CORE


def test_image_too_large_rejected_before_sending():
    # The image file, read back, is checked against the core of the device at load time.
    larger = ModelConfig(vocab_size=40, hidden_size=16, intermediate_size=16, num_layers=2)
    params = read_image(image_bytes(params_of(larger)))
    fake = FakeAccelerator()
    device = Device(Link(fake, timeout=0.05))
    with pytest.raises(FitError) as error:
        device.load(params)
    message = str(error.value)
    assert message.startswith("model does not fit the core: ")
    assert "hidden_size 16 exceeds the core's maximum of 8" in message
    assert "vocab_size 40 exceeds the core's maximum of 16" in message
    assert "num_layers 2 exceeds the core's maximum of 1" in message
    # The STATUS of the Link and the one of the Device, and nothing else.
    assert fake.executed == [Command.STATUS, Command.STATUS]


def test_load_ends_with_loaded_check():
    fake = FakeAccelerator()
    device = loaded_device(fake)
    assert device.image is not None
    assert fake.executed[-1] == Command.STATUS


def test_reset_during_load_detected():
    fake = FakeAccelerator()
    fake.keep_program = False       # as if a reset cleared LOADED after the PROGRAM write
    device = Device(Link(fake, timeout=0.05))
    with pytest.raises(DeviceResetError, match=r"^at the end of the load, STATUS reports no loaded model: the "
                                               r"accelerator was reset or powered off; load the model again "
                                               r"and replay the prompt$"):
        device.load(params_of(CONFIG))
    assert device.image is None


@pytest.mark.parametrize("token", [16, -1, 2**32, 3.0])
def test_run_rejects_token_outside_vocabulary(token):
    fake = FakeAccelerator()
    device = loaded_device(fake)
    with pytest.raises(ValueError, match=rf"^token id {token!r} is outside the vocabulary 0\.\.15$"):
        device.run(token)
    assert Command.RUN not in fake.executed


def test_retried_run_after_reset_raises():
    fake = FakeAccelerator()
    device = loaded_device(fake)
    assert device.run(3).argmax == 9
    # The reply of the next RUN is lost and the device is reset before the retry.
    fake.drop_replies = 1
    fake.power_cycle()
    with pytest.raises(DeviceResetError, match=r"^after RUN of token 4 needed 2 tries, STATUS reports no loaded "
                                               r"model: the accelerator was reset or powered off; load the model "
                                               r"again and replay the prompt$"):
        device.run(4)
    assert device.image is None


def test_retried_run_without_reset_returns_result():
    fake = FakeAccelerator()
    device = loaded_device(fake)
    fake.drop_replies = 1
    assert device.run(5).argmax == 15
    assert fake.executed[-2:] == [Command.RUN, Command.STATUS]
    assert fake.executed.count(Command.RUN) == 1


def test_not_loaded_run_after_load_raises_reset_error():
    fake = FakeAccelerator()
    device = loaded_device(fake)
    fake.run_status = Status.NOT_LOADED
    with pytest.raises(DeviceResetError, match=r"^RUN of token 2 was rejected with NOT_LOADED after a model was "
                                               r"loaded: the accelerator was reset or powered off; load the "
                                               r"model again and replay the prompt$"):
        device.run(2)
