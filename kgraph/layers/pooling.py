"""Pooling layers: Max/AveragePooling1D/2D and their global forms (Keras 3 semantics).

Windowed pools use the channels-first IR ops `max_pool` / `avg_pool` between two
transposes (as the conv layers); strides default to pool_size; 'same' pads as
TensorFlow (odd pixel at the end) and the average excludes the padding. Global pools
are plain reductions over the spatial axes, in the user's layout.
"""
from __future__ import annotations

from kgraph.ir import ops
from kgraph.ir.ops.conv import conv_out_size, same_pads
from kgraph.layers.conv import (
    SpatialLayer, normalize_data_format, normalize_padding, normalize_tuple)


class Pooling(SpatialLayer):
    _op = None  # ops.max_pool or ops.avg_pool

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        o = self._owner
        self.pool_size = normalize_tuple(pool_size, self.rank, "pool_size", o)
        self.strides = self.pool_size if strides is None else normalize_tuple(
            strides, self.rank, "strides", o)
        self.padding = normalize_padding(padding, o)
        self.data_format = normalize_data_format(data_format, o)

    def build(self, input_shape):
        self._check_rank(input_shape)

    def _pads(self, shape):
        sizes = self._spatial(shape)
        if self.padding == "valid":
            for n, k in zip(sizes, self.pool_size):
                if n is not None and conv_out_size(n, k, 1, 1, 0, 0) < 1:
                    raise self._error(f"the pool window pool_size={self.pool_size} is larger than "
                                      f"the input with padding='valid'. "
                                      f"Received: input_shape={tuple(shape)}")
            return (0,) * (2 * self.rank)
        try:
            pads = [same_pads(n, k, s) for n, k, s in zip(sizes, self.pool_size, self.strides)]
        except ValueError as e:
            raise self._error(f"{e}. Received: input_shape={tuple(shape)}") from None
        return tuple(p[0] for p in pads) + tuple(p[1] for p in pads)

    def call(self, inputs, training=False):
        self._check_rank(inputs.shape)
        pads = self._pads(inputs.shape)
        y = type(self)._op(self._to_cf(inputs), self.pool_size, self.strides, pads)
        return self._from_cf(y)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "padding": self.padding,
                "strides": self.strides, "data_format": self.data_format}


class MaxPooling1D(Pooling):
    rank = 1
    _op = staticmethod(ops.max_pool)

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class MaxPooling2D(Pooling):
    rank = 2
    _op = staticmethod(ops.max_pool)

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling1D(Pooling):
    rank = 1
    _op = staticmethod(ops.avg_pool)

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling2D(Pooling):
    rank = 2
    _op = staticmethod(ops.avg_pool)

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class GlobalPooling(SpatialLayer):
    _reduce = None

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = normalize_data_format(data_format, self._owner)
        self.keepdims = bool(keepdims)

    def build(self, input_shape):
        self._check_rank(input_shape)

    def call(self, inputs, training=False):
        self._check_rank(inputs.shape)
        first = 1 if self.data_format == "channels_last" else 2
        axes = tuple(range(first, first + self.rank))
        return type(self)._reduce(inputs, axes=axes, keepdims=self.keepdims)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalMaxPooling1D(GlobalPooling):
    rank = 1
    _reduce = staticmethod(ops.reduce_max)


class GlobalMaxPooling2D(GlobalPooling):
    rank = 2
    _reduce = staticmethod(ops.reduce_max)


class GlobalAveragePooling1D(GlobalPooling):
    rank = 1
    _reduce = staticmethod(ops.reduce_mean)


class GlobalAveragePooling2D(GlobalPooling):
    rank = 2
    _reduce = staticmethod(ops.reduce_mean)
