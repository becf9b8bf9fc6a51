"""Conv+Activation fusion: conv (+ bias) followed by relu, sigmoid or tanh -> `conv_act`.

    y = act(conv(x, W, b))   ->   y = conv_act(x, W, b; act)

Matched when the conv's output has exactly one reader, that reader is one of the
activations the fused op supports, and the conv is not a transposed one. The fused op's
gradient reads the activation output. Guarantee: outputs (and gradients) unchanged.
"""
from __future__ import annotations

from kgraph.ir.ops.fused import FUSED_CONV_ACTIVATIONS
from kgraph.passes.infra import graph_pass


def match(graph, nid):
    """(activation node) for a conv node, or the reason the pattern does not apply."""
    if graph.g.nodes[nid]["op"] != "conv":
        return "not a conv"
    out = graph.node_outputs(nid)[0]
    readers = graph.consumers(out)
    if len(readers) != 1 or any(o == out for _, o in graph.outputs):
        return "the conv's output has several readers (or is a graph output)"
    act = readers[0][0]
    if graph.g.nodes[act]["op"] not in FUSED_CONV_ACTIVATIONS:
        return f"the conv is followed by '{graph.g.nodes[act]['op']}', not a fusable activation"
    return act


@graph_pass("fuse_conv_activation")
def fuse_conv_activation(graph) -> bool:
    """Fuses conv + relu/sigmoid/tanh into `conv_act`. Outputs unchanged."""
    changed = False
    for nid in list(graph.topological_order()):
        if nid not in graph.g or graph.g.nodes[nid]["op"] != "conv":
            continue
        act = match(graph, nid)
        if isinstance(act, str):
            continue
        attrs = dict(graph.g.nodes[nid]["attrs"], activation=graph.g.nodes[act]["op"])
        (fused,) = graph.add_node("conv_act", graph.node_inputs(nid), attrs)
        graph.replace_uses(graph.node_outputs(act)[0], fused)
        graph.remove_node(act)
        graph.remove_node(nid)
        changed = True
    return changed
