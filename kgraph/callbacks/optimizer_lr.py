"""Reading and setting an optimizer's learning rate from a callback.

The learning rate is a graph input read at every step, so a value set here is used by
the next train step without recompiling. An optimizer built with a
LearningRateSchedule has no settable rate (as in Keras): the schedule owns it."""
from __future__ import annotations

from kgraph.schedules import LearningRateSchedule


def get_lr(optimizer) -> float:
    """The rate the next step would use (a schedule evaluated at the current iteration)."""
    return float(optimizer.current_learning_rate())


def set_lr(optimizer, value, who):
    if isinstance(optimizer.learning_rate, LearningRateSchedule):
        raise TypeError(
            f"{who}: this optimizer was created with a `LearningRateSchedule` object as its "
            f"`learning_rate` constructor argument, hence its learning rate is not settable. If you "
            f"need the learning rate to be settable, instantiate the optimizer with a float "
            f"`learning_rate` argument. Received: learning_rate={optimizer.learning_rate!r}")
    optimizer.learning_rate = float(value)
