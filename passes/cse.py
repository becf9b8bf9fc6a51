"""Common sub-expression elimination.

Two nodes with the same op, the same attributes and the same inputs compute the same
values, unless the op is random: the later one's readers read the earlier one. Equal
constants are merged too. Guarantee: outputs unchanged; random ops (dropout, noise)
are never merged, since each draws its own values.
"""
from __future__ import annotations

import numpy as np

from kgraph.passes.infra import graph_pass

RANDOM_OPS = {"dropout", "random_normal_like"}


def _freeze(value):
    if isinstance(value, np.ndarray):
        return ("nd", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@graph_pass("common_subexpression_elimination")
def common_subexpression_elimination(graph) -> bool:
    """Merges duplicate deterministic computations. Outputs unchanged."""
    seen: dict = {}
    changed = False
    for nid in graph.topological_order():
        data = graph.g.nodes[nid]
        if data["op"] in RANDOM_OPS or data["op"] == "input":
            continue
        key = (data["op"], _freeze(data["attrs"]),
               tuple((v.node, v.index) for v in graph.node_inputs(nid)))
        first = seen.setdefault(key, nid)
        if first == nid:
            continue
        for old, new in zip(graph.node_outputs(nid), graph.node_outputs(first)):
            graph.replace_uses(old, new)
        graph.remove_node(nid)
        changed = True
    return changed
