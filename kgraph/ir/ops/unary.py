"""Elementwise unary ops and activations.

Activation gradients are written from the op's output y wherever the
derivative allows, so the forward activation stays fusable with the op before
it (FACTS: an extra consumer of the pre-activation blocks onnxruntime's fusions):
  relu  g*[y>0]          sigmoid g*y*(1-y)        tanh g*(1-y^2)
  elu   g*(y>0 ? 1 : y+a)  selu g*(y>0 ? s : y+s*a)  leaky g*(y>0 ? 1 : a)
  softmax y*(g - sum(g*y))  log_softmax g - exp(y)*sum(g)
  exp g*y  sqrt g/(2y)  log g/x  softplus g*sigmoid(x)  erf g*2/sqrt(pi)*exp(-x^2)
"""
from __future__ import annotations

import math

import numpy as np

from kgraph.ir.ops.core import emit, norm_axis, same_as_input
from kgraph.ir.registry import define


def _onnx(op_type, **fixed):
    def lower(ctx, node, ins, outs):
        ctx.node(op_type, ins, outs, **{k: node.attrs[v] for k, v in fixed.items()})
    return lower


def _float_only(name):
    def infer(types, attrs):
        if not np.issubdtype(types[0].dtype, np.floating):
            raise TypeError(f"op '{name}' needs a floating input, received {types[0].dtype}")
        return [types[0]]
    return infer


def _unary(name, onnx_op, nondiff=False, **fixed):
    return define(name, _float_only(name) if not nondiff else same_as_input,
                  _onnx(onnx_op, **fixed), nondiff=nondiff)


NEG = define("neg", same_as_input, _onnx("Neg"))
EXP = _unary("exp", "Exp")
LOG = _unary("log", "Log")
SQRT = _unary("sqrt", "Sqrt")
ABS = define("abs", same_as_input, _onnx("Abs"))
SIGN = _unary("sign", "Sign", nondiff=True)
FLOOR = _unary("floor", "Floor", nondiff=True)
TANH = _unary("tanh", "Tanh")
SIGMOID = _unary("sigmoid", "Sigmoid")
RELU = _unary("relu", "Relu")
SOFTPLUS = _unary("softplus", "Softplus")
ERF = _unary("erf", "Erf")
ELU = _unary("elu", "Elu", alpha="alpha")
SELU = _unary("selu", "Selu", alpha="alpha", gamma="gamma")
LEAKY_RELU = _unary("leaky_relu", "LeakyRelu", alpha="alpha")
SOFTMAX = _unary("softmax", "Softmax", axis="axis")
LOG_SOFTMAX = _unary("log_softmax", "LogSoftmax", axis="axis")


def neg(x): return emit("neg", x)
def exp(x): return emit("exp", x)
def log(x): return emit("log", x)
def sqrt(x): return emit("sqrt", x)
def abs(x): return emit("abs", x)  # noqa: A001
def sign(x): return emit("sign", x)
def floor(x): return emit("floor", x)
def tanh(x): return emit("tanh", x)
def sigmoid(x): return emit("sigmoid", x)
def relu(x): return emit("relu", x)
def softplus(x): return emit("softplus", x)
def erf(x): return emit("erf", x)
def elu(x, alpha=1.0): return emit("elu", x, alpha=float(alpha))
def leaky_relu(x, alpha=0.2): return emit("leaky_relu", x, alpha=float(alpha))
def selu(x):
    return emit("selu", x, alpha=1.6732632423543772, gamma=1.0507009873554805)
def softmax(x, axis=-1):
    return emit("softmax", x, axis=norm_axis(axis, x.type.rank, "softmax") if hasattr(x, "type") else axis)
def log_softmax(x, axis=-1):
    return emit("log_softmax", x, axis=norm_axis(axis, x.type.rank, "log_softmax") if hasattr(x, "type") else axis)


def _mask(cond, like):
    from kgraph.ir.ops.misc import cast
    return cast(cond, like.dtype)


@NEG.gradient
def _(node, gy): return [-gy[0]]


@EXP.gradient
def _(node, gy): return [gy[0] * node.outputs[0]]


@LOG.gradient
def _(node, gy): return [gy[0] / node.inputs[0]]


@SQRT.gradient
def _(node, gy): return [gy[0] * 0.5 / node.outputs[0]]


@ABS.gradient
def _(node, gy): return [gy[0] * sign(node.inputs[0])]


@TANH.gradient
def _(node, gy):
    y = node.outputs[0]
    return [gy[0] * (1.0 - y * y)]


@SIGMOID.gradient
def _(node, gy):
    y = node.outputs[0]
    return [gy[0] * (y * (1.0 - y))]


@RELU.gradient
def _(node, gy):
    from kgraph.ir.ops.elementwise import greater
    y = node.outputs[0]
    return [gy[0] * _mask(greater(y, 0.0), y)]


@SOFTPLUS.gradient
def _(node, gy): return [gy[0] * sigmoid(node.inputs[0])]


@ERF.gradient
def _(node, gy):
    x = node.inputs[0]
    return [gy[0] * (2.0 / math.sqrt(math.pi)) * exp(-(x * x))]


@ELU.gradient
def _(node, gy):
    from kgraph.ir.ops.elementwise import greater, where
    y = node.outputs[0]
    return [gy[0] * where(greater(y, 0.0), y.graph.const(np.ones((), y.dtype)), y + node.attrs["alpha"])]


@SELU.gradient
def _(node, gy):
    from kgraph.ir.ops.elementwise import greater, where
    y = node.outputs[0]
    a, s = node.attrs["alpha"], node.attrs["gamma"]
    return [gy[0] * where(greater(y, 0.0), y.graph.const(np.asarray(s, y.dtype)), y + s * a)]


@LEAKY_RELU.gradient
def _(node, gy):
    from kgraph.ir.ops.elementwise import greater
    y = node.outputs[0]
    m = _mask(greater(y, 0.0), y)
    return [gy[0] * (m + (1.0 - m) * node.attrs["alpha"])]


@SOFTMAX.gradient
def _(node, gy):
    from kgraph.ir.ops.reduce import reduce_sum
    y = node.outputs[0]
    return [y * (gy[0] - reduce_sum(gy[0] * y, axes=(node.attrs["axis"],), keepdims=True))]


@LOG_SOFTMAX.gradient
def _(node, gy):
    from kgraph.ir.ops.reduce import reduce_sum
    y = node.outputs[0]
    return [gy[0] - exp(y) * reduce_sum(gy[0], axes=(node.attrs["axis"],), keepdims=True)]
