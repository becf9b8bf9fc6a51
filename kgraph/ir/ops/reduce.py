"""Matrix product and reductions.

  matmul: dA = g @ B^T, dB = A^T @ g (summed over broadcast batch dims)
  reduce_sum: dx = expand(g);  reduce_mean: dx = expand(g) / count
  reduce_max / reduce_min: dx = expand(g) * [x == y]
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from kgraph.ir.graph import TensorType
from kgraph.ir.ops.core import broadcast_shapes, emit, norm_axis, sum_to
from kgraph.ir.registry import define


def _matmul_infer(types, attrs):
    a, b = types
    if a.rank < 2 or b.rank < 2:
        raise ValueError(f"op 'matmul' needs rank >= 2 operands, received {a} and {b}")
    k1, k2 = a.shape[-1], b.shape[-2]
    if k1 is not None and k2 is not None and k1 != k2:
        raise ValueError(f"op 'matmul': inner dimensions differ: {a} @ {b}")
    if a.dtype != b.dtype:
        raise TypeError(f"op 'matmul': dtypes differ: {a.dtype} vs {b.dtype}")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2], "matmul")
    return [TensorType(batch + (a.shape[-2], b.shape[-1]), a.dtype)]


MATMUL = define("matmul", _matmul_infer, lambda ctx, n, i, o: ctx.node("MatMul", i, o))


def matmul(a, b):
    return emit("matmul", a, b)


def swap_last(x):
    from kgraph.ir.ops.shape import transpose
    r = x.type.rank
    return transpose(x, tuple(range(r - 2)) + (r - 1, r - 2))


@MATMUL.gradient
def _(node, gy):
    a, b = node.inputs
    g = gy[0]
    return [sum_to(matmul(g, swap_last(b)), a.shape), sum_to(matmul(swap_last(a), g), b.shape)]


def _reduce_infer(name):
    def infer(types, attrs):
        (t,) = types
        axes = attrs["axes"]
        if axes is None:
            axes = tuple(range(t.rank))
        for a in axes:
            if not 0 <= a < t.rank:
                raise ValueError(f"op '{name}': axis {a} out of range for {t}")
        if attrs["keepdims"]:
            shape = tuple(1 if i in axes else d for i, d in enumerate(t.shape))
        else:
            shape = tuple(d for i, d in enumerate(t.shape) if i not in axes)
        return [TensorType(shape, t.dtype)]
    return infer


def _reduce_lower(onnx_op):
    def lower(ctx, node, ins, outs):
        axes = node.attrs["axes"]
        if axes is None:
            axes = tuple(range(len(node.graph.node_inputs(node.id)[0].shape)))
        if len(axes) == 0:
            ctx.node("Identity", ins, outs)
            return
        if onnx_op == "ReduceSum" and _as_vector_product(node, axes):
            # a matrix summed over its rows: ones(n) @ x (onnxruntime's ReduceSum over axis 0
            # of a 128x64 matrix measured 6.7 us, the product 0.6 us plus two tiny kernels)
            shape, ones = ctx.fresh("rows"), ctx.fresh("ones")
            ctx.node("Shape", ins[:1], [shape], start=0, end=1)
            ctx.node("ConstantOfShape", [shape], [ones],
                     value=helper.make_tensor("one", helper.np_dtype_to_tensor_dtype(node.types[0].dtype), [1], [1.0]))
            ctx.node("MatMul", [ones, ins[0]], outs)
            return
        ctx.node(onnx_op, [ins[0], ctx.const(np.asarray(axes, np.int64))], outs,
                 keepdims=int(node.attrs["keepdims"]))
    return lower


def _as_vector_product(node, axes) -> bool:
    """A float matrix summed over axis 0 (a bias gradient) with at least 16 columns."""
    x = node.graph.node_inputs(node.id)[0]
    return (tuple(axes) == (0,) and x.type.rank == 2 and not node.attrs["keepdims"]
            and x.dtype in (np.float32, np.float64) and x.shape[1] is not None and x.shape[1] >= 16)


REDUCE_SUM = define("reduce_sum", _reduce_infer("reduce_sum"), _reduce_lower("ReduceSum"))
REDUCE_MEAN = define("reduce_mean", _reduce_infer("reduce_mean"), _reduce_lower("ReduceMean"))
REDUCE_MAX = define("reduce_max", _reduce_infer("reduce_max"), _reduce_lower("ReduceMax"))
REDUCE_MIN = define("reduce_min", _reduce_infer("reduce_min"), _reduce_lower("ReduceMin"))


def _norm_axes(x, axes):
    if axes is None:
        return tuple(range(x.type.rank))
    if isinstance(axes, int):
        axes = (axes,)
    return tuple(sorted(norm_axis(a, x.type.rank, "reduce") for a in axes))


def _reduce(op, x, axes, keepdims):
    from kgraph.ir.ops.core import coerce
    (x,) = coerce(x)
    return emit(op, x, axes=_norm_axes(x, axes), keepdims=bool(keepdims))


def reduce_sum(x, axes=None, keepdims=False): return _reduce("reduce_sum", x, axes, keepdims)
def reduce_mean(x, axes=None, keepdims=False): return _reduce("reduce_mean", x, axes, keepdims)
def reduce_max(x, axes=None, keepdims=False): return _reduce("reduce_max", x, axes, keepdims)
def reduce_min(x, axes=None, keepdims=False): return _reduce("reduce_min", x, axes, keepdims)


def _back_to_input(node, g):
    """g reshaped with kept dims and broadcast to the reduced input's shape."""
    from kgraph.ir.ops.shape import expand_like, unsqueeze
    (x,) = node.inputs
    if not node.attrs["keepdims"] and node.attrs["axes"]:
        g = unsqueeze(g, node.attrs["axes"])
    return expand_like(g, x)


@REDUCE_SUM.gradient
def _(node, gy):
    return [_back_to_input(node, gy[0])]


@REDUCE_MEAN.gradient
def _(node, gy):
    from kgraph.ir.ops.misc import numel
    (x,) = node.inputs
    return [_back_to_input(node, gy[0]) / numel(x, node.attrs["axes"])]


def _minmax_grad(node, gy):
    from kgraph.ir.ops.elementwise import equal
    from kgraph.ir.ops.misc import cast
    (x,) = node.inputs
    y = _back_to_input(node, node.outputs[0])
    return [_back_to_input(node, gy[0]) * cast(equal(x, y), x.dtype)]


REDUCE_MAX.gradient(_minmax_grad)
REDUCE_MIN.gradient(_minmax_grad)
