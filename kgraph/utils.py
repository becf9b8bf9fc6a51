"""Utilities: the global random seed."""
from __future__ import annotations

import random

import numpy as np

_STATE = {"rng": np.random.default_rng(), "seed": None, "counter": 0}


def set_random_seed(seed: int):
    """Seeds weight initialisation, dropout masks and shuffling (like keras.utils.set_random_seed)."""
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"Expected `seed` argument to be an integer. Received: seed={seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    _STATE["rng"] = np.random.default_rng(int(seed))
    _STATE["seed"] = int(seed)
    _STATE["counter"] = 0


def rng() -> np.random.Generator:
    return _STATE["rng"]


def next_seed() -> int:
    """A reproducible 31-bit seed for an in-graph random op (dropout, noise)."""
    return int(_STATE["rng"].integers(0, 2**31 - 1))
