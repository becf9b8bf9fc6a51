"""Noise layers, active only in training (identity otherwise): SpatialDropout2D,
GaussianNoise, GaussianDropout. The random ops draw afresh on every run of the
compiled graph (onnxruntime advances the generator seeded at construction)."""
from __future__ import annotations

import math

from kgraph import utils
from kgraph.engine.layer import Layer
from kgraph.ir import ops
from kgraph.layers.conv import normalize_data_format


def _check_rate(owner, arg, value, upper_open=False):
    ok = isinstance(value, (int, float)) and 0 <= value <= 1 and not (upper_open and value == 1)
    if not ok:
        raise ValueError(f"{owner}: invalid value received for argument `{arg}`. Expected a float "
                         f"value between 0 and 1. Received: {arg}={value!r}")
    return float(value)


class SpatialDropout2D(Layer):
    """Drops whole feature maps: one keep/drop draw per (sample, channel), kept maps
    scaled by 1/(1-rate): the keep mask of a dropout over an (N, 1, 1, C) tensor."""

    def __init__(self, rate, data_format=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_rate(f"SpatialDropout2D '{self.name}'", "rate", rate)
        self.data_format = normalize_data_format(data_format, f"SpatialDropout2D '{self.name}'")
        self.seed = seed
        self._graph_seed = seed if seed is not None else utils.next_seed()

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise self._error(f"expects inputs of rank 4. Received: input_shape={tuple(input_shape)}")

    def call(self, inputs, training=False):
        if inputs.type.rank != 4:
            raise self._error(f"expects inputs of rank 4. Received: input_shape={inputs.shape}")
        if not training or self.rate == 0:
            return ops.identity(inputs)
        if self.rate == 1:
            return inputs * 0.0
        spatial = (1, 2) if self.data_format == "channels_last" else (2, 3)
        per_map = ops.stop_gradient(ops.reduce_max(inputs, axes=spatial, keepdims=True))
        _, keep = ops.dropout(per_map, self.rate, self._graph_seed)
        return inputs * (ops.cast(keep, inputs.dtype) * (1.0 / (1.0 - self.rate)))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed,
                "data_format": self.data_format}


class GaussianNoise(Layer):
    """Adds N(0, stddev^2) noise in training."""

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.stddev = _check_rate(f"GaussianNoise '{self.name}'", "stddev", stddev)
        self.seed = seed
        self._graph_seed = seed if seed is not None else utils.next_seed()

    def call(self, inputs, training=False):
        if not training or self.stddev == 0:
            return ops.identity(inputs)
        return inputs + ops.random_normal_like(inputs, 0.0, self.stddev, self._graph_seed)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


class GaussianDropout(Layer):
    """Multiplies by N(1, rate/(1-rate)) noise in training."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_rate(f"GaussianDropout '{self.name}'", "rate", rate, upper_open=True)
        self.seed = seed
        self._graph_seed = seed if seed is not None else utils.next_seed()

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return ops.identity(inputs)
        stddev = math.sqrt(self.rate / (1.0 - self.rate))
        return inputs * ops.random_normal_like(inputs, 1.0, stddev, self._graph_seed)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
