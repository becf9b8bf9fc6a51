"""Categorical crossentropy on probabilities, computed as Keras does, as ops of their own.

crossentropy(y, p; axis, eps) = -sum(y * log(clip(p / sum(p), eps, 1 - eps)), axis)
softmax_crossentropy(y, z, p; axis, eps) = the same, where p = softmax(z, axis)

Why ops and not the chain of primitives: nearly every classifier ends in a softmax read by
this loss, and the gradient through the renormalisation, the clip and the softmax
collapses to a closed form of a few kernels, where the chain's gradient is some 25 small
kernels: a fixed cost on every training step, which dominates small models.
`fuse_softmax_crossentropy` (a training pass, before autodiff) rewrites
crossentropy(y, softmax(z)) to softmax_crossentropy(y, z, p); p stays the model's output.

Gradients (S = sum(p), q = p / S, c = clip(q), m = [eps <= q <= 1 - eps], A = sum(y m),
g the per-sample upstream gradient, broadcast over the axis):
  crossentropy:          dp = g (A - y m / c) / S            dy = -g log(c)
  softmax_crossentropy:  dz = g (q A - y m)                  dy = -g log(c)
The second is the first through softmax's Jacobian p (dp - sum(dp p)): sum(dp p) = 0.
Both lower to the same standard ONNX forward; p is not differentiated in the fused op
(its dependence on z is in dz).
"""
from __future__ import annotations

import numpy as np

from kgraph.ir.graph import TensorType
from kgraph.ir.ops.core import coerce, emit, norm_axis
from kgraph.ir.registry import define


def _infer(types, attrs):
    y, p = types[0], types[-1]
    if y.rank != p.rank:
        raise ValueError(f"op 'crossentropy': labels {y} and probabilities {p} differ in rank")
    axis = attrs["axis"]
    return [TensorType(p.shape[:axis] + p.shape[axis + 1:], p.dtype)]


def _lower(ctx, node, ins, outs):
    y, p = ins[0], ins[-1]
    axis, eps = node.attrs["axis"], node.attrs["eps"]
    dtype = node.types[0].dtype
    axes = ctx.const(np.asarray([axis], np.int64))
    s, q, c, lg, yl, r = (ctx.fresh(h) for h in ("sum", "q", "clipped", "log", "ylog", "r"))
    ctx.node("ReduceSum", [p, axes], [s], keepdims=1)
    ctx.node("Div", [p, s], [q])
    ctx.node("Clip", [q, ctx.const(np.asarray(eps, dtype)), ctx.const(np.asarray(1.0 - eps, dtype))], [c])
    ctx.node("Log", [c], [lg])
    ctx.node("Mul", [y, lg], [yl])
    ctx.node("ReduceSum", [yl, axes], [r], keepdims=0)
    ctx.node("Neg", [r], outs)


CROSSENTROPY = define("crossentropy", _infer, _lower)
SOFTMAX_CROSSENTROPY = define("softmax_crossentropy", _infer, _lower, nondiff_inputs=(2,))


def crossentropy(y, p, axis=-1, eps=1e-7):
    """Per-sample categorical crossentropy of probabilities `p` against labels `y`."""
    y, p = coerce(y, p)
    return emit("crossentropy", y, p, axis=norm_axis(axis, p.type.rank, "crossentropy"), eps=float(eps))


def softmax_crossentropy(y, z, p, axis, eps):
    """crossentropy(y, p) for p = softmax(z, axis), differentiated in z (fusion pass only)."""
    return emit("softmax_crossentropy", y, z, p, axis=axis, eps=float(eps))


def _terms(node, g):
    """(g broadcast over the axis, q, c, y*m, A) of the gradient formulas."""
    from kgraph.ir.ops.elementwise import equal
    from kgraph.ir.ops.misc import cast, clip
    from kgraph.ir.ops.reduce import reduce_sum
    from kgraph.ir.ops.shape import unsqueeze
    y, p = node.inputs[0], node.inputs[-1]
    axis, eps = node.attrs["axis"], node.attrs["eps"]
    s = reduce_sum(p, axes=(axis,), keepdims=True)
    q = p / s
    c = clip(q, eps, 1.0 - eps)
    ym = y * cast(equal(c, q), p.dtype)        # clip passes its gradient where c == q
    a = reduce_sum(ym, axes=(axis,), keepdims=True)
    return unsqueeze(g, axis), s, q, c, ym, a


def _dy(g, c):
    from kgraph.ir.ops.unary import log
    return -(g * log(c))


@CROSSENTROPY.gradient
def _(node, gy):
    g, s, q, c, ym, a = _terms(node, gy[0])
    return [_dy(g, c), g * (a - ym / c) / s]


@SOFTMAX_CROSSENTROPY.gradient
def _(node, gy):
    g, s, q, c, ym, a = _terms(node, gy[0])
    return [_dy(g, c), g * (q * a - ym), None]
