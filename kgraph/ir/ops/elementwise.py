"""Elementwise ops with numpy broadcasting, and comparisons.

Gradients:  d(a+b) = g, g       d(a-b) = g, -g
            d(a*b) = g*b, g*a   d(a/b) = g/b, -g*y/b
            d(a^b) = g*b*a^(b-1), g*y*log(a)
            d max(a,b) = g*[a>=b], g*[a<b]
each summed back over broadcast dimensions.
"""
from __future__ import annotations

import numpy as np

from kgraph.ir.graph import TensorType
from kgraph.ir.ops.core import broadcast_shapes, emit, sum_to
from kgraph.ir.registry import define


def _binary_infer(name, out_dtype=None):
    def infer(types, attrs):
        a, b = types
        if a.dtype != b.dtype:
            raise TypeError(f"op '{name}': operand dtypes differ: {a.dtype} vs {b.dtype}")
        return [TensorType(broadcast_shapes(a.shape, b.shape, name), out_dtype or a.dtype)]
    return infer


def _onnx(op_type):
    def lower(ctx, node, ins, outs):
        ctx.node(op_type, ins, outs)
    return lower


def _binary(name, onnx_op, out_dtype=None, nondiff=False):
    return define(name, _binary_infer(name, out_dtype), _onnx(onnx_op), nondiff=nondiff)


ADD = _binary("add", "Add")
SUB = _binary("sub", "Sub")
MUL = _binary("mul", "Mul")
DIV = _binary("div", "Div")
POW = _binary("pow", "Pow")
MAXIMUM = _binary("maximum", "Max")
MINIMUM = _binary("minimum", "Min")
GREATER = _binary("greater", "Greater", np.dtype(bool), nondiff=True)
LESS = _binary("less", "Less", np.dtype(bool), nondiff=True)
GREATER_EQUAL = _binary("greater_equal", "GreaterOrEqual", np.dtype(bool), nondiff=True)
LESS_EQUAL = _binary("less_equal", "LessOrEqual", np.dtype(bool), nondiff=True)
EQUAL = _binary("equal", "Equal", np.dtype(bool), nondiff=True)
LOGICAL_AND = _binary("logical_and", "And", np.dtype(bool), nondiff=True)


def add(a, b): return emit("add", a, b)
def sub(a, b): return emit("sub", a, b)
def mul(a, b): return emit("mul", a, b)
def div(a, b): return emit("div", a, b)
def pow(a, b): return emit("pow", a, b)  # noqa: A001 - the IR op's name
def maximum(a, b): return emit("maximum", a, b)
def minimum(a, b): return emit("minimum", a, b)
def greater(a, b): return emit("greater", a, b)
def less(a, b): return emit("less", a, b)
def greater_equal(a, b): return emit("greater_equal", a, b)
def less_equal(a, b): return emit("less_equal", a, b)
def equal(a, b): return emit("equal", a, b)
def logical_and(a, b): return emit("logical_and", a, b)


def _both(node, ga, gb):
    a, b = node.inputs
    return [sum_to(ga, a.shape) if ga is not None else None,
            sum_to(gb, b.shape) if gb is not None else None]


@ADD.gradient
def _(node, gy):
    return _both(node, gy[0], gy[0])


@SUB.gradient
def _(node, gy):
    return _both(node, gy[0], -gy[0])


@MUL.gradient
def _(node, gy):
    a, b = node.inputs
    return _both(node, gy[0] * b, gy[0] * a)


@DIV.gradient
def _(node, gy):
    a, b = node.inputs
    (y,) = node.outputs
    ga = gy[0] / b
    return _both(node, ga, -(ga * y))


@POW.gradient
def _(node, gy):
    from kgraph.ir.ops.unary import log
    a, b = node.inputs
    (y,) = node.outputs
    return _both(node, gy[0] * b * pow(a, b - 1.0), gy[0] * y * log(a))


@MAXIMUM.gradient
def _(node, gy):
    from kgraph.ir.ops.misc import cast
    a, b = node.inputs
    m = cast(greater_equal(a, b), gy[0].dtype)
    return _both(node, gy[0] * m, gy[0] * (1.0 - m))


@MINIMUM.gradient
def _(node, gy):
    from kgraph.ir.ops.misc import cast
    a, b = node.inputs
    m = cast(less_equal(a, b), gy[0].dtype)
    return _both(node, gy[0] * m, gy[0] * (1.0 - m))


def _where_infer(types, attrs):
    c, a, b = types
    if c.dtype != np.dtype(bool):
        raise TypeError(f"op 'where': condition must be bool, received {c.dtype}")
    if a.dtype != b.dtype:
        raise TypeError(f"op 'where': branch dtypes differ: {a.dtype} vs {b.dtype}")
    shape = broadcast_shapes(broadcast_shapes(c.shape, a.shape, "where"), b.shape, "where")
    return [TensorType(shape, a.dtype)]


WHERE = define("where", _where_infer, _onnx("Where"), nondiff_inputs=(0,))


def where(cond, a, b):
    return emit("where", cond, a, b)


@WHERE.gradient
def _(node, gy):
    c, a, b = node.inputs
    zero = a.graph.const(np.zeros((), a.dtype))
    return [None, sum_to(where(c, gy[0], zero), a.shape), sum_to(where(c, zero, gy[0]), b.shape)]
