"""Symbolic tensors and the call records (nodes) of the layer DAG."""
from __future__ import annotations

import numpy as np


class KTensor:
    """A symbolic tensor: shape (None for the batch), dtype, and the layer call that made it."""

    def __init__(self, shape, dtype="float32", name=None, history=None):
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.name = name
        self._history = history  # (layer, node_index, tensor_index)

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return f"<KTensor shape={self.shape}, dtype={self.dtype.name}, name={self.name}>"


class CallNode:
    """One call of a layer on symbolic tensors: the DAG's node."""

    def __init__(self, layer, inputs, outputs, structure, kwargs):
        self.layer = layer
        self.inputs = list(inputs)      # flat list of KTensors
        self.outputs = list(outputs)    # flat list of KTensors
        self.structure = structure      # "single" or "list": how inputs were passed
        self.kwargs = dict(kwargs)


def flatten(x):
    if isinstance(x, (list, tuple)):
        out = []
        for item in x:
            out.extend(flatten(item))
        return out
    if isinstance(x, dict):
        return flatten(list(x.values()))
    return [x]
