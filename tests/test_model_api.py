"""The Keras model API: Sequential and Functional models, as in the Keras docs.

Numbers are checked against a NumPy forward pass through the models' own weights;
errors are checked for their type and for a message that names the layer or model
and both the expected and the received value.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import kgraph
from kgraph import layers
from kgraph.models import Model, Sequential, model_from_json

TOL = dict(rtol=1e-5, atol=1e-5)
RNG = np.random.default_rng(0)


def relu(x):
    return np.maximum(x, 0.0)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def mlp_forward(weights, x):
    """NumPy forward of the docs' 784-64-32-10 MLP (relu, relu, softmax)."""
    k1, b1, k2, b2, k3, b3 = [w.astype(np.float64) for w in weights]
    h = relu(x @ k1 + b1)
    h = relu(h @ k2 + b2)
    return softmax(h @ k3 + b3)


def mlp_layers():
    return [layers.Dense(64, activation="relu"), layers.Dense(32, activation="relu"),
            layers.Dense(10, activation="softmax")]


def mnist_like(n=20):
    return RNG.uniform(0, 1, (n, 784)).astype(np.float32)


@pytest.fixture
def mlp():
    return Sequential([kgraph.Input(shape=(784,))] + mlp_layers())


# ---------------------------------------------------------------------------------------
# Sequential
# ---------------------------------------------------------------------------------------
def test_sequential_list_constructor(mlp):
    assert [type(layer).__name__ for layer in mlp.layers] == ["Dense"] * 3
    assert mlp.output.shape == (None, 10)
    assert [w.shape for w in mlp.get_weights()] == [(784, 64), (64,), (64, 32), (32,), (32, 10), (10,)]
    assert mlp.count_params() == 52650
    x = mnist_like()
    y = mlp.predict(x, verbose=0)
    assert y.shape == (20, 10)
    np.testing.assert_allclose(y, mlp_forward(mlp.get_weights(), x.astype(np.float64)), **TOL)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)


def test_sequential_add():
    model = Sequential()
    model.add(kgraph.Input(shape=(784,)))
    for layer in mlp_layers():
        model.add(layer)
    assert len(model.layers) == 3 and model.count_params() == 52650
    x = mnist_like(7)
    np.testing.assert_allclose(model.predict(x, verbose=0), mlp_forward(model.get_weights(), x), **TOL)


def test_sequential_with_input_layer_instance():
    model = Sequential([layers.InputLayer(shape=(784,))] + mlp_layers())
    x = mnist_like(3)
    assert model.output.shape == (None, 10)
    np.testing.assert_allclose(model.predict(x, verbose=0), mlp_forward(model.get_weights(), x), **TOL)


def test_input_shape_on_first_layer_warns_and_builds():
    with pytest.warns((UserWarning, DeprecationWarning), match="input_shape"):
        first = layers.Dense(64, activation="relu", input_shape=(784,))
    model = Sequential([first, layers.Dense(32, activation="relu"), layers.Dense(10, activation="softmax")])
    assert model.built and model.inputs[0].shape == (None, 784)
    assert model.count_params() == 52650
    x = mnist_like(4)
    np.testing.assert_allclose(model.predict(x, verbose=0), mlp_forward(model.get_weights(), x), **TOL)
    with pytest.warns((UserWarning, DeprecationWarning)):
        model2 = Sequential()
        model2.add(layers.Dense(64, input_shape=(784,)))
    assert model2.output.shape == (None, 64)


def test_sequential_built_on_first_data():
    model = Sequential(mlp_layers())
    assert not model.built
    x = mnist_like(5)
    y = model.predict(x, verbose=0)
    assert model.built and y.shape == (5, 10)
    np.testing.assert_allclose(y, mlp_forward(model.get_weights(), x), **TOL)


def test_sequential_summary_before_build_raises():
    model = Sequential([layers.Dense(3)])
    with pytest.raises(ValueError, match=rf"{model.name}.*not yet been built"):
        model.summary()


def test_summary_table(mlp, capsys):
    lines = []
    mlp.summary(print_fn=lines.append)
    text = "\n".join(lines)
    for needle in ("Layer (type)", "Output Shape", "Param #", "Total params: 52,650",
                   "Trainable params: 52,650", "Non-trainable params: 0", f'Model: "{mlp.name}"',
                   "(None, 64)", "(None, 32)", "(None, 10)", "50,240", "2,080", "330"):
        assert needle in text, needle
    mlp.summary()  # default print_fn: stdout
    out = capsys.readouterr().out
    assert "Layer (type)" in out and "Total params: 52,650" in out
    assert re.search(r"dense(_\d+)? \(Dense\)", out)


def test_functional_summary_has_connections():
    a = kgraph.Input(shape=(4,), name="in_a")
    inner_in = kgraph.Input(shape=(4,))
    inner = Model(inner_in, layers.Dense(3)(inner_in), name="inner_model")
    out = layers.Dense(2)(inner(a))
    lines = []
    Model(a, out).summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Connected to" in text and "in_a[0][0]" in text
    assert "inner_model (Functional)" in text
    assert "Total params: 23" in text


# ---------------------------------------------------------------------------------------
# Functional
# ---------------------------------------------------------------------------------------
def two_input_model():
    a = kgraph.Input(shape=(4,), name="input_a")
    b = kgraph.Input(shape=(3,), name="input_b")
    da = layers.Dense(5, activation="relu")(a)
    merged = layers.concatenate([da, b])
    out = layers.Dense(2, activation="sigmoid")(merged)
    return Model(inputs=[a, b], outputs=out)


def two_input_forward(model, xa, xb):
    k1, b1, k2, b2 = [w.astype(np.float64) for w in model.get_weights()]
    h = np.concatenate([relu(xa @ k1 + b1), xb], axis=-1)
    return 1.0 / (1.0 + np.exp(-(h @ k2 + b2)))


def test_two_input_functional_with_concatenate():
    model = two_input_model()
    assert model.input_names() == ["input_a", "input_b"]
    xa = RNG.normal(size=(6, 4)).astype(np.float32)
    xb = RNG.normal(size=(6, 3)).astype(np.float32)
    ref = two_input_forward(model, xa, xb)
    np.testing.assert_allclose(model.predict([xa, xb], verbose=0), ref, **TOL)
    np.testing.assert_allclose(model.predict({"input_a": xa, "input_b": xb}, verbose=0), ref, **TOL)
    np.testing.assert_allclose(model([xa, xb]), ref, **TOL)


def test_shared_layer_shares_weights():
    a = kgraph.Input(shape=(4,))
    b = kgraph.Input(shape=(4,))
    shared = layers.Dense(3)
    out = layers.subtract([shared(a), shared(b)])
    model = Model([a, b], out)
    assert len(model.weights) == 2
    assert model.count_params() == 4 * 3 + 3
    k, bias = shared.get_weights()
    bias[:] = [0.5, -1.0, 2.0]
    shared.set_weights([k, bias])
    xa = RNG.normal(size=(5, 4)).astype(np.float32)
    xb = RNG.normal(size=(5, 4)).astype(np.float32)
    # the bias cancels only if both calls read the same weights
    np.testing.assert_allclose(model.predict([xa, xb], verbose=0), (xa - xb) @ k, **TOL)
    assert len(shared._inbound_nodes) == 2


def test_model_called_as_layer():
    inner_in = kgraph.Input(shape=(4,))
    inner = Model(inner_in, layers.Dense(3, activation="tanh")(inner_in), name="encoder")
    x1 = kgraph.Input(shape=(4,))
    x2 = kgraph.Input(shape=(4,))
    out = layers.add([inner(x1), inner(x2)])  # the model itself is shared
    outer = Model([x1, x2], layers.Dense(2)(out))
    assert outer.count_params() == inner.count_params() + 3 * 2 + 2
    assert len(outer.weights) == 4
    ki, bi, ko, bo = [w.astype(np.float64) for w in outer.get_weights()]
    a = RNG.normal(size=(5, 4)).astype(np.float32)
    b = RNG.normal(size=(5, 4)).astype(np.float32)
    ref = (np.tanh(a @ ki + bi) + np.tanh(b @ ki + bi)) @ ko + bo
    np.testing.assert_allclose(outer.predict([a, b], verbose=0), ref, **TOL)
    # changing the inner model's weights changes the outer model's predictions
    inner.set_weights([w * 0 for w in inner.get_weights()])
    np.testing.assert_allclose(outer.predict([a, b], verbose=0), np.broadcast_to(bo, (5, 2)), **TOL)


def test_sequential_inside_sequential():
    inner = Sequential([kgraph.Input(shape=(4,)), layers.Dense(3, activation="relu")])
    outer = Sequential([kgraph.Input(shape=(4,)), inner, layers.Dense(1)])
    x = RNG.normal(size=(6, 4)).astype(np.float32)
    k1, b1, k2, b2 = outer.get_weights()
    np.testing.assert_allclose(outer.predict(x, verbose=0), relu(x @ k1 + b1) @ k2 + b2, **TOL)


def test_multiple_outputs():
    inp = kgraph.Input(shape=(4,))
    h = layers.Dense(5, activation="relu")(inp)
    o1 = layers.Dense(2, activation="softmax", name="probs")(h)
    o2 = layers.Dense(1, name="value")(h)
    model = Model(inp, [o1, o2])
    assert model.output_names() == ["probs", "value"]
    x = RNG.normal(size=(9, 4)).astype(np.float32)
    k, b, k1, b1, k2, b2 = model.get_weights()
    hh = relu(x @ k + b)
    p, v = model.predict(x, verbose=0)
    np.testing.assert_allclose(p, softmax(hh @ k1 + b1), **TOL)
    np.testing.assert_allclose(v, hh @ k2 + b2, **TOL)
    d = Model(inp, {"p": o1, "v": o2}).predict(x, verbose=0)
    assert set(d) == {"p", "v"}
    np.testing.assert_allclose(d["v"], v, **TOL)


def test_output_that_is_an_input():
    inp = kgraph.Input(shape=(3,))
    model = Model(inp, [inp, layers.Dense(2)(inp)])
    x = RNG.normal(size=(4, 3)).astype(np.float32)
    same, _ = model.predict(x, verbose=0)
    np.testing.assert_array_equal(same, x)
    assert len(set(model.output_names()) | set(model.input_names())) == 3


def test_automatic_names():
    d1, d2 = layers.Dense(2), layers.Dense(2)
    for d in (d1, d2):
        assert re.fullmatch(r"dense(_\d+)?", d.name)
    assert d1.name != d2.name
    n1 = int(d1.name.rsplit("_", 1)[1]) if "_" in d1.name else 0
    assert d2.name == f"dense_{n1 + 1}"
    assert re.fullmatch(r"concatenate(_\d+)?", layers.Concatenate().name)
    assert re.fullmatch(r"re_lu(_\d+)?", layers.ReLU().name)  # Keras's snake case of ReLU
    assert re.fullmatch(r"input_layer(_\d+)?", kgraph.Input(shape=(2,)).name)
    assert re.fullmatch(r"sequential(_\d+)?", Sequential().name)
    inp = kgraph.Input(shape=(2,))
    assert re.fullmatch(r"functional(_\d+)?", Model(inp, layers.Dense(1)(inp)).name)
    assert layers.Dense(2, name="head").name == "head"


def test_duplicate_layer_names_rejected():
    inp = kgraph.Input(shape=(2,))
    out = layers.Dense(2, name="same")(layers.Dense(2, name="same")(inp))
    with pytest.raises(ValueError, match="same"):
        Model(inp, out)


# ---------------------------------------------------------------------------------------
# Weights, layers, configs
# ---------------------------------------------------------------------------------------
def test_get_set_weights_round_trip(mlp):
    x = mnist_like(5)
    before = mlp.predict(x, verbose=0)
    new = [RNG.normal(size=w.shape).astype(np.float32) * 0.1 for w in mlp.get_weights()]
    mlp.set_weights(new)
    for a, b in zip(mlp.get_weights(), new):
        np.testing.assert_array_equal(a, b)
    after = mlp.predict(x, verbose=0)
    np.testing.assert_allclose(after, mlp_forward(new, x), **TOL)
    assert not np.allclose(before, after)
    # get_weights returns copies
    mlp.get_weights()[0][:] = 0
    assert np.abs(mlp.get_weights()[0]).sum() > 0


def test_set_weights_wrong_shape_names_the_layer(mlp):
    ws = mlp.get_weights()
    bad = list(ws)
    bad[2] = np.zeros((65, 32), np.float32)
    name = mlp.layers[1].name
    with pytest.raises(ValueError, match=rf"{name}.*\(64, 32\).*\(65, 32\)"):
        mlp.set_weights(bad)
    with pytest.raises(ValueError, match=rf"{name}.*\(64, 32\).*\(65, 32\)"):
        mlp.layers[1].set_weights([bad[2], ws[3]])
    with pytest.raises(ValueError, match=r"6.*5"):
        mlp.set_weights(ws[:5])
    # nothing was assigned by the failed calls
    for a, b in zip(mlp.get_weights(), ws):
        np.testing.assert_array_equal(a, b)


def test_get_layer(mlp):
    first = mlp.get_layer(index=0)
    assert first is mlp.layers[0]
    assert mlp.get_layer(name=first.name) is first
    assert mlp.get_layer(index=-1).units == 10
    with pytest.raises(ValueError, match="nope"):
        mlp.get_layer("nope")
    with pytest.raises(ValueError, match="index 7"):
        mlp.get_layer(index=7)
    model = two_input_model()
    assert model.get_layer("input_a") is model.layers[0]
    assert isinstance(model.get_layer(index=3), layers.Concatenate)


def _same_predictions(m1, m2, x):
    m2.set_weights(m1.get_weights())
    a, b = m1.predict(x, verbose=0), m2.predict(x, verbose=0)
    for p, q in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
        np.testing.assert_allclose(p, q, **TOL)


def test_sequential_config_and_json_round_trip(mlp):
    x = mnist_like(4)
    cfg = mlp.get_config()
    rebuilt = Sequential.from_config(cfg)
    assert [type(layer).__name__ for layer in rebuilt.layers] == ["Dense"] * 3
    assert [layer.get_config()["activation"] for layer in rebuilt.layers] == ["relu", "relu", "softmax"]
    _same_predictions(mlp, rebuilt, x)
    text = mlp.to_json()
    parsed = json.loads(text)
    assert parsed["class_name"] == "Sequential"
    from_json = model_from_json(text)
    assert isinstance(from_json, Sequential) and from_json.count_params() == 52650
    _same_predictions(mlp, from_json, x)


def test_functional_config_and_json_round_trip():
    model = two_input_model()
    xa = RNG.normal(size=(3, 4)).astype(np.float32)
    xb = RNG.normal(size=(3, 3)).astype(np.float32)
    for rebuilt in (Model.from_config(model.get_config()), model_from_json(model.to_json())):
        assert rebuilt.input_names() == ["input_a", "input_b"]
        assert [type(layer).__name__ for layer in rebuilt.layers] == [
            type(layer).__name__ for layer in model.layers]
        rebuilt.set_weights(model.get_weights())
        np.testing.assert_allclose(rebuilt.predict([xa, xb], verbose=0),
                                   model.predict([xa, xb], verbose=0), **TOL)


def test_config_round_trip_shared_nested_multi_output():
    inner_in = kgraph.Input(shape=(4,))
    inner = Model(inner_in, layers.Dense(3, activation="tanh")(inner_in))
    a, b = kgraph.Input(shape=(4,)), kgraph.Input(shape=(4,))
    shared = layers.Dense(4)
    h = layers.average([inner(shared(a)), inner(shared(b))])
    model = Model([a, b], [layers.Dense(2, activation="softmax")(h), layers.Dense(1)(h)])
    x = [RNG.normal(size=(5, 4)).astype(np.float32) for _ in range(2)]
    rebuilt = model_from_json(model.to_json())
    assert len(rebuilt.weights) == len(model.weights) == 8
    _same_predictions(model, rebuilt, x)


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------
def test_call_on_numpy_equals_predict(mlp):
    x = mnist_like(6)
    np.testing.assert_allclose(mlp(x), mlp.predict(x, verbose=0), **TOL)
    np.testing.assert_allclose(mlp.predict_on_batch(x), mlp.predict(x, verbose=0), **TOL)


def test_predict_batches(mlp):
    x = mnist_like(103)
    ref = mlp_forward(mlp.get_weights(), x)
    for bs in (1, 7, 32, 103, 500):
        y = mlp.predict(x, batch_size=bs, verbose=0)
        assert y.shape == (103, 10)
        np.testing.assert_allclose(y, ref, **TOL)
    with pytest.raises(ValueError, match="batch_size"):
        mlp.predict(x, batch_size=0)


def test_predict_batches_multi_io():
    model = two_input_model()
    xa = RNG.normal(size=(11, 4)).astype(np.float32)
    xb = RNG.normal(size=(11, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict([xa, xb], batch_size=4, verbose=0),
                               two_input_forward(model, xa, xb), **TOL)


def test_set_random_seed_reproduces_initial_weights():
    def build():
        kgraph.utils.set_random_seed(1234)
        return Sequential([kgraph.Input(shape=(784,))] + mlp_layers()).get_weights()
    w1, w2 = build(), build()
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    kgraph.utils.set_random_seed(4321)
    w3 = Sequential([kgraph.Input(shape=(784,))] + mlp_layers()).get_weights()
    assert not np.array_equal(w1[0], w3[0])
    with pytest.raises(ValueError, match="seed"):
        kgraph.utils.set_random_seed("x")


# ---------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------
def test_built_dense_on_wrong_last_dim():
    dense = layers.Dense(3, name="proj")
    dense(kgraph.Input(shape=(4,)))
    with pytest.raises(ValueError, match=r"proj.*4.*\(None, 5\)"):
        dense(kgraph.Input(shape=(5,)))


def test_reshape_incompatible_target():
    with pytest.raises(ValueError, match=r"reshape_bad.*\(None, 12\).*\(5, 5\)"):
        layers.Reshape((5, 5), name="reshape_bad")(kgraph.Input(shape=(12,)))
    with pytest.raises(ValueError, match=r"reshape_bad2.*\(None, 12\).*\(-1, 5\)"):
        layers.Reshape((-1, 5), name="reshape_bad2")(kgraph.Input(shape=(12,)))


def test_predict_wrong_feature_size(mlp):
    with pytest.raises(ValueError) as err:
        mlp.predict(np.zeros((5, 100), np.float32), verbose=0)
    msg = str(err.value)
    assert mlp.name in msg and "(None, 784)" in msg and "(5, 100)" in msg


def test_predict_wrong_rank(mlp):
    with pytest.raises(ValueError, match=r"\(None, 784\).*\(5, 28, 28\)"):
        mlp.predict(np.zeros((5, 28, 28), np.float32), verbose=0)


def test_predict_wrong_number_of_inputs():
    model = two_input_model()
    with pytest.raises(ValueError, match=rf"{model.name}.*2.*1"):
        model.predict([np.zeros((2, 4), np.float32)], verbose=0)


def test_unknown_activation_name():
    with pytest.raises(ValueError, match=r"dense_foo.*'foo'"):
        layers.Dense(3, activation="foo", name="dense_foo")
    with pytest.raises(ValueError, match=r"act_foo.*'foo'"):
        layers.Activation("foo", name="act_foo")


def test_incompatible_add():
    with pytest.raises(ValueError, match=r"add_bad.*\(None, 3\).*\(None, 4\)"):
        layers.Add(name="add_bad")([kgraph.Input(shape=(3,)), kgraph.Input(shape=(4,))])


def test_incompatible_concatenate():
    with pytest.raises(ValueError, match=r"cat_bad.*\(None, 2, 3\).*\(None, 4, 3\)"):
        layers.Concatenate(name="cat_bad")([kgraph.Input(shape=(2, 3)), kgraph.Input(shape=(4, 3))])
    # concatenation on axis 1 of the same tensors is fine
    assert layers.Concatenate(axis=1)([kgraph.Input(shape=(2, 3)), kgraph.Input(shape=(4, 3))]).shape == (None, 6, 3)


def test_outputs_not_depending_on_inputs():
    a = kgraph.Input(shape=(3,), name="in_a")
    b = kgraph.Input(shape=(3,), name="in_b")
    out = layers.Dense(2)(b)
    with pytest.raises(ValueError) as err:
        Model(inputs=a, outputs=out, name="disconnected")
    msg = str(err.value)
    assert "disconnected" in msg and "in_a" in msg and "in_b" in msg


def test_model_inputs_must_be_input_tensors():
    a = kgraph.Input(shape=(3,))
    h = layers.Dense(2, name="hidden")(a)
    with pytest.raises(ValueError, match="hidden"):
        Model(h, layers.Dense(1)(h))


def test_dot_needs_two_inputs():
    with pytest.raises(ValueError, match=r"dot3.*2.*3"):
        layers.Dot(axes=1, name="dot3")([kgraph.Input(shape=(3,)) for _ in range(3)])


def test_predict_non_numeric_input_names_model():
    inp = kgraph.Input(shape=(2,), name="feat")
    model = Model(inp, layers.Dense(1)(inp), name="numeric_only")
    with pytest.raises(ValueError, match=r"numeric_only.*feat.*float32"):
        model.predict(np.array([["a", "b"]]), verbose=0)


# ---------------------------------------------------------------------------------------
# The exported ONNX graph of the models above
# ---------------------------------------------------------------------------------------
def _nested_shared_multi_output():
    inner_in = kgraph.Input(shape=(4,))
    inner = Model(inner_in, layers.Dense(3, activation="tanh")(inner_in))
    a, b = kgraph.Input(shape=(4,)), kgraph.Input(shape=(4,))
    h = layers.maximum([inner(a), inner(b)])
    return Model([a, b], [layers.Dense(2, activation="softmax")(h), h, a])


@pytest.mark.parametrize("build", [
    lambda: Sequential([kgraph.Input(shape=(784,))] + mlp_layers()),
    two_input_model,
    _nested_shared_multi_output,
], ids=["mlp", "two_inputs", "nested_shared_multi_output"])
def test_onnx_export_checks_and_matches_reference(build):
    import onnx
    from onnx.reference import ReferenceEvaluator

    from kgraph.runtime.inference import compile_inference
    model = build()
    xs = [RNG.normal(size=(3,) + t.shape[1:]).astype(np.float32) for t in model.inputs]
    proto = compile_inference(model)
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == model.input_names()
    assert [o.name for o in proto.graph.output] == model.output_names()
    ref = ReferenceEvaluator(proto).run(None, dict(zip(model.input_names(), xs)))
    got = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    got = got if isinstance(got, list) else [got]
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(r, g, **TOL)
