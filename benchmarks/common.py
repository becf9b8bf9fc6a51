"""Shared pieces of the benchmarks: data, initial weights and the models (MLP, CNN, LSTM)
for kgraph, PyTorch eager and Keras 3 (JAX or torch backend).

Every framework gets the same data and the same initial weights, generated with numpy
from a fixed seed, so a run in one process can be compared with a run in another. The
CNN and the LSTM read the MLP's 784 features as one 28x28 image (28x28x1, channels_last;
NCHW for PyTorch) or as 28 steps of 28 features.
"""
from __future__ import annotations

import os
import resource
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


# -- CNN: Conv2D(32,3,relu)-MaxPool2-Conv2D(64,3,relu)-MaxPool2-Flatten-Dropout(0.5)-Dense(10) ----
CNN_INPUT = (28, 28, 1)
LSTM_INPUT = (28, 28)
LSTM_UNITS = 128


def images(x):
    """(n, 784) -> (n, 28, 28, 1), channels_last."""
    return x.reshape(len(x), *CNN_INPUT)


def sequences(x):
    """(n, 784) -> (n, 28, 28): 28 steps of 28 features."""
    return x.reshape(len(x), *LSTM_INPUT)


def _glorot(rng, shape, fan_in, fan_out):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def make_cnn_weights(seed=SEED):
    """Keras's initial weights in Keras's layouts: conv kernels (kh, kw, cin, cout), Glorot
    uniform with the receptive field in the fans; the Dense kernel (1600, 10) indexed in
    Flatten's H, W, C order; zero biases."""
    rng = np.random.default_rng(seed + 2)
    ws = []
    for cin, cout in ((1, 32), (32, 64)):
        ws.append(_glorot(rng, (3, 3, cin, cout), 9 * cin, 9 * cout))
        ws.append(np.zeros(cout, np.float32))
    ws.append(_glorot(rng, (1600, 10), 1600, 10))
    ws.append(np.zeros(10, np.float32))
    return ws


def make_lstm_weights(seed=SEED):
    """Keras's LSTM(128) initial weights: kernel (28, 512) Glorot uniform, recurrent kernel
    (128, 512) orthogonal, bias (512,) zero with ones on the forget gate (gates i, f, c, o);
    then Dense(10): kernel (128, 10) Glorot uniform, zero bias."""
    rng = np.random.default_rng(seed + 3)
    u, n_in = LSTM_UNITS, LSTM_INPUT[1]
    kernel = _glorot(rng, (n_in, 4 * u), n_in, 4 * u)
    q, r = np.linalg.qr(rng.normal(size=(4 * u, u)))
    recurrent = (q * np.sign(np.diag(r))).T.astype(np.float32)          # (u, 4u), orthonormal rows
    bias = np.zeros(4 * u, np.float32)
    bias[u:2 * u] = 1.0
    return [kernel, recurrent, bias, _glorot(rng, (u, 10), u, 10), np.zeros(10, np.float32)]


INITIAL_WEIGHTS = {"mlp": make_weights, "cnn": make_cnn_weights, "lstm": make_lstm_weights}
INPUT_SHAPES = {"mlp": (SIZES[0],), "cnn": CNN_INPUT, "lstm": LSTM_INPUT}


def model_input(kind, x):
    """The (n, 784) data in the shape model `kind` reads (channels_last / Keras layout)."""
    return {"mlp": lambda a: a, "cnn": images, "lstm": sequences}[kind](x)


def count_params(kind):
    return int(sum(w.size for w in INITIAL_WEIGHTS[kind]()))


def kgraph_model(kind, weights=None):
    """The kgraph model `kind` ('mlp', 'cnn', 'lstm') with the common initial weights."""
    if kind == "mlp":
        return kgraph_mlp(weights)
    import kgraph
    from kgraph import layers
    if kind == "cnn":
        model = kgraph.Sequential([
            kgraph.Input(shape=CNN_INPUT),
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Flatten(), layers.Dropout(0.5), layers.Dense(10, activation="softmax"),
        ])
    else:
        model = kgraph.Sequential([kgraph.Input(shape=LSTM_INPUT), layers.LSTM(LSTM_UNITS),
                                   layers.Dense(10, activation="softmax")])
    model.set_weights(INITIAL_WEIGHTS[kind]() if weights is None else weights)
    return model


def keras_model(kind, weights=None):
    """The same model in Keras 3 (KERAS_BACKEND must be set before this imports keras)."""
    import keras
    from keras import layers
    if kind == "mlp":
        body = [layers.Dense(SIZES[1], activation="relu"), layers.Dense(SIZES[2], activation="relu"),
                layers.Dense(SIZES[3], activation="softmax")]
    elif kind == "cnn":
        body = [layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
                layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
                layers.Flatten(), layers.Dropout(0.5), layers.Dense(10, activation="softmax")]
    else:
        body = [layers.LSTM(LSTM_UNITS), layers.Dense(10, activation="softmax")]
    model = keras.Sequential([keras.Input(shape=INPUT_SHAPES[kind])] + body)
    model.set_weights(INITIAL_WEIGHTS[kind]() if weights is None else weights)
    return model


def torch_input(kind, x):
    """The data as the PyTorch model reads it: NCHW images for the CNN."""
    a = model_input(kind, x)
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if kind == "cnn" else a


def torch_model(kind, weights=None, softmax=False):
    """The same model as an idiomatic PyTorch module holding the same weights (converted
    from Keras's layouts). softmax=False: it outputs logits (training uses cross_entropy)."""
    if kind == "mlp":
        return torch_mlp(weights, softmax)
    import torch
    from torch import nn
    w = INITIAL_WEIGHTS[kind]() if weights is None else weights
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    tail = [nn.Softmax(dim=-1)] if softmax else []
    if kind == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Dropout(0.5), nn.Linear(1600, 10), *tail)
        # Keras flattens (H, W, C), PyTorch (C, H, W): reorder the Dense kernel's rows
        dense = w[4].reshape(5, 5, 64, 10).transpose(2, 0, 1, 3).reshape(1600, 10)
        with torch.no_grad():
            model[0].weight.copy_(t(w[0].transpose(3, 2, 0, 1)))
            model[0].bias.copy_(t(w[1]))
            model[3].weight.copy_(t(w[2].transpose(3, 2, 0, 1)))
            model[3].bias.copy_(t(w[3]))
            model[8].weight.copy_(t(dense.T))
            model[8].bias.copy_(t(w[5]))
        return model

    class LSTMClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(LSTM_INPUT[1], LSTM_UNITS, batch_first=True)
            self.dense = nn.Linear(LSTM_UNITS, 10)
            self.tail = nn.Sequential(*tail)

        def forward(self, x):
            _, (h, _) = self.lstm(x)
            return self.tail(self.dense(h[-1]))

    model = LSTMClassifier()
    with torch.no_grad():  # PyTorch's gate order i, f, g, o is Keras's i, f, c, o
        model.lstm.weight_ih_l0.copy_(t(w[0].T))
        model.lstm.weight_hh_l0.copy_(t(w[1].T))
        model.lstm.bias_ih_l0.copy_(t(w[2]))
        model.lstm.bias_hh_l0.zero_()
        model.dense.weight.copy_(t(w[3].T))
        model.dense.bias.copy_(t(w[4]))
    return model


def peak_rss_mb() -> float:
    """This process's peak resident memory (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}"


def print_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).rjust(w) for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
