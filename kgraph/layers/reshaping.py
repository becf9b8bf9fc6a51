"""Spatial reshaping layers: ZeroPadding2D, Cropping2D, UpSampling2D (nearest).

All three are data movement in the user's layout, written with the IR's pad / slice /
reshape+expand ops, so their gradients come from those ops' rules.
"""
from __future__ import annotations

from kgraph.ir import ops
from kgraph.layers.conv import SpatialLayer, normalize_data_format, normalize_tuple


def _pairs(value, arg, owner):
    """int | (sym_h, sym_w) | ((top, bottom), (left, right)) -> ((t, b), (l, r))."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{owner}: `{arg}` cannot be negative. Received: {arg}={value!r}")
        return ((value, value), (value, value))
    if hasattr(value, "__len__") and len(value) == 2:
        return tuple(normalize_tuple(v, 2, arg, owner, allow_zero=True) for v in value)
    raise ValueError(f"{owner}: `{arg}` should be an int, a tuple of 2 ints or a tuple of 2 "
                     f"tuples of 2 ints. Received: {arg}={value!r}")


class _Spatial2D(SpatialLayer):
    rank = 2

    def _axes(self):
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    def build(self, input_shape):
        self._check_rank(input_shape)


class ZeroPadding2D(_Spatial2D):
    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = normalize_data_format(data_format, self._owner)
        self.padding = _pairs(padding, "padding", self._owner)

    def call(self, inputs, training=False):
        self._check_rank(inputs.shape)
        before, after = [0] * 4, [0] * 4
        for ax, (b, a) in zip(self._axes(), self.padding):
            before[ax], after[ax] = b, a
        return ops.pad(inputs, before, after)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "data_format": self.data_format}


class Cropping2D(_Spatial2D):
    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = normalize_data_format(data_format, self._owner)
        self.cropping = _pairs(cropping, "cropping", self._owner)

    def call(self, inputs, training=False):
        self._check_rank(inputs.shape)
        axes, starts, ends = [], [], []
        for ax, (b, a) in zip(self._axes(), self.cropping):
            n = inputs.shape[ax]
            if n is None:
                raise self._error(f"needs static spatial sizes. Received: input_shape={inputs.shape}")
            if b + a >= n:
                raise self._error(f"values in `cropping` must be smaller than the spatial size of "
                                  f"the input: cropping={self.cropping}. "
                                  f"Received: input_shape={inputs.shape}")
            axes.append(ax)
            starts.append(b)
            ends.append(n - a)
        return ops.slice_(inputs, axes, starts, ends)

    def get_config(self):
        return {**super().get_config(), "cropping": self.cropping, "data_format": self.data_format}


class UpSampling2D(_Spatial2D):
    """Nearest neighbour: each pixel repeated size[0] x size[1] times (reshape + expand)."""

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        self.data_format = normalize_data_format(data_format, self._owner)
        self.size = normalize_tuple(size, 2, "size", self._owner)
        if str(interpolation).lower() != "nearest":
            raise ValueError(f"{self._owner}: only interpolation='nearest' is available. "
                             f"Received: interpolation={interpolation!r}")
        self.interpolation = "nearest"

    def call(self, inputs, training=False):
        self._check_rank(inputs.shape)
        h_ax, w_ax = self._axes()
        shape = inputs.shape
        if None in (shape[h_ax], shape[w_ax]) or None in shape[1:]:
            raise self._error(f"needs static non-batch sizes. Received: input_shape={shape}")
        # (N, ..., H, 1, W, 1, ...) -> expand -> (N, ..., H*sh, W*sw, ...)
        split, reps, out = [0], [1], [0]
        for ax in range(1, 4):
            split.append(shape[ax])
            reps.append(1)
            out.append(shape[ax])
            if ax in (h_ax, w_ax):
                f = self.size[0] if ax == h_ax else self.size[1]
                split.append(1)
                reps.append(f)
                out[-1] = shape[ax] * f
        x = ops.reshape(inputs, split)
        x = ops.expand(x, reps)
        return ops.reshape(x, out)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "data_format": self.data_format,
                "interpolation": self.interpolation}
