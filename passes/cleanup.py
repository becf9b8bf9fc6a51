"""Clean-up passes.

dead_code_elimination: removes every node no graph output depends on; graph inputs stay
  (they are the graph's interface). Guarantee: outputs unchanged.
remove_identities: readers of `identity(x)` read x instead (Dropout at inference is an
  identity). Guarantee: outputs unchanged; an output that is an identity of a graph input
  keeps its node (an ONNX output cannot be an input).
"""
from __future__ import annotations

import networkx as nx

from kgraph.passes.infra import graph_pass


@graph_pass("dead_code_elimination")
def dead_code_elimination(graph) -> bool:
    """Removes nodes that no output depends on. Outputs unchanged."""
    live = set()
    for _, v in graph.outputs:
        live.add(v.node)
        live |= nx.ancestors(graph.g, v.node)
    keep_inputs = {v.node for v in graph.inputs}
    dead = [n for n in graph.g.nodes if n not in live and n not in keep_inputs]
    for n in dead:
        graph.remove_node(n)
    return bool(dead)


@graph_pass("remove_identities")
def remove_identities(graph) -> bool:
    """Bypasses identity nodes. Outputs unchanged."""
    changed = False
    for nid in list(graph.topological_order()):
        if graph.g.nodes[nid]["op"] != "identity":
            continue
        (src,) = graph.node_inputs(nid)
        out = graph.node_outputs(nid)[0]
        if any(v == out for _, v in graph.outputs) and graph.g.nodes[src.node]["op"] == "input":
            continue
        graph.replace_uses(out, src)
        graph.remove_node(nid)
        changed = True
    return changed
