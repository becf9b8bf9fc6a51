"""Folding per-channel affine ops into the convolution or dense layer before them — this
is BatchNormalization folding at inference, where BN is x*scale + shift with constants.

  conv(x, W, b) * c  -> conv(x, W*c, b*c)     c constant per output channel (or scalar)
  conv(x, W, b) + c  -> conv(x, W, b + c)     (and - c, / c as + (-c), * (1/c))
  dense(x, W, b; linear) * c / + c  likewise, c per output unit

Requires constant weights (frozen, inference and serving only) and a conv/dense output
with one reader. Guarantee: outputs unchanged within float rounding.
"""
from __future__ import annotations

import numpy as np

from kgraph.passes.infra import graph_pass


def _const(graph, v):
    d = graph.g.nodes[v.node]
    return d["attrs"]["value"] if d["op"] == "const" else None


def _per_channel(c, out_type, channel_axis):
    """c as a vector over the output channels, or None when it is not per-channel."""
    c = np.asarray(c)
    rank = len(out_type.shape)
    if c.ndim > rank:
        return None
    full = c.reshape((1,) * (rank - c.ndim) + c.shape)
    channels = out_type.shape[channel_axis]
    for i, d in enumerate(full.shape):
        if i != channel_axis and d != 1:
            return None
    vec = full.reshape(-1) if full.shape[channel_axis] != 1 else np.repeat(full.reshape(-1), channels)
    return vec if vec.shape == (channels,) else None


def _producer_kind(graph, nid):
    d = graph.g.nodes[nid]
    if d["op"] in ("conv", "conv_transpose"):
        return d["op"], 1
    if d["op"] == "dense" and d["attrs"]["activation"] == "linear":
        return "dense", -1
    return None, None


@graph_pass("fold_affine_into_conv", fixed_point=True)
def fold_affine_into_conv(graph) -> bool:
    """Folds per-channel multiply/add by constants into the preceding conv or linear dense
    (BatchNormalization folding). Outputs unchanged within float rounding."""
    changed = False
    for nid in list(graph.topological_order()):
        if nid not in graph.g or graph.g.nodes[nid]["op"] not in ("mul", "add", "sub", "div"):
            continue
        op = graph.g.nodes[nid]["op"]
        a, b = graph.node_inputs(nid)
        for slot, (y, c) in enumerate(((a, b), (b, a))):
            if op in ("sub", "div") and slot == 1:
                break  # c - y and c / y are not affine in y's weights
            kind, axis = _producer_kind(graph, y.node)
            cval = _const(graph, c)
            if kind is None or cval is None:
                continue
            readers = graph.consumers(y)
            if len(readers) != 1 or any(o == y for _, o in graph.outputs):
                continue
            ins = graph.node_inputs(y.node)
            w = _const(graph, ins[1])
            bias = _const(graph, ins[2]) if len(ins) == 3 else None
            if w is None or (len(ins) == 3 and bias is None):
                continue
            vec = _per_channel(cval, y.type, axis if axis >= 0 else len(y.shape) - 1)
            if vec is None or (kind == "conv_transpose" and graph.g.nodes[y.node]["attrs"]["groups"] != 1):
                continue
            vec = vec.astype(w.dtype)
            if op == "sub":
                vec, op_eff = -vec, "add"
            elif op == "div":
                vec, op_eff = 1.0 / vec, "mul"
            else:
                op_eff = op
            channels = len(vec)
            bias = np.zeros(channels, w.dtype) if bias is None else bias
            if op_eff == "mul":
                if kind == "conv":
                    w = w * vec.reshape((-1,) + (1,) * (w.ndim - 1))
                elif kind == "conv_transpose":
                    w = w * vec.reshape((1, -1) + (1,) * (w.ndim - 2))
                else:
                    w = w * vec.reshape(1, -1)
                bias = bias * vec
            else:
                bias = bias + vec
            attrs = dict(graph.g.nodes[y.node]["attrs"])
            new_ins = [ins[0], graph.const(w.astype(ins[1].dtype)), graph.const(bias.astype(ins[1].dtype))]
            (folded,) = graph.add_node(graph.g.nodes[y.node]["op"], new_ins, attrs)
            graph.replace_uses(graph.node_outputs(nid)[0], folded)
            graph.remove_node(nid)
            graph.remove_node(y.node)
            changed = True
            break
    return changed
