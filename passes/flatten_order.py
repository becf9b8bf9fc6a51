"""Flatten order into the weight: a batch-innermost image flattened for a dense layer.

After conv_training_lowering a conv stack computes in (C, H, W, N); Keras's Flatten wants
(N, H, W, C) order, so the dense layer reads

    dense(f(reshape(transpose(x, (3, 1, 2, 0)), (N, H*W*C))), W, b)     f: elementwise ops
 -> dense(f(reshape(transpose(x, (3, 0, 1, 2)), (N, C*H*W))), W', b)
    W' = W's rows reordered from (h, w, c) to (c, h, w)

onnxruntime's transpose that also reorders the feature axes runs at about 5 ns per element
(measured 1,056 us for 64x5x5x128), the one that only moves the batch to the front at
about 0.7 ns (136 us); the weight's reordering is a transpose of the small weight, and
the same holds for the gradients. Any perm that moves the last axis to the front is
handled the same way. Elementwise ops between (dropout, activations) see the features in
another order: the same values for deterministic ops; dropout draws its independent mask
in the new order. Guarantee: outputs unchanged within float rounding (dropout's random
draws aside).
"""
from __future__ import annotations

import numpy as np

from kgraph.passes.infra import graph_pass, matches
from kgraph.passes.layout import ELEMENTWISE_UNARY, _only_reader

PASS_THROUGH = ELEMENTWISE_UNARY | {"dropout"}


def match(graph, nid):
    """(transpose node, reshape node, dense/matmul node) for a transpose that moves the last
    axis to the front and reorders the rest, flattened and read by a dense layer through
    elementwise ops only; else the reason it does not apply (a str)."""
    data = graph.g.nodes[nid]
    if data["op"] != "transpose":
        return "not a transpose"
    perm = tuple(data["attrs"]["perm"])
    (x,) = graph.node_inputs(nid)
    r = len(perm)
    if r < 3 or perm[0] != r - 1:
        return "the transpose does not move the last axis to the front"
    if perm[1:] == tuple(range(r - 1)):
        return "the feature axes keep their order already"
    if None in x.shape[:-1]:
        return "dynamic feature sizes"
    reader = _only_reader(graph, graph.node_outputs(nid)[0])
    if reader is None or graph.g.nodes[reader[0]]["op"] != "reshape":
        return "not read by one reshape only"
    rid = reader[0]
    flat = graph.node_outputs(rid)[0]
    features = int(np.prod(x.shape[:-1]))
    if len(flat.shape) != 2 or flat.shape[1] != features or flat.shape[0] is not None:
        return "the reshape does not flatten the features of a batch"
    v = flat
    while True:
        reader = _only_reader(graph, v)
        if reader is None:
            return "the flattened features have several readers (or are an output)"
        cid, slot = reader
        op = graph.g.nodes[cid]["op"]
        if op in ("dense", "matmul") and slot == 0:
            w = graph.node_inputs(cid)[1]
            if w.type.rank != 2 or w.shape[0] != features or w.shape[1] is None:
                return "the dense weight is not a (features, units) matrix"
            return nid, rid, cid
        if op not in PASS_THROUGH:
            return f"the features reach a '{op}' before a dense layer"
        v = graph.node_outputs(cid)[0]


@graph_pass("flatten_order_into_weight")
def flatten_order_into_weight(graph) -> bool:
    """Moves a flatten's feature reordering from the batch-sized transpose into the dense
    weight. Outputs unchanged within float rounding."""
    from kgraph.ir import ops
    changed = False
    with ops.building(graph):
        for _, (tid, rid, did) in matches(graph, match):
            perm = tuple(graph.g.nodes[tid]["attrs"]["perm"])
            (x,) = graph.node_inputs(tid)
            r = len(perm)
            fast = ops.transpose(x, (r - 1,) + tuple(range(r - 1)))
            flat = ops.reshape(fast, graph.g.nodes[rid]["attrs"]["shape"])
            graph.replace_uses(graph.node_outputs(rid)[0], flat)
            graph.remove_node(rid)
            graph.remove_node(tid)
            ins = graph.node_inputs(did)
            w = ins[1]
            units = w.shape[1]
            old_dims = [x.shape[a] for a in perm[1:]]           # W's rows: features in perm order
            axes = tuple(list(perm[1:]).index(j) for j in range(r - 1)) + (r - 1,)
            w_new = ops.reshape(ops.transpose(ops.reshape(w, tuple(old_dims) + (units,)), axes),
                                (int(np.prod(old_dims)), units))
            data = graph.g.nodes[did]
            (out,) = graph.add_node(data["op"], [ins[0], w_new] + ins[2:], dict(data["attrs"]))
            graph.replace_uses(graph.node_outputs(did)[0], out)
            graph.remove_node(did)
            changed = True
    return changed
