"""Layout: transposes move down the graph and cancel.

Keras is channels_last and ONNX's Conv/Pool are channels-first, so each conv or pool
layer is lowered between a transpose in and a transpose out. This pass makes a stack of
such layers keep one transpose in and one out:

  transpose(transpose(x, p), q)   -> x                 when q∘p is the identity
                                  -> transpose(x, q∘p) otherwise
  f(transpose(x, p))              -> transpose(f(x), p)  f elementwise, one reader
  f(transpose(x, p), c)           -> transpose(f(x, c'), p)  c constant, c' = c permuted
  f(transpose(a, p), transpose(b, p)) -> transpose(f(a, b), p)
  reduce(transpose(x, p), axes)   -> reduce(x, p[axes]) (+ the transpose left on kept axes)
  a transpose with several readers, one of which undoes it, is copied per reader first

Guarantee: outputs unchanged (a transpose is only moved or removed, never changed in
meaning); a transpose whose output has several readers or is a graph output stays.
"""
from __future__ import annotations

import numpy as np

from kgraph.passes.infra import graph_pass

ELEMENTWISE_UNARY = {"relu", "sigmoid", "tanh", "neg", "exp", "log", "sqrt", "abs", "clip", "elu",
                     "selu", "leaky_relu", "softplus", "erf", "identity", "cast"}
ELEMENTWISE_BINARY = {"add", "sub", "mul", "div", "maximum", "minimum", "pow"}
REDUCTIONS = {"reduce_sum", "reduce_mean", "reduce_max", "reduce_min"}


def _only_reader(graph, v):
    readers = graph.consumers(v)
    if len(readers) != 1 or any(o == v for _, o in graph.outputs):
        return None
    return readers[0]


def _op(graph, nid):
    return graph.g.nodes[nid]["op"]


def _permute_const(value, perm):
    """A constant broadcast against transpose(x, perm), re-expressed against x."""
    arr = np.asarray(value)
    rank = len(perm)
    if arr.ndim > rank:
        return None
    arr = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
    return np.transpose(arr, np.argsort(perm))


def _cancel_pair(graph, nid):
    (x,) = graph.node_inputs(nid)
    if _op(graph, x.node) != "transpose" or _only_reader(graph, x) is None:
        return False
    (src,) = graph.node_inputs(x.node)
    p = graph.g.nodes[x.node]["attrs"]["perm"]
    q = graph.g.nodes[nid]["attrs"]["perm"]
    composed = tuple(p[i] for i in q)
    out = graph.node_outputs(nid)[0]
    if composed == tuple(range(len(composed))):
        graph.replace_uses(out, src)
    else:
        (new,) = graph.add_node("transpose", [src], {"perm": composed})
        graph.replace_uses(out, new)
    graph.remove_node(nid)
    graph.remove_node(x.node)
    return True


def _split_readers(graph, nid):
    """A transpose read by several nodes, one of them a transpose that undoes it, is copied
    once per reader so each copy can cancel or move on its own (CSE merges what is left)."""
    out = graph.node_outputs(nid)[0]
    readers = graph.consumers(out)
    if len(readers) < 2 or any(o == out for _, o in graph.outputs):
        return False
    perm = graph.g.nodes[nid]["attrs"]["perm"]
    undone = [r for r, _ in readers if _op(graph, r) == "transpose"
              and tuple(perm[i] for i in graph.g.nodes[r]["attrs"]["perm"]) == tuple(range(len(perm)))]
    if not undone:
        return False
    (src,) = graph.node_inputs(nid)
    for rid, slot in readers:
        (copy,) = graph.add_node("transpose", [src], {"perm": perm})
        for _, dst, key, d in list(graph.g.out_edges(nid, keys=True, data=True)):
            if dst == rid and d["dst_in"] == slot:
                graph.g.remove_edge(nid, dst, key)
                graph.g.add_edge(copy.node, dst, src_out=0, dst_in=slot)
    graph.remove_node(nid)
    return True


def _push_down(graph, nid):
    """Moves transpose `nid` below its only reader when that reader is layout-agnostic."""
    (src,) = graph.node_inputs(nid)
    t_out = graph.node_outputs(nid)[0]
    reader = _only_reader(graph, t_out)
    if reader is None:
        return False
    rid, slot = reader
    op = _op(graph, rid)
    perm = graph.g.nodes[nid]["attrs"]["perm"]
    attrs = dict(graph.g.nodes[rid]["attrs"])
    ins = graph.node_inputs(rid)
    if op in ELEMENTWISE_UNARY:
        new_ins = [src]
    elif op in ELEMENTWISE_BINARY:
        other = ins[1 - slot]
        if _op(graph, other.node) == "const":
            c = _permute_const(graph.g.nodes[other.node]["attrs"]["value"], perm)
            if c is None:
                return False
            new_other = graph.const(c.astype(other.dtype))
        elif _op(graph, other.node) == "transpose" and graph.g.nodes[other.node]["attrs"]["perm"] == perm \
                and _only_reader(graph, other) is not None:
            new_other = graph.node_inputs(other.node)[0]
        else:
            return False
        new_ins = [src, new_other] if slot == 0 else [new_other, src]
    elif op in REDUCTIONS:
        axes = attrs["axes"] if attrs["axes"] is not None else tuple(range(len(perm)))
        attrs["axes"] = tuple(sorted(perm[a] for a in axes))
        (reduced,) = graph.add_node(op, [src], attrs)
        if attrs["keepdims"]:
            (new,) = graph.add_node("transpose", [reduced], {"perm": perm})
        else:
            kept = [p for i, p in enumerate(perm) if i not in axes]
            order = tuple(int(i) for i in np.argsort(np.argsort(kept)))
            new = reduced if order == tuple(range(len(order))) else \
                graph.add_node("transpose", [reduced], {"perm": order})[0]
        graph.replace_uses(graph.node_outputs(rid)[0], new)
        graph.remove_node(rid)
        graph.remove_node(nid)
        return True
    else:
        return False
    (moved,) = graph.add_node(op, new_ins, attrs)
    (new,) = graph.add_node("transpose", [moved], {"perm": perm})
    graph.replace_uses(graph.node_outputs(rid)[0], new)
    graph.remove_node(rid)
    graph.remove_node(nid)
    if op in ELEMENTWISE_BINARY and _op(graph, ins[1 - slot].node) == "transpose" and \
            ins[1 - slot].node in graph.g and not graph.consumers(ins[1 - slot]):
        graph.remove_node(ins[1 - slot].node)
    return True


@graph_pass("layout_transposes", fixed_point=True)
def layout_transposes(graph) -> bool:
    """Cancels transpose pairs and pushes transposes below layout-agnostic ops.
    Outputs unchanged."""
    changed, moved = False, True
    while moved:  # each push moves a transpose strictly down, so this ends
        moved = False
        for nid in list(graph.topological_order()):
            if nid not in graph.g or _op(graph, nid) != "transpose":
                continue
            if _cancel_pair(graph, nid) or _push_down(graph, nid) or _split_readers(graph, nid):
                moved = changed = True
    return changed
