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
    """The session is created on first use: `fit`'s K-steps-per-call path runs the same step
    graph inside a Loop and may never need the single-step session."""

    def __init__(self, onnx_model, sig, state, output_types, train: bool):
        self.sig, self.state, self.train = sig, state, train
        self.onnx_model = onnx_model
        self.lr = np.zeros((), np.float32)
        self.t = np.zeros((), np.float32)
        # outputs read by the host: loss and metric partials, preallocated
        self.host_outputs = {name: np.zeros(shape, dtype) for name, (shape, dtype) in output_types.items()}
        self._session = None
        self._batch_buffers: dict[int, list[np.ndarray]] = {}
        self._bound_buffers = [None, None]   # per parity: the batch buffers bound now

    @property
    def session(self):
        self._binding(0)
        return self._session

    def _binding(self, parity):
        """The IO binding for buffer set `parity` (creating the session on first use)."""
        if self._session is None:
            self._session = create_session(self.onnx_model)
            self.bindings = [self._bind(p) for p in (0, 1)]
        return self.bindings[parity]

    def _bind(self, parity):
        io = self._session.io_binding()
        for name, _ in self.sig.weight_inputs + self.sig.slot_inputs:
            io.bind_ortvalue_input(name, self.state.ortvalue(parity, name))
        if self.train:
            io.bind_ortvalue_input("lr", _ortvalue(self.lr))
            io.bind_ortvalue_input("t", _ortvalue(self.t))
            for out, inp in self.sig.feedback:
                io.bind_ortvalue_output(out, self.state.ortvalue(1 - parity, inp))
        for name, arr in self.host_outputs.items():
            io.bind_ortvalue_output(name, _ortvalue(arr))
        return io

    def run_batch(self, sources, idx, lr=None, t=None):
        """One step on rows `idx` of the full arrays `sources` (sig.data_inputs order).
        The rows are gathered into batch buffers that stay bound to the session, so a step
        costs one gather per input and no binding calls."""
        bufs = self._batch_buffers.get(len(idx))
        if bufs is None:
            bufs = [np.empty((len(idx),) + a.shape[1:], a.dtype) for a in sources]
            self._batch_buffers[len(idx)] = bufs
        for src, buf in zip(sources, bufs):
            np.take(src, idx, axis=0, out=buf)
        self.state.reload()
        parity = self.state.parity
        io = self._binding(parity)
        if self._bound_buffers[parity] is not bufs:
            for name, buf in zip(self.sig.data_inputs, bufs):
                io.bind_ortvalue_input(name, _ortvalue(buf))
            self._bound_buffers[parity] = bufs
        return self._execute(io, lr, t)

    def _execute(self, io, lr, t):
        if self.train:
            self.lr[...] = lr
            self.t[...] = t
        self._session.run_with_iobinding(io)
        if self.train:
            self.state.stepped()
        return self.host_outputs

    def run(self, data, lr=None, t=None):
        """One step on `data` (arrays in sig.data_inputs order); returns the host outputs."""
        self.state.reload()
        parity = self.state.parity
        io = self._binding(parity)
        for name, arr in zip(self.sig.data_inputs, data):
            io.bind_cpu_input(name, np.ascontiguousarray(arr))
        self._bound_buffers[parity] = None
        return self._execute(io, lr, t)
