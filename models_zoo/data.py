"""Bundled data for the zoo: the UCI digits in the shapes each model wants, and a
synthetic sequence task (sign of a running sum). Nothing is downloaded."""
from __future__ import annotations

import numpy as np


def digits(shape="flat"):
    """((x_train, y_train), (x_test, y_test)); x scaled to [0, 1], y one-hot (10)."""
    from kgraph.datasets import digits as d
    (x_train, y_train), (x_test, y_test) = d.load_data()

    def prep(x):
        x = x.astype("float32") / 16.0
        return x.reshape(len(x), -1) if shape == "flat" else x.reshape(len(x), 8, 8, 1)
    onehot = lambda y: np.eye(10, dtype="float32")[y]  # noqa: E731
    return (prep(x_train), onehot(y_train)), (prep(x_test), onehot(y_test))


def running_sum_sign(n_train=2000, n_test=500, length=20, vocab=10, seed=0):
    """Token sequences; the label says whether the sum of (token - vocab/2 + 0.5) is
    positive, which needs the whole sequence. Tokens are 1..vocab-1 (0 is padding)."""
    rng = np.random.default_rng(seed)

    def make(n):
        x = rng.integers(1, vocab, (n, length))
        y = ((x - vocab / 2).sum(axis=1) > 0).astype("float32")[:, None]
        return x.astype("float32"), y
    return make(n_train), make(n_test)
