"""Training benchmark: a small CNN on 28x28x1 images, batch 128 —
Conv2D(32,3,relu)-MaxPool2-Conv2D(64,3,relu)-MaxPool2-Flatten-Dropout(0.5)-Dense(10,softmax),
Adam lr 1e-3, categorical crossentropy, 6,000 random images (the MLP's data reshaped, fixed
seed), the same Keras-style initial weights in every framework (common.py).

kgraph `fit` vs PyTorch eager (nn.Sequential, NCHW, idiomatic loop, denormals flushed) vs
Keras 3 `fit` on the JAX and on the torch backend; each run in a fresh process, the
frameworks interleaved; one timed epoch per run after a warm-up (JAX's compilation
excluded). harness.py has the protocol.

    python benchmarks/train_cnn.py [--repeats 3] [--samples 6000] [--threads 1] [-v]
    python benchmarks/train_cnn.py --framework torch          # one run, prints JSON
    python benchmarks/train_cnn.py --profile [--threads 1]    # onnxruntime's profile of kgraph's step
"""
from __future__ import annotations

import harness

if __name__ == "__main__":
    harness.main("cnn", doc=__doc__, samples=6000, batches=(128,), repeats=3, warmup=10)
