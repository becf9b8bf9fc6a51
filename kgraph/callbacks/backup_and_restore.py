"""`BackupAndRestore`: back up the training state (weights and optimizer state, through
`model.save_weights`, plus the epoch reached) every epoch or every `save_freq` batches,
and at the start of the next fit resume from it; the backup is deleted when fit ends.

The backup is consistent at every instant, also under SIGKILL: each save writes a new
weights file (by rename), then replaces the metadata file (by rename) that names it and
its epoch, then deletes the previous weights file. The metadata thus always names a
complete weights file of exactly the epoch it records (Keras's fixed file pair can be
caught between its two writes).

As in Keras, a backup taken mid-epoch resumes at the start of that epoch with the
mid-epoch weights; with save_freq="epoch" a resumed fit computes the same numbers as
an uninterrupted one (given the same data order, e.g. shuffle=False)."""
from __future__ import annotations

import json
import os
import shutil

from kgraph.callbacks.atomic_save import check_writable, save_atomically
from kgraph.callbacks.callback import BatchSaveFrequency, Callback

_METADATA = "training_metadata.json"


def _write_json_atomically(path, data):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f)
    save_atomically(write, path)


class BackupAndRestore(BatchSaveFrequency, Callback):
    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=True):
        super().__init__()
        if not backup_dir:
            raise ValueError(f"Empty `backup_dir` argument passed. Received: backup_dir={backup_dir!r}")
        if save_freq != "epoch" and (not isinstance(save_freq, int) or isinstance(save_freq, bool)
                                     or save_freq <= 0):
            raise ValueError(f"Invalid value for argument `save_freq`. Received: save_freq={save_freq}. "
                             f"Expected either 'epoch' or a positive integer value.")
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.double_checkpoint = double_checkpoint
        self.delete_checkpoint = delete_checkpoint
        self._metadata_path = os.path.join(self.backup_dir, _METADATA)
        self._prev_metadata_path = self._metadata_path + ".bkp"
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = 0
        self._current_epoch = 0
        self._serial = 0

    def wants(self, hook):
        if hook in ("on_train_batch_end", "on_batch_end"):
            return self.save_freq != "epoch"
        return super().wants(hook)

    # -- restore -------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if not getattr(self.model, "built", True):
            raise ValueError("To use the BackupAndRestore callback, your model must be built before "
                             f"you call `fit()`. Model {self.model.name} is unbuilt.")
        check_writable(os.path.join(self.backup_dir, _METADATA), "BackupAndRestore")
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = 0
        self._current_epoch = 0
        if os.path.isdir(self.backup_dir):  # temporary files of a run killed while saving
            for entry in os.listdir(self.backup_dir):
                if entry.startswith(".tmp-"):
                    os.unlink(os.path.join(self.backup_dir, entry))
        candidates = [p for p in (self._metadata_path, self._prev_metadata_path) if os.path.exists(p)]
        errors = []
        for path in candidates:
            try:
                self._restore(path)
                return
            except (OSError, ValueError, KeyError) as e:  # unreadable: try the previous backup
                errors.append(f"{path}: {e}")
        if errors:
            raise OSError(f"BackupAndRestore could not restore from '{self.backup_dir}': " + "; ".join(errors))

    def _restore(self, metadata_path):
        with open(metadata_path) as f:
            meta = json.load(f)
        self.model.load_weights(os.path.join(self.backup_dir, meta["weights"]))
        self._serial = int(meta.get("serial", 0))
        self._current_epoch = int(meta["epoch"])
        self.model._initial_epoch = self._current_epoch

    # -- back up -------------------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0
        if self.save_freq == "epoch":
            self._save()

    def on_train_batch_end(self, batch, logs=None):
        if self._should_save_on_batch(batch):
            self._save()

    def _read_metadata(self, path):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _save(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        self._serial += 1
        name = f"backup-{self._serial:06d}.weights.h5"
        save_atomically(lambda tmp: self.model.save_weights(tmp, overwrite=True),
                        os.path.join(self.backup_dir, name))
        previous = self._read_metadata(self._metadata_path)
        if self.double_checkpoint and previous is not None:
            _write_json_atomically(self._prev_metadata_path, previous)
        _write_json_atomically(self._metadata_path, {
            "epoch": self._current_epoch, "batch": self._last_batch_seen,
            "weights": name, "serial": self._serial})
        keep = {name}
        if self.double_checkpoint and previous is not None:
            keep.add(previous["weights"])
        for entry in os.listdir(self.backup_dir):
            if entry.startswith("backup-") and entry.endswith(".weights.h5") and entry not in keep:
                os.unlink(os.path.join(self.backup_dir, entry))

    def on_train_end(self, logs=None):
        if self.delete_checkpoint and os.path.exists(self.backup_dir):
            shutil.rmtree(self.backup_dir)
