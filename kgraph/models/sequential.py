"""Sequential: a linear stack of layers, built into a Functional graph as soon as its
input shape is known (from an Input, an InputLayer, `input_shape=` on the first layer,
or the first data it sees)."""
from __future__ import annotations

import numpy as np

from kgraph.engine.input_layer import Input, InputLayer
from kgraph.engine.ktensor import KTensor
from kgraph.engine.layer import Layer
from kgraph.engine.naming import unique_name
from kgraph.models.functional import Model
from kgraph.models.training_api import TrainingAPI


class Sequential(Model):
    def __init__(self, layers=None, name=None, trainable=True, **kwargs):
        Layer.__init__(self, name=name or unique_name("sequential"), trainable=trainable, **kwargs)
        TrainingAPI.__init__(self)
        self._stack: list[Layer] = []
        self._input_layer: InputLayer | None = None
        self.built = False
        for layer in layers or []:
            self.add(layer)

    def add(self, layer, rebuild=True):
        if isinstance(layer, KTensor):
            layer = layer._history[0]
        if not isinstance(layer, Layer):
            raise TypeError(f"Only instances of `kgraph.layers.Layer` can be added to a Sequential "
                            f"model. Received: {layer!r} (of type {type(layer).__name__})")
        if isinstance(layer, InputLayer):
            if self._input_layer is not None or self._stack:
                raise ValueError(f"Sequential '{self.name}': an InputLayer can only be the first layer")
            self._input_layer = layer
            return
        if not self._stack and self._input_layer is None and layer._input_shape_arg is not None:
            self._input_layer = Input(shape=layer._input_shape_arg)._history[0]
        if any(l.name == layer.name for l in self._stack):
            raise ValueError(f"All layers added to a Sequential model should have unique names. "
                             f"Name '{layer.name}' is already the name of a layer in this model.")
        self._stack.append(layer)
        if rebuild and self._input_layer is not None:
            try:
                self._build_graph()
            except Exception:
                self._stack.pop()
                raise

    def pop(self):
        if not self._stack:
            raise TypeError("There are no layers in the model.")
        layer = self._stack.pop()
        if self._input_layer is not None and self._stack:
            self._build_graph()
        return layer

    def _build_graph(self):
        x = self._input_layer.output_tensor
        for layer in self._stack:
            x = layer(x)
        self._init_graph(self._input_layer.output_tensor, x)

    def build(self, input_shape=None):
        if input_shape is not None and self._input_layer is None:
            self._input_layer = Input(batch_shape=(None,) + tuple(input_shape)[1:])._history[0]
        if self._input_layer is None:
            raise ValueError(f"Sequential '{self.name}': cannot build without an input shape. "
                             f"Pass `input_shape` to build() or start the model with Input(shape).")
        if not self._stack:
            raise ValueError(f"Sequential '{self.name}' has no layers")
        self._build_graph()

    def _ensure_model_built(self, x):
        if self.built:
            return
        arr = x[0] if isinstance(x, (list, tuple)) else x
        self.build((None,) + np.shape(arr)[1:])

    def _require_built(self):
        if not self.built:
            raise ValueError(f"Sequential model '{self.name}' has not yet been built. Build it by "
                             f"calling `build(input_shape)`, by calling it on data, or by starting "
                             f"it with `Input(shape)`.")

    @property
    def layers(self):
        return list(self._stack)

    def summary(self, *args, **kwargs):
        self._require_built()
        super().summary(*args, **kwargs)

    def get_config(self):
        from kgraph.models.serialization import sequential_config
        return sequential_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from kgraph.models.serialization import sequential_from_config
        return sequential_from_config(config, custom_objects)
