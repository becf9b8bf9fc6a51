"""A mistake that would hang: evaluate (collective when data-parallel) on rank 0 only,
while rank 1 finishes. The watchdog stops rank 0 with an explanation instead."""
import numpy as np, kgraph
s = kgraph.distribute.MPIStrategy(timeout=30)
with s.scope():
    m = kgraph.Sequential([kgraph.Input(shape=(4,)), kgraph.layers.Dense(2, activation="softmax")])
    m.compile(optimizer="sgd", loss="categorical_crossentropy")
x = np.ones((64, 4), np.float32); y = np.eye(2, dtype=np.float32)[np.zeros(64, int)]
m.fit(x, y, epochs=1, verbose=0)
if kgraph.distribute.is_chief():
    m.evaluate(x, y, verbose=0)   # wrong: evaluate is collective
