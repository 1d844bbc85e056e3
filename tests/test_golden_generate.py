"""The `python -m golden.generate` command: its output and its argument checks."""

import json

import pytest

from golden import generate
from golden.checkpoint import load_checkpoint, save_checkpoint
from golden.config import ModelConfig
from golden.float_model import FloatModel
from golden.synthetic import random_tensors

# A vocabulary above the 256 byte values, so that generated tokens can be ids above 255.
WIDE_VOCAB = ModelConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_layers=1)


@pytest.fixture(scope="module")
def wide_vocab_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("wide-model")
    save_checkpoint(path, WIDE_VOCAB, random_tensors(WIDE_VOCAB, seed=0))
    return path


def test_token_bytes_of_byte_and_id():
    assert generate.token_bytes(0) == b"\x00"
    assert generate.token_bytes(65) == b"A"
    assert generate.token_bytes(255) == b"\xff"
    assert generate.token_bytes(256) == b"<256>"
    assert generate.token_bytes(299) == b"<299>"


def test_command_prints_ids_above_255(wide_vocab_model, capsysbinary):
    config, tensors = load_checkpoint(wide_vocab_model)
    tokens = list(generate.generate(FloatModel(config, tensors), list(b"ab"), 8))
    assert any(token > 255 for token in tokens), f"the model generated no id above 255: {tokens}"

    status = generate.main(["--model", str(wide_vocab_model), "--prompt", "ab", "--tokens", "8"])
    out, err = capsysbinary.readouterr()
    assert status == 0, err.decode()
    assert out == b"ab" + b"".join(generate.token_bytes(token) for token in tokens) + b"\n"


@pytest.mark.parametrize("arguments, message", [
    (["--tokens", "-3"], "--tokens must be at least 1, not -3"),
    (["--tokens", "0"], "--tokens must be at least 1, not 0"),
    (["--temperature", "-1"], "--temperature must be 0 (greedy) or a positive finite number, not -1.0"),
    (["--temperature", "nan"], "--temperature must be 0 (greedy) or a positive finite number, not nan"),
    (["--temperature", "inf"], "--temperature must be 0 (greedy) or a positive finite number, not inf"),
    (["--top-k", "-5", "--temperature", "1"], "--top-k must be 0 (all tokens) or positive, not -5"),
    (["--seed", "-1", "--temperature", "1"], "--seed must be 0 or more, not -1"),
])
def test_command_rejects_invalid_arguments(wide_vocab_model, capsysbinary, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        generate.main(["--model", str(wide_vocab_model)] + arguments)
    err = capsysbinary.readouterr().err.decode()
    assert exit_info.value.code == 2
    assert err.startswith("usage: python -m golden.generate ")
    assert err.endswith(f"error: {message}\n")


def test_command_samples_with_top_k_zero(wide_vocab_model, capsysbinary):
    status = generate.main(["--model", str(wide_vocab_model), "--tokens", "4", "--temperature", "1", "--top-k", "0"])
    assert status == 0, capsysbinary.readouterr().err.decode()


def test_command_names_config_path_once(wide_vocab_model, tmp_path, capsys):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((wide_vocab_model / name).read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    del config["vocab_size"]
    (tmp_path / "config.json").write_text(json.dumps(config))

    assert generate.main(["--model", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'config.json'}: missing field `vocab_size`\n"
