"""Random-weight checkpoints of any shape, for tests and simulations."""

import numpy as np

from .checkpoint import expected_tensors
from .config import ModelConfig

__all__ = ["random_tensors"]


def random_tensors(config: ModelConfig, seed=0):
    """Return float32 tensors of ``config`` with random latent weights.

    Projections are normal with std 0.02 (so about a third of the trits are
    zero), norm weights are near one with a spread, embeddings have std 1 and
    the raw lower bounds are normal.
    """
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in expected_tensors(config).items():
        if name.endswith("norm.weight"):
            tensors[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif name == "model.embeddings.weight":
            tensors[name] = rng.normal(0.0, 1.0, shape).astype(np.float32)
        elif name == "model.lower_bounds":
            tensors[name] = rng.normal(0.0, 1.0, shape).astype(np.float32)
        else:
            tensors[name] = rng.normal(0.0, 0.02, shape).astype(np.float32)
    return tensors
