"""Callbacks: the Keras hooks, History and the progress bar."""
from __future__ import annotations

import sys
import time


class Callback:
    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass


class CallbackList:
    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be kgraph.callbacks.Callback instances. Received: {cb!r}")
            cb.set_model(model)
            cb.set_params(params)

    def wants(self, hook) -> bool:
        """Whether any callback does something in `hook` (per-batch logs are built only then)."""
        return any(cb.wants(hook) if hasattr(cb, "wants") else
                   getattr(type(cb), hook) is not getattr(Callback, hook) for cb in self.callbacks)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args):
            for cb in self.callbacks:
                getattr(cb, hook)(*args)
        return call


class History(Callback):
    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _fmt_logs(logs):
    parts = []
    for k, v in logs.items():
        parts.append(f"{k}: {v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{k}: {v:.4e}")
    return " - ".join(parts)


def _fmt_step(seconds):
    return f"{seconds * 1e6:.0f}us/step" if seconds < 1e-3 else f"{seconds * 1e3:.0f}ms/step"


def _fmt_time(seconds):
    if seconds >= 1:
        return f"{seconds:.0f}s"
    return f"{seconds * 1000:.0f}ms"


class ProgbarLogger(Callback):
    """verbose=1: a live bar on a terminal (one line per epoch otherwise); verbose=2: one
    line per epoch."""

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.verbose = verbose
        self.stream = stream or sys.stdout

    def wants(self, hook):
        return hook in ("on_epoch_begin", "on_epoch_end") or (
            hook == "on_train_batch_end" and self.verbose == 1 and self.stream.isatty())

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()
        self.seen = 0
        if self.verbose:
            self.stream.write(f"Epoch {epoch + 1}/{self.params.get('epochs', '?')}\n")
        self._last = 0.0

    @staticmethod
    def _bar(done, total, width=20):
        filled = int(width * done / max(total, 1))
        return "━" * filled + "─" * (width - filled)

    def on_train_batch_end(self, batch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass


class CallbackList:
    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be kgraph.callbacks.Callback instances. Received: {cb!r}")
            cb.set_model(model)
            cb.set_params(params)

    def wants(self, hook) -> bool:
        """Whether any callback does something in `hook` (per-batch logs are built only then)."""
        return any(cb.wants(hook) if hasattr(cb, "wants") else
                   getattr(type(cb), hook) is not getattr(Callback, hook) for cb in self.callbacks)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args):
            for cb in self.callbacks:
                getattr(cb, hook)(*args)
        return call


class History(Callback):
    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _fmt_logs(logs):
    parts = []
    for k, v in logs.items():
        parts.append(f"{k}: {v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{k}: {v:.4e}")
    return " - ".join(parts)


def _fmt_step(seconds):
    return f"{seconds * 1e6:.0f}us/step" if seconds < 1e-3 else f"{seconds * 1e3:.0f}ms/step"


def _fmt_time(seconds):
    if seconds >= 1:
        return f"{seconds:.0f}s"
    return f"{seconds * 1000:.0f}ms"


class ProgbarLogger(Callback):
    """verbose=1: a live bar on a terminal (one line per epoch otherwise); verbose=2: one
    line per epoch."""

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.verbose = verbose
        self.stream = stream or sys.stdout

    def wants(self, hook):
        return hook in ("on_epoch_begin", "on_epoch_end") or (
            hook == "on_train_batch_end" and self.verbose == 1 and self.stream.isatty())

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()
        self.seen = 0
        if self.verbose:
            self.stream.write(f"Epoch {epoch + 1}/{self.params.get('epochs', '?')}\n")
        self._last = 0.0

    def _bar(self, done, total):
        width = 20
        filled = int(width * done / max(total, 1))
        return "━" * filled + ("━" if False else "") + " " * 0 + "\x1b[2m" * 0 + "━" * 0 + \
            ("" if filled == width else "─" * (width - filled))

    def on_train_batch_end(self, batch, logs=None):
        if self.verbose != 1 or not self.stream.isatty():
            return
        now = time.perf_counter()
        steps = self.params.get("steps", 0)
        if now - self._last < 0.05 and batch + 1 < steps:
            return
        self._last = now
        elapsed = now - self.epoch_start
        per_step = elapsed / (batch + 1)
        self.stream.write(f"\r{batch + 1}/{steps} {self._bar(batch + 1, steps)} {_fmt_time(elapsed)} "
                          f"{_fmt_step(per_step)} - {_fmt_logs(logs or {})}\x1b[K")
        self.stream.flush()

    def on_epoch_end(self, epoch, logs=None):
        if not self.verbose:
            return
        steps = self.params.get("steps", 0)
        elapsed = time.perf_counter() - self.epoch_start
        per_step = elapsed / max(steps, 1)
        line = (f"{steps}/{steps} {self._bar(steps, steps)} {_fmt_time(elapsed)} "
                f"{_fmt_step(per_step)} - {_fmt_logs(logs or {})}")
        if self.verbose == 2:
            line = f"{steps}/{steps} - {_fmt_time(elapsed)} - {_fmt_step(per_step)} - {_fmt_logs(logs or {})}"
        prefix = "\r" if self.verbose == 1 and self.stream.isatty() else ""
        self.stream.write(prefix + line + ("\x1b[K" if prefix else "") + "\n")
        self.stream.flush()

