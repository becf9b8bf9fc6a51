"""`CallbackList`: calls one hook on every callback, in order, as Keras's CallbackList.

Each hook call hands the callbacks one fresh logs dict, shared among them: a callback
that adds a key (ReduceLROnPlateau's `learning_rate`) is seen by those after it
(History comes last), while the caller's own dict stays as it was."""
from __future__ import annotations

from kgraph.callbacks.callback import Callback
from kgraph.callbacks.history import History
from kgraph.callbacks.progbar_logger import ProgbarLogger

_EPOCH_HOOKS = ("on_epoch_begin", "on_epoch_end")
_BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end",
                "on_test_batch_begin", "on_test_batch_end", "on_predict_batch_begin",
                "on_predict_batch_end")
_RUN_HOOKS = ("on_train_begin", "on_train_end", "on_test_begin", "on_test_end",
              "on_predict_begin", "on_predict_end")


def _flatten(callbacks):
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        return [callbacks]
    out = []
    for cb in callbacks:
        if isinstance(cb, (list, tuple)):
            out.extend(_flatten(cb))
        else:
            out.append(cb)
    return out


class CallbackList(Callback):
    def __init__(self, callbacks=None, add_history=False, add_progbar=False, model=None, **params):
        super().__init__()
        self.callbacks = _flatten(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be kgraph.callbacks.Callback instances. Received: {cb!r}")
        self._history = next((cb for cb in self.callbacks if isinstance(cb, History)), None)
        self._progbar = next((cb for cb in self.callbacks if isinstance(cb, ProgbarLogger)), None)
        if self._history is None and add_history:
            self._history = History()
            self.callbacks.append(self._history)
        if self._progbar is None and add_progbar:
            self._progbar = ProgbarLogger()
            self.callbacks.append(self._progbar)
        self.set_model(model)
        self.set_params(params)

    def set_model(self, model):
        if model is None:
            return
        super().set_model(model)
        if self._history is not None:
            model.history = self._history
        for cb in self.callbacks:
            cb.set_model(model)

    def set_params(self, params):
        self.params = params
        if params:
            for cb in self.callbacks:
                cb.set_params(params)

    def wants(self, hook) -> bool:
        """Whether any callback does something in `hook` (per-batch logs are built only then)."""
        return any(cb.wants(hook) for cb in self.callbacks)

    def _call(self, hook, *args):
        logs = dict(args[-1]) if args and args[-1] is not None else {}
        for cb in self.callbacks:
            getattr(cb, hook)(*args[:-1], logs)


def _run_hook(hook):
    def call(self, logs=None):
        self._call(hook, logs)
    call.__name__ = hook
    return call


def _step_hook(hook):
    def call(self, index, logs=None):
        self._call(hook, index, logs)
    call.__name__ = hook
    return call


for _hook in _RUN_HOOKS:
    setattr(CallbackList, _hook, _run_hook(_hook))
for _hook in _EPOCH_HOOKS + _BATCH_HOOKS:
    setattr(CallbackList, _hook, _step_hook(_hook))
