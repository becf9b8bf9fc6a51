"""The fit/evaluate/predict callback protocol as Keras 3 runs it: which hooks are called,
in which order, with which logs and params; stop_training; the learning rate as a graph
input that callbacks change between steps; the progress lines.

The expected call sequences are those real Keras 3 (torch backend) produced for the same
calls, written out here by hand."""
import numpy as np
import pytest

import kgraph
from kgraph import callbacks, layers, optimizers

HOOKS_RUN = ("on_train_begin", "on_train_end", "on_test_begin", "on_test_end", "on_predict_begin",
             "on_predict_end")
HOOKS_STEP = ("on_epoch_begin", "on_epoch_end", "on_train_batch_begin", "on_train_batch_end",
              "on_test_batch_begin", "on_test_batch_end", "on_predict_batch_begin", "on_predict_batch_end")


class Recorder(callbacks.Callback):
    """Records every hook call: (hook, index or None, logs)."""

    def __init__(self):
        super().__init__()
        self.calls = []


for _h in HOOKS_RUN:
    setattr(Recorder, _h, (lambda h: lambda self, logs=None: self.calls.append((h, None, logs)))(_h))
for _h in HOOKS_STEP:
    setattr(Recorder, _h, (lambda h: lambda self, i, logs=None: self.calls.append((h, i, logs)))(_h))


def classifier(seed=0):
    kgraph.utils.set_random_seed(seed)
    model = kgraph.Sequential([kgraph.Input((3,)), layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def data(n=10, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, 3)).astype("float32"), rng.integers(0, 2, n)


def shape_of(calls):
    return [(h, i, sorted(logs)) for h, i, logs in calls]


def test_fit_hooks_order_logs_and_params_as_keras():
    x, y = data()
    model, rec = classifier(), Recorder()
    history = model.fit(x, y, batch_size=4, epochs=2, validation_split=0.2, callbacks=[rec], verbose=0)
    assert rec.params == {"verbose": 0, "epochs": 2, "steps": 2}
    assert rec.model is model
    m = ["accuracy", "loss"]
    epoch = [("on_train_batch_begin", 0, []), ("on_train_batch_end", 0, m),
             ("on_train_batch_begin", 1, []), ("on_train_batch_end", 1, m),
             ("on_test_begin", None, []), ("on_test_batch_begin", 0, []), ("on_test_batch_end", 0, m),
             ("on_test_end", None, m)]
    all_keys = ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert shape_of(rec.calls) == (
        [("on_train_begin", None, [])]
        + [("on_epoch_begin", 0, [])] + epoch + [("on_epoch_end", 0, all_keys)]
        + [("on_epoch_begin", 1, [])] + epoch + [("on_epoch_end", 1, all_keys)]
        + [("on_train_end", None, all_keys)])
    ends = [logs for h, _, logs in rec.calls if h == "on_epoch_end"]
    tests = [logs for h, _, logs in rec.calls if h == "on_test_end"]
    batch_ends = [logs for h, _, logs in rec.calls if h == "on_train_batch_end"]
    for e, t, b in zip(ends, tests, batch_ends[1::2]):
        assert t == {"loss": e["val_loss"], "accuracy": e["val_accuracy"]}
        assert b == {"loss": e["loss"], "accuracy": e["accuracy"]}   # running means, last batch = epoch
    assert rec.calls[-1][2] == ends[-1]
    assert history is model.history and history.epoch == [0, 1]
    assert history.history == {k: [e[k] for e in ends] for k in ends[0]}


def test_logs_are_fresh_dicts_per_call():
    """A callback adding a key is seen by the callbacks after it (History), not by fit."""
    x, y = data()
    model = classifier()
    adder = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: logs.update(extra=float(epoch)))
    rec = Recorder()
    history = model.fit(x, y, batch_size=4, epochs=2, callbacks=[adder, rec], verbose=0)
    assert history.history["extra"] == [0.0, 1.0]
    assert "extra" not in rec.calls[-1][2]   # on_train_end gets fit's own logs


def test_params_verbose_as_passed_and_steps_per_epoch():
    x, y = data(12)
    model, rec = classifier(), Recorder()
    model.fit(x, y, batch_size=4, epochs=1, steps_per_epoch=2, callbacks=[rec], verbose=2)
    assert rec.params == {"verbose": 2, "epochs": 1, "steps": 2}
    assert [i for h, i, _ in rec.calls if h == "on_train_batch_end"] == [0, 1]
    model.fit(x, y, batch_size=5, epochs=1, callbacks=[rec])
    assert rec.params == {"verbose": "auto", "epochs": 1, "steps": 3}


def test_evaluate_and_predict_hooks():
    x, y = data()
    model, rec = classifier(), Recorder()
    logs = model.evaluate(x, y, batch_size=4, callbacks=[rec], verbose=0, return_dict=True)
    assert rec.params == {"verbose": 0, "epochs": 1, "steps": 3}
    m = ["accuracy", "loss"]
    assert shape_of(rec.calls) == [("on_test_begin", None, [])] + [
        c for i in range(3) for c in (("on_test_batch_begin", i, []), ("on_test_batch_end", i, m))
    ] + [("on_test_end", None, m)]
    assert rec.calls[-1][2] == logs
    rec.calls.clear()
    out = model.predict(x, batch_size=4, callbacks=[rec], verbose=0)
    assert shape_of(rec.calls) == [("on_predict_begin", None, [])] + [
        c for i in range(3) for c in (("on_predict_batch_begin", i, []), ("on_predict_batch_end", i, ["outputs"]))
    ] + [("on_predict_end", None, [])]
    batches = [logs["outputs"] for h, _, logs in rec.calls if h == "on_predict_batch_end"]
    np.testing.assert_array_equal(np.concatenate(batches), out)
    # one batch, no batch observer: the single-run path gives the same numbers
    np.testing.assert_allclose(model.predict(x, batch_size=32, verbose=0), out, rtol=1e-6)


def test_stop_training_from_a_batch_hook_ends_the_epoch_there():
    x, y = data(12)
    model = classifier()

    def stop(batch, logs):
        if model.optimizer.iterations == 3 + 2:   # epoch 1, batch 1 (3 steps per epoch)
            model.stop_training = True

    rec = Recorder()
    history = model.fit(x, y, batch_size=4, epochs=5, verbose=0,
                        callbacks=[callbacks.LambdaCallback(on_train_batch_end=stop), rec])
    assert model.optimizer.iterations == 5
    assert history.epoch == [0, 1]     # epoch 1 still ends (on_epoch_end) with its partial logs
    assert [h for h, _, _ in rec.calls][-2:] == ["on_epoch_end", "on_train_end"]


def test_learning_rate_set_by_a_callback_is_used_by_the_next_step():
    """Dense(1) without bias on x=1, y=0 under MSE: loss w^2, so SGD does w <- w(1 - 2 lr).
    The callback sets a different rate before every step; no graph is rebuilt."""
    kgraph.utils.set_random_seed(0)
    model = kgraph.Sequential([kgraph.Input((1,)), layers.Dense(1, use_bias=False)])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.3), loss="mse")
    model.set_weights([np.array([[1.0]], np.float32)])
    x, y = np.ones((4, 1), np.float32), np.zeros((4, 1), np.float32)
    rates = [0.05, 0.1, 0.2, 0.15]
    runners = {}

    def set_rate(batch, logs):
        model.optimizer.learning_rate = rates[batch]
        runners.setdefault("ids", {k: id(r) for k, r in model._runners.items()})

    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0,
              callbacks=[callbacks.LambdaCallback(on_train_batch_begin=set_rate)])
    want = np.prod([1 - 2 * lr for lr in rates])
    np.testing.assert_allclose(model.get_weights()[0], [[want]], rtol=1e-6)
    assert {k: id(r) for k, r in model._runners.items()} == runners["ids"]


def test_callback_list_wants_only_what_callbacks_do():
    """Per-batch logs are built (and single steps forced) only for callbacks that act per batch."""
    def wants(cb, hook):
        return callbacks.CallbackList([cb]).wants(hook)

    class OldStyle(callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            pass

    assert wants(OldStyle(), "on_train_batch_end")           # Keras forwards train batches to on_batch_end
    assert wants(callbacks.LambdaCallback(on_train_batch_begin=print), "on_train_batch_begin")
    assert wants(callbacks.LambdaCallback(on_test_end=print), "on_test_end")   # any hook by keyword
    assert wants(callbacks.TerminateOnNaN(), "on_train_batch_end")
    for cb in (callbacks.EarlyStopping(), callbacks.ModelCheckpoint("m.keras"), callbacks.History(),
               callbacks.BackupAndRestore("b"), callbacks.CSVLogger("c.csv"), callbacks.TensorBoard("t"),
               callbacks.ReduceLROnPlateau(), callbacks.LearningRateScheduler(lambda e, lr: lr)):
        assert not wants(cb, "on_train_batch_end") and not wants(cb, "on_train_batch_begin"), cb
        assert not wants(cb, "on_test_batch_end"), cb
    assert wants(callbacks.ModelCheckpoint("m.keras", save_freq=3), "on_train_batch_end")
    assert wants(callbacks.BackupAndRestore("b", save_freq=3), "on_train_batch_end")
    assert wants(callbacks.TensorBoard("t", update_freq="batch"), "on_train_batch_end")


def test_given_history_is_used_and_lists_are_flattened():
    x, y = data()
    model, mine, rec = classifier(), callbacks.History(), Recorder()
    returned = model.fit(x, y, batch_size=5, epochs=2, callbacks=[[mine], (rec,)], verbose=0)
    assert returned is mine and model.history is mine and len(mine.history["loss"]) == 2
    assert rec.calls
    with pytest.raises(TypeError, match="Callback instances"):
        model.fit(x, y, epochs=1, callbacks=[print], verbose=0)


def test_progress_lines(capsys):
    x, y = data(12)
    model = classifier()
    model.fit(x, y, batch_size=4, epochs=2, validation_split=0.25, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2" and len(lines) == 4
    assert lines[1].startswith("3/3 - ") and lines[1].endswith(tuple("0123456789"))
    assert " - loss: " in lines[1] and " - val_accuracy: " in lines[1]
    model.fit(x, y, batch_size=4, epochs=1)                  # verbose="auto": no "Epoch 1/1"
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("3/3 ━") and "accuracy: " in lines[0]
    model.evaluate(x, y, batch_size=4)
    model.predict(x, batch_size=4)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("3/3 ") and "loss: " in lines[0]
    assert lines[1].startswith("3/3 ") and "loss" not in lines[1]
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    model.evaluate(x, y, verbose=0)
    model.predict(x, verbose=0)
    assert capsys.readouterr().out == ""
