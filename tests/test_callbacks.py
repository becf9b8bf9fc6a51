"""Each callback against its documented Keras 3 behaviour, with hand-computed expectations:
EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, LearningRateScheduler, CSVLogger,
LambdaCallback, TerminateOnNaN, BackupAndRestore (including a SIGKILL mid-epoch and a
restart), TensorBoard (event files read back record by record) and the seed example."""
import csv
import json
import math
import operator
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kgraph
from kgraph import callbacks, layers, optimizers
from kgraph.models import load_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def classifier(seed=0, optimizer="adam"):
    kgraph.utils.set_random_seed(seed)
    model = kgraph.Sequential([kgraph.Input((6,)), layers.Dense(8, activation="tanh"),
                               layers.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def data(n=24, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]


def scalar_model(lr=0.1):
    """Dense(1) without bias on x=1, y=0 under MSE: loss w^2, SGD step w <- w (1 - 2 lr)."""
    kgraph.utils.set_random_seed(0)
    model = kgraph.Sequential([kgraph.Input((1,)), layers.Dense(1, use_bias=False)])
    model.compile(optimizer=optimizers.SGD(learning_rate=lr), loss="mse")
    model.set_weights([np.array([[1.0]], np.float32)])
    return model, np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)


class FakeModel:
    """What the monitor callbacks touch: weights (here the epoch index), stop_training, optimizer."""

    def __init__(self, lr=0.1):
        self.stop_training = False
        self.weights_now = -1
        self.restored = None
        self.optimizer = optimizers.SGD(learning_rate=lr)

    def get_weights(self):
        return [np.array(self.weights_now)]

    def set_weights(self, weights):
        self.restored = int(weights[0])


def drive(cb, values, monitor="val_loss", model=None):
    """on_train_begin, then one on_epoch_end per monitored value (None: key missing)."""
    model = model or FakeModel()
    cb.set_model(model)
    cb.on_train_begin({})
    for epoch, v in enumerate(values):
        model.weights_now = epoch
        cb.on_epoch_end(epoch, {"loss": 1.0, "acc": 0.5} if v is None else {"loss": 1.0, monitor: v})
        if model.stop_training:
            break
    cb.on_train_end({})
    return model


# -- the seed example -----------------------------------------------------------------
def test_seed_example_early_stopping_and_best_checkpoint(tmp_path, monkeypatch):
    """The seed's callback example, imports changed, on the bundled digits (a subset, so that
    it overfits): training stops once val_loss has not improved for 5 epochs, the weights are
    those of the best epoch (their validation loss is the lowest of the run), and
    best_model.h5 reloads to that same model."""
    from kgraph.callbacks import EarlyStopping, ModelCheckpoint
    from kgraph.datasets import digits
    from kgraph.layers import Dense
    from kgraph.models import Sequential

    monkeypatch.chdir(tmp_path)
    kgraph.utils.set_random_seed(0)
    (x_train, y_train), _ = digits.load_data()
    x_train = x_train.reshape(-1, 64)[:400].astype("float32") / 16
    y_train = np.eye(10)[y_train[:400]]
    model = Sequential([kgraph.Input((64,)), Dense(128, activation="relu"), Dense(10, activation="softmax")])
    model.compile(optimizer=optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])

    callbacks = [
        EarlyStopping(patience=5, restore_best_weights=True),
        ModelCheckpoint('best_model.h5', save_best_only=True)
    ]
    history = model.fit(x_train, y_train, epochs=100, validation_split=0.2, callbacks=callbacks)

    val_loss = history.history["val_loss"]
    best = int(np.argmin(val_loss))
    assert len(val_loss) < 100                          # it stopped early ...
    assert len(val_loss) == best + 1 + 5                # ... 5 epochs after the best one
    assert callbacks[0].stopped_epoch == best + 5 and callbacks[0].best_epoch == best
    x_val, y_val = x_train[320:], y_train[320:]         # validation_split takes the last 20%
    restored = model.evaluate(x_val, y_val, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(restored, val_loss[best], rtol=1e-5)
    reloaded = load_model("best_model.h5")
    for got, want in zip(reloaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(reloaded.evaluate(x_val, y_val, verbose=0)[0], restored, rtol=1e-6)


# -- EarlyStopping -------------------------------------------------------------------------
def test_early_stopping_patience_min_delta_and_best_weights():
    # improvement means v + 0.1 < best: epochs 0 (first) and 2 improve; 3, 4 do not -> stop at 4
    cb = callbacks.EarlyStopping(patience=2, min_delta=0.1, restore_best_weights=True)
    model = drive(cb, [1.0, 0.95, 0.85, 0.8, 0.9, 0.1])
    assert model.stop_training and cb.stopped_epoch == 4 and cb.best_epoch == 2 and cb.best == 0.85
    assert model.restored == 2


def test_early_stopping_baseline_and_start_from_epoch():
    # baseline 0.5 is never beaten: improving epochs still move `best` but do not reset `wait`
    cb = callbacks.EarlyStopping(patience=2, baseline=0.5, restore_best_weights=True)
    model = drive(cb, [0.9, 0.8, 0.85, 0.7])
    assert cb.stopped_epoch == 2 and cb.best_epoch == 1 and model.restored == 1
    # epochs before start_from_epoch are not monitored; mode="max"
    cb = callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=0, start_from_epoch=2)
    drive(cb, [0.1, 0.05, 0.5, 0.4], monitor="val_accuracy")
    assert cb.stopped_epoch == 3 and cb.best == 0.5


def test_early_stopping_keras_doc_example():
    callback = callbacks.EarlyStopping(monitor='loss', patience=3)
    model = kgraph.Sequential([kgraph.Input((20,)), layers.Dense(10)])
    model.compile(optimizers.SGD(), loss='mse')
    history = model.fit(np.arange(100).reshape(5, 20), np.zeros((5, 10)), epochs=10, batch_size=1,
                        callbacks=[callback], verbose=0)
    assert len(history.history['loss']) == 4


def test_monitor_missing_warns_with_available_keys_and_auto_mode():
    cb = callbacks.EarlyStopping(patience=0)          # val_loss, but fit has no validation
    with pytest.warns(UserWarning, match=r"`val_loss` which is not available. Available metrics are: loss,acc"):
        model = drive(cb, [None, None], model=None)
    assert not model.stop_training
    with pytest.warns(UserWarning, match=r"`val_los` which is not available. Available metrics are: loss,val_loss"):
        drive(callbacks.EarlyStopping(monitor="val_los", mode="min"), [1.0])
    with pytest.warns(UserWarning, match=r"Available metrics are: loss,acc,learning_rate"):
        drive(callbacks.ReduceLROnPlateau(), [None])
    with pytest.warns(UserWarning, match="Can save best model only with val_los available. Available metrics"):
        cb = callbacks.ModelCheckpoint("never.keras", monitor="val_los", mode="min", save_best_only=True)
        cb.set_model(FakeModel())
        assert cb._should_save_model(0, {"loss": 1.0}, "never.keras")
    # mode="auto" cannot tell the direction of an unknown name: an error, as in Keras
    with pytest.raises(ValueError, match=r"monitor=val_los.*not in the logs either; available metrics are: "
                                         r"loss,val_loss"):
        drive(callbacks.EarlyStopping(monitor="val_los"), [1.0])
    # mode="auto": the direction of a compiled metric; unknown names raise as in Keras
    x, y = data()
    model = classifier()
    acc = callbacks.EarlyStopping(monitor="val_accuracy", patience=100)
    model.fit(x, y, epochs=1, validation_split=0.25, callbacks=[acc], verbose=0)
    assert acc.monitor_op is operator.gt
    with pytest.raises(ValueError, match="isn't able to automatically determine"):
        model.fit(x, y, epochs=1, validation_split=0.25, verbose=0,
                  callbacks=[callbacks.EarlyStopping(monitor="val_score")])


# -- ModelCheckpoint -----------------------------------------------------------------------
def test_model_checkpoint_file_name_template(tmp_path):
    x, y = data()
    model = classifier()
    cb = callbacks.ModelCheckpoint(str(tmp_path / "{epoch:02d}-{val_loss:.2f}.keras"))
    history = model.fit(x, y, epochs=3, batch_size=8, validation_split=0.25, callbacks=[cb], verbose=0)
    want = {f"{e + 1:02d}-{v:.2f}.keras" for e, v in enumerate(history.history["val_loss"])}
    assert set(os.listdir(tmp_path)) == want
    last = tmp_path / f"03-{history.history['val_loss'][2]:.2f}.keras"
    for got, ref in zip(load_model(last).get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, ref)


def test_model_checkpoint_save_best_only_weights(tmp_path):
    x, y = data()
    model = classifier(optimizer=optimizers.Adam(0.05))
    saved = {}

    def remember(epoch, logs):
        saved[epoch] = model.get_weights()

    cb = callbacks.ModelCheckpoint(str(tmp_path / "w{epoch}.weights.h5"), monitor="val_accuracy",
                                   save_best_only=True, save_weights_only=True)
    history = model.fit(x, y, epochs=8, batch_size=4, validation_split=0.25, verbose=0,
                        callbacks=[cb, callbacks.LambdaCallback(on_epoch_end=remember)])
    acc = history.history["val_accuracy"]
    improving = [e for e in range(len(acc)) if all(acc[e] > a for a in acc[:e])]
    assert sorted(os.listdir(tmp_path)) == sorted(f"w{e + 1}.weights.h5" for e in improving)
    probe = classifier(seed=5)
    probe.load_weights(tmp_path / f"w{improving[-1] + 1}.weights.h5")
    for got, want in zip(probe.get_weights(), saved[improving[-1]]):
        np.testing.assert_array_equal(got, want)


def test_model_checkpoint_save_freq_in_batches(tmp_path):
    """save_freq=4 with 3 steps per epoch: saves after global batches 4 and 8, i.e. epoch 2
    batch 1 and epoch 3 batch 2 (both 1-based in the file name, as Keras fills them)."""
    x, y = data(12)
    model = classifier()
    at_batch = {}

    def remember(batch, logs):
        at_batch[(model.optimizer.iterations, batch)] = model.get_weights()

    cb = callbacks.ModelCheckpoint(str(tmp_path / "w-{epoch}-{batch}.weights.h5"), save_weights_only=True,
                                   save_freq=4)
    model.fit(x, y, epochs=3, batch_size=4, verbose=0,
              callbacks=[cb, callbacks.LambdaCallback(on_train_batch_end=remember)])
    assert sorted(os.listdir(tmp_path)) == ["w-2-1.weights.h5", "w-3-2.weights.h5"]
    for name, key in (("w-2-1.weights.h5", (4, 0)), ("w-3-2.weights.h5", (8, 1))):
        probe = classifier(seed=5)
        probe.load_weights(tmp_path / name)
        for got, want in zip(probe.get_weights(), at_batch[key]):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name,weights_only", [("m.h5", False), ("m.keras", False), ("m.weights.h5", True)])
def test_model_checkpoint_formats(tmp_path, name, weights_only):
    x, y = data()
    model = classifier()
    cb = callbacks.ModelCheckpoint(str(tmp_path / "sub" / name), save_weights_only=weights_only)
    model.fit(x, y, epochs=2, batch_size=8, callbacks=[cb], verbose=0)
    assert os.listdir(tmp_path / "sub") == [name]       # no temporary file left beside it
    if weights_only:
        probe = classifier(seed=5)
        probe.load_weights(tmp_path / "sub" / name)
    else:
        probe = load_model(tmp_path / "sub" / name)
        assert probe.optimizer.iterations == model.optimizer.iterations
    for got, want in zip(probe.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_model_checkpoint_bad_paths(tmp_path):
    with pytest.raises(ValueError, match=r"must end in `.weights.h5`.*Received: filepath=m.keras"):
        callbacks.ModelCheckpoint("m.keras", save_weights_only=True)
    with pytest.raises(ValueError, match=r"must end in `.keras`.*Received: filepath=m.weights"):
        callbacks.ModelCheckpoint("m.weights")
    with pytest.raises(ValueError, match="Unrecognized save_freq"):
        callbacks.ModelCheckpoint("m.keras", save_freq="batch")
    x, y = data()
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "dir.keras").mkdir()
    for path, match in ((tmp_path / "a_file" / "{epoch}.keras", "is not a directory"),
                        (tmp_path / "dir.keras", "existing directory")):
        model = classifier()
        with pytest.raises(OSError, match=match):
            model.fit(x, y, epochs=2, callbacks=[callbacks.ModelCheckpoint(str(path))], verbose=0)
        assert model.optimizer.iterations == 0            # raised before the first step
    model = classifier()
    with pytest.raises(KeyError, match="Failed to format this callback filepath"):
        model.fit(x, y, epochs=1, callbacks=[callbacks.ModelCheckpoint(str(tmp_path / "{val_loss}.keras"))],
                  verbose=0)


def test_model_checkpoint_failed_write_keeps_the_previous_file(tmp_path):
    """A save that dies half-way never replaces the last good checkpoint."""
    x, y = data()
    model = classifier()
    path = tmp_path / "m.keras"
    model.fit(x, y, epochs=1, callbacks=[callbacks.ModelCheckpoint(str(path))], verbose=0)
    good = path.read_bytes()

    def torn_save(filepath, overwrite=True):
        with open(filepath, "wb") as f:
            f.write(good[: len(good) // 2])
        raise RuntimeError("disk gone")

    model.save = torn_save
    with pytest.raises(RuntimeError, match="disk gone"):
        model.fit(x, y, epochs=1, callbacks=[callbacks.ModelCheckpoint(str(path))], verbose=0)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["m.keras"]
    load_model(path)


# -- ReduceLROnPlateau -------------------------------------------------------------------
def test_reduce_lr_on_plateau_sequence():
    """factor 0.5, patience 2, cooldown 1, min_lr 0.02, min_delta 0.01 (v + 0.01 < best improves).
    epoch: value -> wait/cooldown -> rate after the epoch
      0: 1.0   best=1.0                       0.1
      1: 0.995 wait 1                         0.1
      2: 0.98  best=0.98                      0.1
      3: 0.98  wait 1                         0.1
      4: 0.975 wait 2 -> reduce, cooldown 1   0.05
      5: 0.97  cooldown ends, wait 1          0.05
      6: 0.97  wait 2 -> reduce, cooldown 1   0.025
      7: 0.5   cooldown ends, best=0.5        0.025
      8: 0.6   wait 1                         0.025
      9: 0.6   wait 2 -> reduce to min_lr     0.02
     10: 0.6   cooldown ends, wait 1          0.02
     11: 0.6   wait 2, already at min_lr      0.02
    """
    cb = callbacks.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.02, min_delta=0.01)
    model = FakeModel(lr=0.1)
    cb.set_model(model)
    cb.on_train_begin({})
    rates, logged = [], []
    for epoch, v in enumerate([1.0, 0.995, 0.98, 0.98, 0.975, 0.97, 0.97, 0.5, 0.6, 0.6, 0.6, 0.6]):
        logs = {"val_loss": v}
        cb.on_epoch_end(epoch, logs)
        logged.append(logs["learning_rate"])
        rates.append(model.optimizer.learning_rate)
    after = [0.1] * 4 + [0.05] * 2 + [0.025] * 3 + [0.02] * 3
    np.testing.assert_allclose(rates, after, rtol=1e-6)
    np.testing.assert_allclose(logged, [0.1] + after[:-1], rtol=1e-6)   # the rate in force during the epoch
    with pytest.raises(ValueError, match="factor >= 1.0"):
        callbacks.ReduceLROnPlateau(factor=1.0)


def test_reduce_lr_on_plateau_in_fit_reaches_the_step():
    model, x, y = scalar_model(lr=0.1)
    cb = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)
    history = model.fit(x, y, epochs=3, batch_size=1, callbacks=[cb], verbose=0)
    # the first epoch sets `best`; after it, no epoch "improves" by 10, so each halves the
    # rate for the next epoch; the logs hold the rate the epoch's steps used
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05], rel=1e-6)
    assert model.optimizer.learning_rate == pytest.approx(0.025, rel=1e-6)
    want = (1 - 2 * 0.1) * (1 - 2 * 0.1) * (1 - 2 * 0.05)
    np.testing.assert_allclose(model.get_weights()[0], [[want]], rtol=1e-6)


# -- LearningRateScheduler ------------------------------------------------------------------
def test_learning_rate_scheduler_rates_are_the_ones_the_steps_used():
    model, x, y = scalar_model(lr=0.3)

    def schedule(epoch, lr):
        return 0.2 if epoch == 0 else lr * 0.5

    history = model.fit(x, y, epochs=4, batch_size=1, verbose=0,
                        callbacks=[callbacks.LearningRateScheduler(schedule)])
    rates = [0.2, 0.1, 0.05, 0.025]
    assert history.history["learning_rate"] == pytest.approx(rates, rel=1e-7)
    np.testing.assert_allclose(model.get_weights()[0], [[np.prod([1 - 2 * r for r in rates])]], rtol=1e-6)
    model, x, y = scalar_model()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))])
    assert model.optimizer.learning_rate == pytest.approx(0.02)
    with pytest.raises(ValueError, match="should be a float"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.LearningRateScheduler(lambda e, lr: 1)])
    sched = kgraph.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    model.compile(optimizer=optimizers.SGD(learning_rate=sched), loss="mse")
    with pytest.raises(TypeError, match="not settable"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.LearningRateScheduler(lambda e, lr: lr)])


def test_learning_rate_scheduler_keras_doc_example():
    def scheduler(epoch, lr):
        return lr if epoch < 10 else lr * math.exp(-0.1)

    model = kgraph.Sequential([kgraph.Input((20,)), layers.Dense(10)])
    model.compile(optimizers.SGD(), loss='mse')
    assert round(model.optimizer.learning_rate, 5) == 0.01
    model.fit(np.arange(100).reshape(5, 20) / 100, np.zeros((5, 10)), epochs=15, verbose=0,
              callbacks=[callbacks.LearningRateScheduler(scheduler)])
    assert round(model.optimizer.learning_rate, 5) == 0.00607


# -- CSVLogger ------------------------------------------------------------------------------
def test_csv_logger_contents_append_and_separator(tmp_path):
    x, y = data()
    path = tmp_path / "log.csv"
    model = classifier()
    h = model.fit(x, y, epochs=2, batch_size=8, validation_split=0.25, verbose=0,
                  callbacks=[callbacks.CSVLogger(path)]).history
    keys = ["accuracy", "loss", "val_accuracy", "val_loss"]
    want = [["epoch"] + keys] + [[str(e)] + [str(h[k][e]) for k in keys] for e in range(2)]
    assert list(csv.reader(path.open())) == want
    # append: a resumed run adds rows, not a second header; epochs are those of the new fit
    h2 = model.fit(x, y, epochs=1, batch_size=8, validation_split=0.25, verbose=0,
                   callbacks=[callbacks.CSVLogger(path, append=True)]).history
    rows = list(csv.reader(path.open()))
    assert rows[:3] == want and rows[3] == ["0"] + [str(h2[k][0]) for k in keys] and len(rows) == 4
    # no validation: Keras still writes val_* columns, as NA; separator
    h3 = model.fit(x, y, epochs=1, batch_size=8, verbose=0,
                   callbacks=[callbacks.CSVLogger(path, separator=";")]).history
    assert path.read_text().splitlines() == [
        "epoch;accuracy;loss;val_accuracy;val_loss", f"0;{h3['accuracy'][0]};{h3['loss'][0]};NA;NA"]


# -- LambdaCallback, TerminateOnNaN, History ----------------------------------------------------
def test_lambda_callback_hooks():
    x, y = data(8)
    calls = []
    cb = callbacks.LambdaCallback(
        on_train_begin=lambda logs: calls.append("train_begin"),
        on_epoch_begin=lambda epoch, logs: calls.append(f"epoch_begin {epoch}"),
        on_train_batch_begin=lambda batch, logs: calls.append(f"batch_begin {batch}"),
        on_train_batch_end=lambda batch, logs: calls.append(f"batch_end {batch} {sorted(logs)}"),
        on_epoch_end=lambda epoch, logs: calls.append(f"epoch_end {epoch} {sorted(logs)}"),
        on_train_end=lambda logs: calls.append("train_end"),
        on_test_end=lambda logs: calls.append("test_end"))
    classifier().fit(x, y, epochs=1, batch_size=4, validation_split=0.5, callbacks=[cb], verbose=0)
    assert calls == ["train_begin", "epoch_begin 0", "batch_begin 0", "batch_end 0 ['accuracy', 'loss']",
                     "test_end", "epoch_end 0 ['accuracy', 'loss', 'val_accuracy', 'val_loss']", "train_end"]


def test_terminate_on_nan_stops_at_the_first_bad_batch(capsys):
    """SGD at rate 1 on x=100, y=0: w is multiplied by (1 - 2e4) per step until float32
    overflows; training stops right after the first batch whose loss is not finite."""
    kgraph.utils.set_random_seed(0)
    model = kgraph.Sequential([kgraph.Input((1,)), layers.Dense(1, use_bias=False)])
    model.compile(optimizer=optimizers.SGD(learning_rate=1.0), loss="mse")
    model.set_weights([np.array([[1.0]], np.float32)])
    losses = []
    seen = callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: losses.append(logs["loss"]))
    x, y = np.full((4, 1), 100.0, np.float32), np.zeros((4, 1), np.float32)
    history = model.fit(x, y, epochs=20, batch_size=1, verbose=0, shuffle=False,
                        callbacks=[callbacks.TerminateOnNaN(), seen])
    first_bad = next(i for i, v in enumerate(losses) if not np.isfinite(v))
    assert len(losses) == first_bad + 1 == model.optimizer.iterations
    assert len(history.epoch) == first_bad // 4 + 1
    assert "Invalid loss, terminating training" in capsys.readouterr().out
    cb = callbacks.TerminateOnNaN(raise_error=True)
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 2"):
        cb.on_train_batch_end(2, {"loss": float("nan")})


# -- BackupAndRestore ----------------------------------------------------------------------------
class Interrupt(callbacks.Callback):
    def __init__(self, epoch, batch=None):
        super().__init__()
        self.at = (epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if self.at == (epoch, None):
            raise RuntimeError("Interrupting!")

    def on_train_batch_end(self, batch, logs=None):
        if self.at == (self.epoch, batch):
            raise RuntimeError("Interrupting!")


def test_backup_and_restore_resumes_at_the_interrupted_epoch(tmp_path):
    """Keras's example: interrupted at epoch 4, the next fit runs epochs 4..9; the backup is
    deleted when fit completes."""
    x, y = data()
    backup = str(tmp_path / "backup")
    model = classifier()
    with pytest.raises(RuntimeError, match="Interrupting"):
        model.fit(x, y, epochs=10, batch_size=4, verbose=0,
                  callbacks=[callbacks.BackupAndRestore(backup_dir=backup), Interrupt(4)])
    meta = json.loads((tmp_path / "backup" / "training_metadata.json").read_text())
    assert meta["epoch"] == 4 and os.path.exists(os.path.join(backup, meta["weights"]))
    history = model.fit(x, y, epochs=10, batch_size=4, verbose=0,
                        callbacks=[callbacks.BackupAndRestore(backup_dir=backup)])
    assert len(history.history["loss"]) == 6 and history.epoch == list(range(4, 10))
    assert not os.path.exists(backup)


def test_backup_and_restore_save_freq_in_batches(tmp_path):
    """save_freq=2, 3 steps per epoch: saves at (epoch 0, batch 1), (1, 0), (1, 2), (2, 1).
    As in Keras, a mid-epoch backup resumes at the start of its epoch with its weights."""
    x, y = data(12)
    backup = str(tmp_path / "b")
    model = classifier()
    saved = {}
    remember = callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: saved.setdefault(
        model.optimizer.iterations, model.get_weights()))
    with pytest.raises(RuntimeError):
        model.fit(x, y, epochs=5, batch_size=4, verbose=0,
                  callbacks=[callbacks.BackupAndRestore(backup, save_freq=2), remember, Interrupt(2, 1)])
    meta = json.loads(open(os.path.join(backup, "training_metadata.json")).read())
    assert (meta["epoch"], meta["batch"], meta["serial"]) == (2, 1, 4)
    assert [f for f in os.listdir(backup) if f.endswith(".h5")] == [meta["weights"]]   # older ones deleted
    fresh = classifier(seed=3)
    restored = []
    first_step = callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: restored.append(
        (e, fresh.optimizer.iterations, fresh.get_weights())))
    fresh.fit(x, y, epochs=3, batch_size=4, verbose=0,
              callbacks=[callbacks.BackupAndRestore(backup, save_freq=2), first_step])
    epoch, iterations, weights = restored[0]
    assert epoch == 2 and iterations == 8        # the optimizer state came back with the weights
    for got, want in zip(weights, saved[8]):      # the weights after global step 8 = (2, 1)
        np.testing.assert_array_equal(got, want)


def test_backup_and_restore_double_checkpoint_and_keep(tmp_path):
    x, y = data()
    backup = tmp_path / "b"
    model = classifier()
    with pytest.raises(RuntimeError):
        model.fit(x, y, epochs=6, batch_size=8, verbose=0,
                  callbacks=[callbacks.BackupAndRestore(backup, double_checkpoint=True), Interrupt(3)])
    meta = json.loads((backup / "training_metadata.json").read_text())
    prev = json.loads((backup / "training_metadata.json.bkp").read_text())
    assert (meta["epoch"], prev["epoch"]) == (3, 2)
    (backup / meta["weights"]).write_bytes(b"torn")                      # the latest backup is unreadable
    history = model.fit(x, y, epochs=6, batch_size=8, verbose=0,
                        callbacks=[callbacks.BackupAndRestore(backup, double_checkpoint=True,
                                                              delete_checkpoint=False)])
    assert history.epoch == [2, 3, 4, 5]                                  # resumed from the previous one
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 6   # kept
    (backup / json.loads((backup / "training_metadata.json").read_text())["weights"]).write_bytes(b"")
    (backup / "training_metadata.json.bkp").unlink()
    with pytest.raises(OSError, match="BackupAndRestore could not restore"):
        model.fit(x, y, epochs=7, verbose=0, callbacks=[callbacks.BackupAndRestore(backup)])
    with pytest.raises(ValueError, match="Invalid value for argument `save_freq`"):
        callbacks.BackupAndRestore(backup, save_freq="batch")


CRASH_SCRIPT = textwrap.dedent('''
    import os, signal, sys
    import numpy as np
    import kgraph
    from kgraph import callbacks, layers, optimizers

    work, mode = sys.argv[1], sys.argv[2]
    marker = os.path.join(work, "killed")
    if mode == "plain":                     # same callbacks, never kills
        open(marker, "w").close()
    kgraph.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 96)]
    model = kgraph.Sequential([kgraph.Input((6,)), layers.Dense(16, activation="tanh"),
                               layers.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])

    class KillOnce(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 3 and batch == 5 and not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)

    cbs = [callbacks.BackupAndRestore(os.path.join(work, "backup")),
           callbacks.ModelCheckpoint(os.path.join(work, "ckpt-{epoch:02d}.keras")), KillOnce()]
    history = model.fit(x, y, batch_size=8, epochs=6, shuffle=False, callbacks=cbs, verbose=0)
    np.savez(os.path.join(work, "final.npz"), *model.get_weights())
    with open(os.path.join(work, "epochs.txt"), "w") as f:
        f.write(" ".join(map(str, history.epoch)))
''')


def test_sigkill_mid_epoch_then_restart_matches_an_uninterrupted_run(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(CRASH_SCRIPT)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def start(work, mode):
        work.mkdir(exist_ok=True)
        return subprocess.Popen([sys.executable, str(script), str(work), mode], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(work, mode):
        proc = start(work, mode)
        _, err = proc.communicate(timeout=120)
        return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)

    plain, crashed = tmp_path / "plain", tmp_path / "crashed"
    first = start(plain, "plain"), start(crashed, "crash")                 # side by side
    (_, err_plain), (_, err_crash) = (p.communicate(timeout=120) for p in first)
    assert first[0].returncode == 0, err_plain
    assert first[1].returncode == -9, err_crash                            # SIGKILL in epoch 3, batch 5
    assert sorted(f for f in os.listdir(crashed) if f.startswith("ckpt")) == [
        "ckpt-01.keras", "ckpt-02.keras", "ckpt-03.keras"]
    assert json.loads((crashed / "backup" / "training_metadata.json").read_text())["epoch"] == 3
    r = run(crashed, "crash")                                               # the same command again
    assert r.returncode == 0, r.stderr
    assert (crashed / "epochs.txt").read_text() == "3 4 5"                 # resumed at epoch 3
    assert (plain / "epochs.txt").read_text() == "0 1 2 3 4 5"
    want, got = np.load(plain / "final.npz"), np.load(crashed / "final.npz")
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-6)
    assert not (crashed / "backup").exists()                               # deleted when fit ended
    files = sorted(os.listdir(crashed))
    assert not [f for f in files if f.startswith(".tmp")]
    for f in files:
        if f.endswith(".keras"):
            load_model(crashed / f)                                        # every checkpoint is whole
    last = load_model(crashed / "ckpt-06.keras")
    for w, k in zip(last.get_weights(), want):
        np.testing.assert_allclose(w, want[k], rtol=0, atol=1e-6)


# -- TensorBoard ---------------------------------------------------------------------------------
def _crc32c_table():
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecord framing; written here, independent of the writer."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(folder):
    """Every Event in a folder's event files, checking the TFRecord framing (length, masked
    CRC-32C of length and of data) that TensorBoard's reader checks."""
    from tensorboardX.proto import event_pb2
    events = []
    for name in sorted(os.listdir(folder)):
        assert name.startswith("events.out.tfevents."), name
        buf = (folder / name).read_bytes()
        pos = 0
        while pos < len(buf):
            header = buf[pos:pos + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", buf[pos + 8:pos + 12])[0] == _masked(header)
            body = buf[pos + 12:pos + 12 + length]
            assert struct.unpack("<I", buf[pos + 12 + length:pos + 16 + length])[0] == _masked(body)
            event = event_pb2.Event()
            event.ParseFromString(body)
            events.append(event)
            pos += 16 + length
    return events


def scalars(events):
    out = {}
    for e in events:
        for v in e.summary.value:
            if v.WhichOneof("value") == "simple_value":
                out.setdefault(v.tag, []).append((e.step, v.simple_value))
    return out


def test_tensorboard_writes_keras_layout_event_files(tmp_path):
    assert _crc32c(b"123456789") == 0xE3069283                             # the CRC-32C check value
    x, y = data()
    model = classifier(optimizer=optimizers.Adam(0.01))
    tb = callbacks.TensorBoard(log_dir=tmp_path / "logs", histogram_freq=1, write_images=True)
    h = model.fit(x, y, epochs=3, batch_size=8, validation_split=0.25, callbacks=[tb], verbose=0).history
    train = read_events(tmp_path / "logs" / "train")
    val = read_events(tmp_path / "logs" / "validation")
    ts, vs = scalars(train), scalars(val)
    for name in ("loss", "accuracy"):
        assert [s for s, _ in ts[f"epoch_{name}"]] == [0, 1, 2]
        np.testing.assert_allclose([v for _, v in ts[f"epoch_{name}"]], h[name], rtol=1e-6)
        np.testing.assert_allclose([v for _, v in vs[f"epoch_{name}"]], h[f"val_{name}"], rtol=1e-6)
        # Keras also logs each validation pass against the optimizer step
        assert [s for s, _ in vs[f"evaluation_{name}_vs_iterations"]] == [3, 6, 9]   # 3 steps per epoch
    np.testing.assert_allclose([v for _, v in ts["epoch_learning_rate"]], [0.01] * 3, rtol=1e-6)
    assert not any(t.startswith("batch_") for t in ts)
    tags = {v.tag: v for e in train for v in e.summary.value}
    assert tags["keras"].metadata.plugin_data.plugin_name == "graph_keras_model"
    assert json.loads(tags["keras"].tensor.string_val[0])["class_name"] == "Sequential"
    kernel = model.layers[0].weights[0].path.replace(":", "_")
    assert tags[f"{kernel}/histogram"].histo.num == 6 * 8
    image = tags[f"{kernel}/image"].image
    assert (image.height, image.width, image.colorspace) == (6, 8, 1)
    assert image.encoded_image_string.startswith(b"\x89PNG\r\n\x1a\n")
    # batch-level scalars every 2 train batches, on the global batch count
    tb = callbacks.TensorBoard(log_dir=tmp_path / "batches", update_freq=2, write_graph=False)
    model.fit(x, y, epochs=2, batch_size=8, callbacks=[tb], verbose=0)
    bs = scalars(read_events(tmp_path / "batches" / "train"))
    assert [s for s, _ in bs["batch_loss"]] == [2, 4, 6]
    with pytest.raises(ValueError, match="profile_batch"):
        callbacks.TensorBoard(profile_batch=2)
