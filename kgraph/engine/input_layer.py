"""InputLayer and `Input()`: the sources of a Functional model."""
from __future__ import annotations

import numpy as np

from kgraph.engine.ktensor import CallNode, KTensor
from kgraph.engine.layer import Layer


class InputLayer(Layer):
    def __init__(self, shape=None, batch_size=None, dtype=None, batch_shape=None, name=None,
                 sparse=None, **kwargs):
        if "input_shape" in kwargs:
            shape = kwargs.pop("input_shape")
        if "batch_input_shape" in kwargs:
            batch_shape = kwargs.pop("batch_input_shape")
        super().__init__(name=name, dtype=dtype, **kwargs)
        if batch_shape is None:
            if shape is None:
                raise ValueError("InputLayer: pass `shape` (without the batch dimension) or "
                                 "`batch_shape`. Received: shape=None")
            if isinstance(shape, int):
                shape = (shape,)
            batch_shape = (batch_size,) + tuple(shape)
        self.batch_shape = tuple(None if d is None else int(d) for d in batch_shape)
        self.built = True
        tensor = KTensor(self.batch_shape, self.dtype, name=self.name, history=(self, 0, 0))
        self._inbound_nodes.append(CallNode(self, [], [tensor], "single", {}))
        self.output_tensor = tensor

    def call(self, inputs, training=False):
        return inputs

    def get_config(self):
        return {"batch_shape": list(self.batch_shape), "dtype": self.dtype.name,
                "sparse": False, "name": self.name}


def Input(shape=None, batch_size=None, dtype=None, name=None, batch_shape=None, **kwargs):
    """A symbolic input tensor: `shape` excludes the batch dimension."""
    layer = InputLayer(shape=shape, batch_size=batch_size, dtype=dtype or np.float32,
                       batch_shape=batch_shape, name=name, **kwargs)
    return layer.output_tensor
