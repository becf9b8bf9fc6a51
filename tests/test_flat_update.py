"""The optimizer update over small variables laid end to end (flat slots): same numbers
as one update per variable, and the slots' values stay addressable per variable (saving,
restoring, a graph over another set of variables)."""
import numpy as np
import pytest

import kgraph
from kgraph import config, layers
from kgraph.runtime.state import TrainingState
from kgraph.training.step_graph import SlotSpec

rng = np.random.default_rng(0)
X = rng.normal(size=(64, 12)).astype(np.float32)
Y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 64)]


def build():
    kgraph.utils.set_random_seed(1)
    return kgraph.Sequential([kgraph.Input(shape=(12,)), layers.Dense(40, activation="relu"),
                              layers.Dense(8, activation="tanh"), layers.Dense(4, activation="softmax")])


def train(optimizer, flat_max, steps=6):
    saved = config.flat_update_max_size()
    config.set_flat_update_max_size(flat_max)
    try:
        model = build()
        model.compile(optimizer=optimizer, loss="categorical_crossentropy")
        losses = [float(model.train_on_batch(X[i * 16 % 64:][:16], Y[i * 16 % 64:][:16])) for i in range(steps)]
    finally:
        config.set_flat_update_max_size(saved)
    return model, losses


OPTIMIZERS = [lambda: kgraph.optimizers.Adam(learning_rate=0.01),
              lambda: kgraph.optimizers.Adam(learning_rate=0.01, amsgrad=True, clipnorm=0.5),
              lambda: kgraph.optimizers.AdamW(learning_rate=0.01, global_clipnorm=1.0),
              lambda: kgraph.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
              lambda: kgraph.optimizers.RMSprop(centered=True, momentum=0.5),
              lambda: kgraph.optimizers.Adagrad(learning_rate=0.1),
              lambda: kgraph.optimizers.Nadam(learning_rate=0.01)]


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_flat_update_equals_per_variable_update(make):
    # 400 elements at most: the 12x40 kernel (480) stays apart, the other five go flat
    per_var, l0 = train(make(), 0)
    flat, l1 = train(make(), 400)
    sig = next(iter(flat._runners.values())).sig
    flat_specs = [spec for _, spec in sig.slot_inputs if spec.flat]
    if make().slot_names:
        assert flat_specs and all(len(s.parts) == 5 for s in flat_specs)
        assert all(flat.weights[0].path not in dict(s.parts) for s in flat_specs)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(flat.get_weights(), per_var.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    def by_position(model):   # layer names differ between the two models: key by position
        pos = {w.path: i for i, w in enumerate(model.weights)}
        return {(pos.get(path, -1), slot): v for (path, slot), v in model._state.slot_values().items()}
    s0, s1 = by_position(per_var), by_position(flat)
    assert sorted(s0) == sorted(s1) and len(s0) == 6 * len(make().slot_names) + len(make().global_slots())
    for key in s0:
        assert s1[key].shape == s0[key].shape, key
        np.testing.assert_allclose(s1[key], s0[key], rtol=1e-6, atol=1e-9)


def test_flat_slots_round_trip_through_a_saved_file(tmp_path):
    """Optimizer state saved from flat slots and loaded into per-variable slots (and back)
    gives the same next step."""
    model, _ = train(kgraph.optimizers.Adam(learning_rate=0.01), 400)
    path = str(tmp_path / "m.keras")
    model.save(path)
    expected = float(model.train_on_batch(X[:16], Y[:16]))
    saved = config.flat_update_max_size()
    for flat_max in (0, 400):
        config.set_flat_update_max_size(flat_max)
        try:
            loaded = kgraph.models.load_model(path)
            got = float(loaded.train_on_batch(X[:16], Y[:16]))
        finally:
            config.set_flat_update_max_size(saved)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        for a, b in zip(loaded.get_weights(), model.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


class _Var:
    def __init__(self, path, value):
        self.path, self._value, self.dtype, self.shape = path, value, value.dtype, value.shape


class _Sig:
    def __init__(self, slots):
        self.weight_inputs, self.slot_inputs = [], slots


def test_state_moves_slot_values_between_layouts():
    """A graph over another set of variables (a layer frozen, then recompiled) gets a flat
    buffer of its own that starts from the slots' current values; restore and read-back
    address each variable's part."""
    a, b, c = (_Var(p, np.zeros(s, np.float32)) for p, s in (("a", (2, 3)), ("b", (4,)), ("c", (1,))))
    state = TrainingState([a, b, c], kgraph.optimizers.SGD(momentum=0.9))
    parts = lambda *vs: tuple((v.path, v.shape) for v in vs)  # noqa: E731
    state.register(_Sig([("slot/flat1/momentum", SlotSpec("momentum", parts(a, b, c)))]), [a, b, c])
    assert state.current("slot/flat1/momentum").shape == (11,)
    values = {("a", "momentum"): np.arange(6, dtype=np.float32).reshape(2, 3) + 1,
              ("b", "momentum"): np.full(4, 7.0, np.float32), ("c", "momentum"): np.array([9.0], np.float32)}
    state.restore_slots(values)
    np.testing.assert_array_equal(state.current("slot/flat1/momentum"), [1, 2, 3, 4, 5, 6, 7, 7, 7, 7, 9])
    # a graph over b and c only (a frozen): its buffer starts from their current values
    state.register(_Sig([("slot/flat2/momentum", SlotSpec("momentum", parts(b, c)))]), [a, b, c])
    np.testing.assert_array_equal(state.current("slot/flat2/momentum"), [7, 7, 7, 7, 9])
    out = state.slot_values()
    np.testing.assert_array_equal(out[("a", "momentum")], values[("a", "momentum")])
    np.testing.assert_array_equal(out[("c", "momentum")], [9.0])
    # a per-variable slot of a frozen-then-unfrozen variable picks up its last value
    state.register(_Sig([("slot/a/momentum", SlotSpec("momentum", parts(a)))]), [a, b, c])
    np.testing.assert_array_equal(state.current("slot/a/momentum"), values[("a", "momentum")])


def test_adam_keeps_rescaled_moments_and_reports_keras_values():
    """Adam's runtime slots hold m / (1 - beta_1) and v / (1 - beta_2); slot_values (what
    saving reads) and restore_slots speak Keras's m and v."""
    model, _ = train(kgraph.optimizers.Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.99), 0, steps=1)
    state = model._state
    name, offset, shape = state._slot_where[(model.weights[1].path, "m")]
    runtime_m = state.current(name).copy()
    keras_m = state.slot_values()[(model.weights[1].path, "m")]
    np.testing.assert_allclose(runtime_m, keras_m / 0.2, rtol=1e-6)
    # after one step from zero slots Keras's m is (1 - beta_1) g and v is (1 - beta_2) g^2
    g = keras_m / 0.2
    np.testing.assert_allclose(state.slot_values()[(model.weights[1].path, "v")], 0.01 * g * g, rtol=1e-5, atol=1e-12)
    state.restore_slots({(model.weights[1].path, "m"): np.full(shape, 0.5, np.float32)})
    np.testing.assert_allclose(state.current(name), 2.5, rtol=1e-6)
    np.testing.assert_allclose(state.slot_values()[(model.weights[1].path, "m")], 0.5, rtol=1e-6)


def test_flat_update_size_setting_is_checked():
    with pytest.raises(ValueError, match="Received: n=-1"):
        config.set_flat_update_max_size(-1)
