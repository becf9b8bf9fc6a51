"""What Model.fit/evaluate ask of the data-parallel job: each a no-op for a model compiled
without an active MPIStrategy (one process keeps its fused step graph and its loop)."""
from __future__ import annotations

import zlib

import numpy as np

from kgraph.distribute.strategy import scoped_strategy  # noqa: F401 (compile reads it here)


def strategy_of(model):
    """The model's MPIStrategy when it has several ranks, else None."""
    strategy = getattr(getattr(model, "_compiled_spec", None), "distribute", None)
    return strategy if strategy is not None and strategy.active else None


def shows_progress(model) -> bool:
    """Progress bars: rank 0 only."""
    strategy = strategy_of(model)
    return strategy is None or strategy.is_chief


def _fingerprint(arrays):
    """Shapes and a checksum of about 64 rows of each array: cheap, and enough to catch
    ranks that loaded different data (or in a different order)."""
    out = []
    for a in arrays:
        step = max(1, len(a) // 64)
        out.append((tuple(a.shape), str(a.dtype), zlib.crc32(np.ascontiguousarray(a[::step]).tobytes())))
    return out


def begin_fit(model, runner, arrays, initial_epoch):
    """At the start of fit (after on_train_begin, where a callback may restore a backup on
    rank 0): check that every rank has the same data, then take rank 0's weights,
    optimizer state, step count and first epoch (returned)."""
    strategy = strategy_of(model)
    if strategy is None:
        return initial_epoch
    prints = strategy.allgather(_fingerprint(arrays))
    for r, p in enumerate(prints):
        if p != prints[0]:
            raise ValueError(f"Model '{model.name}': data-parallel fit needs the same training data on "
                             f"every rank (each takes its shard of every global batch), but rank {r}'s "
                             f"arrays differ from rank 0's. Received (shape, dtype, checksum): "
                             f"rank 0={prints[0]}, rank {r}={p}")
    runner.sync_from_chief(model.optimizer)
    first = np.array([initial_epoch], np.int64)
    strategy.broadcast_(first)
    return int(first[0])


def epoch_order(model, order):
    """Every rank walks the data in rank 0's order (shuffling draws differ per process)."""
    strategy = strategy_of(model)
    if strategy is None:
        return order
    order = np.ascontiguousarray(order, np.int64)
    strategy.broadcast_(order)
    return order


def agree_stop(model):
    """stop_training set on any rank stops every rank (callbacks see the same logs and
    should agree anyway; a disagreement would leave ranks waiting for each other)."""
    strategy = strategy_of(model)
    if strategy is not None:
        model.stop_training = strategy.any(model.stop_training)
