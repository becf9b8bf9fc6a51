"""The fused `lstm_sequence` training path against the unrolled cell: the same weights
after training steps, for every call form the fused op takes (return_sequences,
go_backwards, initial states, no bias, Bidirectional, stacked layers), and the
fallbacks it leaves to the unrolled cell (masks, recurrent dropout, other activations)."""
from __future__ import annotations

import numpy as np
import pytest

import kgraph
from kgraph import layers
from kgraph.layers import recurrent

B, T, F, U = 5, 4, 3, 6


def _train(build, fused, n_inputs=1, steps=3):
    old = recurrent.FUSED_SEQUENCE
    recurrent.FUSED_SEQUENCE = fused
    try:
        kgraph.utils.set_random_seed(3)
        model = build()
        rng = np.random.default_rng(0)
        model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
        xs = [rng.normal(size=(B, T, F)).astype(np.float32)] + \
             [rng.normal(size=(B, U)).astype(np.float32) for _ in range(n_inputs - 1)]
        y = rng.normal(size=(B,) + tuple(model.outputs[0].shape[1:])).astype(np.float32)
        model.compile(optimizer=kgraph.optimizers.SGD(learning_rate=0.5), loss="mse")
        for _ in range(steps):
            model.fit(xs if n_inputs > 1 else xs[0], y, batch_size=B, epochs=1, verbose=0, shuffle=False)
        ops = [op for g in _train_graphs(model) for op in g]
        return model.get_weights(), ops
    finally:
        recurrent.FUSED_SEQUENCE = old


def _train_graphs(model):
    return [[n.op_type for n in r.step_model.graph.node] for k, r in model._runners.items() if k[0] == "train"]


def _seq(layer):
    return lambda: kgraph.Sequential([kgraph.Input((T, F)), layer()])


def _with_states(**kw):
    def build():
        x, h, c = kgraph.Input((T, F)), kgraph.Input((U,)), kgraph.Input((U,))
        return kgraph.Model([x, h, c], layers.LSTM(U, **kw)(x, initial_state=[h, c]))
    return build


CASES = {
    "last": (_seq(lambda: layers.LSTM(U)), 1),
    "sequences": (_seq(lambda: layers.LSTM(U, return_sequences=True)), 1),
    "backwards,sequences": (_seq(lambda: layers.LSTM(U, go_backwards=True, return_sequences=True)), 1),
    "no bias": (_seq(lambda: layers.LSTM(U, use_bias=False)), 1),
    "initial states": (_with_states(), 3),
    "initial states,backwards,sequences": (_with_states(go_backwards=True, return_sequences=True), 3),
    "bidirectional": (_seq(lambda: layers.Bidirectional(layers.LSTM(U, return_sequences=True))), 1),
    "bidirectional,last,sum": (_seq(lambda: layers.Bidirectional(layers.LSTM(U), merge_mode="sum")), 1),
    "stacked": (lambda: kgraph.Sequential([kgraph.Input((T, F)), layers.LSTM(U, return_sequences=True),
                                           layers.LSTM(U)]), 1),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_training_matches_unrolled(name):
    build, n_inputs = CASES[name]
    fused, fused_ops = _train(build, True, n_inputs)
    unrolled, unrolled_ops = _train(build, False, n_inputs)
    assert len(fused_ops) < len(unrolled_ops)  # the fused path was taken
    for a, b in zip(fused, unrolled):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("kw", [{"recurrent_dropout": 0.2}, {"activation": "relu"},
                                {"recurrent_activation": "hard_sigmoid"}])
def test_fallbacks_keep_the_unrolled_cell(kw):
    build = _seq(lambda: layers.LSTM(U, **kw))
    _, fused_ops = _train(build, True, steps=1)
    _, unrolled_ops = _train(build, False, steps=1)
    assert len(fused_ops) == len(unrolled_ops)


def test_input_dropout_takes_the_fused_path():
    _, ops = _train(_seq(lambda: layers.LSTM(U, dropout=0.3)), True, steps=1)
    _, unrolled_ops = _train(_seq(lambda: layers.LSTM(U, dropout=0.3)), False, steps=1)
    assert len(ops) < len(unrolled_ops)


def test_masked_sequences_keep_the_unrolled_cell():
    def build():
        ids = kgraph.Input((T,), dtype="int64")
        emb = layers.Embedding(7, F, mask_zero=True)
        return kgraph.Model(ids, layers.LSTM(U)(emb(ids)))
    old = recurrent.FUSED_SEQUENCE
    counts = []
    for fused in (True, False):
        recurrent.FUSED_SEQUENCE = fused
        try:
            model = build()
            model.compile(optimizer="sgd", loss="mse")
            ids = np.array([[1, 2, 0, 0], [3, 4, 5, 6]] * 2, np.int64)
            model.fit(ids, np.zeros((4, U), np.float32), batch_size=4, epochs=1, verbose=0)
            counts.append(sum(len(g) for g in _train_graphs(model)))
        finally:
            recurrent.FUSED_SEQUENCE = old
    assert counts[0] == counts[1]
