"""The fidelity command and text generation on a small random model."""

import numpy as np
import pytest

from golden import fidelity, generate
from golden.checkpoint import load_checkpoint, save_checkpoint
from golden.config import ModelConfig
from golden.float_model import FloatModel
from golden.synthetic import random_tensors

BYTES = ModelConfig(vocab_size=256, hidden_size=40, intermediate_size=72, num_layers=2)


@pytest.fixture(scope="module")
def byte_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("byte-model")
    save_checkpoint(path, BYTES, random_tensors(BYTES, seed=4))
    (path / "heldout.txt").write_bytes(b"To be, or not to be, that is the question.\n" * 4)
    return path


def test_measure_reports_both_models(byte_model):
    config, tensors = load_checkpoint(byte_model)
    report = fidelity.measure(config, tensors, list(b"Now is the winter of our discontent"))
    assert report.tokens == 34
    assert 0.8 <= report.agreement <= 1.0
    assert abs(report.perplexity_gap) < 0.1
    assert report.float_nll > 0
    assert report.int_nll > 0


def test_fidelity_command_prints_table(byte_model, capsys):
    assert fidelity.main(["--model", str(byte_model), "--bytes", "60"]) == 0
    output = capsys.readouterr().out
    assert "top-1 agreement" in output
    assert "tokens scored          59" in output


def test_fidelity_command_missing_text(byte_model, capsys):
    assert fidelity.main(["--model", str(byte_model), "--text", str(byte_model / "absent.txt")]) == 1
    assert "No such file or directory" in capsys.readouterr().err


def test_sampling_is_seeded():
    logits = np.linspace(0, 3, 256)
    first = [generate.sample_token(logits, 0.8, 20, np.random.default_rng(3)) for _ in range(5)]
    again = [generate.sample_token(logits, 0.8, 20, np.random.default_rng(3)) for _ in range(5)]
    assert first == again
    assert all(token >= 236 for token in first)             # only the top 20 can be drawn


def test_greedy_takes_lowest_tied_index():
    assert generate.sample_token(np.array([1.0, 3.0, 3.0, 0.0])) == 1


def test_generate_float_and_integer_agree_greedily(byte_model):
    config, tensors = load_checkpoint(byte_model)
    from golden.int_model import IntModel, prepare
    prompt = generate.encode_prompt("ROMEO:", config.vocab_size)
    floats = list(generate.generate(FloatModel(config, tensors), prompt, 8))
    ints = list(generate.generate(IntModel(prepare(config, tensors)), prompt, 8, integer=True))
    assert len(floats) == len(ints) == 8
    assert sum(a == b for a, b in zip(floats, ints)) >= 6


def test_empty_prompt_rejected():
    with pytest.raises(ValueError, match="the prompt is empty"):
        generate.encode_prompt("", 256)


def test_generate_rejects_empty_token_list(byte_model):
    config, tensors = load_checkpoint(byte_model)
    with pytest.raises(ValueError, match="^the prompt is empty; give at least one token$"):
        next(generate.generate(FloatModel(config, tensors), [], 4))


def test_generate_command_rejects_empty_prompt(byte_model, capsys):
    assert generate.main(["--model", str(byte_model), "--prompt", "", "--tokens", "2"]) == 1
    assert capsys.readouterr().err == "error: the prompt is empty; give at least one character\n"


def test_prompt_rejects_text_not_utf8():
    with pytest.raises(ValueError, match=r"^the prompt is not valid UTF-8 text \(character 1\)"):
        generate.encode_prompt("a\udcff", 256)


def test_byte_prompt_needs_byte_vocabulary():
    with pytest.raises(ValueError, match="^byte-level prompts need a vocabulary of 256, the model has 100$"):
        generate.encode_prompt("ROMEO:", 100)
