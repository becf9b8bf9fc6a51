"""Clean-up passes.

dead_code_elimination: removes every node no graph output depends on; graph inputs stay
  (they are the graph's interface). Guarantee: outputs unchanged.
remove_identities: `identity(x)` readers read x instead (Dropout at inference is an
  identity). Guarantee: outputs unchanged; graph outputs that are identities of graph
  inputs are kept.
"""
from __future__ import annotations

import networkx as nx


def dead_code_elimination(graph) -> bool:
    live = set()
    for _, v in graph.outputs:
        live.add(v.node)
        live |= nx.ancestors(graph.g, v.node)
    keep_inputs = {v.node for v in graph.inputs}
    dead = [n for n in graph.g.nodes if n not in live and n not in keep_inputs]
    for n in dead:
        graph.remove_node(n)
    return bool(dead)


def remove_identities(graph) -> bool:
    changed = False
    for nid in list(graph.topological_order()):
        data = graph.g.nodes[nid]
        if data["op"] != "identity":
            continue
        (src,) = graph.node_inputs(nid)
        out = graph.node_outputs(nid)[0]
        if any(v == out for _, v in graph.outputs) and graph.g.nodes[src.node]["op"] == "input":
            continue
        graph.replace_uses(out, src)
        graph.remove_node(nid)
        changed = True
    return changed
