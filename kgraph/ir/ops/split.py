"""split: one tensor cut into consecutive pieces along an axis (ONNX Split).

Why an op of its own: the recurrent layers cut a (batch, T*G) input projection into T
per-step pieces. Slicing each piece would make every piece's gradient a zero-padded
full-size tensor (T of them, summed: quadratic in T); split's gradient is one concat:

  dx = concat(g_0, ..., g_{n-1}, axis)   with zeros for pieces that get no gradient
"""
from __future__ import annotations

import numpy as np

from kgraph.ir.graph import TensorType
from kgraph.ir.ops.core import coerce, emit, norm_axis
from kgraph.ir.registry import define


def _split_infer(types, attrs):
    (t,) = types
    axis, sizes = attrs["axis"], attrs["sizes"]
    if t.shape[axis] is not None and sum(sizes) != t.shape[axis]:
        raise ValueError(f"op 'split': sizes {sizes} do not add up to axis {axis} of {t}")
    return [TensorType(t.shape[:axis] + (s,) + t.shape[axis + 1:], t.dtype) for s in sizes]


def _split_lower(ctx, node, ins, outs):
    ctx.node("Split", [ins[0], ctx.const(np.asarray(node.attrs["sizes"], np.int64))], outs,
             axis=node.attrs["axis"])


SPLIT = define("split", _split_infer, _split_lower)


def split(x, sizes, axis=-1) -> tuple:
    """Pieces of `x` along `axis`: `sizes` is a list of piece lengths, or a number of
    equal pieces. The axis must have a static size. Always returns a tuple."""
    (x,) = coerce(x)
    axis = norm_axis(axis, x.type.rank, "split")
    dim = x.shape[axis]
    if dim is None:
        raise ValueError(f"op 'split' needs a static size on axis {axis}, received {x.type}")
    if isinstance(sizes, (int, np.integer)):
        if sizes <= 0 or dim % sizes:
            raise ValueError(f"op 'split': axis {axis} of {x.type} does not split into {sizes} "
                             f"equal pieces")
        sizes = (dim // int(sizes),) * int(sizes)
    out = emit("split", x, axis=axis, sizes=tuple(int(s) for s in sizes))
    return out if isinstance(out, tuple) else (out,)


@SPLIT.gradient
def _(node, gy):
    from kgraph.ir.ops.misc import zeros_like
    from kgraph.ir.ops.shape import concat
    parts = [g if g is not None else zeros_like(out) for g, out in zip(gy, node.outputs)]
    return [concat(parts, axis=node.attrs["axis"]) if len(parts) > 1 else parts[0]]
