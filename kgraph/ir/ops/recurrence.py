"""lstm_sequence: a whole LSTM recurrence as one IR op, so that its backward pass is
written once with few ONNX nodes instead of being derived step by step by autodiff.

Why: onnxruntime pays a fixed cost per node, and on one thread the small (batch, 28) x
(28, 4u) input projection and its (28, T*batch) x (T*batch, 4u) weight gradient run far
below the GEMM speed of the recurrent matmuls. Here every step does one GEMM with the
stacked kernel [W; R; b] on [x_t, h, 1] (the ones column carries the bias), and the
backward pass accumulates the gradient of the whole stacked kernel with one GEMM per
step (small GEMMs whose dz is still in cache measured faster than one big GEMM after
the loop). Forward 11 nodes per step, backward 13.

lstm_sequence(x, K[, h0, c0]; steps, reverse, sequences, bias):
  x (batch, T*F) the inputs in time order; K (F + u [+ 1], 4u) = [W; R; b], gates i, f,
  c, o, with the c-gate columns pre-scaled by 2 (tanh(z) = 2 sigmoid(2z) - 1: one
  Sigmoid per step). Per step (processing order: reversed time when `reverse`):
     v = [x_t, h, 1];  s = sigmoid(v K);  i, f, q, o = s [1, 1, 2, 1];
     c' = f c + i (q - 1);  h' = o tanh(c').
  Outputs: h_T, c_T, [H (batch, T*u), the outputs h' in processing order], then per step
  what the gradient reads (see _step_slots). Missing initial states are zeros.

Gradient (op lstm_sequence_grad), going back in time:
  dh = gH_t + dz_{t+1} R^T;  dc = dh o (1 - tanh^2 c') + dc_{t+1} f_{t+1};
  dz_t = [dc, dc, dc, dh] s[1, 1, 2, 1](1 - s) [q - 1, c, i, tanh c'];  dK += v_t^T dz_t;
  dh0 = dz_0 R^T, dc0 = dc_0 f_0; dx (only when asked for) = dz W^T as IR ops.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from kgraph.ir.graph import TensorType
from kgraph.ir.ops.core import coerce, emit
from kgraph.ir.registry import define

_PER_STEP = ("v", "s", "s2", "i", "f", "o", "g", "tc", "c", "h")


def _step_slots(steps, first):
    """Output index of every per-step value {(k, name): index}, the first at `first`, and
    the number of outputs; c and h of the last step are outputs 1 and 0, not repeated."""
    slots, n = {}, first
    for k in range(steps):
        for name in _PER_STEP:
            if name in ("c", "h") and k == steps - 1:
                continue
            slots[(k, name)] = n
            n += 1
    return slots, n


def _dims(k_type, bias):
    """(units, features) from the stacked kernel's type."""
    u = k_type.shape[1] // 4
    features = k_type.shape[0] - u - int(bias)
    return u, features


def _seq_infer(types, attrs):
    x, k = types[0], types[1]
    steps, bias = attrs["steps"], attrs["bias"]
    u, features = _dims(k, bias)
    if k.shape[1] != 4 * u or features <= 0 or x.shape[-1] != steps * features:
        raise ValueError(f"op 'lstm_sequence': expects x (batch, {steps}*F) and K (F + u"
                         f"{' + 1' if bias else ''}, 4u). Received: x={x}, K={k}")
    b = x.shape[0]
    width = {"v": k.shape[0], "s": 4 * u, "s2": 4 * u}
    first = 3 if attrs["sequences"] else 2
    slots, n = _step_slots(steps, first)
    out = [TensorType((b, u), x.dtype)] * n
    if attrs["sequences"]:
        out[2] = TensorType((b, steps * u), x.dtype)
    for (_, name), idx in slots.items():
        out[idx] = TensorType((b, width.get(name, u)), x.dtype)
    return out


class _Emitter:
    """ONNX node helpers for the two lowerings."""

    def __init__(self, ctx, dtype):
        self.ctx, self.dtype = ctx, np.dtype(dtype)

    def c(self, value):
        return self.ctx.const(np.asarray(value, self.dtype))

    def __call__(self, op, inputs, out=None, **attrs):
        out = out or self.ctx.fresh(op.lower())
        self.ctx.node(op, inputs, [out], **attrs)
        return out

    def split(self, x, sizes, axis, hint, outs=None):
        outs = outs or [self.ctx.fresh(hint) for _ in sizes]
        self.ctx.node("Split", [x, self.ctx.const(np.asarray(sizes, np.int64))], outs, axis=axis)
        return outs

    def filled(self, x, width, value):
        """(batch, width) filled with `value`, the batch read from x at run time."""
        batch = self("Shape", [x], start=0, end=1)
        shape = self("Concat", [batch, self.ctx.const(np.asarray([width], np.int64))], axis=0)
        fill = helper.make_tensor("value", helper.np_dtype_to_tensor_dtype(self.dtype), [1], [value])
        return self("ConstantOfShape", [shape], value=fill)


def _seq_lower(ctx, node, ins, outs):
    a = node.attrs
    steps, reverse, sequences, bias = a["steps"], a["reverse"], a["sequences"], a["bias"]
    u, features = _dims(node.inputs[1].type, bias)
    e = _Emitter(ctx, node.inputs[0].dtype)
    slots, _ = _step_slots(steps, 3 if sequences else 2)
    x, kern = ins[0], ins[1]
    h, c = (ins[2], ins[3]) if len(ins) > 2 else (None, None)
    xs = e.split(x, [features] * steps, 1, "x")
    ones = [e.filled(x, 1, 1.0)] if bias else []
    if h is None:
        h = e.filled(x, u, 0.0)
    scale, one = e.c(np.repeat([1.0, 1.0, 2.0, 1.0], u)), e.c(1.0)
    out = lambda k, name: outs[slots[(k, name)]]  # noqa: E731
    hs = []
    order = list(range(steps))[::-1] if reverse else list(range(steps))
    for k, t in enumerate(order):
        last = k == steps - 1
        v = e("Concat", [xs[t], h] + ones, out(k, "v"), axis=1)
        s = e("Sigmoid", [e("Gemm", [v, kern])], out(k, "s"))
        s2 = e("Mul", [s, scale], out(k, "s2"))
        i, f, q2, o = out(k, "i"), out(k, "f"), ctx.fresh("q2"), out(k, "o")
        e.split(s2, [u] * 4, 1, "gate", [i, f, q2, o])
        ig = e("Mul", [i, e("Sub", [q2, one], out(k, "g"))])
        c_out = outs[1] if last else out(k, "c")
        if c is None:
            c_new = e("Identity", [ig], c_out)
        else:
            c_new = e("Add", [e("Mul", [f, c]), ig], c_out)
        tc = e("Tanh", [c_new], out(k, "tc"))
        h = e("Mul", [o, tc], outs[0] if last else out(k, "h"))
        c = c_new
        hs.append(h)
    if sequences:
        e("Concat", hs, outs[2], axis=1)


LSTM_SEQUENCE = define("lstm_sequence", _seq_infer, _seq_lower)


def lstm_sequence(x, kernel, h0=None, c0=None, *, steps, bias, reverse=False, sequences=False):
    """(h_T, c_T[, H]) of an LSTM over `steps` steps (see the module doc)."""
    inputs = [x, kernel] + ([h0, c0] if h0 is not None else [])
    outs = emit("lstm_sequence", *coerce(*inputs), steps=int(steps), reverse=bool(reverse),
                sequences=bool(sequences), bias=bool(bias))
    return (outs[0], outs[1]) + ((outs[2],) if sequences else ())


# ---- backward ---------------------------------------------------------------------------
def _grad_infer(types, attrs):
    k, v = types[0], types[1]
    b, u = v.shape[0], k.shape[1] // 4
    out = [TensorType(k.shape, k.dtype)]
    if attrs["init"]:
        out += [TensorType((b, u), v.dtype)] * 2
    return out + [TensorType((b, 4 * u), v.dtype)] * attrs["steps"]


def _grad_lower(ctx, node, ins, outs):
    a = node.attrs
    steps, reverse, init, bias = a["steps"], a["reverse"], a["init"], a["bias"]
    u, features = _dims(node.inputs[0].type, bias)
    e = _Emitter(ctx, node.inputs[1].dtype)
    slots, n = _step_slots(steps, 0)
    kern = ins[0]
    val = lambda k, name: ins[1 + slots[(k, name)]]  # noqa: E731
    h_last, rest = ins[1 + n], list(ins[2 + n:])
    c0 = rest.pop(1) if init else None
    if init:
        rest.pop(0)  # h0: read through v
    gh = rest.pop(0) if a["has_gh"] else None
    gc = rest.pop(0) if a["has_gc"] else None
    g_seq = rest.pop(0) if a["has_gseq"] else None
    one = e.c(1.0)
    rec = e("Slice", [kern, ctx.const(np.asarray([features], np.int64)),
                      ctx.const(np.asarray([features + u], np.int64)), ctx.const(np.asarray([0], np.int64))])
    c_zero = e.filled(val(0, "s"), u, 0.0) if c0 is None else c0
    gseq = e.split(g_seq, [u] * steps, 1, "gseq") if g_seq is not None else [None] * steps
    dz_outs = outs[3:] if init else outs[1:]
    order = list(range(steps))[::-1] if reverse else list(range(steps))
    dz_next = dc_next = d_k = None
    for k in reversed(range(steps)):
        last = k == steps - 1
        c_prev = val(k - 1, "c") if k else c_zero
        extra = [v for v in (gseq[k], gh if last else None) if v is not None]
        base = extra[0] if len(extra) == 1 else (e("Add", extra) if extra else None)
        if dz_next is not None:
            dh = e("Gemm", [dz_next, rec] + ([base] if base is not None else []), transB=1)
        else:
            dh = base
        terms = []
        tc = val(k, "tc")
        if dh is not None:
            h_k = h_last if last else val(k, "h")
            a_k = e("Sub", [val(k, "o"), e("Mul", [h_k, tc])])  # o (1 - tanh^2 c') = o - h' tanh c'
            terms.append(e("Mul", [dh, a_k]))
        if dc_next is not None:
            terms.append(e("Mul", [dc_next, val(k + 1, "f")]))
        if last and gc is not None:
            terms.append(gc)
        dc = terms[0] if len(terms) == 1 else e("Add", terms)
        if dh is None:
            dh = e.filled(val(0, "s"), u, 0.0)
        slope = e("Mul", [val(k, "s2"), e("Sub", [one, val(k, "s")])])
        coef = e("Mul", [slope, e("Concat", [val(k, "g"), c_prev, val(k, "i"), tc], axis=1)])
        dz = e("Mul", [e("Concat", [dc, dc, dc, dh], axis=1), coef], dz_outs[order[k]])
        d_k = e("Gemm", [val(k, "v"), dz] + ([d_k] if d_k is not None else []),
                outs[0] if k == 0 else None, transA=1)
        dz_next, dc_next = dz, dc
    if init:
        e("Gemm", [dz_next, rec], outs[1], transB=1)
        e("Mul", [dc_next, val(0, "f")], outs[2])


LSTM_SEQUENCE_GRAD = define("lstm_sequence_grad", _grad_infer, _grad_lower, nondiff=True)


@LSTM_SEQUENCE.gradient
def _(node, gy):
    from kgraph.ir.ops.reduce import matmul, swap_last
    from kgraph.ir.ops.shape import concat, reshape
    from kgraph.ir.ops.split import split
    a = node.attrs
    steps, init = a["steps"], len(node.inputs) > 2
    first = 3 if a["sequences"] else 2
    _, n = _step_slots(steps, first)
    gh, gc = gy[0], gy[1]
    g_seq = gy[2] if a["sequences"] else None
    if gh is None and gc is None and g_seq is None:
        return [None] * len(node.inputs)
    x, kern = node.inputs[0], node.inputs[1]
    grads = [v for v in (gh, gc, g_seq) if v is not None]
    res = emit("lstm_sequence_grad", kern, *node.outputs[first:n], node.outputs[0], *node.inputs[2:], *grads,
               steps=steps, reverse=a["reverse"], init=init, bias=a["bias"], has_gh=gh is not None,
               has_gc=gc is not None, has_gseq=g_seq is not None)
    d_k = res[0]
    d_states = list(res[1:3]) if init else []
    dz = res[3:] if init else res[1:]  # time order
    # dx as IR ops, so that it disappears when nothing needs it (a first layer)
    u4 = kern.shape[1]
    features = x.shape[1] // steps
    w = split(kern, (features, kern.shape[0] - features), axis=0)[0]
    dz_all = reshape(concat(list(dz), axis=1) if steps > 1 else dz[0], (-1, u4))
    dx = reshape(matmul(dz_all, swap_last(w)), (-1, steps * features))
    return [dx, d_k] + d_states
