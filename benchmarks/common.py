"""Shared pieces of the benchmarks: data, initial weights and the two models.

Both frameworks get the same data and the same initial weights, generated with numpy
from a fixed seed, so a run in one process can be compared with a run in another.
"""
from __future__ import annotations

import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Import kgraph from this checkout whatever the working directory (and whatever state
# the editable install's finder is in).
if REPO not in sys.path:
    sys.path.insert(0, REPO)

SIZES = (784, 64, 32, 10)
N_SAMPLES = 60_000
SEED = 1234


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def kgraph_set_threads(n: int):
    """Intra-op threads of kgraph's onnxruntime sessions created from now on."""
    try:
        from kgraph.config import set_num_threads
    except ImportError:  # older layout
        from kgraph.runtime.session import set_num_threads
    set_num_threads(n)


def make_data(n=N_SAMPLES, seed=SEED):
    """x uniform in [0, 1) float32 (n, 784); y one-hot float32 (n, 10); labels int64."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, SIZES[0]), dtype=np.float32)
    labels = rng.integers(0, SIZES[-1], n)
    y = np.eye(SIZES[-1], dtype=np.float32)[labels]
    return x, y, labels.astype(np.int64)


def make_weights(seed=SEED):
    """Keras-style initial weights: Glorot-uniform kernels (in, out), zero biases."""
    rng = np.random.default_rng(seed + 1)
    ws = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        ws.append(rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32))
        ws.append(np.zeros(fan_out, np.float32))
    return ws


def kgraph_mlp(weights=None):
    import kgraph
    from kgraph import layers
    model = kgraph.Sequential([
        kgraph.Input(shape=(SIZES[0],)),
        layers.Dense(SIZES[1], activation="relu"),
        layers.Dense(SIZES[2], activation="relu"),
        layers.Dense(SIZES[3], activation="softmax"),
    ])
    model.set_weights(make_weights() if weights is None else weights)
    return model


def torch_mlp(weights=None, softmax=False):
    """nn.Sequential with the same weights (torch's Linear stores kernel transposed).
    softmax=False: the model outputs logits (training uses cross_entropy on them)."""
    import torch
    from torch import nn
    weights = make_weights() if weights is None else weights
    mods = [nn.Linear(SIZES[0], SIZES[1]), nn.ReLU(), nn.Linear(SIZES[1], SIZES[2]), nn.ReLU(),
            nn.Linear(SIZES[2], SIZES[3])]
    if softmax:
        mods.append(nn.Softmax(dim=-1))
    model = nn.Sequential(*mods)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin, k, b in zip(linears, weights[0::2], weights[1::2]):
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(k.T)))
            lin.bias.copy_(torch.from_numpy(b))
    return model


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}"


def print_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).rjust(w) for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
