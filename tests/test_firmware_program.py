"""The program, memory map and instruction encoding against the integer model."""

import numpy as np
import pytest

from firmware.assembler import assemble, disassemble
from firmware.isa import CoreParams, Opcode, decode, encode
from firmware.layout import FitError, check_fit, plan
from firmware.loader import memory_image
from firmware.program_model import ProgramModel, RunError
from golden.config import ModelConfig
from golden.int_model import IntModel, prepare
from golden.synthetic import random_tensors

CASES = [
    # (H, I, V, L), core: rows, inputs, vector lanes, max H, I, V, L, weight depth
    ((96, 256, 1000, 3), CoreParams(4, 8, 2, 96, 256, 1000, 6, 16384)),
    ((40, 100, 256, 2), CoreParams(3, 5, 1, 64, 128, 300, 3, 4096)),
    ((24, 200, 256, 1), CoreParams(16, 32, 4, 64, 256, 256, 2, 4096)),
]


@pytest.mark.parametrize("shape, core", CASES, ids=lambda case: str(case)[:40])
def test_program_equals_integer_model(shape, core):
    H, I, V, L = shape
    config = ModelConfig(vocab_size=V, hidden_size=H, intermediate_size=I, num_layers=L)
    params = prepare(config, random_tensors(config, seed=11))
    program_model, int_model = ProgramModel(memory_image(params, core)), IntModel(params)
    for token in [1, 7, 0, V - 1, 3, 3]:
        argmax = program_model.run(token)
        result = int_model.step(token)
        assert argmax == result.token
        assert np.array_equal(program_model.head_accumulators(), result.head_acc)
        assert np.array_equal(program_model.states(), result.states)


def test_encode_decode_round_trip():
    word = encode(Opcode.EMBED, vec_dst=12, count=96, shift=-5, dst_max=3, vocab=1000)
    instr = decode(word)
    assert instr.opcode == Opcode.EMBED
    assert instr.fields == {"vec_dst": 12, "count": 96, "shift": -5, "dst_max": 3, "vocab": 1000}


def test_encode_rejects_out_of_range_field():
    with pytest.raises(ValueError, match=r"MATVEC field `col_tiles` must be in \[0, 4095\] \(12 bits\), not 4096"):
        encode(Opcode.MATVEC, col_tiles=4096)
    with pytest.raises(ValueError, match="EMBED has no field 'weights'"):
        encode(Opcode.EMBED, weights=1)


def test_zeroed_program_is_illegal():
    config = ModelConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_layers=1)
    image = memory_image(prepare(config, random_tensors(config)), CoreParams(2, 8, 2, 8, 16, 16, 1, 256))
    image.program = [0] * len(image.program)
    with pytest.raises(RunError, match="illegal instruction ILLEGAL.*is a program loaded"):
        ProgramModel(image).run(1)


def test_token_out_of_range_stops_run():
    config = ModelConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_layers=1)
    image = memory_image(prepare(config, random_tensors(config)), CoreParams(2, 8, 2, 8, 16, 16, 1, 256))
    with pytest.raises(RunError, match=r"token id 16 is outside the vocabulary 0\.\.15"):
        ProgramModel(image).run(16)


def test_model_too_large_for_core():
    config = ModelConfig(vocab_size=1000, hidden_size=96, intermediate_size=256, num_layers=3)
    core = CoreParams(4, 8, 2, max_hidden=64, max_intermediate=256, max_vocab=512, max_layers=6, weight_depth=100)
    with pytest.raises(FitError) as error:
        check_fit(config, core)
    message = str(error.value)
    assert "hidden_size 96 exceeds the core's maximum of 64" in message
    assert "vocab_size 1000 exceeds the core's maximum of 512" in message
    assert "the trits need 13368 words per weight bank, the core has 100" in message


def test_core_params_checked():
    with pytest.raises(ValueError, match="`rows` must be a positive integer, not 0"):
        CoreParams(0, 8, 2, 64, 64, 64, 1, 64)
    with pytest.raises(ValueError, match="`inputs` must be at least 5, not 4"):
        CoreParams(4, 4, 2, 64, 64, 64, 1, 64)
    with pytest.raises(ValueError, match="`vector_lanes` must be a power of two, not 3"):
        CoreParams(4, 8, 3, 64, 64, 64, 1, 64)
    with pytest.raises(ValueError, match=r"`vector_lanes` must divide `rows` \(6\), not 4"):
        CoreParams(6, 8, 4, 64, 64, 64, 1, 64)
    with pytest.raises(TypeError, match="`inputs` must be an integer, not 8.0"):
        CoreParams(4, 8.0, 2, 64, 64, 64, 1, 64)


@pytest.mark.parametrize("changes, error, message", [
    ({"inputs": 12, "vector_lanes": 8}, ValueError, r"`vector_lanes` must divide `inputs` \(12\), not 8"),
    ({"max_vocab": -1}, ValueError, "`max_vocab` must be a positive integer, not -1"),
    ({"max_layers": True}, TypeError, "`max_layers` must be an integer, not True"),
    ({"weight_depth": "4096"}, TypeError, "`weight_depth` must be an integer, not '4096'"),
    ({"program_depth": 0}, ValueError, "`program_depth` must be a positive integer, not 0"),
])
def test_core_params_rejects(changes, error, message):
    fields = dict(rows=8, inputs=8, vector_lanes=2, max_hidden=64, max_intermediate=64, max_vocab=64,
                  max_layers=1, weight_depth=64)
    fields.update(changes)
    with pytest.raises(error, match=f"^{message}$"):
        CoreParams(**fields)


def test_program_too_long_for_core():
    config = ModelConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_layers=2)
    core = CoreParams(2, 8, 2, 8, 16, 16, 2, 256, program_depth=40)
    with pytest.raises(FitError, match=r"^model does not fit the core: the program has 51 instructions, "
                                       r"the core holds 40$"):
        memory_image(prepare(config, random_tensors(config)), core)


def test_intermediate_size_too_large_for_core():
    config = ModelConfig(vocab_size=16, hidden_size=8, intermediate_size=32, num_layers=1)
    core = CoreParams(2, 8, 2, 8, 16, 16, 1, 256)
    with pytest.raises(FitError, match=r"^model does not fit the core: intermediate_size 32 exceeds the core's "
                                       r"maximum of 16$"):
        memory_image(prepare(config, random_tensors(config)), core)


def test_bundled_model_fills_512_lanes_exactly():
    config = ModelConfig(vocab_size=256, hidden_size=128, intermediate_size=512, num_layers=4)
    layout = plan(config, CoreParams(16, 32, 4, 128, 512, 256, 4, 2304))
    # No padding at this shape: every weight word is full.
    assert layout.weight_words * 512 == config.trit_count


def test_disassembly_names_every_instruction():
    config = ModelConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_layers=1)
    layout = plan(config, CoreParams(2, 8, 2, 8, 16, 16, 1, 256))
    text = disassemble(assemble(layout, embed_exp=14))
    assert text.splitlines()[0].strip().startswith("0  EMBED(vec_dst=0, count=8, shift=-2")
    assert text.splitlines()[-1].strip().endswith("END()")
