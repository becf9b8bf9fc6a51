"""Activations by name and by function, with Keras 3 formulas.

Each takes and returns an IR Value; `get(name)` resolves Keras's names.
"""
from __future__ import annotations

import math

from kgraph.ir import ops


def linear(x):
    return x


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    if negative_slope == 0.0 and max_value is None and threshold == 0.0:
        return ops.relu(x)
    (x,) = ops.coerce(x)
    # Keras 3 keeps x only where x > threshold (strictly): relu(0.5, threshold=0.5) == 0
    pos = x * ops.cast(ops.greater(x, threshold), x.dtype) if threshold else ops.relu(x)
    if max_value is not None:
        pos = ops.minimum(pos, float(max_value))
    if negative_slope:
        pos = pos + negative_slope * ops.minimum(x - threshold, 0.0)
    return pos


def sigmoid(x): return ops.sigmoid(x)
def tanh(x): return ops.tanh(x)
def softmax(x, axis=-1):
    if isinstance(axis, (tuple, list)):  # Keras 3 allows several axes; ONNX Softmax takes one
        (x,) = ops.coerce(x)
        e = ops.exp(x - ops.stop_gradient(ops.reduce_max(x, axis, keepdims=True)))
        return e / ops.reduce_sum(e, axis, keepdims=True)
    return ops.softmax(x, axis)
def log_softmax(x, axis=-1): return ops.log_softmax(x, axis)
def elu(x, alpha=1.0): return ops.elu(x, alpha)
def selu(x): return ops.selu(x)
def softplus(x): return ops.softplus(x)
def exponential(x): return ops.exp(x)
def leaky_relu(x, negative_slope=0.2): return ops.leaky_relu(x, negative_slope)
def relu6(x): return ops.clip(x, 0.0, 6.0)


def softsign(x):
    return x / (ops.abs(x) + 1.0)


def silu(x):
    return x * ops.sigmoid(x)


swish = silu


def gelu(x, approximate=False):
    if approximate:
        c = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + ops.tanh(c * (x + 0.044715 * (x * x * x))))
    return 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


def hard_sigmoid(x):
    return ops.clip(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)


_BY_NAME = {
    "linear": linear, "relu": relu, "sigmoid": sigmoid, "tanh": tanh, "softmax": softmax,
    "log_softmax": log_softmax, "elu": elu, "selu": selu, "softplus": softplus,
    "softsign": softsign, "swish": swish, "silu": silu, "gelu": gelu,
    "leaky_relu": leaky_relu, "relu6": relu6, "hard_sigmoid": hard_sigmoid,
    "exponential": exponential,
}


def get(identifier):
    """A callable for a name, a function, or None (linear)."""
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        fn = _BY_NAME.get(identifier)
        if fn is None:
            raise ValueError(f"Could not interpret activation function identifier: {identifier!r}. "
                             f"Known activations: {sorted(_BY_NAME)}")
        return fn
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret activation function identifier: {identifier!r}")


def serialize(fn) -> str:
    for name, f in _BY_NAME.items():
        if f is fn:
            return "swish" if name == "silu" else name
    return getattr(fn, "__name__", str(fn))
