"""Softmax + crossentropy fusion, for training graphs (before autodiff).

    loss = crossentropy(y, softmax(z))   ->   loss = softmax_crossentropy(y, z, p)

p = softmax(z) stays (the model's output, read by metrics and returned); the fused op
computes the same loss from p and differentiates it in z with a closed form, so the
backward pass skips the softmax's and the renormalisation's gradients (about 25 small
kernels per step become about 10). Matched when the softmax and the crossentropy reduce
over the same axis. Guarantee: the loss is unchanged bit for bit; gradients within float
rounding.
"""
from __future__ import annotations

from kgraph.passes.infra import graph_pass, matches


def match(graph, nid):
    """(y, z, p) for a crossentropy node reading a softmax over its axis, or the reason
    the pattern does not apply (a str)."""
    data = graph.g.nodes[nid]
    if data["op"] != "crossentropy":
        return "not a crossentropy"
    y, p = graph.node_inputs(nid)
    src = graph.g.nodes[p.node]
    if src["op"] != "softmax":
        return "the probabilities do not come from a softmax"
    if src["attrs"]["axis"] % p.type.rank != data["attrs"]["axis"]:
        return "the softmax and the crossentropy reduce over different axes"
    (z,) = graph.node_inputs(p.node)
    return y, z, p


@graph_pass("fuse_softmax_crossentropy")
def fuse_softmax_crossentropy(graph) -> bool:
    """Rewrites crossentropy(y, softmax(z)) to softmax_crossentropy(y, z, p). Loss unchanged."""
    changed = False
    for nid, m in matches(graph, match):
        attrs = graph.g.nodes[nid]["attrs"]
        (fused,) = graph.add_node("softmax_crossentropy", list(m), dict(attrs))
        graph.replace_uses(graph.node_outputs(nid)[0], fused)
        graph.remove_node(nid)
        changed = True
    return changed
