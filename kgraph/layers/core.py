"""Core layers: Dense, Activation, Dropout, Flatten, Reshape, Permute, RepeatVector,
Embedding, Identity. Dense is three ops (matmul, add, activation): the fusion pass
has them to fuse."""
from __future__ import annotations

import math

import numpy as np

from kgraph import activations, initializers, regularizers, utils
from kgraph.engine.layer import Layer
from kgraph.ir import ops


def _check_positive_int(layer, arg, value):
    if not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{layer} expects `{arg}` to be a positive integer. Received: {arg}={value!r}")


class Dense(Layer):
    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        _check_positive_int(f"Dense '{self.name}'", "units", units)
        self.units = int(units)
        try:
            self.activation = activations.get(activation)
        except ValueError as e:
            raise ValueError(f"Dense '{self.name}': {e}") from None
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def build(self, input_shape):
        in_dim = input_shape[-1]
        if in_dim is None:
            raise self._error(f"the last dimension of the inputs must be defined. "
                              f"Received: input_shape={input_shape}")
        self.input_dim = in_dim
        self.kernel = self.add_weight((in_dim, self.units), self.kernel_initializer, "kernel",
                                      regularizer=self.kernel_regularizer)
        self.bias = self.add_weight((self.units,), self.bias_initializer, "bias",
                                    regularizer=self.bias_regularizer) if self.use_bias else None

    def call(self, inputs, training=False):
        if inputs.type.rank < 2 or inputs.shape[-1] not in (None, self.input_dim):
            raise self._error(f"expects inputs with last dimension {self.input_dim}, "
                              f"received shape {inputs.shape}")
        y = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            y = y + self.bias
        return self.activation(y)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": self.kernel_regularizer and regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": self.bias_regularizer and regularizers.serialize(self.bias_regularizer),
                "kernel_constraint": None, "bias_constraint": None}


class Activation(Layer):
    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        try:
            self.activation = activations.get(activation)
        except ValueError as e:
            raise ValueError(f"Activation '{self.name}': {e}") from None

    def call(self, inputs, training=False):
        return self.activation(inputs)

    def get_config(self):
        return {**super().get_config(), "activation": activations.serialize(self.activation)}


class Dropout(Layer):
    """Identity at inference; in training a fresh mask each step, scaled by 1/(1-rate)."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(f"Invalid value received for argument `rate`. Expected a float value "
                             f"between 0 and 1. Received: rate={rate!r}")
        if noise_shape is not None:
            raise ValueError(f"Dropout '{self.name}': `noise_shape` is not supported. "
                             f"Received: noise_shape={noise_shape}")
        self.rate, self.noise_shape, self.seed = float(rate), noise_shape, seed
        self._graph_seed = seed if seed is not None else utils.next_seed()

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return ops.identity(inputs)
        if self.rate == 1:
            return inputs * 0.0
        y, _ = ops.dropout(inputs, self.rate, self._graph_seed)
        return y

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed, "noise_shape": None}


class Flatten(Layer):
    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format or "channels_last"

    def call(self, inputs, training=False):
        rest = inputs.shape[1:]
        if None in rest:
            raise self._error(f"needs every non-batch dimension defined, received shape {inputs.shape}")
        if self.data_format == "channels_first" and inputs.type.rank > 2:
            inputs = ops.transpose(inputs, (0,) + tuple(range(2, inputs.type.rank)) + (1,))
        return ops.reshape(inputs, (0, math.prod(rest)))

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


class Reshape(Layer):
    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)

    def call(self, inputs, training=False):
        rest = inputs.shape[1:]
        known = math.prod(d for d in self.target_shape if d != -1)
        total = math.prod(rest) if None not in rest else None
        bad = self.target_shape.count(-1) > 1 or (
            total is not None and (total % known if -1 in self.target_shape else total != known))
        if bad:
            raise self._error(f"total size of the new array must be unchanged: input_shape="
                              f"{inputs.shape}, received target_shape={self.target_shape}")
        return ops.reshape(inputs, (0,) + self.target_shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}


class Permute(Layer):
    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        self.dims = tuple(int(d) for d in dims)
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError(f"Invalid permutation argument `dims` for Permute Layer. The set of "
                             f"indices in `dims` must be consecutive and start from 1. "
                             f"Received dims={self.dims}")

    def call(self, inputs, training=False):
        if inputs.type.rank != len(self.dims) + 1:
            raise self._error(f"expects inputs of rank {len(self.dims) + 1}, received shape {inputs.shape}")
        return ops.transpose(inputs, (0,) + self.dims)

    def get_config(self):
        return {**super().get_config(), "dims": list(self.dims)}


class RepeatVector(Layer):
    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int(f"RepeatVector '{self.name}'", "n", n)
        self.n = int(n)

    def call(self, inputs, training=False):
        if inputs.type.rank != 2:
            raise self._error(f"expects 2D inputs (batch, features), received shape {inputs.shape}")
        return ops.expand(ops.unsqueeze(inputs, 1), (1, self.n, 1))  # 1 keeps the feature dim

    def get_config(self):
        return {**super().get_config(), "n": self.n}


class Embedding(Layer):
    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform",
                 embeddings_regularizer=None, embeddings_constraint=None, mask_zero=False,
                 activity_regularizer=None, **kwargs):
        kwargs.pop("input_length", None)  # Keras 2 argument, ignored as Keras 3 does
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        _check_positive_int(f"Embedding '{self.name}'", "input_dim", input_dim)
        _check_positive_int(f"Embedding '{self.name}'", "output_dim", output_dim)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.mask_zero = mask_zero

    def build(self, input_shape):
        self.embeddings = self.add_weight((self.input_dim, self.output_dim),
                                          self.embeddings_initializer, "embeddings",
                                          regularizer=self.embeddings_regularizer)

    def call(self, inputs, training=False):
        idx = ops.cast(inputs, np.int64)
        return ops.gather(self.embeddings, idx)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": initializers.serialize(self.embeddings_initializer),
                "embeddings_regularizer": None, "activity_regularizer": None,
                "embeddings_constraint": None, "mask_zero": self.mask_zero}


class Identity(Layer):
    def call(self, inputs, training=False):
        return ops.identity(inputs)
