"""Training numerics against an independent numpy implementation of Keras's formulas
(tests/reference/keras_numpy.py), plus the seed workflow and bad-input behaviour."""
import warnings

import numpy as np
import pytest

import kgraph
from kgraph import layers, optimizers, regularizers
from tests.reference import keras_numpy as ref


def mlp(l2=None, seed=0):
    kgraph.utils.set_random_seed(seed)
    reg = regularizers.l2(l2) if l2 else None
    return kgraph.Sequential([
        kgraph.Input(shape=(6,)),
        layers.Dense(8, activation="tanh", kernel_regularizer=reg),
        layers.Dense(3, activation="softmax", kernel_regularizer=reg),
    ])


def numpy_forward(params, x):
    w1, b1, w2, b2 = params
    return ref.softmax(np.tanh(x @ w1 + b1) @ w2 + b2)


def numpy_loss(params, x, y, l2):
    loss = ref.loss("categorical_crossentropy", y, numpy_forward(params, x))
    if l2:
        loss += l2 * (np.sum(params[0] ** 2) + np.sum(params[2] ** 2))
    return loss


def numpy_grads(params, x, y, l2):
    """Central differences of the float64 numpy loss: independent of kgraph's autodiff."""
    grads = []
    for i, p in enumerate(params):
        def f(v, i=i):
            ps = list(params)
            ps[i] = v
            return numpy_loss(ps, x, y, l2)
        grads.append(ref.numeric_grad(f, p))
    return grads


def data(n=70, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    return x, y


@pytest.mark.parametrize("opt_name,l2", [("sgd", None), ("adam", None), ("adam", 0.01), ("sgd", 0.01)])
def test_one_epoch_matches_numpy_keras(opt_name, l2):
    x, y = data()
    model = mlp(l2)
    params = [w.astype(np.float64) for w in model.get_weights()]
    kopt = optimizers.SGD(learning_rate=0.1) if opt_name == "sgd" else optimizers.Adam(learning_rate=0.01)
    ropt = ref.SGD(learning_rate=0.1) if opt_name == "sgd" else ref.Adam(learning_rate=0.01)
    model.compile(optimizer=kopt, loss="categorical_crossentropy")
    hist = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)

    batch_losses, sizes = [], []
    for start in range(0, len(x), 32):       # 32, 32, 6: the last partial batch is kept
        xb, yb = x[start:start + 32].astype(np.float64), y[start:start + 32].astype(np.float64)
        batch_losses.append(numpy_loss(params, xb, yb, l2))
        sizes.append(len(xb))
        params = ropt.step(params, numpy_grads(params, xb, yb, l2))
    for got, want in zip(model.get_weights(), params):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hist.history["loss"][0], np.average(batch_losses, weights=sizes), rtol=1e-5)


OPTIMIZER_CASES = [
    ("SGD", {}), ("SGD", {"momentum": 0.9}), ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("Adam", {}), ("Adam", {"amsgrad": True}), ("AdamW", {}), ("RMSprop", {}),
    ("RMSprop", {"momentum": 0.5, "centered": True}), ("Adagrad", {}), ("Adadelta", {}),
    ("Adamax", {}), ("Nadam", {}), ("Adam", {"clipnorm": 0.1}), ("SGD", {"clipvalue": 0.01}),
    ("Adam", {"global_clipnorm": 0.1}),
]


@pytest.mark.parametrize("name,kwargs", OPTIMIZER_CASES, ids=[f"{n}-{k}" for n, k in OPTIMIZER_CASES])
def test_optimizer_steps_match_numpy_keras(name, kwargs):
    """Five train_on_batch steps with each optimizer at its Keras defaults (lr raised so
    that the steps move the weights visibly)."""
    x, y = data(16)
    model = mlp()
    params = [w.astype(np.float64) for w in model.get_weights()]
    lr = {"Adadelta": 1.0, "SGD": 0.1}.get(name, 0.01)
    model.compile(optimizer=getattr(optimizers, name)(learning_rate=lr, **kwargs),
                  loss="categorical_crossentropy")
    ropt = getattr(ref, name)(learning_rate=lr, **kwargs)
    for _ in range(5):
        model.train_on_batch(x, y)
        params = ropt.step(params, numpy_grads(params, x.astype(np.float64), y.astype(np.float64), None))
    for got, want in zip(model.get_weights(), params):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


LOSS_CASES = [
    ("categorical_crossentropy", {}, "probs"), ("categorical_crossentropy", {"from_logits": True}, "logits"),
    ("sparse_categorical_crossentropy", {}, "probs_sparse"),
    ("sparse_categorical_crossentropy", {"from_logits": True}, "logits_sparse"),
    ("binary_crossentropy", {}, "binary"), ("binary_crossentropy", {"from_logits": True}, "binary_logits"),
    ("mean_squared_error", {}, "reg"), ("mean_absolute_error", {}, "reg"),
    ("mean_absolute_percentage_error", {}, "reg"), ("mean_squared_logarithmic_error", {}, "pos"),
    ("huber", {}, "reg"), ("log_cosh", {}, "reg"), ("hinge", {}, "binary_pm"), ("squared_hinge", {}, "binary_pm"),
    ("categorical_hinge", {}, "probs"), ("kl_divergence", {}, "probs"), ("poisson", {}, "pos"),
    ("cosine_similarity", {}, "reg"),
]

_CLASS = {"categorical_crossentropy": "CategoricalCrossentropy", "binary_crossentropy": "BinaryCrossentropy",
          "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy", "mean_squared_error": "MeanSquaredError",
          "mean_absolute_error": "MeanAbsoluteError", "mean_absolute_percentage_error": "MeanAbsolutePercentageError",
          "mean_squared_logarithmic_error": "MeanSquaredLogarithmicError", "huber": "Huber", "log_cosh": "LogCosh",
          "hinge": "Hinge", "squared_hinge": "SquaredHinge", "categorical_hinge": "CategoricalHinge",
          "kl_divergence": "KLDivergence", "poisson": "Poisson", "cosine_similarity": "CosineSimilarity"}


def loss_data(kind, rng, n=12, d=4):
    if kind in ("probs", "probs_sparse"):
        p = ref.softmax(rng.normal(size=(n, d)))
    elif kind in ("binary", "binary_pm"):
        p = rng.uniform(0.05, 0.95, (n, d))
    elif kind == "pos":
        p = rng.uniform(0.1, 2.0, (n, d))
    else:
        p = rng.normal(size=(n, d))
    if kind.endswith("sparse"):
        y = rng.integers(0, d, n).astype(np.float64)
    elif kind.startswith("binary"):
        y = rng.integers(0, 2, (n, d)).astype(np.float64)
    elif kind in ("probs", "logits"):
        y = np.eye(d)[rng.integers(0, d, n)]
    else:
        y = rng.uniform(0.2, 2.0, (n, d))
    return p.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize("name,kwargs,kind", LOSS_CASES, ids=[f"{n}-{k}" for n, _, k in LOSS_CASES])
def test_loss_value_and_gradient_match_numpy_keras(name, kwargs, kind):
    """Loss through evaluate(); its gradient through one SGD step (lr=1) of a bias-free,
    identity-initialised Dense layer: W' = I - x^T dL/dp with x = the identity input."""
    rng = np.random.default_rng(3)
    p, y = loss_data(kind, rng)
    sw = rng.uniform(0.5, 1.5, len(p)).astype(np.float32)
    d = p.shape[1]
    inp = kgraph.Input(shape=(d,))
    out = layers.Dense(d, use_bias=False, kernel_initializer="identity")(inp)
    model = kgraph.Model(inp, out)
    loss_obj = getattr(kgraph.losses, _CLASS[name])(**kwargs)
    model.compile(optimizer=optimizers.SGD(learning_rate=1.0), loss=loss_obj)
    got = model.evaluate(p, y, batch_size=len(p), verbose=0, sample_weight=sw)
    want = ref.loss(name, y.astype(np.float64), p.astype(np.float64), sample_weight=sw, **kwargs)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    model.train_on_batch(p, y, sample_weight=sw)
    grad = ref.loss_grad(name, y.astype(np.float64), p.astype(np.float64), sample_weight=sw, **kwargs)
    np.testing.assert_allclose(model.get_weights()[0], np.eye(d) - p.T.astype(np.float64) @ grad,
                               rtol=2e-4, atol=2e-5)


def test_loss_weights_for_two_outputs():
    rng = np.random.default_rng(0)
    inp = kgraph.Input(shape=(4,))
    a = layers.Dense(2, name="out_a")(inp)
    b = layers.Dense(3, name="out_b")(inp)
    model = kgraph.Model(inp, [a, b])
    model.compile(optimizer="sgd", loss=["mse", "mae"], loss_weights=[0.3, 2.0])
    x = rng.normal(size=(10, 4)).astype(np.float32)
    ya, yb = rng.normal(size=(10, 2)).astype(np.float32), rng.normal(size=(10, 3)).astype(np.float32)
    pa, pb = model.predict(x)
    got, loss_a, loss_b = model.evaluate(x, [ya, yb], batch_size=10, verbose=0)  # total, then per output
    np.testing.assert_allclose(loss_a, ref.loss("mean_squared_error", ya, pa), rtol=1e-5)
    want = 0.3 * ref.loss("mean_squared_error", ya, pa) + 2.0 * ref.loss("mean_absolute_error", yb, pb)
    np.testing.assert_allclose(got, want, rtol=1e-5)


METRIC_CASES = [("accuracy", "probs"), ("categorical_accuracy", "probs"), ("binary_accuracy", "binary"),
                ("sparse_categorical_accuracy", "probs_sparse"), ("top_k_categorical_accuracy", "probs"),
                ("mse", "reg"), ("mae", "reg")]


@pytest.mark.parametrize("name,kind", METRIC_CASES)
def test_streaming_metrics_match_numpy_keras(name, kind):
    """Accumulated over several batches (batch 5 over 12 samples) with sample weights."""
    rng = np.random.default_rng(5)
    p, y = loss_data(kind, rng, n=12, d=6)
    sw = rng.uniform(0.5, 1.5, 12).astype(np.float32)
    inp = kgraph.Input(shape=(6,))
    model = kgraph.Model(inp, layers.Identity()(inp))
    loss = {"probs_sparse": "sparse_categorical_crossentropy", "binary": "binary_crossentropy"}.get(kind, "mse")
    model.compile(optimizer="sgd", loss=loss, metrics=[name])
    logs = model.evaluate(p, y, batch_size=5, verbose=0, sample_weight=sw, return_dict=True)
    ref_name = {"accuracy": "categorical_accuracy", "mse": "mean_squared_error", "mae": "mean_absolute_error"}.get(name, name)
    np.testing.assert_allclose(logs[name], ref.metric(ref_name, y, p, sample_weight=sw), rtol=1e-5)


def test_precision_recall_auc_rmse():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, (40, 1)).astype(np.float32)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, (40, 1)), 0, 1).astype(np.float32)
    inp = kgraph.Input(shape=(1,))
    model = kgraph.Model(inp, layers.Identity()(inp))
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["precision", "recall", "auc", "rmse"])
    logs = model.evaluate(p, y, batch_size=7, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["precision"], ref.precision(y, p), rtol=1e-5)
    np.testing.assert_allclose(logs["recall"], ref.recall(y, p), rtol=1e-5)
    np.testing.assert_allclose(logs["auc"], ref.auc(y, p), rtol=1e-4)
    np.testing.assert_allclose(logs["rmse"], ref.root_mean_squared_error(y, p), rtol=1e-5)


def test_seed_workflow_on_digits_reaches_95_percent():
    """The Keras tutorial workflow, imports changed, on the bundled digits."""
    from kgraph.datasets import digits
    from kgraph.layers import Dense
    from kgraph.models import Sequential
    from kgraph.optimizers import Adam

    kgraph.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    x_train = x_train.reshape(-1, 64).astype("float32") / 16
    x_test = x_test.reshape(-1, 64).astype("float32") / 16
    y_train, y_test = np.eye(10)[y_train], np.eye(10)[y_test]
    model = Sequential()
    with pytest.warns(UserWarning, match="input_shape"):
        model.add(Dense(256, activation="relu", input_shape=(64,)))
    model.add(Dense(128, activation="relu"))
    model.add(Dense(10, activation="softmax"))
    with pytest.warns(DeprecationWarning, match="lr"):
        opt = Adam(lr=0.001)
    model.compile(optimizer=opt, loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=32, epochs=10, validation_split=0.2, verbose=0)
    loss, accuracy = model.evaluate(x_test, y_test)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 10
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert accuracy >= 0.95, accuracy


def test_learning_rate_is_a_graph_input():
    """Changing the learning rate between steps takes effect without recompiling."""
    x, y = data(16)
    model = mlp()
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="categorical_crossentropy")
    model.train_on_batch(x, y)
    runners = dict(model._runners)
    before = model.get_weights()
    model.optimizer.learning_rate = 0.0
    model.train_on_batch(x, y)
    assert model._runners == runners
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_schedule_feeds_the_step():
    sched = kgraph.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    x, y = data(16)
    model = mlp()
    params = [w.astype(np.float64) for w in model.get_weights()]
    model.compile(optimizer=optimizers.SGD(learning_rate=sched), loss="categorical_crossentropy")
    ropt = ref.SGD(learning_rate=lambda it: 0.1 * 0.5 ** it)
    for _ in range(3):
        model.train_on_batch(x, y)
        params = ropt.step(params, numpy_grads(params, x.astype(np.float64), y.astype(np.float64), None))
    for got, want in zip(model.get_weights(), params):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_dropout_fresh_mask_each_step_and_reproducible():
    def run():
        kgraph.utils.set_random_seed(11)
        inp = kgraph.Input(shape=(50,))
        out = layers.Dense(1, kernel_initializer="ones", use_bias=False)(layers.Dropout(0.5)(inp))
        model = kgraph.Model(inp, out)
        model.compile(optimizer=optimizers.SGD(learning_rate=1.0), loss="mse")
        x, y = np.ones((1, 50), np.float32), np.zeros((1, 1), np.float32)
        kernels = []
        for _ in range(3):
            model.train_on_batch(x, y)
            kernels.append(model.get_weights()[0].ravel().copy())
        return kernels
    a, b = run(), run()
    for ka, kb in zip(a, b):
        np.testing.assert_array_equal(ka, kb)
    # each step updates exactly the kept units (mask 1) and a different set each time
    changes = [np.flatnonzero(a[i] != (a[i - 1] if i else np.ones(50))) for i in range(3)]
    assert 10 < len(changes[0]) < 40
    assert not np.array_equal(changes[0], changes[1])


# ---- bad input: clear errors, weights unchanged ---------------------------------------------
def compiled_mlp():
    model = mlp()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("case", ["lengths", "label_shape", "nan", "sparse_range"])
def test_bad_training_data_raises_before_any_change(case):
    model = compiled_mlp()
    before = model.get_weights()
    x, y = data(20)
    if case == "lengths":
        y, match = y[:15], "x has 20 samples but y"
    elif case == "label_shape":
        y, match = y[:, :2], r"expects targets of shape \(None, 3\), received targets of shape \(20, 2\)"
    elif case == "nan":
        x = x.copy()
        x[3, 2] = np.nan
        match = "NaN"
    else:
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        y, match = np.full(20, 7.0), r"labels must be integers in \[0, 3\)"
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_unknown_names_and_fit_before_compile():
    model = mlp()
    with pytest.raises(ValueError, match="loss identifier: 'nope'"):
        model.compile(optimizer="adam", loss="nope")
    with pytest.raises(ValueError, match="optimizer identifier: 'nope'"):
        model.compile(optimizer="nope", loss="mse")
    with pytest.raises(ValueError, match="metric identifier: 'nope'"):
        model.compile(optimizer="adam", loss="mse", metrics=["nope"])
    x, y = data(8)
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(x, y, verbose=0)


def test_training_keeps_weights_in_the_runtime_between_steps():
    """Variables are only refreshed from the runtime when read."""
    model = compiled_mlp()
    x, y = data(64)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    state = model._state
    assert state is not None and all(w._owner is state for w in model.weights)
    model._train_step(next(iter(model._runners.values())) if False else model._runner("train", model._standardize_targets(y)),
                      [x[:16], y[:16], np.ones(16, np.float32)])
    assert state._ahead  # the runtime is ahead; nothing was copied to the Variables
    w = model.get_weights()[0]
    assert not state._ahead
    np.testing.assert_array_equal(w, state.current(model.weights[0].path))


def test_lr_alias_warns():
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        opt = optimizers.SGD(lr=0.5)
    assert opt.learning_rate == 0.5
    assert any("lr" in str(w.message) for w in rec)


def test_fortran_ordered_weights_still_train():
    """A weight set from a Fortran-ordered array must be shared with onnxruntime, not copied."""
    model = mlp()
    weights = [np.asfortranarray(w) for w in model.get_weights()]
    model.set_weights(weights)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="categorical_crossentropy")
    x, y = data(32)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert all(not np.allclose(a, b) for a, b in zip(weights[::2], model.get_weights()[::2]))


def test_initializer_config_with_newer_keras_keys():
    init = kgraph.initializers.get({"class_name": "GlorotUniform",
                                    "config": {"seed": 3, "input_axes": None, "output_axes": None}})
    assert isinstance(init, kgraph.initializers.GlorotUniform) and init.seed == 3


def test_multi_output_logs_per_output_losses_and_prefixed_metrics():
    rng = np.random.default_rng(0)
    inp = kgraph.Input(shape=(4,))
    a = layers.Dense(3, activation="softmax", name="cls")(inp)
    b = layers.Dense(1, name="reg")(inp)
    model = kgraph.Model(inp, [a, b])
    model.compile(optimizer="sgd", loss=["categorical_crossentropy", "mse"], loss_weights=[1.0, 0.25],
                  metrics=[["accuracy"], ["mae"]])
    x = rng.normal(size=(20, 4)).astype(np.float32)
    ya = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 20)]
    yb = rng.normal(size=(20, 1)).astype(np.float32)
    pa, pb = model.predict(x, verbose=0)
    logs = model.evaluate(x, [ya, yb], batch_size=7, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "cls_loss", "reg_loss", "cls_accuracy", "reg_mae"}
    np.testing.assert_allclose(logs["cls_loss"], ref.loss("categorical_crossentropy", ya, pa), rtol=1e-5)
    np.testing.assert_allclose(logs["reg_loss"], ref.loss("mean_squared_error", yb, pb), rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], logs["cls_loss"] + 0.25 * logs["reg_loss"], rtol=1e-5)
    np.testing.assert_allclose(logs["reg_mae"], np.abs(yb - pb).mean(), rtol=1e-5)


def test_nan_or_inf_in_the_data_is_an_error_before_any_step():
    kgraph.utils.set_random_seed(0)
    model = kgraph.Sequential([kgraph.Input(shape=(4,), name="features"), layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 20)]
    before = [w.copy() for w in model.get_weights()]
    for bad in (np.nan, np.inf, -np.inf):
        xb = x.copy()
        xb[7, 2] = bad
        with pytest.raises(ValueError, match=r"fit\(\): the data for 'features' contains NaN or infinite values \(1 entries\)"):
            model.fit(xb, y, epochs=1, verbose=0)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    # huge but finite values: the sum overflows, the element-wise look finds nothing wrong
    big = np.full((20, 4), 3e38, np.float32)
    model.fit(big, y, epochs=1, verbose=0)
    # an array checked once is not read again; a new array with the same values is
    model.fit(x, y, epochs=1, verbose=0)
    from kgraph.models import training_api
    assert training_api._all_finite(x) and id(x) in training_api._FINITE
    x2 = x.copy()
    x2[0, 0] = np.nan
    with pytest.raises(ValueError, match="contains NaN"):
        model.fit(x2, y, epochs=1, verbose=0)
