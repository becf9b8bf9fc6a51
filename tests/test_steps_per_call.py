"""K training steps per onnxruntime call (an ONNX Loop over resident data) give the same
weights and logs as K single steps."""
import numpy as np
import pytest

import kgraph
from kgraph import callbacks, config, layers


def train(k_auto=1, spe=1, shuffle=True, steps_per_epoch=None, lr=1e-2, cbs=None, n=333, epochs=2):
    config.set_auto_steps_per_call(k_auto)
    try:
        kgraph.utils.set_random_seed(0)
        model = kgraph.Sequential([kgraph.Input(shape=(12,)), layers.Dense(16, activation="relu"),
                                   layers.Dense(3, activation="softmax")])
        model.compile(optimizer=kgraph.optimizers.Adam(learning_rate=lr), loss="categorical_crossentropy",
                      metrics=["accuracy"], steps_per_execution=spe)
        rng = np.random.default_rng(1)
        x = rng.normal(size=(n, 12)).astype(np.float32)
        y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
        hist = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=shuffle, verbose=0,
                         steps_per_epoch=steps_per_epoch, callbacks=cbs)
        return model.get_weights(), hist.history, model.optimizer.iterations
    finally:
        config.set_auto_steps_per_call("auto")


@pytest.mark.parametrize("kwargs", [
    {"spe": 7}, {"spe": 1000}, {"k_auto": 5}, {"spe": 4, "shuffle": False},
    {"spe": 3, "steps_per_epoch": 15},
    {"spe": 6, "lr": kgraph.schedules.ExponentialDecay(0.05, decay_steps=3, decay_rate=0.7)},
])
def test_k_steps_per_call_equal_single_steps(kwargs):
    single = train(**{k: v for k, v in kwargs.items() if k in ("shuffle", "steps_per_epoch", "lr")})
    looped = train(**kwargs)
    for a, b in zip(single[0], looped[0]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    for key in single[1]:
        np.testing.assert_allclose(single[1][key], looped[1][key], rtol=1e-6)
    assert single[2] == looped[2]


def test_auto_sizes_calls_by_time_with_the_same_numbers(monkeypatch):
    """The default sizes each call by the measured seconds per step (here aiming at 40
    steps' worth): calls of 8 steps first, then larger ones, and the same numbers."""
    from kgraph.runtime import loop as loop_mod
    sizes = []
    real = loop_mod.LoopRunner.run_steps

    def spy(self, first, lrs, t0):
        sizes.append(len(lrs))
        return real(self, first, lrs, t0)
    monkeypatch.setattr(loop_mod.LoopRunner, "run_steps", spy)
    monkeypatch.setattr(loop_mod.LoopRunner, "seconds_per_step", property(
        lambda self: None if len(sizes) < 1 else config.AUTO_CALL_SECONDS / 40, lambda self, v: None), raising=False)
    single = train(n=2000, epochs=1)
    sizes.clear()
    auto = train(k_auto="auto", n=2000, epochs=1)
    assert sizes == [8, 40, 15]     # 63 steps: 8, then 40 (the measured rate), then the rest
    for a, b in zip(single[0], auto[0]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(single[1]["loss"], auto[1]["loss"], rtol=1e-6)


def test_auto_steps_setting_is_checked():
    with pytest.raises(ValueError, match="Received: k=0"):
        config.set_auto_steps_per_call(0)
    assert config.auto_steps_per_call() is None      # the default: sized by time


def test_batch_callbacks_see_every_step_unless_steps_per_execution_is_set():
    class Count(callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches = []

        def on_train_batch_end(self, batch, logs=None):
            self.batches.append(batch)

    c = Count()
    train(k_auto=8, cbs=[c], epochs=1)          # auto K never hides a batch from a callback
    assert c.batches == list(range(11))
    c2 = Count()
    train(spe=4, cbs=[c2], epochs=1)            # explicit steps_per_execution: once per call (Keras)
    assert c2.batches == [3, 7, 10]
