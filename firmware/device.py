"""Host-side driver of one accelerator over the link: load a model, run tokens, read results.

It works the same over a board's serial port and over a simulated link,
because it only needs a :class:`firmware.protocol.Link`.
"""

import logging
import struct

import numpy as np

from golden.int_model import IntParams

from .isa import CoreParams
from .loader import MemoryImage, memory_image, target_payloads, weight_frames
from .protocol import MAX_WRITE_DATA, Command, DeviceError, Link, Status, StatusFlag, Target, write_payload

__all__ = ["Device", "DeviceResetError", "core_params_from_status"]

logger = logging.getLogger(__name__)


class DeviceResetError(RuntimeError):
    """The accelerator lost the loaded model, because it was reset or powered off.

    Its recurrent state, and possibly its memories, are gone, so the results
    of the interrupted command are not trustworthy. Load the model again,
    clear the state and feed the prompt and the tokens generated so far again.
    """


def core_params_from_status(status):
    """Build the :class:`CoreParams` of a device from its STATUS fields."""
    fields = dict(rows=status["rows"], inputs=status["inputs"], vector_lanes=status["vector_lanes"],
                  max_hidden=status["max_hidden"], max_intermediate=status["max_intermediate"],
                  max_vocab=status["max_vocab"], max_layers=status["max_layers"],
                  program_depth=status["program_bytes"] // 16)
    # The WEIGHTS size is in rows of T trits; the words of K trits that fill them are the weight depth.
    row_trits = CoreParams(**fields, weight_depth=1).weight_row_trits
    return CoreParams(**fields, weight_depth=status["weights_bytes"] * row_trits // status["inputs"])


class Device:
    """An accelerator reached through ``link``."""

    def __init__(self, link: Link):
        self.link = link
        self.status = link.status()
        self.core = core_params_from_status(self.status)
        self.image = None

    def load(self, params: IntParams, progress=None):
        """Lay ``params`` out for this device's core and write every memory.

        Raises :class:`firmware.layout.FitError` (naming the sizes) before
        anything is sent when the model does not fit. ``progress(done, total)``
        is called after every WRITE frame with the data bytes sent so far and in all.
        """
        image = memory_image(params, self.core)
        payloads = target_payloads(image)
        frames = list(weight_frames(image, MAX_WRITE_DATA))
        total = sum(len(data) for _, _, data in payloads) + sum(len(data) for _, data in frames)
        sent = 0
        # The device's memories are in between models until the load completes.
        self.image = None
        for name, address, data in payloads:
            logger.info("loading %s: %d bytes", name.lower(), len(data))
            for offset in range(0, len(data), MAX_WRITE_DATA):
                chunk = data[offset:offset + MAX_WRITE_DATA]
                self.link.write(Target[name], address + offset, chunk)
                sent += len(chunk)
                if progress:
                    progress(sent, total)
        logger.info("loading weights: %d frames", len(frames))
        for row, data in frames:
            self.link.execute(Command.WRITE, write_payload(Target.WEIGHTS, row, data), reply_size=0)
            sent += len(data)
            if progress:
                progress(sent, total)
        # The PROGRAM write sets LOADED and a reset clears it, so a reset
        # during the load shows here.
        self._check_loaded("at the end of the load")
        self.image = image
        return image

    def reset_state(self):
        self.link.reset_state()

    def run(self, token, timeout=None):
        """Run one decoding step; return the :class:`~firmware.protocol.RunResult`.

        Raises ValueError for a token outside the loaded vocabulary, before
        anything is sent, and :class:`DeviceResetError` when the accelerator
        was reset since the load.
        """
        if self.image is not None:
            vocab_size = self.image.layout.config.vocab_size
            if not isinstance(token, (int, np.integer)) or not 0 <= token < vocab_size:
                raise ValueError(f"token id {token!r} is outside the vocabulary 0..{vocab_size - 1}")
        try:
            result = self.link.run(token, timeout=timeout)
        except DeviceError as error:
            if error.status == Status.NOT_LOADED and self.image is not None:
                raise DeviceResetError(
                    f"RUN of token {token} was rejected with NOT_LOADED after a model was loaded: the "
                    f"accelerator was reset or powered off; load the model again and replay the prompt"
                ) from error
            raise
        if self.link.last_tries > 1:
            # The request or the reply was lost. A reset of the accelerator
            # while the RUN was pending loses them too, and then the retry
            # ran on a half-updated recurrent state, so the result is wrong.
            self._check_loaded(f"after RUN of token {token} needed {self.link.last_tries} tries")
        return result

    def head_accumulators(self):
        """Read the LM head's integer accumulators of the last run (int64, length V)."""
        layout = self._layout()
        count = layout.config.vocab_size
        data = self.link.read(Target.ACCUMULATORS, layout.acc["head"] * 4, count * 4)
        return np.frombuffer(data, dtype="<i4").astype(np.int64)

    def states(self):
        """Read every layer's recurrent state (int64, L x H, Q16)."""
        layout = self._layout()
        config, stride = layout.config, layout.hidden_stride
        data = self.link.read(Target.STATE, 0, config.num_layers * stride * 4)
        states = np.frombuffer(data, dtype="<i4").astype(np.int64).reshape(config.num_layers, stride)
        return states[:, :config.hidden_size]

    def _check_loaded(self, when):
        """Raise :class:`DeviceResetError` unless STATUS reports a loaded model; ``when`` names the check."""
        self.status = self.link.status()
        if not self.status["flags"] & StatusFlag.LOADED:
            self.image = None
            raise DeviceResetError(f"{when}, STATUS reports no loaded model: the accelerator was reset or "
                                   f"powered off; load the model again and replay the prompt")

    def _layout(self):
        if self.image is None:
            raise RuntimeError("no model loaded: call load() first")
        return self.image.layout
