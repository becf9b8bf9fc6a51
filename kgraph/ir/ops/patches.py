"""im2col and col2im on the batch-innermost layout of the training convolutions.

im2col(x; kh, kw):      x (c, h, w, n) -> p (c*kh*kw, ho*wo*n), rows in (c, i, j) order,
                        p[(c, i, j), (y, z, b)] = x[c, y + i, z + j, b]; ho = h-kh+1, wo = w-kw+1
col2im(p, like; kh, kw): the adjoint: p -> (c, h, w, n), each patch entry added back to the
                        pixel it came from (the shape of `like` gives h, w and the batch)

They are each other's gradient. Why ops of their own: written with slices, im2col's
gradient is a zero-padded full-size tensor per kernel tap, summed (2*kh*kw - 1 passes over
the image); ONNX's Col2Im does it in one kernel. The batch-innermost image is a 3-D image
(h, w, n) for Col2Im, with blocks (kh, kw, 1): no attribute depends on the batch size.
Rows in (c, i, j) order are Col2Im's channel-major layout and a conv weight
(m, c, kh, kw) reshaped to (m, c*kh*kw), with no transpose.
"""
from __future__ import annotations

import numpy as np

from kgraph.ir.graph import TensorType
from kgraph.ir.ops.core import coerce, emit
from kgraph.ir.registry import define


def _im2col_infer(types, attrs):
    (x,) = types
    c, h, w, n = x.shape
    kh, kw = attrs["kh"], attrs["kw"]
    if x.rank != 4 or None in (c, h, w) or h < kh or w < kw:
        raise ValueError(f"op 'im2col': needs a (c, h, w, n) input with static c, h, w at least the "
                         f"kernel {kh}x{kw}, received {x}")
    rows = (h - kh + 1) * (w - kw + 1)
    return [TensorType((c * kh * kw, None if n is None else rows * n), x.dtype)]


def _im2col_lower(ctx, node, ins, outs):
    kh, kw = node.attrs["kh"], node.attrs["kw"]
    c, h, w, _ = node.inputs[0].shape
    ho, wo = h - kh + 1, w - kw + 1
    axes, one = ctx.const(np.asarray([1, 2], np.int64)), ctx.const(np.asarray([1], np.int64))
    cols = []
    for i in range(kh):
        for j in range(kw):
            win, col = ctx.fresh("window"), ctx.fresh("col")
            ctx.node("Slice", [ins[0], ctx.const(np.asarray([i, j], np.int64)),
                               ctx.const(np.asarray([i + ho, j + wo], np.int64)), axes], [win])
            ctx.node("Unsqueeze", [win, one], [col])
            cols.append(col)
    stacked = ctx.fresh("stacked")
    ctx.node("Concat", cols, [stacked], axis=1)                  # (c, kh*kw, ho, wo, n)
    ctx.node("Reshape", [stacked, ctx.const(np.asarray([c * kh * kw, -1], np.int64))], outs)


def _col2im_infer(types, attrs):
    p, like = types
    return [TensorType(like.shape, p.dtype)]


def _col2im_lower(ctx, node, ins, outs):
    kh, kw = node.attrs["kh"], node.attrs["kw"]
    rows = node.inputs[0].shape[0]
    batched, image, img = ctx.fresh("batched"), ctx.fresh("image"), ctx.fresh("img")
    ctx.node("Reshape", [ins[0], ctx.const(np.asarray([1, rows, -1], np.int64))], [batched])
    ctx.node("Shape", [ins[1]], [image], start=1)                # (h, w, n)
    ctx.node("Col2Im", [batched, image, ctx.const(np.asarray([kh, kw, 1], np.int64))], [img])
    ctx.node("Squeeze", [img, ctx.const(np.asarray([0], np.int64))], outs)       # (c, h, w, n)


IM2COL = define("im2col", _im2col_infer, _im2col_lower)
COL2IM = define("col2im", _col2im_infer, _col2im_lower, nondiff_inputs=(1,))


def im2col(x, kh, kw):
    (x,) = coerce(x)
    return emit("im2col", x, kh=int(kh), kw=int(kw))


def col2im(p, like, kh, kw):
    p, like = coerce(p, like)
    return emit("col2im", p, like, kh=int(kh), kw=int(kw))


@IM2COL.gradient
def _(node, gy):
    a = node.attrs
    return [col2im(gy[0], node.inputs[0], a["kh"], a["kw"])]


@COL2IM.gradient
def _(node, gy):
    a = node.attrs
    return [im2col(gy[0], a["kh"], a["kw"]), None]
