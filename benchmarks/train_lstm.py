"""Training benchmark: LSTM(128) on 28x28 sequences (28 steps x 28 features) -> Dense(10,
softmax), batch 128, Adam lr 1e-3, categorical crossentropy, 6,000 random sequences (the
MLP's data reshaped, fixed seed), the same Keras-style initial weights in every framework
(orthogonal recurrent kernel, forget-gate bias 1; common.py).

kgraph `fit` vs PyTorch eager (nn.LSTM, batch_first, the last hidden state into
nn.Linear; oneDNN's fused RNN kernel) vs Keras 3 `fit` on the JAX and on the torch
backend; each run in a fresh process, the frameworks interleaved; one timed epoch per run
after a warm-up (JAX's compilation excluded). harness.py has the protocol.

    python benchmarks/train_lstm.py [--repeats 3] [--samples 6000] [--threads 1] [-v]
    python benchmarks/train_lstm.py --framework keras-jax     # one run, prints JSON
    python benchmarks/train_lstm.py --profile                 # onnxruntime's profile of kgraph's step
"""
from __future__ import annotations

import harness

if __name__ == "__main__":
    harness.main("lstm", doc=__doc__, samples=6000, batches=(128,), repeats=3, warmup=10)
