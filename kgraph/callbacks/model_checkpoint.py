"""`ModelCheckpoint`: save the model (`model.save`, `.keras`/`.h5`) or its weights
(`model.save_weights`, `.weights.h5`) every epoch or every `save_freq` batches,
optionally only when the monitored quantity improves. The file name is a template
filled with `epoch` (1-based), `batch` and the logs, e.g. '{epoch:02d}-{val_loss:.2f}.keras'.

Beyond Keras: an unwritable destination fails at the start of fit rather than after the
first epoch, and every file is written to a temporary name and renamed into place."""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np

from kgraph.callbacks.atomic_save import check_writable, save_atomically
from kgraph.callbacks.callback import BatchSaveFrequency
from kgraph.callbacks.monitor import MonitorCallback, available_keys


def _template_free_prefix(filepath):
    """The part of the path before its first `{...}` field (whose folders exist for sure)."""
    cut = filepath.find("{")
    return filepath if cut < 0 else os.path.join(os.path.dirname(filepath[:cut]), ".kgraph-write-probe")


class ModelCheckpoint(BatchSaveFrequency, MonitorCallback):
    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__(monitor, mode, initial_value_threshold)
        self.verbose = verbose
        self.filepath = os.fspath(filepath)
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.save_freq = save_freq
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = None
        self._current_epoch = 0
        if save_freq != "epoch" and not isinstance(save_freq, int):
            raise ValueError(f"Unrecognized save_freq: {save_freq}. Expected save_freq are 'epoch' or "
                             f"integer values")
        if save_weights_only:
            if not self.filepath.endswith(".weights.h5"):
                raise ValueError("When using `save_weights_only=True` in `ModelCheckpoint`, the filepath "
                                 "provided must end in `.weights.h5` (Keras weights format). "
                                 f"Received: filepath={self.filepath}")
        elif not self.filepath.endswith((".keras", ".h5")):
            raise ValueError("The filepath provided must end in `.keras` (Keras model format) or `.h5`. "
                             f"Received: filepath={self.filepath}")

    def wants(self, hook):
        if hook in ("on_train_batch_end", "on_batch_end"):
            return self.save_freq != "epoch"
        return super().wants(hook)

    def on_train_begin(self, logs=None):
        check_writable(_template_free_prefix(self.filepath), "ModelCheckpoint")

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._should_save_on_batch(batch):
            self._save_model(epoch=self._current_epoch, batch=batch, logs=logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save_model(epoch=epoch, batch=None, logs=logs)

    def _should_save_model(self, epoch, logs, filepath):
        logs = logs or {}
        if not self.save_best_only:
            if self.verbose > 0:
                sys.stdout.write(f"\nEpoch {epoch + 1}: saving model to {filepath}\n")
            return True
        if self.monitor_op is None:
            self._set_monitor_op(logs)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Can save best model only with {self.monitor} available. "
                          f"Available metrics are: {available_keys(logs)}", stacklevel=2)
            return True
        if isinstance(current, np.ndarray) and current.ndim > 0:
            warnings.warn(f"Can save best model only when `monitor` is a scalar value. Received: "
                          f"{current}. Falling back to `save_best_only=False`.")
            return True
        best_str = "None" if self.best is None else f"{self.best:.5f}"
        if self._is_improvement(current, self.best):
            if self.verbose > 0:
                sys.stdout.write(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best_str} to "
                                 f"{current:.5f}, saving model to {filepath}\n")
            self.best = current
            return True
        if self.verbose > 0:
            sys.stdout.write(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best_str}\n")
        return False

    def _save_model(self, epoch, batch, logs):
        logs = logs or {}
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise OSError("Please specify a non-directory filepath for ModelCheckpoint. Filepath used is "
                          f"an existing directory: {filepath}")
        if self.save_weights_only:
            save_atomically(lambda tmp: self.model.save_weights(tmp, overwrite=True), filepath)
        else:
            save_atomically(lambda tmp: self.model.save(tmp, overwrite=True), filepath)
        if self.verbose > 0:
            sys.stdout.write(f"\nEpoch {epoch + 1}: finished saving model to {filepath}\n")

    def _get_file_path(self, epoch, batch, logs):
        try:
            if batch is None or "batch" in logs:
                return self.filepath.format(epoch=epoch + 1, **logs)
            return self.filepath.format(epoch=epoch + 1, batch=batch + 1, **logs)
        except KeyError as e:
            raise KeyError(f'Failed to format this callback filepath: "{self.filepath}". Reason: {e}. '
                           f"Available keys: {['epoch'] + ([] if batch is None else ['batch']) + list(logs)}"
                           ) from e
