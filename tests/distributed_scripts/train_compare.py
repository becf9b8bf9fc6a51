"""One epoch of fit with an MPIStrategy; writes this rank's weights and logs to
OUT.rank<r>.npz. Run as one process and under `mpiexec -n 2`: the results must agree.

usage: train_compare.py OUT MODEL(mlp|cnn|bn|reg) OPT(sgd|adam) N [--sample-weight] [--val] [--shuffle] [--sum-loss]
(--shuffle: each rank's own random generator draws a different order; rank 0's is used;
 --on-batch: three train_on_batch calls and a test_on_batch instead of fit)"""
import sys

import numpy as np

import kgraph
from kgraph import layers


def build(kind):
    if kind == "mlp":
        return kgraph.Sequential([kgraph.Input(shape=(12,)), layers.Dense(16, activation="relu"),
                                  layers.Dense(8, activation="tanh"), layers.Dense(3, activation="softmax")])
    if kind == "reg":  # weight and activity regularizers: batch-independent and batch-sum penalties
        return kgraph.Sequential([kgraph.Input(shape=(12,)),
                                  layers.Dense(16, activation="relu", kernel_regularizer="l2",
                                               activity_regularizer=kgraph.regularizers.l1(1e-3)),
                                  layers.Dense(3, activation="softmax", bias_regularizer="l1")])
    if kind == "bn":   # training-mode state (moving statistics) and dropout
        return kgraph.Sequential([kgraph.Input(shape=(12,)), layers.Dense(16, activation="relu"),
                                  layers.BatchNormalization(), layers.Dropout(0.3),
                                  layers.Dense(3, activation="softmax")])
    return kgraph.Sequential([kgraph.Input(shape=(8, 8, 1)),
                              layers.Conv2D(4, 3, activation="relu", padding="same"),
                              layers.MaxPooling2D(2),
                              layers.Conv2D(6, 3, activation="relu"),
                              layers.Flatten(),
                              layers.Dense(3, activation="softmax")])


def main():
    out, kind, opt, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    strategy = kgraph.distribute.MPIStrategy()
    kgraph.utils.set_random_seed(1 + strategy.rank)  # different per rank: rank 0's weights must win
    rng = np.random.default_rng(0)                    # the data: the same on every rank
    shape = (8, 8, 1) if kind == "cnn" else (12,)
    x = rng.normal(size=(n,) + shape).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    sw = rng.uniform(0.2, 2.0, n).astype(np.float32) if "--sample-weight" in sys.argv else None
    # a loss summed over the batch has gradients batch-size times larger: a learning rate as
    # many times smaller keeps the steps comparable (a large step amplifies the ranks' and
    # one process's different rounding until it shows above the comparison's 1e-5)
    lr_scale = 1 / 32 if "--sum-loss" in sys.argv else 1.0
    optimizer = kgraph.optimizers.SGD(0.1 * lr_scale) if opt == "sgd" else kgraph.optimizers.Adam(0.01)
    with strategy.scope():
        model = build(kind)
        loss = kgraph.losses.CategoricalCrossentropy(reduction="sum") if "--sum-loss" in sys.argv \
            else "categorical_crossentropy"
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    kgraph.utils.set_random_seed(0)                   # the same initial weights as one process
    model.set_weights([w * 0 + np.random.default_rng(i).normal(0, 0.3, w.shape).astype(np.float32)
                       for i, w in enumerate(model.get_weights())] if strategy.rank == 0 else
                      [w + 1.0 for w in model.get_weights()])   # non-zero ranks start wrong on purpose
    kgraph.utils.set_random_seed(100 + strategy.rank)
    if strategy.rank:   # rank 0's learning rate and step count must win too
        model.optimizer.learning_rate, model.optimizer.iterations = 0.5, 40
    if "--on-batch" in sys.argv:
        logs = [model.train_on_batch(x[i:i + 33], y[i:i + 33], return_dict=True) for i in (0, 33, 66)][-1]
        logs.update({f"test_{k}": v for k, v in model.test_on_batch(x, y, return_dict=True).items()})
        np.savez(f"{out}.rank{strategy.rank}.npz", *model.get_weights(),
                 logs=np.array(sorted((k, [v]) for k, v in logs.items()), dtype=object),
                 size=strategy.size, iterations=model.optimizer.iterations)
        return
    hist = model.fit(x, y, batch_size=32, epochs=1, shuffle="--shuffle" in sys.argv, verbose=0, sample_weight=sw,
                     validation_split=0.2 if "--val" in sys.argv else 0.0)
    np.savez(f"{out}.rank{strategy.rank}.npz", *model.get_weights(),
             logs=np.array(sorted(hist.history.items()), dtype=object), size=strategy.size,
             iterations=model.optimizer.iterations)


if __name__ == "__main__":
    main()
