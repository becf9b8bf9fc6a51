"""Runtime-owned training state: weights and optimizer slots in two alternating
buffer sets (ping-pong). A step reads set A and writes set B, so no output ever
aliases an input inside one graph (FACTS.md: aliasing gave wrong results).

On the CPU the buffers are numpy arrays that onnxruntime reads and writes in place
through OrtValues sharing their memory; on CUDA they are OrtValues in device memory
and the numpy arrays are only staging copies. Either way nothing is copied per step:
Variables pull from here only when read (get_weights, saving, callbacks)."""
from __future__ import annotations

import numpy as np

import onnxruntime as ort

from kgraph.engine.variable import _GENERATION


class TrainingState:
    def __init__(self, variables, optimizer):
        self.variables = list(variables)
        self.optimizer = optimizer
        self.buffers: list[dict[str, np.ndarray]] = [{}, {}]
        self.parity = 0
        self._ahead = False           # runtime holds newer weights than the Variables
        self._names: dict[int, str] = {}
        self._slot_names: dict = {}   # slot key -> buffer name, for slots created so far
        self._restored: dict = {}     # slot key -> value to start from (a loaded optimizer state)
        from kgraph.runtime.session import device
        self.device = device()
        self._ortvalues: list[dict[str, ort.OrtValue]] = [{}, {}]

    def _register(self, name, value):
        """Both buffer sets of `name` start at `value`, in host or device memory."""
        for parity in (0, 1):
            # C order: onnxruntime shares only C-contiguous numpy memory (a Fortran-ordered
            # buffer would be copied on binding and never see the step's writes)
            arr = np.array(value, copy=True, order="C")
            self.buffers[parity][name] = arr
            self._ortvalues[parity][name] = (ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0)
                                             if self.device == "cuda" else ort.OrtValue.ortvalue_from_numpy(arr))

    def ortvalue(self, parity, name) -> ort.OrtValue:
        """The runtime value to bind for buffer set `parity`."""
        return self._ortvalues[parity][name]

    def _write_both(self, name, value):
        for parity in (0, 1):
            if self.device == "cuda":
                self._ortvalues[parity][name].update_inplace(np.ascontiguousarray(value, self.buffers[parity][name].dtype))
            else:
                np.copyto(self.buffers[parity][name], np.asarray(value, dtype=self.buffers[parity][name].dtype))

    # -- registration ------------------------------------------------------------
    def ensure_weight(self, name, var):
        if name not in self.buffers[0]:
            self._register(name, var._value)
            self._names[id(var)] = name
            var._owner = self

    def ensure_slot(self, name, key, like_var=None, init=None):
        self._slot_names[key] = name
        if name not in self.buffers[0]:
            if key in self._restored:
                init = self._restored.pop(key)
            elif init is None:
                init = self.optimizer.slot_initial(key[1], like_var._value)
            self._register(name, np.asarray(init, dtype=np.float32 if like_var is None else like_var.dtype))

    # -- optimizer state in and out (saving) ----------------------------------------
    def restore_slots(self, values: dict):
        """Start optimizer slots from saved values: {slot key: array}, keys as in the train
        graph's signature ((variable path, slot name), or ("", name) for a global slot).
        Slots that exist already are overwritten in both buffer sets; the others take the
        value when a step graph first creates them."""
        for key, value in values.items():
            name = self._slot_names.get(key)
            if name is not None and name in self.buffers[0]:
                self._write_both(name, value)
            else:
                self._restored[key] = np.array(value, copy=True)

    def slot_values(self) -> dict:
        """The optimizer slots' current values ({slot key: array copy}), including restored
        values not yet taken up by a step graph."""
        out = {key: np.array(v, copy=True) for key, v in self._restored.items()}
        for key, name in self._slot_names.items():
            if name in self.buffers[0]:
                out[key] = self.current(name).copy()
        return out

    def current(self, name) -> np.ndarray:
        """The current value on the host (a view on the CPU, a copy from a device)."""
        if self.device == "cuda":
            return self._ortvalues[self.parity][name].numpy()
        return self.buffers[self.parity][name]

    def stepped(self):
        """Called after a step wrote the next set: it becomes current. Weights changed, so
        frozen inference graphs are stale (the generation counter says so)."""
        self.parity ^= 1
        self._ahead = True
        _GENERATION[0] += 1

    # -- host sync -----------------------------------------------------------------
    def sync_to_host(self):
        if not self._ahead:
            return
        self._ahead = False
        for var in self.variables:
            name = self._names.get(id(var))
            if name is not None:
                var._set_from_runtime(self.current(name).copy())
        from kgraph.engine.variable import touch
        touch()

    def invalidate(self):
        """A Variable was assigned from outside: reload weights into both buffer sets
        (after the assignment, see `reload`)."""
        self._reload_pending = True

    def reload(self):
        if getattr(self, "_reload_pending", False):
            self._reload_pending = False
            for var in self.variables:
                name = self._names.get(id(var))
                if name is not None:
                    self._write_both(name, var._value)

    def detach(self):
        self.sync_to_host()
        for var in self.variables:
            if var._owner is self:
                var._owner = None
