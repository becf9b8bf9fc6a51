"""`TensorBoard`: event files for TensorBoard, laid out as Keras writes them.

`log_dir/train` receives `epoch_<name>` scalars for the training logs (and the learning
rate), `log_dir/validation` the `val_*` logs under the same `epoch_<name>` tags, so
TensorBoard overlays training and validation curves; with update_freq="batch" or N,
`batch_<name>` scalars every N train batches. Optional weight histograms and images, and
the model's JSON in the "graph_keras_model" plugin (TensorBoard's Keras graph view).

The files are written with tensorboardX, a maintained writer of the TensorBoard event
format that needs neither TensorFlow nor PyTorch (see tensorboard_summaries.py).
Profiling and embedding projection belong to TensorFlow's runtime and checkpoints and
are not available."""
from __future__ import annotations

import os
import time
import warnings

import numpy as np

from kgraph.callbacks.callback import Callback
from kgraph.callbacks.optimizer_lr import get_lr
from kgraph.callbacks.tensorboard_summaries import (image_summary, keras_model_summary, tensorboardx,
                                                    weight_images)


class TensorBoard(Callback):
    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=True, write_images=False,
                 write_steps_per_second=False, update_freq="epoch", profile_batch=0, embeddings_freq=0,
                 embeddings_metadata=None):
        super().__init__()
        update_freq = 1 if update_freq == "batch" else update_freq
        if update_freq != "epoch" and (not isinstance(update_freq, int) or isinstance(update_freq, bool)
                                       or update_freq <= 0):
            raise ValueError(f"TensorBoard: `update_freq` must be 'epoch', 'batch' or a positive integer. "
                             f"Received: update_freq={update_freq!r}")
        if profile_batch:
            raise ValueError(f"TensorBoard: profiling is not available in kgraph (it needs TensorFlow's "
                             f"or JAX's profiler). Received: profile_batch={profile_batch} (must be 0)")
        if embeddings_freq:
            raise ValueError(f"TensorBoard: embedding projection is not available in kgraph (TensorBoard's "
                             f"projector reads TensorFlow checkpoints). Received: "
                             f"embeddings_freq={embeddings_freq} (must be 0)")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.write_graph = write_graph
        self.write_images = write_images
        self.write_steps_per_second = write_steps_per_second
        self.update_freq = update_freq
        self.embeddings_freq = embeddings_freq
        self.embeddings_metadata = embeddings_metadata
        self._writers = {}
        self._global_train_batch = 0
        self._batch_start_time = 0.0
        self._epoch_start_time = 0.0
        self._previous_epoch_iterations = 0

    def set_model(self, model):
        super().set_model(model)
        self._close_writers()
        self._train_dir = os.path.join(self.log_dir, "train")
        self._val_dir = os.path.join(self.log_dir, "validation")

    def wants(self, hook):
        if hook in ("on_train_batch_begin", "on_train_batch_end"):
            return self.update_freq != "epoch"
        if hook in ("on_test_batch_begin", "on_test_batch_end", "on_predict_batch_begin",
                    "on_predict_batch_end", "on_batch_begin", "on_batch_end"):
            return False
        return super().wants(hook)

    # -- writers ---------------------------------------------------------------------
    def _writer(self, kind):
        if kind not in self._writers:
            logdir = self._train_dir if kind == "train" else self._val_dir
            self._writers[kind] = tensorboardx().SummaryWriter(logdir=logdir, flush_secs=10)
        return self._writers[kind]

    def _close_writers(self):
        for w in self._writers.values():
            w.close()
        self._writers = {}

    def _iterations(self):
        opt = getattr(self.model, "optimizer", None)
        return int(getattr(opt, "iterations", 0) or 0)

    # -- hooks -------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._global_train_batch = 0
        self._previous_epoch_iterations = 0
        if self.write_graph:
            try:
                summary = keras_model_summary(self.model)
            except Exception as e:  # a model with custom objects may not serialise: not fatal
                warnings.warn(f"Model failed to serialize as JSON. Ignoring... {e}")
            else:
                self._writer("train")._get_file_writer().add_summary(summary, 0)

    def on_train_end(self, logs=None):
        self._close_writers()

    def on_train_batch_begin(self, batch, logs=None):
        self._global_train_batch += 1
        if self.write_steps_per_second:
            self._batch_start_time = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch" or self._global_train_batch % self.update_freq:
            return
        w = self._writer("train")
        step = self._global_train_batch
        if self.write_steps_per_second:
            w.add_scalar("batch_steps_per_second", 1.0 / max(time.time() - self._batch_start_time, 1e-9), step)
        for name, value in (logs or {}).items():
            w.add_scalar(f"batch_{name}", float(value), step)

    def on_epoch_begin(self, epoch, logs=None):
        if self.write_steps_per_second:
            self._previous_epoch_iterations = self._iterations()
            self._epoch_start_time = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self._log_epoch_metrics(epoch, logs or {})
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._log_weights(epoch)
        for w in self._writers.values():
            w.flush()

    def on_test_end(self, logs=None):
        if getattr(self.model, "optimizer", None) is None:
            return
        w = self._writer("validation")
        for name, value in (logs or {}).items():
            w.add_scalar(f"evaluation_{name}_vs_iterations", float(value), self._iterations())
        w.flush()

    # -- content -------------------------------------------------------------------------
    def _log_epoch_metrics(self, epoch, logs):
        if not logs:
            return
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        if getattr(self.model, "optimizer", None) is not None:
            train["learning_rate"] = get_lr(self.model.optimizer)
        if self.write_steps_per_second:
            elapsed = max(time.time() - self._epoch_start_time, 1e-9)
            train["steps_per_second"] = (self._iterations() - self._previous_epoch_iterations) / elapsed
        for kind, values in (("train", train), ("validation", val)):
            if values:
                w = self._writer(kind)
                for name, value in values.items():
                    w.add_scalar(f"epoch_{name}", float(value), epoch)

    def _log_weights(self, epoch):
        w = self._writer("train")
        for layer in self.model.layers:
            for weight in layer.weights:
                name = weight.path.replace(":", "_")
                value = np.asarray(weight.numpy())
                w.add_histogram(f"{name}/histogram", value, epoch)
                if self.write_images:
                    images = weight_images(value)
                    if images is not None:
                        w._get_file_writer().add_summary(image_summary(f"{name}/image", images), epoch)
