"""`LearningRateScheduler`: at the start of every epoch, set the learning rate to
`schedule(epoch, lr)` (or `schedule(epoch)`, the older form). The next train step
reads it: no recompilation."""
from __future__ import annotations

import sys

import numpy as np

from kgraph.callbacks.callback import Callback
from kgraph.callbacks.optimizer_lr import get_lr, set_lr


class LearningRateScheduler(Callback):
    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if optimizer is None or not hasattr(optimizer, "learning_rate"):
            raise ValueError('Optimizer must have a "learning_rate" attribute.')
        try:
            lr = self.schedule(epoch, get_lr(optimizer))
        except TypeError:  # the one-argument form
            lr = self.schedule(epoch)
        if not isinstance(lr, (float, np.float32, np.float64)):
            raise ValueError(f"The output of the `schedule` function should be a float. Got: {lr}")
        set_lr(optimizer, lr, "LearningRateScheduler")
        if self.verbose > 0:
            sys.stdout.write(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.\n")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = get_lr(self.model.optimizer)
