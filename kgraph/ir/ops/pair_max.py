"""pair_max: the larger of the two halves along axis 1 of x (A, 2, B) -> (A, B).

A 2x2/2 max-pool in a batch-innermost layout is two of these (rows, then columns). Its
own gradient rule broadcasts instead of expanding:
  dx = unsqueeze(g, 1) * [x == unsqueeze(y, 1)]   (ties each receive g, as max_pool's rule)
reduce_max's generic rule writes the expanded g and y first (two extra full-size tensors).
"""
from __future__ import annotations

import numpy as np

from kgraph.ir.graph import TensorType
from kgraph.ir.ops.core import coerce, emit
from kgraph.ir.registry import define


def _infer(types, attrs):
    (x,) = types
    if x.rank != 3 or x.shape[1] != 2:
        raise ValueError(f"op 'pair_max' needs an input of shape (A, 2, B), received {x}")
    return [TensorType((x.shape[0], x.shape[2]), x.dtype)]


def _lower(ctx, node, ins, outs):
    ctx.node("ReduceMax", [ins[0], ctx.const(np.asarray([1], np.int64))], outs, keepdims=0)


PAIR_MAX = define("pair_max", _infer, _lower)


def pair_max(x):
    (x,) = coerce(x)
    return emit("pair_max", x)


@PAIR_MAX.gradient
def _(node, gy):
    from kgraph.ir.ops.elementwise import equal
    from kgraph.ir.ops.misc import cast
    from kgraph.ir.ops.shape import unsqueeze
    (x,) = node.inputs
    (y,) = node.outputs
    return [unsqueeze(gy[0], 1) * cast(equal(x, unsqueeze(y, 1)), x.dtype)]
