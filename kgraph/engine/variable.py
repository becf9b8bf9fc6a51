"""Weights. A Variable owns a numpy value until a training runtime takes it over;
then the runtime holds the live value (on its device) and the Variable pulls it
back only when someone reads it (get_weights, saving, callbacks)."""
from __future__ import annotations

import numpy as np

# Bumped on every change of any weight: caches of frozen inference graphs compare it.
_GENERATION = [0]


def generation() -> int:
    return _GENERATION[0]


def touch():
    _GENERATION[0] += 1


class Variable:
    def __init__(self, value, name: str, path: str, trainable: bool = True, regularizer=None):
        self._value = np.array(value, order="C")
        self.name, self.path = name, path
        self.trainable = trainable
        self.regularizer = regularizer
        self._owner = None  # a runtime that holds the live value, with .pull(variable)

    @property
    def shape(self):
        return self._value.shape

    @property
    def dtype(self):
        return self._value.dtype

    def numpy(self) -> np.ndarray:
        if self._owner is not None:
            self._owner.sync_to_host()
        return self._value

    @property
    def value(self):
        return self.numpy()

    def assign(self, value):
        value = np.asarray(value)
        if value.shape != self._value.shape:
            raise ValueError(f"Variable '{self.path}' has shape {self._value.shape}, "
                             f"received a value of shape {value.shape}")
        if self._owner is not None:
            self._owner.sync_to_host()
            self._owner.invalidate()
        self._value = np.array(value, dtype=self._value.dtype, order="C", copy=True)
        touch()

    def _set_from_runtime(self, value):
        self._value = value

    def __ir_value__(self, graph):
        """The graph input that feeds this weight (created on first use)."""
        bindings = graph.__dict__.setdefault("bindings", {})
        if id(self) not in bindings:
            names = graph.__dict__.setdefault("binding_names", set())
            name, k = self.path, 1
            while name in names:
                name, k = f"{self.path}_{k}", k + 1
            names.add(name)
            v = graph.add_input(name, self.shape, self.dtype)
            bindings[id(self)] = (self, v)
        return bindings[id(self)][1]

    def __repr__(self):
        return f"<Variable path={self.path}, shape={self.shape}, dtype={self.dtype.name}>"


def bound_variables(graph) -> list[tuple[Variable, object]]:
    """(variable, input Value) pairs of the weights a graph reads, in creation order."""
    return list(graph.__dict__.get("bindings", {}).values())
