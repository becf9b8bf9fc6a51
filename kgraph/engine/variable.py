"""Weights. A Variable owns a numpy value until a training runtime takes it over;
then the runtime holds the live value (on its device) and the Variable pulls it
back only when someone reads it (get_weights, saving, callbacks).

A Variable may start with its initializer pending (a model rebuilt to receive a
file's values): it then holds uninitialised storage of the right shape and runs
the initializer the first time anything reads its value, so that storage is
never observed; a value assigned (or adopted from a file) first replaces it."""
from __future__ import annotations

import numpy as np

# Bumped on every change of any weight: caches of frozen inference graphs compare it.
_GENERATION = [0]


def generation() -> int:
    return _GENERATION[0]


def touch():
    _GENERATION[0] += 1


class Variable:
    def __init__(self, value, name: str, path: str, trainable: bool = True, regularizer=None,
                 pending=None):
        """`pending`: (initializer, shape, dtype) to run on first read instead of `value`."""
        if pending is not None:
            init, shape, dtype = pending
            self._data = np.empty(tuple(shape), dtype)  # untouched pages: no cost until written
            self._pending = init
        else:
            self._data = np.array(value, order="C")
            self._pending = None
        self.name, self.path = name, path
        self.trainable = trainable
        self.regularizer = regularizer
        self._owner = None  # a runtime that holds the live value, with .pull(variable)

    @property
    def _value(self):
        if self._pending is not None:
            self.initialize()
        return self._data

    @_value.setter
    def _value(self, value):
        self._data = value
        self._pending = None

    def initialize(self):
        """Runs a pending initializer (nothing to do when the value is set)."""
        init, self._pending = self._pending, None
        if init is not None:
            value = np.asarray(init(self._data.shape, self._data.dtype), dtype=self._data.dtype)
            self._data = np.array(value, order="C")

    @property
    def initialized(self) -> bool:
        return self._pending is None

    @property
    def shape(self):
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    def numpy(self) -> np.ndarray:
        if self._owner is not None:
            self._owner.sync_to_host()
        return self._value

    @property
    def value(self):
        return self.numpy()

    def assign(self, value):
        value = np.asarray(value)
        if value.shape != self.shape:
            raise ValueError(f"Variable '{self.path}' has shape {self.shape}, "
                             f"received a value of shape {value.shape}")
        if self._owner is not None:
            self._owner.sync_to_host()
            self._owner.invalidate()
        self._value = np.array(value, dtype=self.dtype, order="C", copy=True)
        touch()

    def _adopt(self, array):
        """`assign` of an array nobody else holds (just read from a file): kept as the
        value without a copy when it already has this variable's dtype and C layout."""
        if array.shape != self.shape:
            raise ValueError(f"Variable '{self.path}' has shape {self.shape}, "
                             f"received a value of shape {array.shape}")
        if array.dtype != self.dtype or not array.flags.c_contiguous or not array.flags.writeable:
            self.assign(array)
            return
        if self._owner is not None:
            self._owner.sync_to_host()
            self._owner.invalidate()
        self._value = array
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
