"""Runs compiled train-step and eval graphs over the runtime-owned state.

Each step binds only the batch (and reads back the scalar loss and metric partials):
weights and slots stay bound to the two alternating buffer sets, learning rate and
step count are one-element buffers updated in place.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from kgraph.runtime.session import create_session


def _ortvalue(arr):
    return ort.OrtValue.ortvalue_from_numpy(arr)


class StepRunner:
    def __init__(self, onnx_model, sig, state, output_types, train: bool):
        self.sig, self.state, self.train = sig, state, train
        self.session = create_session(onnx_model)
        self.lr = np.zeros((), np.float32)
        self.t = np.zeros((), np.float32)
        # outputs read by the host: loss and metric partials, preallocated
        self.host_outputs = {name: np.zeros(shape, dtype) for name, (shape, dtype) in output_types.items()}
        fed_back = {inp for _, inp in sig.feedback}
        self.bindings = []
        for parity in (0, 1):
            io = self.session.io_binding()
            bufs, other = state.buffers[parity], state.buffers[1 - parity]
            for name, _ in sig.weight_inputs:
                io.bind_ortvalue_input(name, _ortvalue(bufs[name]))
            for name, _ in sig.slot_inputs:
                io.bind_ortvalue_input(name, _ortvalue(bufs[name]))
            if train:
                io.bind_ortvalue_input("lr", _ortvalue(self.lr))
                io.bind_ortvalue_input("t", _ortvalue(self.t))
                for out, inp in sig.feedback:
                    io.bind_ortvalue_output(out, _ortvalue(other[inp]))
            for name, arr in self.host_outputs.items():
                io.bind_ortvalue_output(name, _ortvalue(arr))
            self.bindings.append(io)
        self._fed_back = fed_back

    def run(self, data, lr=None, t=None):
        """One step on `data` (arrays in sig.data_inputs order); returns the host outputs."""
        self.state.reload()
        io = self.bindings[self.state.parity]
        for name, arr in zip(self.sig.data_inputs, data):
            io.bind_cpu_input(name, arr)
        if self.train:
            self.lr[...] = lr
            self.t[...] = t
        self.session.run_with_iobinding(io)
        if self.train:
            # Non-trainable weights that are not updated keep the same value in both sets.
            self.state.stepped()
        return self.host_outputs
