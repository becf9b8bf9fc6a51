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
        # slot key (variable path, slot name) -> (buffer name, offset or None, shape)
        self._slot_where: dict = {}
        # slot key -> value to start from (a loaded optimizer state, in Keras's units)
        self._restored: dict = {}
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

    def _write_both(self, name, value, offset=None):
        """Set buffer `name` (or, with `offset`, the elements from there on) in both sets."""
        for parity in (0, 1):
            if self.device == "cuda":
                ov = self._ortvalues[parity][name]
                if offset is None:
                    ov.update_inplace(np.ascontiguousarray(value, self.buffers[parity][name].dtype))
                else:
                    host = ov.numpy()
                    host.reshape(-1)[offset:offset + np.size(value)] = np.ravel(value)
                    ov.update_inplace(host)
            elif offset is None:
                np.copyto(self.buffers[parity][name], np.asarray(value, dtype=self.buffers[parity][name].dtype))
            else:
                self.buffers[parity][name].reshape(-1)[offset:offset + np.size(value)] = np.ravel(value)

    # -- registration ------------------------------------------------------------
    def register(self, sig, variables):
        """Create the buffers behind a step graph's weight and slot inputs (each name once:
        graphs that share a name share the buffer)."""
        by_path = {v.path: v for v in variables}
        for name, var in sig.weight_inputs:
            self.ensure_weight(name, var)
        for name, spec in sig.slot_inputs:
            self.ensure_slot(name, spec, by_path)

    def ensure_weight(self, name, var):
        if name not in self.buffers[0]:
            self._register(name, var._value)
            self._names[id(var)] = name
            var._owner = self

    def ensure_slot(self, name, spec, by_path):
        """The buffer for slot input `name` (a SlotSpec: one variable's slot, several laid
        end to end, or a global slot). A new buffer starts from each slot's current value
        wherever it lives now (another graph's buffer), else a restored value, else the
        optimizer's initial value."""
        keys = spec.keys()
        if name not in self.buffers[0]:
            if not spec.parts:
                value = self._slot_start(keys[0])
                if value is None:
                    value = self.optimizer.global_slots()[spec.slot]
                value = np.asarray(value, np.float32)
            else:
                values = []
                for key, (path, _) in zip(keys, spec.parts):
                    var = by_path[path]
                    v = self._slot_start(key)
                    if v is None:
                        v = self.optimizer.slot_initial(spec.slot, var._value) * self.optimizer.slot_scale(spec.slot)
                    values.append(np.asarray(v, var.dtype))
                value = np.concatenate([v.ravel() for v in values]) if spec.flat else values[0]
            self._register(name, value)
        offset = 0
        for key, (_, shape) in zip(keys, spec.parts or [(None, np.shape(self.buffers[0][name]))]):
            self._slot_where[key] = (name, offset if spec.flat else None, tuple(shape))
            offset += int(np.prod(shape, dtype=np.int64))

    def _slot_start(self, key):
        where = self._slot_where.get(key)
        if where is not None and where[0] in self.buffers[0]:
            return self._slot_read(where)
        value = self._restored.pop(key, None)
        scale = self.optimizer.slot_scale(key[1])
        return value * scale if value is not None and scale != 1.0 else value

    def _slot_read(self, where) -> np.ndarray:
        return self._slot_view(where).copy()

    def _slot_view(self, where) -> np.ndarray:
        """The slot's current value: a view of the runtime's buffer on the CPU."""
        name, offset, shape = where
        arr = self.current(name)
        if offset is None:
            return arr
        n = int(np.prod(shape, dtype=np.int64))
        return arr.reshape(-1)[offset:offset + n].reshape(shape)

    # -- optimizer state in and out (saving) ----------------------------------------
    def restore_slots(self, values: dict):
        """Start optimizer slots from saved values: {slot key: array}, keys (variable path,
        slot name), or ("", name) for a global slot; values as Keras holds them (the
        runtime's may be rescaled: Optimizer.slot_scale). Slots that exist already are
        overwritten; the others take the value when a step graph first creates them (the
        arrays are kept until then, not copied: pass arrays nobody else changes)."""
        for key, value in values.items():
            scale = self.optimizer.slot_scale(key[1])
            where = self._slot_where.get(key)
            if where is not None and where[0] in self.buffers[0]:
                self._write_slot(where[0], value, where[1], scale)
            else:   # kept (not copied) until a step graph creates the slot
                self._restored[key] = np.asarray(value)

    def _write_slot(self, name, value, offset, scale):
        """Sets a slot (or its part from `offset`) to value * scale in the current buffer set
        only: every step writes all of its slots into the other set, so that set is never
        read before it is overwritten (weights differ: a frozen weight is never written)."""
        if self.device == "cuda":
            ov = self._ortvalues[self.parity][name]
            host = ov.numpy()
            view = host if offset is None else host.reshape(-1)[offset:offset + np.size(value)]
            np.multiply(np.reshape(value, view.shape), scale, out=view, casting="unsafe")
            ov.update_inplace(host)
            return
        buf = self.buffers[self.parity][name]
        view = buf if offset is None else buf.reshape(-1)[offset:offset + np.size(value)]
        np.multiply(np.reshape(value, view.shape), scale, out=view, casting="unsafe")

    def slot_values(self) -> dict:
        """The optimizer slots' current values as Keras holds them ({slot key: array copy}),
        including restored values not yet taken up by a step graph."""
        out = {}
        for key, where in self._slot_where.items():
            if where[0] in self.buffers[0]:
                scale = self.optimizer.slot_scale(key[1])
                view = self._slot_view(where)   # copied in the pass back to Keras's units
                out[key] = view.copy() if scale == 1.0 else (view / scale).astype(view.dtype, copy=False)
        for key, v in self._restored.items():
            out[key] = np.array(v, copy=True)
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
