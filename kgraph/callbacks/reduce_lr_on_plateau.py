"""`ReduceLROnPlateau`: multiply the learning rate by `factor` after `patience` epochs
without improvement, then wait `cooldown` epochs before counting again; never below
`min_lr`. Adds the rate in force during the epoch to the logs as `learning_rate`."""
from __future__ import annotations

import sys
import warnings

import numpy as np

from kgraph.callbacks.monitor import MonitorCallback, available_keys
from kgraph.callbacks.optimizer_lr import get_lr, set_lr


class ReduceLROnPlateau(MonitorCallback):
    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0, **kwargs):
        super().__init__(monitor, mode, min_delta=min_delta)
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0. Received: factor={factor}")
        if kwargs:
            raise TypeError(f"ReduceLROnPlateau got unexpected keyword arguments. Received: {sorted(kwargs)}")
        self.factor = factor
        self.min_lr = min_lr
        self.patience = patience
        self.verbose = verbose
        self.cooldown = cooldown
        self.cooldown_counter = 0
        self.wait = 0

    def _reset(self):
        self.best = None
        self.cooldown_counter = 0
        self.wait = 0

    def on_train_begin(self, logs=None):
        self._reset()

    def in_cooldown(self):
        return self.cooldown_counter > 0

    def _reduce_lr(self, epoch) -> bool:
        optimizer = self.model.optimizer
        # compared as the float32 the step graph receives, as Keras compares its float32 variable
        old_lr = float(np.float32(get_lr(optimizer)))
        if old_lr > np.float32(self.min_lr):
            new_lr = max(old_lr * self.factor, self.min_lr)
            set_lr(optimizer, new_lr, "ReduceLROnPlateau")
            if self.verbose > 0:
                sys.stdout.write(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.\n")
            return True
        return False

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self._set_monitor_op(logs)
        logs = logs if logs is not None else {}
        logs["learning_rate"] = get_lr(self.model.optimizer)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Learning rate reduction is conditioned on metric `{self.monitor}` which is "
                          f"not available. Available metrics are: {available_keys(logs)}.", stacklevel=2)
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience and self._reduce_lr(epoch):
                self.cooldown_counter = self.cooldown
                self.wait = 0
