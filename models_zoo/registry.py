"""Zoo entries: a builder, its compile settings and its bundled data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class ZooEntry:
    description: str
    build: Callable
    compile: Callable
    data: Callable
    epochs: int


def digits_flat():
    from kgraph.datasets import digits
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    prep = lambda x: x.reshape(len(x), -1).astype("float32") / 16.0  # noqa: E731
    return (prep(x_train), np.eye(10, dtype="float32")[y_train]), (prep(x_test), np.eye(10, dtype="float32")[y_test])


def _compile_classifier(model):
    from kgraph.optimizers import Adam
    model.compile(optimizer=Adam(learning_rate=0.001), loss="categorical_crossentropy", metrics=["accuracy"])


def _mlp():
    from kgraph.models_zoo.mlp import build
    return build()


ZOO = {
    "mlp": ZooEntry("MLP 64-256-128-10 on the bundled 8x8 digits", _mlp, _compile_classifier,
                    digits_flat, 10),
}
