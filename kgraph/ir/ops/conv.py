"""Convolution and pooling in ONNX's channels-first layout (N, C, *spatial), any spatial rank.

The IR keeps ONNX's layout so that each op lowers to one standard node and every
gradient is a standard-op formula; Keras layers (channels_last) emit the explicit
`transpose` ops around them, where a layout pass or onnxruntime's transpose optimizer
can cancel adjacent pairs. Padding is always explicit: `pads` = begins then ends
(ONNX order); `same_pads` computes Keras/TensorFlow's SAME (extra pixel at the end).

  conv(x, w[, b]):            dx = conv_transpose(g, w) with output_padding restoring x's size
                              dw = conv(x^T, g^T, strides<->dilations), sliced to the kernel
                              db = sum of g over batch and space
  conv_transpose(x, w[, b]):  dx = conv(g, w); dw = the same filter gradient with x and g
                              swapped (it is conv's adjoint); db as conv
  max_pool:  dx = g routed to every window position equal to the window's max
             (masks built from strided views; ties each receive g), so no MaxPool
             Indices output is needed (it is slow, and onnx.reference gets it wrong
             for stride 1)
  avg_pool (padding excluded from the count, as Keras):
             dx = conv_transpose(g / count, ones) per channel
"""
from __future__ import annotations

import numpy as np

from kgraph.ir.graph import TensorType
from kgraph.ir.ops.core import coerce, emit
from kgraph.ir.registry import define


# ---- sizes -----------------------------------------------------------------------
def effective_kernel(k: int, d: int) -> int:
    return (k - 1) * d + 1


def same_pads(size, k, s, d=1):
    """SAME_UPPER (TensorFlow/Keras 'same'): output ceil(size/s), the odd pixel at the end.
    With stride 1 the pads do not depend on the size, so `size` may be None."""
    ke = effective_kernel(k, d)
    if size is None:
        if s != 1:
            raise ValueError(f"padding='same' with stride {s} needs a static input size")
        total = ke - 1
    else:
        out = -(-size // s)
        total = max((out - 1) * s + ke - size, 0)
    return total // 2, total - total // 2


def conv_out_size(size, k, s, d, pb, pe):
    if size is None:
        return None
    return (size + pb + pe - effective_kernel(k, d)) // s + 1


def _split_pads(pads):
    n = len(pads) // 2
    return list(zip(pads[:n], pads[n:]))


def _check_attrs(op, nsp, attrs, names):
    for name in names:
        if len(attrs[name]) != (2 * nsp if name == "pads" else nsp):
            raise ValueError(f"op '{op}': attribute {name}={attrs[name]} does not match "
                             f"{nsp} spatial dimensions")


def _spatial_static(v, what):
    if None in v.shape[2:]:
        raise ValueError(f"{what} needs static spatial sizes, received {v.type}")
    return v.shape[2:]


# ---- conv ------------------------------------------------------------------------
def _conv_infer(types, attrs):
    x, w = types[0], types[1]
    nsp = x.rank - 2
    if nsp < 1 or w.rank != x.rank:
        raise ValueError(f"op 'conv': input {x} and weight {w} need the same rank >= 3")
    _check_attrs("conv", nsp, attrs, ("strides", "dilations", "pads"))
    g = attrs["groups"]
    c, m, cg = x.shape[1], w.shape[0], w.shape[1]
    if c is not None and cg is not None and c != cg * g:
        raise ValueError(f"op 'conv': input has {c} channels, weight {w} with groups={g} "
                         f"expects {cg * g}")
    if m is not None and m % g:
        raise ValueError(f"op 'conv': {m} output channels not divisible by groups={g}")
    if len(types) == 3 and types[2].shape != (m,):
        raise ValueError(f"op 'conv': bias {types[2]} does not match {m} output channels")
    out = []
    for i, (pb, pe) in enumerate(_split_pads(attrs["pads"])):
        k = w.shape[2 + i]
        o = conv_out_size(x.shape[2 + i], k, attrs["strides"][i], attrs["dilations"][i], pb, pe)
        if o is not None and o < 1:
            raise ValueError(f"op 'conv': output size {o} on spatial axis {i} (input {x}, "
                             f"kernel {w}, {attrs})")
        out.append(o)
    return [TensorType((x.shape[0], m, *out), x.dtype)]


def _conv_lower(ctx, node, ins, outs):
    a = node.attrs
    ctx.node("Conv", ins, outs, strides=list(a["strides"]), dilations=list(a["dilations"]),
             pads=list(a["pads"]), group=a["groups"],
             kernel_shape=list(node.inputs[1].shape[2:]))


CONV = define("conv", _conv_infer, _conv_lower)


def _ints(v, n):
    return tuple(int(i) for i in ((v,) * n if isinstance(v, (int, np.integer)) else v))


def conv(x, w, b=None, strides=1, dilations=1, pads=0, groups=1):
    """ONNX Conv: x (N, C, *sp), w (M, C/groups, *k), optional bias (M,)."""
    vals = coerce(x, w) if b is None else coerce(x, w, b)
    nsp = vals[0].type.rank - 2
    return emit("conv", *vals, strides=_ints(strides, nsp), dilations=_ints(dilations, nsp),
                pads=_ints(pads, 2 * nsp), groups=int(groups))


# ---- conv_transpose ----------------------------------------------------------------
def _conv_transpose_infer(types, attrs):
    x, w = types[0], types[1]
    nsp = x.rank - 2
    if nsp < 1 or w.rank != x.rank:
        raise ValueError(f"op 'conv_transpose': input {x} and weight {w} need the same rank >= 3")
    _check_attrs("conv_transpose", nsp, attrs, ("strides", "dilations", "pads", "output_padding"))
    g = attrs["groups"]
    if x.shape[1] is not None and w.shape[0] is not None and x.shape[1] != w.shape[0]:
        raise ValueError(f"op 'conv_transpose': input has {x.shape[1]} channels, weight {w} "
                         f"expects {w.shape[0]}")
    m = None if w.shape[1] is None else w.shape[1] * g
    if len(types) == 3 and types[2].shape != (m,):
        raise ValueError(f"op 'conv_transpose': bias {types[2]} does not match {m} output channels")
    out = []
    for i, (pb, pe) in enumerate(_split_pads(attrs["pads"])):
        s, op = attrs["strides"][i], attrs["output_padding"][i]
        if not 0 <= op < max(s, attrs["dilations"][i]):
            raise ValueError(f"op 'conv_transpose': output_padding {op} must be in [0, stride)")
        h = x.shape[2 + i]
        ke = effective_kernel(w.shape[2 + i], attrs["dilations"][i])
        o = None if h is None else s * (h - 1) + op + ke - pb - pe
        if o is not None and o < 1:
            raise ValueError(f"op 'conv_transpose': output size {o} on spatial axis {i}")
        out.append(o)
    return [TensorType((x.shape[0], m, *out), x.dtype)]


def _conv_transpose_lower(ctx, node, ins, outs):
    """One ConvTranspose node. With groups of more than one channel it is split per
    group: onnx.reference's grouped ConvTranspose is only right for one input and one
    output channel per group (checked against onnxruntime and a NumPy loop)."""
    a = node.attrs
    x, w = node.inputs[0], node.inputs[1]
    g = a["groups"]
    attrs = dict(strides=list(a["strides"]), dilations=list(a["dilations"]), pads=list(a["pads"]),
                 output_padding=list(a["output_padding"]), kernel_shape=list(w.shape[2:]))
    if g == 1 or (w.shape[0] == g and w.shape[1] == 1):
        ctx.node("ConvTranspose", ins, outs, group=g, **attrs)
        return
    xs = [ctx.fresh("x") for _ in range(g)]
    ws = [ctx.fresh("w") for _ in range(g)]
    ys = [ctx.fresh("y") for _ in range(g)]
    ctx.node("Split", [ins[0]], xs, axis=1, num_outputs=g)
    ctx.node("Split", [ins[1]], ws, axis=0, num_outputs=g)
    bs = [[] for _ in range(g)]
    if len(ins) == 3:
        bs = [[ctx.fresh("b")] for _ in range(g)]
        ctx.node("Split", [ins[2]], [b[0] for b in bs], axis=0, num_outputs=g)
    for xi, wi, bi, yi in zip(xs, ws, bs, ys):
        ctx.node("ConvTranspose", [xi, wi, *bi], [yi], group=1, **attrs)
    ctx.node("Concat", ys, outs, axis=1)


CONV_TRANSPOSE = define("conv_transpose", _conv_transpose_infer, _conv_transpose_lower)


def conv_transpose(x, w, b=None, strides=1, dilations=1, pads=0, output_padding=0, groups=1):
    """ONNX ConvTranspose: x (N, C, *sp), w (C, M/groups, *k), optional bias (M,)."""
    vals = coerce(x, w) if b is None else coerce(x, w, b)
    nsp = vals[0].type.rank - 2
    return emit("conv_transpose", *vals, strides=_ints(strides, nsp),
                dilations=_ints(dilations, nsp), pads=_ints(pads, 2 * nsp),
                output_padding=_ints(output_padding, nsp), groups=int(groups))


# ---- gradients of conv / conv_transpose --------------------------------------------
def _spatial_axes(v):
    return tuple(range(2, v.type.rank))


def _bias_grad(g):
    from kgraph.ir.ops.reduce import reduce_sum
    return reduce_sum(g, axes=(0,) + _spatial_axes(g))


def filter_grad(x, gy, kernel, strides, dilations, pads, groups):
    """d loss / d w for y = conv(x, w): a convolution of x with gy as the kernel.

    Batch and channels swap roles (x becomes (C/g, g*N, *sp), gy (M, N, *sp_out)); the
    forward strides become dilations and vice versa. The result can be larger than the
    kernel (trailing input rows no output reads) and is sliced to it."""
    from kgraph.ir.ops.shape import reshape, slice_, transpose
    nsp = x.type.rank - 2
    sp = tuple(range(2, 2 + nsp))
    c = x.shape[1]
    cg = c // groups
    if groups == 1:
        xt = transpose(x, (1, 0) + sp)
    else:
        spatial = _spatial_static(x, "the kernel gradient of a grouped convolution")
        xt = reshape(x, (-1, groups, cg) + spatial)
        xt = transpose(xt, (2, 1, 0) + tuple(range(3, 3 + nsp)))
        xt = reshape(xt, (cg, -1) + spatial)
    gt = transpose(gy, (1, 0) + sp)
    _spatial_static(gy, "the kernel gradient of a convolution")
    r = conv(xt, gt, strides=dilations, dilations=strides, pads=pads, groups=groups)
    if tuple(r.shape[2:]) != tuple(kernel):
        r = slice_(r, axes=sp, starts=(0,) * nsp, ends=tuple(kernel))
    return transpose(r, (1, 0) + sp)


def _restoring_padding(size, k, s, d, pb, pe, what):
    """output_padding that makes conv_transpose give back `size` (the forward input)."""
    if s == 1:
        return 0
    if size is None:
        raise ValueError(f"{what} with stride {s} needs static spatial sizes")
    return (size + pb + pe - effective_kernel(k, d)) % s


@CONV.gradient
def _(node, gy):
    x, w = node.inputs[0], node.inputs[1]
    a = node.attrs
    g = gy[0]
    kernel = w.shape[2:]
    op = tuple(_restoring_padding(x.shape[2 + i], k, a["strides"][i], a["dilations"][i], pb, pe,
                                  "the input gradient of 'conv'")
               for i, (k, (pb, pe)) in enumerate(zip(kernel, _split_pads(a["pads"]))))
    dx = conv_transpose(g, w, strides=a["strides"], dilations=a["dilations"], pads=a["pads"],
                        output_padding=op, groups=a["groups"])
    dw = filter_grad(x, g, kernel, a["strides"], a["dilations"], a["pads"], a["groups"])
    grads = [dx, dw]
    if len(node.inputs) == 3:
        grads.append(_bias_grad(g))
    return grads


@CONV_TRANSPOSE.gradient
def _(node, gy):
    x, w = node.inputs[0], node.inputs[1]
    a = node.attrs
    g = gy[0]
    dx = conv(g, w, strides=a["strides"], dilations=a["dilations"], pads=a["pads"],
              groups=a["groups"])
    dw = filter_grad(g, x, w.shape[2:], a["strides"], a["dilations"], a["pads"], a["groups"])
    grads = [dx, dw]
    if len(node.inputs) == 3:
        grads.append(_bias_grad(g))
    return grads


# ---- pooling -------------------------------------------------------------------------
def _pool_infer(op):
    def infer(types, attrs):
        (x,) = types
        nsp = x.rank - 2
        if nsp < 1:
            raise ValueError(f"op '{op}' needs an input of rank >= 3, received {x}")
        _check_attrs(op, nsp, attrs, ("kernel", "strides", "pads"))
        out = []
        for i, (pb, pe) in enumerate(_split_pads(attrs["pads"])):
            k = attrs["kernel"][i]
            if pb >= k or pe >= k:
                raise ValueError(f"op '{op}': pads {attrs['pads']} must be smaller than the "
                                 f"window {attrs['kernel']}")
            o = conv_out_size(x.shape[2 + i], k, attrs["strides"][i], 1, pb, pe)
            if o is not None and o < 1:
                raise ValueError(f"op '{op}': window {attrs['kernel']} does not fit input {x}")
            out.append(o)
        return [TensorType(x.shape[:2] + tuple(out), x.dtype)]
    return infer


def _max_pool_lower(ctx, node, ins, outs):
    """One MaxPool node; with stride 1 the padding is an explicit Pad with -inf first:
    onnx.reference's stride-1 MaxPool mishandles asymmetric and 1-D pads."""
    a = node.attrs
    k, s, p = list(a["kernel"]), list(a["strides"]), list(a["pads"])
    if any(p) and all(v == 1 for v in s):
        dt = node.inputs[0].dtype
        padded = ctx.fresh("padded")
        ctx.node("Pad", [ins[0], ctx.const(np.asarray([0, 0] + p[:len(k)] + [0, 0] + p[len(k):], np.int64)),
                         ctx.const(np.asarray(-np.inf, dt))], [padded], mode="constant")
        ins, p = [padded], [0] * len(p)
    ctx.node("MaxPool", ins, outs, kernel_shape=k, strides=s, pads=p)


def _avg_pool_lower(ctx, node, ins, outs):
    a = node.attrs
    ctx.node("AveragePool", ins, outs, kernel_shape=list(a["kernel"]), strides=list(a["strides"]),
             pads=list(a["pads"]), count_include_pad=0)


MAX_POOL = define("max_pool", _pool_infer("max_pool"), _max_pool_lower)
AVG_POOL = define("avg_pool", _pool_infer("avg_pool"), _avg_pool_lower)


def _pool(op, x, kernel, strides, pads):
    (x,) = coerce(x)
    nsp = x.type.rank - 2
    kernel = _ints(kernel, nsp)
    strides = kernel if strides is None else _ints(strides, nsp)
    return emit(op, x, kernel=kernel, strides=strides, pads=_ints(pads, 2 * nsp))


def max_pool(x, kernel, strides=None, pads=0):
    """ONNX MaxPool on (N, C, *sp); padded positions never win."""
    return _pool("max_pool", x, kernel, strides, pads)


def avg_pool(x, kernel, strides=None, pads=0):
    """ONNX AveragePool on (N, C, *sp), count_include_pad=0 (Keras 'same' semantics)."""
    return _pool("avg_pool", x, kernel, strides, pads)


def _fit(v, axis, start, length):
    """The window [start, start+length) of axis, zero-filled where it leaves the tensor."""
    from kgraph.ir.ops.shape import pad, slice_
    n = v.shape[axis]
    lo, hi = start, start + length
    if lo > 0 or hi < n:
        v = slice_(v, axes=(axis,), starts=(max(lo, 0),), ends=(min(hi, n),))
    if lo < 0 or hi > n:
        before = [0] * v.type.rank
        after = [0] * v.type.rank
        before[axis], after[axis] = max(-lo, 0), max(hi - n, 0)
        v = pad(v, before, after)
    return v


@MAX_POOL.gradient
def _(node, gy):
    """Windows are walked in blocks of `stride` positions: block q of every window
    covers offsets q*s .. q*s+s-1, and all windows' blocks q tile a strided slab of x,
    seen as (..., n, s, ...) by a reshape. Each slab is compared with the pooled max;
    offsets past the window (q*s+r >= k) are masked off; the routed gradients are
    placed back and summed. Non-overlapping windows (k == s) take one slab."""
    from kgraph.ir.ops.elementwise import equal
    from kgraph.ir.ops.misc import cast
    from kgraph.ir.ops.shape import pad, reshape
    (x,) = node.inputs
    (y,) = node.outputs
    g = gy[0]
    a = node.attrs
    nsp = x.type.rank - 2
    sizes = _spatial_static(x, "the gradient of 'max_pool'")
    outs = y.shape[2:]
    ks, ss = a["kernel"], a["strides"]
    pads = _split_pads(a["pads"])
    blocks = [-(-k // s) for k, s in zip(ks, ss)]
    span = [(q - 1) * s + n * s for q, s, n in zip(blocks, ss, outs)]
    xp = x
    for i in range(nsp):
        xp = _fit(xp, 2 + i, -pads[i][0], span[i])
    split = (0, 0) + tuple(d for n, s in zip(outs, ss) for d in (n, s))
    expand_at = (0, 0) + tuple(d for n in outs for d in (n, 1))
    y6, g6 = reshape(y, expand_at), reshape(g, expand_at)
    total = None
    for q in np.ndindex(*blocks):
        slab = xp
        for i in range(nsp):
            slab = _fit(slab, 2 + i, q[i] * ss[i], outs[i] * ss[i])
        mask = cast(equal(reshape(slab, split), y6), x.dtype)
        valid = np.ones((1, 1) + tuple(d for s in ss for d in (1, s)), x.dtype)
        for i in range(nsp):
            r = np.arange(ss[i]) + q[i] * ss[i] < ks[i]
            shape = [1] * valid.ndim
            shape[3 + 2 * i] = ss[i]
            valid = valid * r.reshape(shape).astype(x.dtype)
        if not valid.all():
            mask = mask * x.graph.const(valid)
        part = reshape(mask * g6, (0, 0) + tuple(n * s for n, s in zip(outs, ss)))
        before = [0, 0] + [q[i] * ss[i] for i in range(nsp)]
        after = [0, 0] + [span[i] - q[i] * ss[i] - outs[i] * ss[i] for i in range(nsp)]
        if any(before) or any(after):
            part = pad(part, before, after)
        total = part if total is None else total + part
    for i in range(nsp):
        total = _fit(total, 2 + i, pads[i][0], sizes[i])
    return [total]


def pool_counts(sizes, kernel, strides, pads):
    """How many real (unpadded) inputs each average-pool window covers, (1, 1, *out)."""
    per_axis = []
    for n, k, s, (pb, pe) in zip(sizes, kernel, strides, pads):
        starts = np.arange(conv_out_size(n, k, s, 1, pb, pe)) * s - pb
        per_axis.append(np.minimum(starts + k, n) - np.maximum(starts, 0))
    counts = per_axis[0]
    for c in per_axis[1:]:
        counts = np.multiply.outer(counts, c)
    return counts.reshape((1, 1) + counts.shape)


@AVG_POOL.gradient
def _(node, gy):
    (x,) = node.inputs
    a = node.attrs
    sizes = _spatial_static(x, "the gradient of 'avg_pool'")
    channels = x.shape[1]
    pads = _split_pads(a["pads"])
    counts = pool_counts(sizes, a["kernel"], a["strides"], pads)
    ones = x.graph.const(np.ones((channels, 1) + tuple(a["kernel"]), x.dtype))
    op = tuple(_restoring_padding(n, k, s, 1, pb, pe, "the gradient of 'avg_pool'")
               for n, k, s, (pb, pe) in zip(sizes, a["kernel"], a["strides"], pads))
    scaled = gy[0] / x.graph.const(counts.astype(x.dtype))
    return [conv_transpose(scaled, ones, strides=a["strides"], pads=a["pads"], output_padding=op,
                           groups=channels)]
