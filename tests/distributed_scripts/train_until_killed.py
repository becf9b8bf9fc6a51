"""A data-parallel fit long enough to be interrupted: rank 0 checkpoints the weights after
every epoch; in epoch 2 (0-based 1) each rank writes its pid to DIR/rank<r>.pid, so the
test can kill or freeze one rank mid-epoch. With FAIL=raise in the environment, rank 1
raises instead (an uncaught exception on one rank).

usage: train_until_killed.py DIR"""
import os
import sys

import numpy as np

import kgraph
from kgraph import callbacks, layers


class Mark(callbacks.Callback):
    def __init__(self, folder, rank):
        super().__init__()
        self.folder, self.rank, self.epoch = folder, rank, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 20:
            if os.environ.get("FAIL") == "raise" and self.rank == 1:
                raise RuntimeError("rank 1 fails on purpose")
            path = os.path.join(self.folder, f"rank{self.rank}.pid")
            with open(path + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(path + ".tmp", path)


def main():
    folder = sys.argv[1]
    strategy = kgraph.distribute.MPIStrategy()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 12)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 4000)]
    with strategy.scope():
        model = kgraph.Sequential([kgraph.Input(shape=(12,)), layers.Dense(32, activation="relu"),
                                   layers.Dense(3, activation="softmax")])
        model.compile(optimizer="adam", loss="categorical_crossentropy")
    cbs = [Mark(folder, strategy.rank)]
    if kgraph.distribute.is_chief():
        cbs.append(callbacks.ModelCheckpoint(os.path.join(folder, "last.weights.h5"),
                                             save_weights_only=True))
    model.fit(x, y, batch_size=8, epochs=1000, verbose=0, callbacks=cbs)


if __name__ == "__main__":
    main()
