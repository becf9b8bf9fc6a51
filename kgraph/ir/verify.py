"""`verify(ir)`: the one validity check every pass's test runs after rewriting."""
from __future__ import annotations

import networkx as nx

from kgraph.ir.registry import get_op


class IRError(ValueError):
    pass


def verify(graph) -> None:
    """Raises IRError unless the graph is acyclic, every input slot of every node is fed
    exactly once, every node's types agree with its op's shape rule, and the outputs exist."""
    g = graph.g
    if not nx.is_directed_acyclic_graph(g):
        raise IRError(f"graph '{graph.name}' has a cycle")
    for nid, d in g.nodes(data=True):
        slots = sorted(e[2]["dst_in"] for e in g.in_edges(nid, data=True))
        if slots != list(range(len(slots))):
            raise IRError(f"node %{nid} ({d['op']}) has input slots {slots}")
        for src, _, e in g.in_edges(nid, data=True):
            if e["src_out"] >= len(g.nodes[src]["types"]):
                raise IRError(f"node %{nid} reads missing output {e['src_out']} of %{src}")
        if d["op"] in ("input", "const"):
            if slots:
                raise IRError(f"source node %{nid} ({d['op']}) has inputs")
            continue
        inferred = get_op(d["op"]).infer([v.type for v in graph.node_inputs(nid)], d["attrs"])
        if list(inferred) != list(d["types"]):
            raise IRError(f"node %{nid} ({d['op']}): stored types {d['types']} differ from "
                          f"the shape rule's {inferred}")
    for name, v in graph.outputs:
        if v.node not in g:
            raise IRError(f"output '{name}' refers to a removed node %{v.node}")
