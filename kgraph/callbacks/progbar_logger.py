"""`ProgbarLogger`: the progress lines of fit, evaluate and predict.

verbose=1: a live bar on a terminal (only the final line per epoch otherwise, so logs
and CI output stay readable); verbose=2: one line per epoch. As in Keras, the
validation pass inside fit prints nothing of its own, and "Epoch i/N" is printed only
when N > 1. `verbose` comes from the params ("auto" means 1)."""
from __future__ import annotations

import sys
import time

from kgraph.callbacks.callback import Callback


def _fmt_logs(logs):
    parts = []
    for k, v in logs.items():
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        parts.append(f"{k}: {v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{k}: {v:.4e}")
    return " - ".join(parts)


def _fmt_step(seconds):
    return f"{seconds * 1e6:.0f}us/step" if seconds < 1e-3 else f"{seconds * 1e3:.0f}ms/step"


def _fmt_time(seconds):
    return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds * 1000:.0f}ms"


def _bar(done, total, width=20):
    filled = int(width * done / max(total, 1))
    return "━" * filled + "─" * (width - filled)


class ProgbarLogger(Callback):
    def __init__(self, stream=None):
        super().__init__()
        self._stream = stream
        self.verbose, self.epochs, self.target = 1, 1, None
        self.seen = 0
        self._called_in_fit = False
        self._start = time.perf_counter()
        self._last = 0.0

    @property
    def stream(self):
        # resolved at each write, so that a replaced sys.stdout (pytest's capture) is used
        return self._stream or sys.stdout

    def _live(self):
        return self.verbose == 1 and hasattr(self.stream, "isatty") and self.stream.isatty()

    def set_params(self, params):
        super().set_params(params)
        verbose = params.get("verbose", 1)
        self.verbose = 1 if verbose == "auto" else verbose
        self.epochs = params.get("epochs", 1)
        self.target = params.get("steps")

    def wants(self, hook):
        if hook in ("on_train_batch_end", "on_predict_batch_end"):
            return self._live()
        if hook == "on_test_batch_end":
            return self._live() and not self._called_in_fit
        return not hook.endswith("_batch_begin") and hook not in ("on_batch_begin", "on_batch_end")

    # -- hooks -------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._called_in_fit = True

    def on_train_end(self, logs=None):
        self._called_in_fit = False

    def on_epoch_begin(self, epoch, logs=None):
        self._reset()
        if self.verbose and self.epochs > 1:
            self.stream.write(f"Epoch {epoch + 1}/{self.epochs}\n")
            self.stream.flush()

    def on_train_batch_end(self, batch, logs=None):
        self._update(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._finalize(logs)

    def on_test_begin(self, logs=None):
        if not self._called_in_fit:
            self._reset()

    def on_test_batch_end(self, batch, logs=None):
        if not self._called_in_fit:
            self._update(batch, logs)

    def on_test_end(self, logs=None):
        if not self._called_in_fit:
            self._finalize(logs)

    def on_predict_begin(self, logs=None):
        self._reset()

    def on_predict_batch_end(self, batch, logs=None):
        self._update(batch, None)

    def on_predict_end(self, logs=None):
        self._finalize(logs)

    # -- drawing -------------------------------------------------------------------
    def _reset(self):
        self.seen = 0
        self._start = time.perf_counter()
        self._last = 0.0

    def _update(self, batch, logs):
        self.seen = batch + 1
        if not self._live():
            return
        now = time.perf_counter()
        target = self.target or self.seen
        if now - self._last < 0.05 and self.seen < target:
            return
        self._last = now
        elapsed = now - self._start
        text = _fmt_logs(logs or {})
        self.stream.write(f"\r{self.seen}/{target} {_bar(self.seen, target)} {_fmt_time(elapsed)} "
                          f"{_fmt_step(elapsed / self.seen)}" + (f" - {text}" if text else "") + "\x1b[K")
        self.stream.flush()

    def _finalize(self, logs):
        if not self.verbose:
            return
        steps = self.target or self.seen
        elapsed = time.perf_counter() - self._start
        per_step = elapsed / max(steps, 1)
        text = _fmt_logs(logs or {})
        tail = f" - {text}" if text else ""
        if self.verbose == 2:
            line = f"{steps}/{steps} - {_fmt_time(elapsed)} - {_fmt_step(per_step)}{tail}"
        else:
            line = f"{steps}/{steps} {_bar(steps, steps)} {_fmt_time(elapsed)} {_fmt_step(per_step)}{tail}"
        live = self._live()
        self.stream.write(("\r" if live else "") + line + ("\x1b[K" if live else "") + "\n")
        self.stream.flush()
