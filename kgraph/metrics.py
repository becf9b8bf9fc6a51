"""Metrics as streaming state: the graph emits per-step partial sums, the host adds
them up over an epoch and computes the result (Keras's update_state / result split)."""
from __future__ import annotations

import numpy as np

from kgraph.ir import ops


class Metric:
    """`partials(y_true, y_pred, sample_weight)` -> list of Values summed over steps;
    `result(totals)` -> float."""

    def __init__(self, name):
        self.name = name

    def partials(self, y_true, y_pred, sample_weight):
        raise NotImplementedError

    def result(self, totals):
        raise NotImplementedError


class MeanMetric(Metric):
    """Weighted mean of a per-sample value."""

    def __init__(self, fn, name, **kwargs):
        super().__init__(name)
        self.fn, self.kwargs = fn, kwargs

    def partials(self, y_true, y_pred, sw):
        v = self.fn(y_true, y_pred, **self.kwargs)
        w = sw
        while w.type.rank < v.type.rank:
            w = ops.unsqueeze(w, -1)
        w = ops.expand_like(w, v)
        return [ops.reduce_sum(v * w), ops.reduce_sum(w)]

    def result(self, totals):
        s, n = totals
        return float(s / n) if n else 0.0


class OutputLoss(Metric):
    """One output's loss in a model with several (Keras logs it as '<output>_loss'): the
    batch-size-weighted mean of its batch losses, like the total loss. Its graph repeats the
    loss term's ops, which common-subexpression elimination merges with them."""

    def __init__(self, name, loss):
        super().__init__(name)
        self.loss = loss

    def partials(self, y_true, y_pred, sw):
        from kgraph.training.step_graph import reduced_loss
        n = ops.cast(ops.numel(sw), y_pred.dtype)
        return [reduced_loss(self.loss, y_true, y_pred, sw) * n, n]

    def result(self, totals):
        s, n = totals
        return float(s / n) if n else 0.0


class RootMeanSquaredError(MeanMetric):
    def __init__(self, name="root_mean_squared_error"):
        super().__init__(_squared_error, name)

    def result(self, totals):
        return float(np.sqrt(super().result(totals)))


def _squared_error(t, p):
    d = p - t
    return ops.reduce_mean(d * d, axes=-1)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    pred = ops.cast(ops.greater(y_pred, threshold), y_pred.dtype)
    return ops.reduce_mean(ops.cast(ops.equal(y_true, pred), y_pred.dtype), axes=-1)


def categorical_accuracy(y_true, y_pred):
    return ops.cast(ops.equal(ops.argmax(y_true, -1), ops.argmax(y_pred, -1)), y_pred.dtype)


def _sparse_labels(y_true, y_pred):
    if y_true.type.rank == y_pred.type.rank:
        y_true = ops.squeeze(y_true, -1)
    return ops.cast(y_true, np.int64)


def sparse_categorical_accuracy(y_true, y_pred):
    return ops.cast(ops.equal(_sparse_labels(y_true, y_pred), ops.argmax(y_pred, -1)), y_pred.dtype)


def _in_top_k(labels, y_pred, k):
    true_score = ops.reduce_sum(y_pred * ops.one_hot(labels, y_pred.shape[-1], y_pred.dtype),
                                axes=-1, keepdims=True)
    higher = ops.reduce_sum(ops.cast(ops.greater(y_pred, true_score), y_pred.dtype), axes=-1)
    return ops.cast(ops.less(higher, float(k)), y_pred.dtype)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    return _in_top_k(ops.argmax(y_true, -1), y_pred, k)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    return _in_top_k(_sparse_labels(y_true, y_pred), y_pred, k)


def mean_squared_error(y_true, y_pred):
    return _squared_error(y_true, y_pred)


def mean_absolute_error(y_true, y_pred):
    return ops.reduce_mean(ops.abs(y_pred - y_true), axes=-1)


class _Confusion(Metric):
    """Weighted true/false positives and negatives at a 0.5 threshold."""

    def __init__(self, name, thresholds=0.5):
        super().__init__(name)
        self.threshold = thresholds

    def _counts(self, y_true, y_pred, sw):
        pred = ops.cast(ops.greater(y_pred, self.threshold), y_pred.dtype)
        t = ops.cast(ops.greater(y_true, 0.5), y_pred.dtype)
        w = sw
        while w.type.rank < y_pred.type.rank:
            w = ops.unsqueeze(w, -1)
        tp = ops.reduce_sum(t * pred * w)
        fp = ops.reduce_sum((1.0 - t) * pred * w)
        fn = ops.reduce_sum(t * (1.0 - pred) * w)
        return tp, fp, fn


class Precision(_Confusion):
    def __init__(self, name="precision", thresholds=0.5):
        super().__init__(name, thresholds)

    def partials(self, y_true, y_pred, sw):
        tp, fp, _ = self._counts(y_true, y_pred, sw)
        return [tp, fp]

    def result(self, totals):
        tp, fp = totals
        return float(tp / (tp + fp)) if tp + fp else 0.0


class Recall(_Confusion):
    def __init__(self, name="recall", thresholds=0.5):
        super().__init__(name, thresholds)

    def partials(self, y_true, y_pred, sw):
        tp, _, fn = self._counts(y_true, y_pred, sw)
        return [tp, fn]

    def result(self, totals):
        tp, fn = totals
        return float(tp / (tp + fn)) if tp + fn else 0.0


class AUC(Metric):
    """ROC AUC from confusion counts at `num_thresholds` evenly spaced thresholds,
    integrated with Keras's 'interpolation' (trapezoid) rule."""

    def __init__(self, num_thresholds=200, name="auc"):
        super().__init__(name)
        eps = 1e-7
        self.thresholds = np.concatenate([[-eps], np.arange(1, num_thresholds - 1) / (num_thresholds - 1),
                                          [1.0 + eps]]).astype(np.float32)

    def partials(self, y_true, y_pred, sw):
        g = y_pred.graph
        th = g.const(self.thresholds)
        p = ops.unsqueeze(ops.reshape(y_pred, (-1,)), -1)             # (M, 1)
        t = ops.unsqueeze(ops.reshape(ops.cast(ops.greater(y_true, 0.5), y_pred.dtype), (-1,)), -1)
        w = ops.unsqueeze(ops.reshape(ops.expand_like(ops.reshape(sw, (-1,) + (1,) * (y_pred.type.rank - 1)),
                                                      y_pred), (-1,)), -1)
        above = ops.cast(ops.greater(p, th), y_pred.dtype)           # (M, T)
        tp = ops.reduce_sum(t * above * w, axes=0)
        fp = ops.reduce_sum((1.0 - t) * above * w, axes=0)
        pos = ops.reduce_sum(t * w)
        neg = ops.reduce_sum((1.0 - t) * w)
        return [tp, fp, pos, neg]

    def result(self, totals):
        tp, fp, pos, neg = (np.asarray(x, np.float64) for x in totals)
        fn, tn = pos - tp, neg - fp
        tpr = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
        fpr = np.divide(fp, fp + tn, out=np.zeros_like(fp), where=(fp + tn) > 0)
        return float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2.0))


_MEAN_FNS = {
    "binary_accuracy": binary_accuracy, "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "top_k_categorical_accuracy": top_k_categorical_accuracy,
    "sparse_top_k_categorical_accuracy": sparse_top_k_categorical_accuracy,
    "mean_squared_error": mean_squared_error, "mean_absolute_error": mean_absolute_error,
}
_ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error"}


def BinaryAccuracy(name="binary_accuracy", threshold=0.5):
    return MeanMetric(binary_accuracy, name, threshold=threshold)


def CategoricalAccuracy(name="categorical_accuracy"):
    return MeanMetric(categorical_accuracy, name)


def SparseCategoricalAccuracy(name="sparse_categorical_accuracy"):
    return MeanMetric(sparse_categorical_accuracy, name)


def TopKCategoricalAccuracy(k=5, name="top_k_categorical_accuracy"):
    return MeanMetric(top_k_categorical_accuracy, name, k=k)


def SparseTopKCategoricalAccuracy(k=5, name="sparse_top_k_categorical_accuracy"):
    return MeanMetric(sparse_top_k_categorical_accuracy, name, k=k)


def MeanSquaredError(name="mean_squared_error"):
    return MeanMetric(mean_squared_error, name)


def MeanAbsoluteError(name="mean_absolute_error"):
    return MeanMetric(mean_absolute_error, name)


def get(identifier, y_true_shape, y_pred_shape, loss_name=""):
    """A Metric for a name, choosing the accuracy variant from shapes as Keras does."""
    if isinstance(identifier, Metric):
        return identifier
    if not isinstance(identifier, str):
        raise ValueError(f"Could not interpret metric identifier: {identifier!r}")
    name = identifier
    if name in ("accuracy", "acc"):
        if y_pred_shape[-1] == 1 or "binary" in loss_name:
            fn = binary_accuracy
        elif len(y_true_shape) < len(y_pred_shape) or (y_true_shape[-1] == 1 and y_pred_shape[-1] != 1) \
                or "sparse" in loss_name:
            fn = sparse_categorical_accuracy
        else:
            fn = categorical_accuracy
        return MeanMetric(fn, name)
    if name in ("rmse", "root_mean_squared_error"):
        return RootMeanSquaredError(name)
    if name == "precision":
        return Precision()
    if name == "recall":
        return Recall()
    if name == "auc":
        return AUC()
    key = _ALIASES.get(name, name)
    if key in _MEAN_FNS:
        return MeanMetric(_MEAN_FNS[key], name)
    raise ValueError(f"Could not interpret metric identifier: {identifier!r}. Known metrics: "
                     f"{sorted(set(_MEAN_FNS) | set(_ALIASES) | {'accuracy', 'acc', 'rmse', 'precision', 'recall', 'auc'})}")
