"""Losses with Keras 3 formulas, written with IR ops (their gradients come from autodiff).

Each loss function maps (y_true, y_pred) to a per-sample loss (the last axis reduced);
`reduce_loss` applies Keras's default reduction, sum_over_batch_size: the weighted sum
divided by the number of per-sample entries.
"""
from __future__ import annotations

import math

import numpy as np

from kgraph.ir import ops

EPSILON = 1e-7


def _l2_normalize(x, axis=-1):
    return x / ops.sqrt(ops.maximum(ops.reduce_sum(x * x, axes=axis, keepdims=True), 1e-12))


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    if label_smoothing:
        n = y_pred.shape[axis]
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / n
    if from_logits:
        return -ops.reduce_sum(y_true * ops.log_softmax(y_pred, axis), axes=axis)
    # -sum(y * log(clip(p / sum(p), eps, 1 - eps))): one op, so that after a softmax its
    # gradient fuses into a closed form (kgraph/ir/ops/crossentropy.py)
    return ops.crossentropy(y_true, y_pred, axis=axis, eps=EPSILON)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, axis=-1):
    if y_true.type.rank == y_pred.type.rank and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, -1)
    onehot = ops.one_hot(ops.cast(y_true, np.int64), y_pred.shape[-1], y_pred.dtype)
    return categorical_crossentropy(onehot, y_pred, from_logits=from_logits, axis=axis)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        per = ops.relu(y_pred) - y_pred * y_true + ops.softplus(-ops.abs(y_pred))
    else:
        p = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
        per = -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
    return ops.reduce_mean(per, axes=axis)


def mean_squared_error(y_true, y_pred):
    d = y_pred - y_true
    return ops.reduce_mean(d * d, axes=-1)


def mean_absolute_error(y_true, y_pred):
    return ops.reduce_mean(ops.abs(y_pred - y_true), axes=-1)


def mean_absolute_percentage_error(y_true, y_pred):
    d = ops.abs((y_true - y_pred) / ops.maximum(ops.abs(y_true), EPSILON))
    return 100.0 * ops.reduce_mean(d, axes=-1)


def mean_squared_logarithmic_error(y_true, y_pred):
    d = ops.log(ops.maximum(y_pred, EPSILON) + 1.0) - ops.log(ops.maximum(y_true, EPSILON) + 1.0)
    return ops.reduce_mean(d * d, axes=-1)


def huber(y_true, y_pred, delta=1.0):
    err = y_pred - y_true
    a = ops.abs(err)
    quad = ops.minimum(a, delta)
    # 0.5*q^2 + delta*(|e| - q): equals 0.5 e^2 inside delta and delta*|e| - 0.5 delta^2 outside
    return ops.reduce_mean(0.5 * quad * quad + delta * (a - quad), axes=-1)


def log_cosh(y_true, y_pred):
    x = y_pred - y_true
    return ops.reduce_mean(x + ops.softplus(-2.0 * x) - math.log(2.0), axes=-1)


def _to_signed(y_true):
    """Keras converts labels to -1/1 when every label is exactly 0 or 1 (2t - 1)."""
    zero_or_one = ops.cast(ops.equal(y_true, 0.0), y_true.dtype) + ops.cast(ops.equal(y_true, 1.0), y_true.dtype)
    is_binary = ops.reduce_min(zero_or_one)
    return y_true + is_binary * (y_true - 1.0)


def hinge(y_true, y_pred):
    t = _to_signed(y_true)
    return ops.reduce_mean(ops.relu(1.0 - t * y_pred), axes=-1)


def squared_hinge(y_true, y_pred):
    t = _to_signed(y_true)
    h = ops.relu(1.0 - t * y_pred)
    return ops.reduce_mean(h * h, axes=-1)


def categorical_hinge(y_true, y_pred):
    pos = ops.reduce_sum(y_true * y_pred, axes=-1)
    neg = ops.reduce_max((1.0 - y_true) * y_pred, axes=-1)
    return ops.relu(neg - pos + 1.0)


def kl_divergence(y_true, y_pred):
    t = ops.clip(y_true, EPSILON, 1.0)
    p = ops.clip(y_pred, EPSILON, 1.0)
    return ops.reduce_sum(t * ops.log(t / p), axes=-1)


def poisson(y_true, y_pred):
    return ops.reduce_mean(y_pred - y_true * ops.log(y_pred + EPSILON), axes=-1)


def cosine_similarity(y_true, y_pred, axis=-1):
    return -ops.reduce_sum(_l2_normalize(y_true, axis) * _l2_normalize(y_pred, axis), axes=axis)


class Loss:
    """A configured loss: `fn(y_true, y_pred, **kwargs)` per sample, then the reduction."""

    def __init__(self, fn, name=None, reduction="sum_over_batch_size", **kwargs):
        if reduction not in ("sum_over_batch_size", "sum", "none", "mean"):
            raise ValueError(f"Invalid value for argument `reduction`. Expected one of "
                             f"sum_over_batch_size, sum, mean, none. Received: reduction={reduction}")
        self.fn, self.kwargs, self.reduction = fn, kwargs, reduction
        self.name = name or fn.__name__

    def per_sample(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self.kwargs)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, **self.kwargs}


def _loss_class(cls_name, fn, default_name, **defaults):
    def __init__(self, reduction="sum_over_batch_size", name=default_name, **kwargs):
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise TypeError(f"{cls_name} got unexpected arguments {sorted(unknown)}")
        Loss.__init__(self, fn, name=name, reduction=reduction, **{**defaults, **kwargs})
    return type(cls_name, (Loss,), {"__init__": __init__})


CategoricalCrossentropy = _loss_class("CategoricalCrossentropy", categorical_crossentropy,
                                      "categorical_crossentropy", from_logits=False, label_smoothing=0.0)
SparseCategoricalCrossentropy = _loss_class("SparseCategoricalCrossentropy",
                                            sparse_categorical_crossentropy,
                                            "sparse_categorical_crossentropy", from_logits=False)
BinaryCrossentropy = _loss_class("BinaryCrossentropy", binary_crossentropy, "binary_crossentropy",
                                 from_logits=False, label_smoothing=0.0)
MeanSquaredError = _loss_class("MeanSquaredError", mean_squared_error, "mean_squared_error")
MeanAbsoluteError = _loss_class("MeanAbsoluteError", mean_absolute_error, "mean_absolute_error")
MeanAbsolutePercentageError = _loss_class("MeanAbsolutePercentageError", mean_absolute_percentage_error,
                                          "mean_absolute_percentage_error")
MeanSquaredLogarithmicError = _loss_class("MeanSquaredLogarithmicError", mean_squared_logarithmic_error,
                                          "mean_squared_logarithmic_error")
Huber = _loss_class("Huber", huber, "huber_loss", delta=1.0)
LogCosh = _loss_class("LogCosh", log_cosh, "log_cosh")
Hinge = _loss_class("Hinge", hinge, "hinge")
SquaredHinge = _loss_class("SquaredHinge", squared_hinge, "squared_hinge")
CategoricalHinge = _loss_class("CategoricalHinge", categorical_hinge, "categorical_hinge")
KLDivergence = _loss_class("KLDivergence", kl_divergence, "kl_divergence")
Poisson = _loss_class("Poisson", poisson, "poisson")
CosineSimilarity = _loss_class("CosineSimilarity", cosine_similarity, "cosine_similarity", axis=-1)

mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
mape = MAPE = mean_absolute_percentage_error
msle = MSLE = mean_squared_logarithmic_error
kld = KLD = kullback_leibler_divergence = kl_divergence
logcosh = log_cosh

_BY_NAME = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "mean_absolute_percentage_error": MeanAbsolutePercentageError, "mape": MeanAbsolutePercentageError,
    "mean_squared_logarithmic_error": MeanSquaredLogarithmicError, "msle": MeanSquaredLogarithmicError,
    "huber": Huber, "huber_loss": Huber, "log_cosh": LogCosh, "logcosh": LogCosh,
    "hinge": Hinge, "squared_hinge": SquaredHinge, "categorical_hinge": CategoricalHinge,
    "kl_divergence": KLDivergence, "kld": KLDivergence, "kullback_leibler_divergence": KLDivergence,
    "poisson": Poisson, "cosine_similarity": CosineSimilarity,
}
_CLASS_OF_FN = {
    categorical_crossentropy: CategoricalCrossentropy,
    sparse_categorical_crossentropy: SparseCategoricalCrossentropy,
    binary_crossentropy: BinaryCrossentropy, mean_squared_error: MeanSquaredError,
    mean_absolute_error: MeanAbsoluteError, mean_absolute_percentage_error: MeanAbsolutePercentageError,
    mean_squared_logarithmic_error: MeanSquaredLogarithmicError, huber: Huber, log_cosh: LogCosh,
    hinge: Hinge, squared_hinge: SquaredHinge, categorical_hinge: CategoricalHinge,
    kl_divergence: KLDivergence, poisson: Poisson, cosine_similarity: CosineSimilarity,
}


def get(identifier) -> Loss:
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier)
        if cls is None:
            raise ValueError(f"Could not interpret loss identifier: {identifier!r}. "
                             f"Known losses: {sorted(_BY_NAME)}")
        return cls()
    if callable(identifier):
        if identifier in _CLASS_OF_FN:
            return _CLASS_OF_FN[identifier]()
        return Loss(identifier)
    raise ValueError(f"Could not interpret loss identifier: {identifier!r}")
