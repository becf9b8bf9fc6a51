"""`Callback`: the hooks fit/evaluate/predict call, with Keras 3's names and arguments.

Every hook receives a logs dict (never None). `wants(hook)` tells the training loop
whether this callback does anything in a hook, so that per-batch logs are only built,
and single-step execution only forced, when some callback reads them."""
from __future__ import annotations

# Keras: the train-batch hooks call the older, unprefixed batch hooks by default.
_ALIASES = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}


class Callback:
    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def wants(self, hook) -> bool:
        """Whether this callback overrides `hook` (on its class, or as an instance attribute
        as LambdaCallback does), or the older batch hook that `hook` forwards to."""
        for name in (hook, _ALIASES.get(hook)):
            if name is None:
                continue
            if name in self.__dict__ or getattr(type(self), name, None) is not getattr(Callback, name, None):
                return True
        return False

    def on_batch_begin(self, batch, logs=None): pass
    def on_batch_end(self, batch, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass
    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass


class BatchSaveFrequency:
    """`save_freq` counted in batches across epochs, for the callbacks that save every N
    batches (ModelCheckpoint, BackupAndRestore). A batch-end call may cover several steps
    (steps_per_execution), so the count advances by the difference of batch indices; an
    index not above the last one seen (None: none yet) starts a new epoch. Uses the
    attributes save_freq, _last_batch_seen and _batches_seen_since_last_saving."""

    def _should_save_on_batch(self, batch):
        if self.save_freq == "epoch":
            return False
        last = self._last_batch_seen
        self._batches_seen_since_last_saving += batch + 1 if last is None or batch <= last else batch - last
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            return True
        return False
