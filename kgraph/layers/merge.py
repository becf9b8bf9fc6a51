"""Merge layers and their functional forms (concatenate, add, ...)."""
from __future__ import annotations

from functools import reduce

from kgraph.engine.layer import Layer
from kgraph.ir import ops
from kgraph.ir.ops.core import broadcast_shapes


class _Merge(Layer):
    _min_inputs = 2

    def build(self, input_shape):
        if not isinstance(input_shape, list) or len(input_shape) < self._min_inputs:
            raise self._error(f"expects a list of at least {self._min_inputs} inputs. "
                              f"Received: input_shape={input_shape}")

    def _check_shapes(self, inputs):
        shapes = [v.shape for v in inputs]
        try:
            reduce(lambda a, b: broadcast_shapes(a, b, type(self).__name__), shapes)
        except ValueError:
            raise self._error(f"inputs must have compatible shapes. Received: input shapes "
                              f"{shapes}") from None

    def call(self, inputs, training=False):
        if not isinstance(inputs, list):
            raise self._error("expects a list of inputs")
        self._check_shapes(inputs)
        return self._merge(inputs)


class Add(_Merge):
    def _merge(self, xs):
        return reduce(lambda a, b: a + b, xs)


class Subtract(_Merge):
    def build(self, input_shape):
        if not isinstance(input_shape, list) or len(input_shape) != 2:
            raise self._error(f"expects exactly 2 inputs. Received: input_shape={input_shape}")

    def _merge(self, xs):
        return xs[0] - xs[1]


class Multiply(_Merge):
    def _merge(self, xs):
        return reduce(lambda a, b: a * b, xs)


class Average(_Merge):
    def _merge(self, xs):
        return reduce(lambda a, b: a + b, xs) * (1.0 / len(xs))


class Maximum(_Merge):
    def _merge(self, xs):
        return reduce(ops.maximum, xs)


class Minimum(_Merge):
    def _merge(self, xs):
        return reduce(ops.minimum, xs)


class Concatenate(_Merge):
    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def _check_shapes(self, inputs):
        shapes = [v.shape for v in inputs]
        rank = len(shapes[0])
        axis = self.axis % rank if -rank <= self.axis < rank else None
        ok = axis is not None and all(len(s) == rank for s in shapes) and all(
            len({s[i] for s in shapes if s[i] is not None}) <= 1 for i in range(rank) if i != axis)
        if not ok:
            raise self._error(f"A `Concatenate` layer requires inputs with matching shapes except "
                              f"for the concatenation axis ({self.axis}). Received: input_shape={shapes}")

    def _merge(self, xs):
        return ops.concat(xs, axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class Dot(_Merge):
    """Batched dot product of two tensors along `axes` (Keras semantics, rank 2 or 3)."""

    def __init__(self, axes, normalize=False, **kwargs):
        super().__init__(**kwargs)
        self.axes = (axes, axes) if isinstance(axes, int) else tuple(axes)
        self.normalize = normalize

    def _check_shapes(self, inputs):
        if len(inputs) != 2:
            raise self._error(f"expects exactly 2 inputs. Received: {len(inputs)} inputs")
        a, b = inputs
        ra, rb = a.type.rank, b.type.rank
        ax = (self.axes[0] % ra, self.axes[1] % rb)
        if len(inputs) != 2 or a.shape[ax[0]] != b.shape[ax[1]] or not (2 <= ra <= 3 and 2 <= rb <= 3):
            raise self._error(f"incompatible input shapes {a.shape} and {b.shape} for axes {self.axes}")

    def _merge(self, xs):
        a, b = xs
        ax = (self.axes[0] % a.type.rank, self.axes[1] % b.type.rank)
        if self.normalize:
            a = a / ops.sqrt(ops.maximum(ops.reduce_sum(a * a, ax[0], keepdims=True), 1e-12))
            b = b / ops.sqrt(ops.maximum(ops.reduce_sum(b * b, ax[1], keepdims=True), 1e-12))
        if a.type.rank == 2 and b.type.rank == 2:
            return ops.reduce_sum(a * b, axes=1, keepdims=True)
        # rank 3: (N, i, k) . (N, k, j) style batched matmul, moving the contracted axes
        a3 = a if a.type.rank == 3 else ops.unsqueeze(a, 2 if ax[0] == 1 else 1)
        b3 = b if b.type.rank == 3 else ops.unsqueeze(b, 2 if ax[1] == 1 else 1)
        a3 = a3 if ax[0] == 2 else ops.transpose(a3, (0, 2, 1))
        b3 = b3 if ax[1] == 1 else ops.transpose(b3, (0, 2, 1))
        out = ops.matmul(a3, b3)
        if a.type.rank == 2:
            out = ops.squeeze(out, 1)
        elif b.type.rank == 2:
            out = ops.squeeze(out, 2)
        return out

    def get_config(self):
        return {**super().get_config(), "axes": list(self.axes), "normalize": self.normalize}


def concatenate(inputs, axis=-1, **kwargs): return Concatenate(axis=axis, **kwargs)(inputs)
def add(inputs, **kwargs): return Add(**kwargs)(inputs)
def subtract(inputs, **kwargs): return Subtract(**kwargs)(inputs)
def multiply(inputs, **kwargs): return Multiply(**kwargs)(inputs)
def average(inputs, **kwargs): return Average(**kwargs)(inputs)
def maximum(inputs, **kwargs): return Maximum(**kwargs)(inputs)
def minimum(inputs, **kwargs): return Minimum(**kwargs)(inputs)
def dot(inputs, axes=-1, **kwargs): return Dot(axes=axes, **kwargs)(inputs)
