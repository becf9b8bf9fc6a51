"""Weight and activity regularizers (Keras 3): penalties added to the training loss.

L1: l1*sum|w|    L2: l2*sum(w^2) (no 1/2)    L1L2: both. Defaults: l1 = l2 = 0.01 for L1/L2, 0.0 for L1L2.
"""
from __future__ import annotations

from kgraph.ir import ops


class Regularizer:
    def __call__(self, x):
        raise NotImplementedError

    def get_config(self):
        return {}


class L1L2(Regularizer):
    def __init__(self, l1=0.0, l2=0.0):
        for n, v in (("l1", l1), ("l2", l2)):
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"Value for argument `{n}` should be a non-negative float. "
                                 f"Received: {n}={v!r}")
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, x):
        (x,) = ops.coerce(x)
        total = None
        if self.l1:
            total = self.l1 * ops.reduce_sum(ops.abs(x))
        if self.l2:
            term = self.l2 * ops.reduce_sum(x * x)
            total = term if total is None else total + term
        return total if total is not None else x.graph.const(0.0, x.dtype)

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(L1L2):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


def l1(l1=0.01):  # noqa: E741 - Keras's name
    return L1(l1)


def l2(l2=0.01):
    return L2(l2)


# Keras 3: `l1_l2` is the L1L2 class itself, both factors default to 0.0 and the string
# 'l1_l2' is not an identifier.
l1_l2 = L1L2

_BY_NAME = {"l1": L1, "l2": L2, "L1": L1, "L2": L2, "L1L2": L1L2}


def get(identifier):
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, dict):
        cls = {"L1": L1, "L2": L2, "L1L2": L1L2}.get(identifier.get("class_name"))
        if cls is None:
            raise ValueError(f"Unknown regularizer: {identifier.get('class_name')!r}")
        return cls(**identifier.get("config", {}))
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(f"Could not interpret regularizer identifier: {identifier!r}. "
                             f"Known names: l1, l2, L1, L2, L1L2")
        return _BY_NAME[identifier]()
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret regularizer identifier: {identifier!r}")


def serialize(reg):
    return {"module": "keras.regularizers", "class_name": type(reg).__name__,
            "config": reg.get_config(), "registered_name": None}
