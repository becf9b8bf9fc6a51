"""Dense+Activation fusion: matmul + bias add (+ activation) -> one `dense` op.

    y = act(add(matmul(x, W), b))   ->   y = dense(x, W, b; act)

Matched when W is a matrix, b a vector over the last axis, the matmul's and the add's
outputs each have exactly one reader, and act is one the fused op supports (relu,
sigmoid, tanh; anything else fuses matmul+add as 'linear' and keeps the activation).
Guarantee: outputs (and gradients derived afterwards) unchanged within float rounding.
"""
from __future__ import annotations

from kgraph.ir.ops.fused import FUSABLE_ACTIVATIONS
from kgraph.passes.infra import graph_pass, matches


def _single_reader(graph, v):
    readers = graph.consumers(v)
    is_output = any(o == v for _, o in graph.outputs)
    return readers[0] if len(readers) == 1 and not is_output else None


def match(graph, nid):
    """(x, W, b, act node or None, the value to replace) for a matmul node, or the reason
    the pattern does not apply (a str)."""
    data = graph.g.nodes[nid]
    if data["op"] != "matmul":
        return "not a matmul"
    x, w = graph.node_inputs(nid)
    mm = graph.node_outputs(nid)[0]
    if w.type.rank != 2:
        return "the weight is not a matrix"
    reader = _single_reader(graph, mm)
    if reader is None:
        return "the matmul's output has several readers (or is a graph output)"
    add_id, slot = reader
    if graph.g.nodes[add_id]["op"] != "add":
        return "the matmul is not followed by a bias add"
    b = graph.node_inputs(add_id)[1 - slot]
    if b.type.rank != 1 or b.shape[0] != w.shape[1]:
        return "the added tensor is not a bias vector over the last axis"
    z = graph.node_outputs(add_id)[0]
    act_node, out = None, z
    reader = _single_reader(graph, z)
    if reader is not None and graph.g.nodes[reader[0]]["op"] in FUSABLE_ACTIVATIONS:
        act_node = reader[0]
        out = graph.node_outputs(act_node)[0]
    return x, w, b, act_node, add_id, out


@graph_pass("fuse_dense_activation")
def fuse_dense_activation(graph) -> bool:
    """Fuses matmul + bias add (+ relu/sigmoid/tanh) into `dense`. Outputs unchanged."""
    changed = False
    for nid, (x, w, b, act_node, add_id, out) in matches(graph, match):
        act = graph.g.nodes[act_node]["op"] if act_node is not None else "linear"
        (fused,) = graph.add_node("dense", [x, w, b], {"activation": act})
        graph.replace_uses(out, fused)
        for dead in ([act_node] if act_node is not None else []) + [add_id, nid]:
            graph.remove_node(dead)
        changed = True
    return changed
