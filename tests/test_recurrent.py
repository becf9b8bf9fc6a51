"""SimpleRNN, LSTM, GRU and Bidirectional against float64 NumPy references written from
Keras 3's formulas (cells and the masked RNN loop of keras/src/backend/*/rnn.py).

1. A table of forward cases (options, initial states, go_backwards, every merge mode,
   masking through Embedding(mask_zero=True)) compared with `model.predict`.
2. The ONNX inference graph: onnx.checker (full) and onnx.reference equal onnxruntime.
3. Gradients: autodiff of float64 layers against central differences of the NumPy
   reference, and one float32 SGD train step against the same differences.
4. Learning: an Embedding+LSTM and a GRU classifier reach 95% on held-out data.
5. Bad input, weight layouts and names, config round trips, node counts.
6. Only when real Keras can be imported (optional): the same weights give the same
   outputs in Keras.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import kgraph
from kgraph import layers
from kgraph.engine.variable import bound_variables
from kgraph.ir import ops
from kgraph.lower import lower
from kgraph.passes.autodiff import gradients
from kgraph.runtime.inference import compile_inference

TOL = dict(rtol=1e-5, atol=1e-5)
B, T, F, U, VOCAB = 4, 5, 3, 4, 7


# ---------------------------------------------------------------------------------------
# NumPy references (float64), Keras 3 formulas
# ---------------------------------------------------------------------------------------
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


ACT = {"tanh": np.tanh, "sigmoid": _sigmoid, "relu": lambda x: np.maximum(x, 0.0),
       "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0), "linear": lambda x: x}


def np_cell(kind, ws, x, states, cfg):
    """One step of a Keras cell: (output, new states). ws = [kernel, recurrent_kernel, bias?]."""
    act = ACT[cfg.get("activation", "tanh")]
    rec = ACT[cfg.get("recurrent_activation", "sigmoid")]
    k, r = ws[0], ws[1]
    b = ws[2] if len(ws) > 2 else None
    u = r.shape[0]
    if kind == "SimpleRNN":
        h = act(x @ k + states[0] @ r + (0 if b is None else b))
        return h, [h]
    if kind == "LSTM":
        h, c = states
        z = x @ k + h @ r + (0 if b is None else b)
        i, f, g, o = (z[:, j * u:(j + 1) * u] for j in range(4))
        c = rec(f) * c + rec(i) * act(g)
        h = rec(o) * act(c)
        return h, [h, c]
    (h,) = states
    if cfg.get("reset_after", True):
        xz = x @ k + (0 if b is None else b[0])
        inner = h @ r + (0 if b is None else b[1])
        z = rec(xz[:, :u] + inner[:, :u])
        rr = rec(xz[:, u:2 * u] + inner[:, u:2 * u])
        hh = act(xz[:, 2 * u:] + rr * inner[:, 2 * u:])
    else:
        xz = x @ k + (0 if b is None else b)
        z = rec(xz[:, :u] + h @ r[:, :u])
        rr = rec(xz[:, u:2 * u] + h @ r[:, u:2 * u])
        hh = act(xz[:, 2 * u:] + (rr * h) @ r[:, 2 * u:])
    h = z * h + (1 - z) * hh
    return h, [h]


def np_rnn(kind, ws, x, cfg, initial=None, keep=None):
    """Keras's RNN loop: a masked step keeps the states; its output is the previous
    output (states[0]) or zeros with zero_output_for_mask. Returns the layer's outputs."""
    n_states = 2 if kind == "LSTM" else 1
    u = ws[1].shape[0]
    states = [np.asarray(s, np.float64) for s in initial] if initial else \
        [np.zeros((len(x), u)) for _ in range(n_states)]
    steps = range(x.shape[1])
    outs = []
    for t in (reversed(steps) if cfg.get("go_backwards") else steps):
        out, new = np_cell(kind, ws, x[:, t], states, cfg)
        if keep is not None:
            k = keep[:, t][:, None]
            new = [np.where(k, n, s) for n, s in zip(new, states)]
            out = np.where(k, out, 0.0 if cfg.get("zero_output_for_mask") else states[0])
        states = new
        outs.append(out)
    y = np.stack(outs, 1) if cfg.get("return_sequences") else outs[-1]
    return [y] + (states if cfg.get("return_state") else [])


def np_bidirectional(kind, ws, x, cfg, merge, initial=None, keep=None):
    n = len(ws) // 2
    seq = bool(cfg.get("return_sequences"))
    half = len(initial) // 2 if initial else 0
    fw = np_rnn(kind, ws[:n], x, {**cfg, "zero_output_for_mask": seq},
                initial[:half] if initial else None, keep)
    bw = np_rnn(kind, ws[n:], x, {**cfg, "go_backwards": True, "zero_output_for_mask": seq},
                initial[half:] if initial else None, keep)
    y, y_rev = fw[0], bw[0][:, ::-1] if seq else bw[0]
    merged = {"concat": lambda: [np.concatenate([y, y_rev], -1)], "sum": lambda: [y + y_rev],
              "mul": lambda: [y * y_rev], "ave": lambda: [(y + y_rev) / 2],
              None: lambda: [y, y_rev]}[merge]()
    return merged + fw[1:] + bw[1:]


# ---------------------------------------------------------------------------------------
# The forward table
# ---------------------------------------------------------------------------------------
NO_WRAP = "no-wrap"


@dataclass
class Case:
    id: str
    kind: str                       # SimpleRNN, LSTM or GRU
    kwargs: dict = field(default_factory=dict)
    merge: object = NO_WRAP         # a merge mode: wrapped in Bidirectional
    init: str | None = None         # None, "kwarg" (initial_state=...) or "list" ([x, *states])
    mask: str | None = None         # None, "embedding" (mask_zero ids) or "explicit" (mask=)


def _cases():
    out = []
    for kind in ("SimpleRNN", "LSTM", "GRU"):
        rows = [
            ("last", {}, NO_WRAP, None, None),
            ("sequences", {"return_sequences": True}, NO_WRAP, None, None),
            ("state", {"return_state": True}, NO_WRAP, None, None),
            ("backwards-seq", {"go_backwards": True, "return_sequences": True}, NO_WRAP, None, None),
            ("backwards-seq-state", {"go_backwards": True, "return_sequences": True,
                                     "return_state": True}, NO_WRAP, None, None),
            ("no-bias", {"use_bias": False, "return_sequences": True}, NO_WRAP, None, None),
            ("init-kwarg", {"return_sequences": True, "return_state": True}, NO_WRAP, "kwarg", None),
            ("init-list", {"return_state": True}, NO_WRAP, "list", None),
            ("mask-seq-state", {"return_sequences": True, "return_state": True}, NO_WRAP, None, "embedding"),
            ("mask-last", {}, NO_WRAP, None, "embedding"),
            ("mask-backwards", {"go_backwards": True, "return_sequences": True}, NO_WRAP, None, "embedding"),
            ("mask-zero-output", {"return_sequences": True, "zero_output_for_mask": True}, NO_WRAP, None,
             "embedding"),
            # Keras 3 applies no implicit mask to a call with initial states...
            ("mask-ignored-with-init", {"return_sequences": True}, NO_WRAP, "kwarg", "embedding"),
            # ...but an explicit one
            ("explicit-mask-init", {"return_sequences": True, "return_state": True}, NO_WRAP, "kwarg",
             "explicit"),
            ("bidir-last", {}, "concat", None, None),
            ("bidir-state", {"return_state": True}, "sum", "kwarg", None),
            ("bidir-mask-last", {}, "ave", None, "embedding"),
            ("bidir-mask-seq-state", {"return_sequences": True, "return_state": True}, "concat", None,
             "embedding"),
        ]
        rows += [(f"bidir-seq-{m}", {"return_sequences": True}, m, None, None)
                 for m in ("concat", "sum", "mul", "ave", None)]
        out += [Case(f"{kind}-{name}", kind, kw, merge, init, mask) for name, kw, merge, init, mask in rows]
    out += [
        Case("GRU-reset_before", "GRU", {"reset_after": False, "return_sequences": True}),
        Case("GRU-reset_before-mask-init", "GRU", {"reset_after": False, "return_state": True}, init="kwarg",
             mask="explicit"),
        Case("GRU-no-bias-last", "GRU", {"use_bias": False}),
        Case("LSTM-relu-hard_sigmoid", "LSTM", {"activation": "relu", "recurrent_activation": "hard_sigmoid",
                                                "return_sequences": True}),
        Case("LSTM-no-unit_forget_bias", "LSTM", {"unit_forget_bias": False, "return_state": True}),
        Case("SimpleRNN-relu", "SimpleRNN", {"activation": "relu", "return_sequences": True}),
    ]
    return out


CASES = _cases()
# layers this table covers (read by tests/test_layers.py's coverage check); Bidirectional
# wraps the cases that have a merge mode
COVERED = {c.kind for c in CASES} | ({"Bidirectional"} if any(c.merge != NO_WRAP for c in CASES) else set())


def _random_weights(model, rng):
    return [rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()]


def _ids(rng, n=B):
    ids = rng.integers(1, VOCAB, (n, T))
    ids[0, 3:] = 0      # trailing padding
    ids[1, :2] = 0      # leading padding
    ids[2, 2] = 0       # a hole
    return ids.astype(np.int32)


def build_case(case: Case, rng):
    """(model, feeds, reference outputs) for one table row."""
    n_states = (2 if case.kind == "LSTM" else 1) * (1 if case.merge == NO_WRAP else 2)
    cfg = {"units": U, **case.kwargs}
    ins, feeds, emb = [], [], None
    if case.mask == "embedding":
        ids_in = kgraph.Input((T,), dtype="int32")
        emb = layers.Embedding(VOCAB, F, mask_zero=True)
        x = emb(ids_in)
        ins.append(ids_in)
        feeds.append(_ids(rng))
    else:
        x = kgraph.Input((T, F))
        ins.append(x)
        feeds.append(rng.normal(size=(B, T, F)).astype(np.float32))
    mask_in = None
    if case.mask == "explicit":
        mask_in = kgraph.Input((T,), dtype="bool")
        ins.append(mask_in)
        feeds.append(_ids(rng) != 0)
    states = [kgraph.Input((U,)) for _ in range(n_states)] if case.init else []
    ins += states
    feeds += [rng.normal(size=(B, U)).astype(np.float32) for _ in states]

    layer = getattr(layers, case.kind)(**cfg)
    if case.merge != NO_WRAP:
        layer = layers.Bidirectional(layer, merge_mode=case.merge)
    kwargs = {"mask": mask_in} if mask_in is not None else {}
    if case.init == "list":
        out = layer([x, *states], **kwargs)
    elif case.init == "kwarg":
        out = layer(x, initial_state=states, **kwargs)
    else:
        out = layer(x, **kwargs)
    model = kgraph.Model(ins, out)
    model.set_weights(_random_weights(model, rng))

    ws = [w.astype(np.float64) for w in layer.get_weights()]
    if case.mask == "embedding":
        xs = emb.get_weights()[0].astype(np.float64)[feeds[0]]
        keep = None if case.init else feeds[0] != 0   # Keras 3: no implicit mask with states
    else:
        xs = feeds[0].astype(np.float64)
        keep = feeds[1] if case.mask == "explicit" else None
    init = [s.astype(np.float64) for s in feeds[-n_states:]] if case.init else None
    if case.merge == NO_WRAP:
        expected = np_rnn(case.kind, ws, xs, cfg, init, keep)
    else:
        expected = np_bidirectional(case.kind, ws, xs, cfg, case.merge, init, keep)
    return model, out, feeds, expected


def _as_list(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_forward_matches_reference(case):
    model, out, feeds, expected = build_case(case, np.random.default_rng(0))
    got = _as_list(model.predict(feeds if len(feeds) > 1 else feeds[0], verbose=0))
    symbolic = _as_list(out)
    assert len(got) == len(expected) == len(symbolic)
    for g, e, s in zip(got, expected, symbolic):
        assert g.shape == e.shape and s.shape == (None,) + e.shape[1:]
        np.testing.assert_allclose(g, e, **TOL, err_msg=case.id)


# ---------------------------------------------------------------------------------------
# ONNX export
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["LSTM-bidir-mask-seq-state", "GRU-init-kwarg", "SimpleRNN-mask-backwards",
                                  "GRU-reset_before-mask-init"])
def test_onnx_export_reference_equals_onnxruntime(name):
    case = next(c for c in CASES if c.id == name)
    model, _, feeds, _ = build_case(case, np.random.default_rng(1))
    got = _as_list(model.predict(feeds if len(feeds) > 1 else feeds[0], verbose=0))
    proto = compile_inference(model)
    onnx.checker.check_model(proto, full_check=True)
    ref = ReferenceEvaluator(proto).run(None, dict(zip(model.input_names(), feeds)))
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(r, g, **TOL, err_msg=f"{name}: onnx.reference vs onnxruntime")


# ---------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------
GRAD_CASES = {
    "LSTM-mask-init": ("LSTM", {"return_sequences": True, "return_state": True}, NO_WRAP, True, True),
    "GRU-backwards": ("GRU", {"go_backwards": True, "return_sequences": True}, NO_WRAP, False, False),
    "GRU-reset_before-mask": ("GRU", {"reset_after": False}, NO_WRAP, False, True),
    "SimpleRNN-init": ("SimpleRNN", {"return_state": True}, NO_WRAP, True, False),
    "Bidirectional-LSTM-mask": ("LSTM", {"return_sequences": True}, "concat", False, True),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradients_match_finite_differences(name):
    """float64 layer: autodiff (evaluated by onnx.reference) vs central differences of the
    NumPy reference, for every weight and the initial states."""
    kind, kw, merge, with_init, with_mask = GRAD_CASES[name]
    rng = np.random.default_rng(3)
    t, f, u, n = 3, 2, 2, 2
    n_states = (2 if kind == "LSTM" else 1) * (1 if merge == NO_WRAP else 2)
    cfg = {"units": u, **kw}
    x = kgraph.Input((t, f), dtype="float64")
    mask = kgraph.Input((t,), dtype="bool") if with_mask else None
    states = [kgraph.Input((u,), dtype="float64") for _ in range(n_states)] if with_init else []
    layer = getattr(layers, kind)(dtype="float64", **cfg)
    if merge != NO_WRAP:
        layer = layers.Bidirectional(layer, merge_mode=merge, dtype="float64")
    out = layer(x, initial_state=states or None, mask=mask)
    model = kgraph.Model([x] + ([mask] if with_mask else []) + states, out)
    weights = [rng.normal(0.0, 0.6, w.shape) for w in model.get_weights()]
    model.set_weights(weights)

    xv = rng.normal(size=(n, t, f))
    keep = np.array([[True, False, True], [False, True, True]]) if with_mask else None
    init = [rng.normal(size=(n, u)) for _ in states]
    g, ins, outs, _ = model.trace_graph()
    coeffs = [rng.uniform(0.5, 1.5, (n,) + o.shape[1:]) for o in outs]
    with ops.building(g):
        loss = None
        for o, c in zip(outs, coeffs):
            term = ops.reduce_sum(o * g.const(c))
            loss = term if loss is None else loss + term
        bound = {id(var): v for var, v in bound_variables(g)}
        wrt = [bound[id(w)] for w in model.weights] + ins[len(ins) - len(states):]
        grads = gradients(g, loss, wrt)
    g.set_outputs([("loss", loss)] + [(f"g{i}", gv) for i, gv in enumerate(grads)])
    names = [g.g.nodes[v.node]["attrs"]["name"] for v in g.inputs]
    by_var = {g.g.nodes[v.node]["attrs"]["name"]: var for var, v in bound_variables(g)}
    data = [xv] + ([keep] if with_mask else []) + init
    feeds = dict(zip(model.input_names(), data))
    feeds.update({nm: var.numpy() for nm, var in by_var.items()})
    res = ReferenceEvaluator(lower(g)).run(None, {nm: feeds[nm] for nm in names})

    def ref_loss(ws, st):
        ys = np_rnn(kind, ws, xv, cfg, st or None, keep) if merge == NO_WRAP else \
            np_bidirectional(kind, ws, xv, cfg, merge, st or None, keep)
        return sum(float(np.sum(y * c)) for y, c in zip(ys, coeffs))

    params = [w.copy() for w in weights] + [s.copy() for s in init]
    nw = len(weights)
    assert np.isclose(res[0], ref_loss(params[:nw], params[nw:]), rtol=1e-10)
    h = 1e-6
    for k, p in enumerate(params):
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            up = ref_loss(params[:nw], params[nw:])
            p[idx] = old - h
            down = ref_loss(params[:nw], params[nw:])
            p[idx] = old
            numeric[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(res[1 + k], numeric, rtol=1e-6, atol=1e-8,
                                   err_msg=f"{name}: gradient of parameter {k}")


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_sgd_train_step_matches_numpy_gradient(kind):
    """One float32 SGD step (fit's train-step graph) moves each weight by -lr * dL/dw,
    dL/dw from central differences of the NumPy reference (mean squared error)."""
    rng = np.random.default_rng(5)
    model = kgraph.Sequential([kgraph.Input((T, F)), getattr(layers, kind)(3, return_sequences=True)])
    w0 = [rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()]
    model.set_weights(w0)
    x = rng.normal(size=(B, T, F)).astype(np.float32)
    y = rng.normal(size=(B, T, 3)).astype(np.float32)
    lr = 0.5
    model.compile(optimizer=kgraph.optimizers.SGD(learning_rate=lr), loss="mse")
    model.train_on_batch(x, y)
    w1 = model.get_weights()
    params = [w.astype(np.float64) for w in w0]

    def loss():
        (out,) = np_rnn(kind, params, x.astype(np.float64), {"return_sequences": True})
        return float(np.mean((out - y) ** 2))

    h = 1e-6
    for k, p in enumerate(params):
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            up = loss()
            p[idx] = old - h
            numeric[idx] = (up - loss()) / (2 * h)
            p[idx] = old
        np.testing.assert_allclose(w1[k], w0[k] - lr * numeric, rtol=1e-4, atol=2e-6,
                                   err_msg=f"{kind} weight {k}")


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU", "Bidirectional"])
def test_train_step_updates_every_weight_from_its_initial_value(kind):
    """From the initializers' own arrays (the orthogonal recurrent kernels included), a
    step changes every weight, and the eval graph then agrees with predict."""
    rng = np.random.default_rng(9)
    inner = layers.LSTM(U) if kind == "Bidirectional" else getattr(layers, kind)(U)
    layer = layers.Bidirectional(inner) if kind == "Bidirectional" else inner
    model = kgraph.Sequential([kgraph.Input((T, F)), layer, layers.Dense(1)])
    model.compile(optimizer=kgraph.optimizers.SGD(learning_rate=0.1), loss="mse")
    x, y = rng.normal(size=(B, T, F)).astype(np.float32), rng.normal(size=(B, 1)).astype(np.float32)
    before = model.get_weights()
    model.train_on_batch(x, y)
    for w, a, b in zip(model.weights, before, model.get_weights()):
        assert np.abs(a - b).max() > 0, w.path
    mse = float(np.mean((model.predict(x, verbose=0) - y) ** 2))
    assert np.isclose(model.test_on_batch(x, y), mse, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# Learning a sequence task
# ---------------------------------------------------------------------------------------
def _running_sum_tokens(rng, n, steps=12):
    """Variable-length token sequences (0-padded); label: is the sum of token values > 0."""
    lengths = rng.integers(3, steps + 1, n)
    ids = rng.integers(1, 5, (n, steps))
    ids[np.arange(steps)[None, :] >= lengths[:, None]] = 0
    total = np.array([0, -2, -1, 1, 2])[ids].sum(1)
    keep = total != 0
    return ids[keep].astype(np.int32), (total[keep] > 0).astype(np.float32)[:, None]


def test_embedding_lstm_learns_sign_of_running_sum():
    kgraph.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    ids, y = _running_sum_tokens(rng, 3000)
    model = kgraph.Sequential([kgraph.Input((12,), dtype="int32"), layers.Embedding(5, 8, mask_zero=True),
                               layers.LSTM(16), layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=kgraph.optimizers.Adam(0.01), loss="binary_crossentropy")
    model.fit(ids[:2500], y[:2500], batch_size=64, epochs=20, verbose=0)
    accuracy = np.mean((model.predict(ids[2500:], verbose=0) > 0.5) == (y[2500:] > 0.5))
    assert accuracy >= 0.95, accuracy


def test_gru_learns_sign_of_running_sum():
    """Real-valued steps; sums within 1 of zero are left out (a margin, not label noise)."""
    kgraph.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 10, 1))
    total = x.sum((1, 2))
    x, y = x[np.abs(total) >= 1.0].astype(np.float32), (total[np.abs(total) >= 1.0] > 0)[:, None]
    model = kgraph.Sequential([kgraph.Input((10, 1)), layers.GRU(16), layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=kgraph.optimizers.Adam(0.02), loss="binary_crossentropy")
    model.fit(x[:3000], y[:3000].astype(np.float32), batch_size=32, epochs=15, verbose=0)
    accuracy = np.mean((model.predict(x[3000:], verbose=0) > 0.5) == y[3000:])
    assert accuracy >= 0.95, accuracy


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------
def _bad(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()


@pytest.mark.parametrize("what", ["2d", "dynamic-time", "ints", "state-count", "state-shape", "mask-shape",
                                  "dropout", "stateful", "units", "bidir-dense", "merge-mode"])
def test_bad_input_raises_a_clear_error(what):
    x = kgraph.Input((T, F))
    cases = {
        "2d": (lambda: layers.LSTM(3, name="enc")(kgraph.Input((F,))),
               r"LSTM 'enc': expects a 3D input .*Received: input_shape=\(None, 3\)"),
        "dynamic-time": (lambda: layers.GRU(3, name="g")(kgraph.Input((None, F))),
                         r"GRU 'g': needs a static number of timesteps.*input_shape=\(None, None, 3\)"),
        "ints": (lambda: layers.SimpleRNN(3, name="s")(kgraph.Input((T, F), dtype="int32")),
                 r"SimpleRNN 's': expects floating-point.*dtype=int32"),
        "state-count": (lambda: layers.LSTM(3, name="l")(x, initial_state=[kgraph.Input((3,))]),
                        r"LSTM 'l': expects 2 initial state.*Received: 1"),
        "state-shape": (lambda: layers.GRU(3, name="g2")(x, initial_state=[kgraph.Input((4,))]),
                        r"GRU 'g2': initial state 0 must have shape \(batch, 3\).*shape=\(None, 4\)"),
        "mask-shape": (lambda: layers.LSTM(3, name="l2")(x, mask=kgraph.Input((T + 1,), dtype="bool")),
                       r"LSTM 'l2': expects a mask of shape \(batch, 5\)"),
        "dropout": (lambda: layers.LSTM(3, recurrent_dropout=1.0, name="l3"),
                    r"LSTM 'l3': `recurrent_dropout` must be a float in \[0, 1\).*recurrent_dropout=1.0"),
        "stateful": (lambda: layers.GRU(3, stateful=True, name="g3"), r"GRU 'g3': `stateful=True`"),
        "units": (lambda: layers.SimpleRNN(0, name="s2"), r"SimpleRNN 's2' expects `units`.*units=0"),
        "bidir-dense": (lambda: layers.Bidirectional(layers.Dense(3)), r"recurrent layer.*Received: layer="),
        "merge-mode": (lambda: layers.Bidirectional(layers.LSTM(3), merge_mode="max"),
                       r"merge_mode='max'"),
    }
    _bad(*cases[what])


# ---------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------
def test_input_dropout_mask_is_drawn_once_per_sequence():
    """Linear SimpleRNN with kernel I and recurrent 0: every step outputs the input mask."""
    x = kgraph.Input((T, F))
    layer = layers.SimpleRNN(F, activation="linear", use_bias=False, dropout=0.5, return_sequences=True)
    model = kgraph.Model(x, layer(x, training=True))
    model.set_weights([np.eye(F, dtype=np.float32), np.zeros((F, F), np.float32)])
    out = model.predict(np.ones((64, T, F), np.float32), verbose=0)
    assert set(np.unique(out)) == {0.0, 2.0}
    np.testing.assert_array_equal(out, np.repeat(out[:, :1], T, axis=1))


def test_recurrent_dropout_mask_is_drawn_once_per_sequence():
    """Kernel 0, recurrent I, h0 = 1: h_t = h_{t-1} * mask, so h_t = mask**t."""
    x, h0 = kgraph.Input((T, F)), kgraph.Input((F,))
    layer = layers.SimpleRNN(F, activation="linear", use_bias=False, recurrent_dropout=0.5,
                             return_sequences=True)
    model = kgraph.Model([x, h0], layer(x, initial_state=[h0], training=True))
    model.set_weights([np.zeros((F, F), np.float32), np.eye(F, dtype=np.float32)])
    out = model.predict([np.ones((64, T, F), np.float32), np.ones((64, F), np.float32)], verbose=0)
    mask = out[:, 0]
    assert set(np.unique(mask)) == {0.0, 2.0}
    np.testing.assert_array_equal(out, mask[:, None, :] ** np.arange(1, T + 1)[None, :, None])


@pytest.mark.parametrize("kind,gates", [("LSTM", 4), ("GRU", 3)])
def test_dropout_trains_with_one_mask_per_gate_and_is_off_at_inference(kind, gates):
    rng = np.random.default_rng(8)
    model = kgraph.Sequential([kgraph.Input((T, F)),
                               getattr(layers, kind)(U, dropout=0.3, recurrent_dropout=0.3),
                               layers.Dense(1)])
    x = rng.normal(size=(B, T, F)).astype(np.float32)
    ws = [w.astype(np.float64) for w in model.layers[0].get_weights()]
    (expected,) = np_rnn(kind, ws, x.astype(np.float64), {})
    np.testing.assert_allclose(model.layers[0](x), expected, **TOL)   # inference: no dropout
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(x, rng.normal(size=(B, 1)).astype(np.float32), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    step = next(iter(model._runners.values())).step_model
    seeds = [a.i for n in step.graph.node if n.op_type == "Dropout" for a in n.attribute if a.name == "seed"]
    assert len(seeds) == len(set(seeds)) == 2 * gates   # inputs and recurrent state, per gate


# ---------------------------------------------------------------------------------------
# Weights, config, masks, node counts
# ---------------------------------------------------------------------------------------
def test_weight_layouts_names_and_initializers():
    x = kgraph.Input((T, F))
    lstm, gru, rnn = layers.LSTM(U), layers.GRU(U), layers.SimpleRNN(U)
    bi = layers.Bidirectional(layers.LSTM(U, name="enc"), name="bi")
    for layer in (lstm, gru, rnn, bi):
        layer(x)
    assert [w.shape for w in lstm.weights] == [(F, 4 * U), (U, 4 * U), (4 * U,)]
    assert [w.shape for w in gru.weights] == [(F, 3 * U), (U, 3 * U), (2, 3 * U)]
    assert [w.shape for w in rnn.weights] == [(F, U), (U, U), (U,)]
    assert [w.shape for w in layers.GRU(U, reset_after=False)(x)._history[0].weights][2] == (3 * U,)
    assert [w.path for w in lstm.weights] == [f"{lstm.name}/lstm_cell/{n}" for n in
                                               ("kernel", "recurrent_kernel", "bias")]
    assert [w.path for w in bi.weights] == [f"bi/{d}_enc/lstm_cell/{n}" for d in ("forward", "backward")
                                            for n in ("kernel", "recurrent_kernel", "bias")]
    assert len(bi.trainable_weights) == 6 and bi.count_params() == 2 * lstm.count_params()
    bias = lstm.get_weights()[2]   # unit_forget_bias: [0]*u + [1]*u + [0]*2u
    np.testing.assert_array_equal(bias, np.r_[np.zeros(U), np.ones(U), np.zeros(2 * U)])
    r = lstm.get_weights()[1]      # orthogonal (u, 4u): orthonormal rows
    np.testing.assert_allclose(r @ r.T, np.eye(U), atol=1e-5)
    np.testing.assert_array_equal(gru.get_weights()[2], 0)


def test_config_round_trip_with_keras_keys():
    keys = ["name", "trainable", "dtype", "return_sequences", "return_state", "go_backwards", "stateful",
            "unroll", "zero_output_for_mask", "units", "activation", "recurrent_activation", "use_bias",
            "kernel_initializer", "recurrent_initializer", "bias_initializer", "unit_forget_bias",
            "kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer",
            "kernel_constraint", "recurrent_constraint", "bias_constraint", "dropout", "recurrent_dropout",
            "seed"]
    assert list(layers.LSTM(3).get_config()) == keys
    gru_keys = [k for k in keys if k != "unit_forget_bias"]
    assert list(layers.GRU(3).get_config()) == gru_keys[:-1] + ["reset_after", "seed"]
    assert "seed" not in layers.SimpleRNN(3).get_config()
    bi = layers.Bidirectional(layers.GRU(3, return_sequences=True), merge_mode="mul")
    cfg = json.loads(json.dumps(bi.get_config()))
    assert cfg["layer"]["class_name"] == "GRU" and cfg["backward_layer"]["config"]["go_backwards"] is True
    clone = layers.Bidirectional.from_config(cfg)
    assert clone.merge_mode == "mul" and clone.forward_layer.name == bi.forward_layer.name


def test_model_json_round_trip_keeps_masking_and_states():
    rng = np.random.default_rng(2)
    ids = kgraph.Input((T,), dtype="int32")
    h = kgraph.Input((U,))
    e = layers.Embedding(VOCAB, F, mask_zero=True)(ids)
    seq = layers.Bidirectional(layers.LSTM(U, return_sequences=True))(e)
    y = layers.GRU(U)(seq, initial_state=[h])
    z = layers.GRU(U, go_backwards=True)(layers.Dropout(0.5)(seq))
    model = kgraph.Model([ids, h], [y, z])
    model.set_weights(_random_weights(model, rng))
    feeds = [_ids(rng), rng.normal(size=(B, U)).astype(np.float32)]
    clone = kgraph.models.model_from_json(model.to_json())
    clone.set_weights(model.get_weights())
    for a, b in zip(model.predict(feeds, verbose=0), clone.predict(feeds, verbose=0)):
        np.testing.assert_allclose(a, b, **TOL)


def test_mask_propagates_through_recurrent_and_dropout_layers():
    rng = np.random.default_rng(4)
    ids = kgraph.Input((T,), dtype="int32")
    emb = layers.Embedding(VOCAB, F, mask_zero=True)
    first = layers.LSTM(U, return_sequences=True)
    second = layers.SimpleRNN(U, return_sequences=True)
    y = second(layers.Dropout(0.3)(first(emb(ids))))
    model = kgraph.Model(ids, y)
    model.set_weights(_random_weights(model, rng))
    feed = _ids(rng)
    keep = feed != 0
    x = emb.get_weights()[0].astype(np.float64)[feed]
    cfg = {"return_sequences": True}
    (h1,) = np_rnn("LSTM", [w.astype(np.float64) for w in first.get_weights()], x, cfg, keep=keep)
    (h2,) = np_rnn("SimpleRNN", [w.astype(np.float64) for w in second.get_weights()], h1, cfg, keep=keep)
    np.testing.assert_allclose(model.predict(feed, verbose=0), h2, **TOL)


def test_eager_call_on_arrays():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(B, T, F)).astype(np.float32)
    h0, c0 = (rng.normal(size=(B, U)).astype(np.float32) for _ in range(2))
    layer = layers.LSTM(U, return_sequences=True)
    got = layer(x, initial_state=[h0, c0])
    ws = [w.astype(np.float64) for w in layer.get_weights()]
    (expected,) = np_rnn("LSTM", ws, x.astype(np.float64), {"return_sequences": True}, [h0, c0])
    np.testing.assert_allclose(got, expected, **TOL)


def _forward_ops(kind, steps):
    model = kgraph.Sequential([kgraph.Input((steps, F)), getattr(layers, kind)(U, return_sequences=True)])
    g, _, _, _ = model.trace_graph()
    return sum(n for op, n in g.op_counts().items() if op not in ("input", "const"))


@pytest.mark.parametrize("kind,per_step", [("SimpleRNN", 3), ("LSTM", 11), ("GRU", 13)])
def test_unrolled_graph_is_linear_in_time_with_few_ops_per_step(kind, per_step):
    """Per step: SimpleRNN matmul+add+tanh; LSTM matmul, add, one sigmoid, split, 2 for the
    c gate, 3 for c', tanh, mul; GRU the same idea with a reset gate."""
    assert _forward_ops(kind, 8) - _forward_ops(kind, 4) == 4 * per_step


# ---------------------------------------------------------------------------------------
# Optional: the same weights in real Keras
# ---------------------------------------------------------------------------------------
if ("KERAS_BACKEND" not in os.environ and importlib.util.find_spec("keras")
        and importlib.util.find_spec("torch")):
    os.environ["KERAS_BACKEND"] = "torch"   # Keras 3 defaults to TensorFlow
try:
    import keras  # noqa: E402
except Exception:  # not installed, or no usable backend
    keras = None


@pytest.mark.skipif(keras is None, reason="real Keras not installed (optional cross-check)")
@pytest.mark.parametrize("name", ["LSTM-mask-seq-state", "GRU-bidir-mask-seq-state", "SimpleRNN-init-kwarg",
                                  "GRU-reset_before-mask-init", "LSTM-mask-ignored-with-init",
                                  "LSTM-bidir-seq-None", "GRU-mask-backwards"])
def test_same_weights_same_outputs_in_keras(name):
    case = next(c for c in CASES if c.id == name)
    model, _, feeds, _ = build_case(case, np.random.default_rng(7))
    n_states = (2 if case.kind == "LSTM" else 1) * (1 if case.merge == NO_WRAP else 2)
    if case.mask == "embedding":
        x_in = keras.Input((T,), dtype="int32")
        x = keras.layers.Embedding(VOCAB, F, mask_zero=True)(x_in)
    else:
        x_in = x = keras.Input((T, F))
    ins = [x_in]
    mask = keras.Input((T,), dtype="bool") if case.mask == "explicit" else None
    ins += [mask] if mask is not None else []
    states = [keras.Input((U,)) for _ in range(n_states)] if case.init else None
    ins += states or []
    layer = getattr(keras.layers, case.kind)(units=U, **case.kwargs)
    if case.merge != NO_WRAP:
        layer = keras.layers.Bidirectional(layer, merge_mode=case.merge)
    out = layer(x, initial_state=states, mask=mask) if mask is not None else layer(x, initial_state=states)
    kmodel = keras.Model(ins, out)
    kmodel.set_weights(model.get_weights())
    want = _as_list(kmodel.predict(feeds if len(feeds) > 1 else feeds[0], verbose=0))
    got = _as_list(model.predict(feeds if len(feeds) > 1 else feeds[0], verbose=0))
    assert len(want) == len(got)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, np.asarray(w), **TOL, err_msg=name)
