"""Shared fixtures: small checkpoints that the tests build themselves."""

import pytest

from golden.checkpoint import save_checkpoint
from golden.config import ModelConfig
from golden.synthetic import random_tensors

# A shape with nothing a power of two, as the released models are not.
ODD_SHAPE = ModelConfig(vocab_size=1000, hidden_size=96, intermediate_size=256, num_layers=3)


@pytest.fixture(scope="session")
def odd_checkpoint(tmp_path_factory):
    """A random-weight checkpoint of ODD_SHAPE written to disk in bf16."""
    path = tmp_path_factory.mktemp("odd-model")
    save_checkpoint(path, ODD_SHAPE, random_tensors(ODD_SHAPE, seed=7), dtype="BF16")
    return path
