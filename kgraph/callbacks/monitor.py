"""`MonitorCallback`: the "did the monitored quantity improve?" rule shared by
EarlyStopping, ModelCheckpoint and ReduceLROnPlateau (keras.src.callbacks.monitor_callback).

mode "auto" takes the direction from the monitored name: a loss is minimised; a
compiled metric is maximised when it is an accuracy/precision/recall/AUC-like score and
minimised when it is an error. A name that is neither raises, as in Keras."""
from __future__ import annotations

import operator
import warnings

from kgraph.callbacks.callback import Callback

_HIGHER_IS_BETTER = ("accuracy", "precision", "recall", "auc", "f1", "fbeta", "iou", "cosine", "r2")


def metric_direction(metric) -> str:
    """'up' or 'down' for a compiled kgraph metric."""
    explicit = getattr(metric, "_direction", None)
    if explicit in ("up", "down"):
        return explicit
    fn = getattr(metric, "fn", None)
    words = " ".join(filter(None, [type(metric).__name__, getattr(fn, "__name__", ""), metric.name])).lower()
    return "up" if any(w in words for w in _HIGHER_IS_BETTER) else "down"


def available_keys(logs) -> str:
    return ",".join(list((logs or {}).keys()))


class MonitorCallback(Callback):
    def __init__(self, monitor="val_loss", mode="auto", baseline=None, min_delta=0):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            warnings.warn(f"{type(self).__name__} mode '{mode}' is unknown, fallback to auto mode.",
                          stacklevel=2)
            mode = "auto"
        self.monitor = monitor
        self.mode = mode
        self.best = baseline
        self.min_delta = abs(min_delta)
        self.monitor_op = None

    def _compiled_metrics(self):
        spec = getattr(self.model, "_compiled_spec", None)
        return [m for _, m in getattr(spec, "metrics", None) or []]

    def _set_monitor_op(self, logs=None):
        if self.mode == "min":
            self.monitor_op = operator.lt
        elif self.mode == "max":
            self.monitor_op = operator.gt
        else:
            name = self.monitor.removeprefix("val_")
            if name == "loss" or name.endswith("_loss"):
                self.monitor_op = operator.lt
            for m in self._compiled_metrics():
                if m.name == name:
                    self.monitor_op = operator.gt if metric_direction(m) == "up" else operator.lt
            if self.monitor_op is None:
                known = "" if logs is None or self.monitor in logs else (
                    f" (it is not in the logs either; available metrics are: {available_keys(logs)})")
                raise ValueError(
                    f"{type(self).__name__} callback received monitor={self.monitor}, but kgraph "
                    f"isn't able to automatically determine whether that metric should be maximized "
                    f"or minimized{known}. Pass `mode='max'` in order to monitor based on the highest "
                    f"metric value, or pass `mode='min'` in order to use the lowest value.")
        if self.monitor_op is operator.lt:
            self.min_delta *= -1

    def _is_improvement(self, monitor_value, reference_value):
        if reference_value is None:
            return True
        return bool(self.monitor_op(monitor_value - self.min_delta, reference_value))
