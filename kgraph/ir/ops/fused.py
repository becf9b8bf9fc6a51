"""Fused ops created by the fusion passes (never by layers directly).

dense(x, W, b; activation) = act(x @ W + b), act in FUSABLE_ACTIVATIONS.
Gradient, from the output y (so the forward op stays one kernel):
  gz = g * act'(y)        relu: [y>0]   sigmoid: y(1-y)   tanh: 1-y^2   linear: 1
  dx = gz @ W^T    dW = x^T @ gz (summed over batch dims)    db = sum(gz)
Lowering: the `portable` target writes standard ONNX (Gemm for 2-D inputs, MatMul+Add
otherwise, then the activation); the `onnxruntime` target writes com.microsoft FusedGemm
for 2-D inputs, which plain onnxruntime loads on CPU.
"""
from __future__ import annotations

from kgraph.ir.graph import TensorType
from kgraph.ir.ops.core import broadcast_shapes, emit, sum_to
from kgraph.ir.ops.reduce import _matmul_infer, matmul, swap_last
from kgraph.ir.registry import define

FUSABLE_ACTIVATIONS = {"linear": None, "relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def _dense_infer(types, attrs):
    x, w, b = types
    (z,) = _matmul_infer([x, w], {})
    return [TensorType(broadcast_shapes(z.shape, b.shape, "dense"), z.dtype)]


def _dense_lower(ctx, node, ins, outs):
    act = FUSABLE_ACTIVATIONS[node.attrs["activation"]]
    two_d = node.inputs[0].type.rank == 2
    if two_d and ctx.target == "onnxruntime" and act is not None:
        ctx.node("FusedGemm", ins, outs, domain="com.microsoft", activation=act)
        return
    pre = outs if act is None else [ctx.fresh("z")]
    if two_d:
        ctx.node("Gemm", ins, pre)
    else:
        mm = ctx.fresh("mm")
        ctx.node("MatMul", ins[:2], [mm])
        ctx.node("Add", [mm, ins[2]], pre)
    if act is not None:
        ctx.node(act, pre, outs)


DENSE = define("dense", _dense_infer, _dense_lower)


def dense(x, w, b, activation="linear"):
    if activation not in FUSABLE_ACTIVATIONS:
        raise ValueError(f"op 'dense': activation must be one of {sorted(FUSABLE_ACTIVATIONS)}, "
                         f"received {activation!r}")
    return emit("dense", x, w, b, activation=activation)


def activation_grad_from_output(act, y, g):
    from kgraph.ir.ops.elementwise import greater
    from kgraph.ir.ops.misc import cast
    if act == "relu":
        return g * cast(greater(y, 0.0), y.dtype)
    if act == "sigmoid":
        return g * (y * (1.0 - y))
    if act == "tanh":
        return g * (1.0 - y * y)
    return g


@DENSE.gradient
def _(node, gy):
    x, w, b = node.inputs
    (y,) = node.outputs
    gz = activation_grad_from_output(node.attrs["activation"], y, gy[0])
    return [sum_to(matmul(gz, swap_last(w)), x.shape), sum_to(matmul(swap_last(x), gz), w.shape),
            sum_to(gz, b.shape)]


# ---- conv + activation -------------------------------------------------------------------
# conv_act(x, W, b; conv attrs, activation) = act(conv(x, W, b)). Gradient from the output:
# gz = g * act'(y), then the convolution's own rule. Lowering: the `onnxruntime` target
# writes com.microsoft FusedConv where the execution provider supports the activation
# (on CUDA only Relu); `portable` writes Conv then the activation.
FUSED_CONV_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def _conv_act_infer(types, attrs):
    from kgraph.ir.ops.conv import CONV
    return CONV.infer(types, {k: v for k, v in attrs.items() if k != "activation"})


def _conv_act_lower(ctx, node, ins, outs):
    act = FUSED_CONV_ACTIVATIONS[node.attrs["activation"]]
    a = node.attrs
    conv_attrs = dict(strides=list(a["strides"]), dilations=list(a["dilations"]), pads=list(a["pads"]),
                      group=a["groups"], kernel_shape=list(node.inputs[1].shape[2:]))
    if ctx.target == "onnxruntime" and (act == "Relu" or ctx.device != "cuda"):
        ctx.node("FusedConv", ins, outs, domain="com.microsoft", activation=act, **conv_attrs)
        return
    z = ctx.fresh("conv")
    ctx.node("Conv", ins, [z], **conv_attrs)
    ctx.node(act, [z], outs)


CONV_ACT = define("conv_act", _conv_act_infer, _conv_act_lower)


class _ConvView:
    """What the conv gradient rule reads of a node: its inputs and conv attributes."""

    def __init__(self, node):
        self.inputs = node.inputs
        self.attrs = {k: v for k, v in node.attrs.items() if k != "activation"}
        self.graph = node.graph


@CONV_ACT.gradient
def _(node, gy):
    from kgraph.ir.ops.conv import CONV
    (y,) = node.outputs
    gz = activation_grad_from_output(node.attrs["activation"], y, gy[0])
    return CONV.grad(_ConvView(node), [gz])
