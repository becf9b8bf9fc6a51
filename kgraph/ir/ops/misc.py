"""Sources, casts, randomness and the other small ops.

  cast: dx = cast(g, x.dtype) for floats, none for integers
  clip(lo, hi): dx = g*[lo <= x <= hi]     dropout: dx = g*mask/(1-rate)
  identity: dx = g                         stop_gradient: no gradient
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from kgraph.ir.graph import TensorType
from kgraph.ir.ops.core import coerce, emit, float_type, norm_axis, same_as_input
from kgraph.ir.registry import define


def _no_infer(types, attrs):
    raise RuntimeError("source ops get their types when they are created")


INPUT = define("input", _no_infer, None, nondiff=True)   # lowered as a graph input
CONST = define("const", _no_infer, None, nondiff=True)   # lowered as an initializer

IDENTITY = define("identity", same_as_input, lambda ctx, n, i, o: ctx.node("Identity", i, o))
STOP_GRADIENT = define("stop_gradient", same_as_input,
                       lambda ctx, n, i, o: ctx.node("Identity", i, o), nondiff=True)


def identity(x): return emit("identity", x)
def stop_gradient(x): return emit("stop_gradient", x)


@IDENTITY.gradient
def _(node, gy): return [gy[0]]


CAST = define("cast", lambda t, a: [TensorType(t[0].shape, np.dtype(a["to"]))],
              lambda ctx, n, i, o: ctx.node(
                  "Cast", i, o, to=helper.np_dtype_to_tensor_dtype(np.dtype(n.attrs["to"]))))


def cast(x, dtype):
    (x,) = coerce(x)
    if x.dtype == np.dtype(dtype):
        return x
    return emit("cast", x, to=np.dtype(dtype).str)


@CAST.gradient
def _(node, gy):
    (x,) = node.inputs
    return [cast(gy[0], x.dtype) if float_type(x.type) else None]


def _clip_lower(ctx, node, ins, outs):
    dt = node.inputs[0].dtype
    ctx.node("Clip", [ins[0], ctx.const(np.asarray(node.attrs["lo"], dt)),
                      ctx.const(np.asarray(node.attrs["hi"], dt))], outs)


CLIP = define("clip", same_as_input, _clip_lower)


def clip(x, lo, hi):
    return emit("clip", x, lo=float(lo), hi=float(hi))


@CLIP.gradient
def _(node, gy):
    from kgraph.ir.ops.elementwise import greater_equal, less_equal, logical_and
    (x,) = node.inputs
    inside = logical_and(greater_equal(x, node.attrs["lo"]), less_equal(x, node.attrs["hi"]))
    return [gy[0] * cast(inside, x.dtype)]


def _numel_lower(ctx, node, ins, outs):
    shape, dims, n = ctx.fresh("shape"), ctx.fresh("dims"), ctx.fresh("n")
    ctx.node("Shape", ins, [shape])
    ctx.node("Gather", [shape, ctx.const(np.asarray(node.attrs["axes"], np.int64))], [dims], axis=0)
    ctx.node("ReduceProd", [dims], [n], keepdims=0)
    ctx.node("Cast", [n], outs, to=helper.np_dtype_to_tensor_dtype(node.types[0].dtype))


NUMEL = define("numel", lambda t, a: [TensorType((), t[0].dtype)], _numel_lower, nondiff=True)


def numel(x, axes=None):
    """Number of elements of `x` over `axes` (all when None), as a scalar of x's dtype;
    static sizes fold to a constant, a dynamic batch is read at run time."""
    (x,) = coerce(x)
    axes = tuple(range(x.type.rank)) if axes is None else tuple(
        norm_axis(a, x.type.rank, "numel") for a in ((axes,) if isinstance(axes, int) else axes))
    dims = [x.shape[a] for a in axes]
    if None not in dims:
        return x.graph.const(np.asarray(np.prod(dims, dtype=np.int64), x.dtype))
    return emit("numel", x, axes=axes)


def _zeros_like_lower(ctx, node, ins, outs):
    shape = ctx.fresh("shape")
    ctx.node("Shape", ins, [shape])
    ctx.node("ConstantOfShape", [shape], outs,
             value=helper.make_tensor("zero", helper.np_dtype_to_tensor_dtype(node.types[0].dtype), [1], [0]))


ZEROS_LIKE = define("zeros_like", same_as_input, _zeros_like_lower, nondiff=True)


def zeros_like(x):
    (x,) = coerce(x)
    if None not in x.shape:
        return x.graph.const(np.zeros(x.shape, x.dtype))
    return emit("zeros_like", x)


def _one_hot_lower(ctx, node, ins, outs):
    dt = node.types[0].dtype
    idx = ctx.fresh("idx")
    ctx.node("Cast", ins, [idx], to=helper.np_dtype_to_tensor_dtype(np.dtype(np.int64)))
    ctx.node("OneHot", [idx, ctx.const(np.asarray(node.attrs["depth"], np.int64)),
                        ctx.const(np.asarray([0, 1], dt))], outs, axis=-1)


ONE_HOT = define("one_hot",
                 lambda t, a: [TensorType(t[0].shape + (a["depth"],), np.dtype(a["dtype"]))],
                 _one_hot_lower, nondiff=True)


def one_hot(indices, depth, dtype=np.float32):
    return emit("one_hot", indices, depth=int(depth), dtype=np.dtype(dtype).str)


def _argmax_infer(types, attrs):
    (t,) = types
    shape = tuple(d for i, d in enumerate(t.shape) if i != attrs["axis"])
    return [TensorType(shape, np.dtype(np.int64))]


ARGMAX = define("argmax", _argmax_infer,
                lambda ctx, n, i, o: ctx.node("ArgMax", i, o, axis=n.attrs["axis"], keepdims=0),
                nondiff=True)


def argmax(x, axis=-1):
    (x,) = coerce(x)
    return emit("argmax", x, axis=norm_axis(axis, x.type.rank, "argmax"))


def _dropout_infer(types, attrs):
    (t,) = types
    return [t, TensorType(t.shape, np.dtype(bool))]


def _dropout_lower(ctx, node, ins, outs):
    dt = node.types[0].dtype
    ctx.node("Dropout", [ins[0], ctx.const(np.asarray(node.attrs["rate"], dt)),
                         ctx.const(np.asarray(True))], outs, seed=int(node.attrs["seed"]))


DROPOUT = define("dropout", _dropout_infer, _dropout_lower)


def dropout(x, rate, seed):
    """Training-mode dropout: kept units scaled by 1/(1-rate); a fresh mask every run
    (onnxruntime advances the generator seeded from `seed`). Returns (y, mask)."""
    return emit("dropout", x, rate=float(rate), seed=int(seed))


@DROPOUT.gradient
def _(node, gy):
    (x,) = node.inputs
    _, mask = node.outputs
    if gy[0] is None:
        return [None]
    return [gy[0] * cast(mask, x.dtype) * (1.0 / (1.0 - node.attrs["rate"]))]


def _random_normal_like_lower(ctx, node, ins, outs):
    a = node.attrs
    ctx.node("RandomNormalLike", ins, outs, mean=a["mean"], scale=a["stddev"], seed=float(a["seed"]))


RANDOM_NORMAL_LIKE = define("random_normal_like", same_as_input, _random_normal_like_lower,
                            nondiff=True)


def random_normal_like(x, mean=0.0, stddev=1.0, seed=0):
    return emit("random_normal_like", x, mean=float(mean), stddev=float(stddev), seed=int(seed))
