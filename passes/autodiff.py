"""Reverse-mode automatic differentiation as an IR pass.

`gradients(graph, loss, wrt)` appends the backward graph to `graph` and returns one
gradient Value per entry of `wrt`. It prunes to the nodes that lie on a path from
`wrt` to `loss`, walks them in reverse topological order, calls each op's gradient
rule from the registry, accumulates gradients of tensors with several consumers and
never sends a gradient into an integer or boolean tensor. A missing rule is an error
that names the op.
"""
from __future__ import annotations

import networkx as nx
import numpy as np

from kgraph.ir import ops
from kgraph.ir.graph import Value
from kgraph.ir.registry import NodeView, get_op


class GradientError(ValueError):
    pass


def _is_float(v: Value) -> bool:
    return np.issubdtype(v.dtype, np.floating)


def gradients(graph, loss: Value, wrt: list[Value]) -> list[Value]:
    if loss.shape != ():
        raise GradientError(f"gradients need a scalar loss, received {loss.type}")
    g = graph.g
    wrt_nodes = {v.node for v in wrt}
    downstream = set(wrt_nodes)
    for n in wrt_nodes:
        downstream |= nx.descendants(g, n)
    upstream = nx.ancestors(g, loss.node) | {loss.node}
    active = downstream & upstream

    grads: dict[tuple[int, int], Value] = {(loss.node, loss.index): graph.const(np.ones((), loss.dtype))}
    order = [n for n in nx.lexicographical_topological_sort(g.subgraph(active))]
    with ops.building(graph):
        for nid in reversed(order):
            data = g.nodes[nid]
            if data["op"] in ("input", "const"):
                continue
            n_out = len(data["types"])
            gy = [grads.get((nid, i)) for i in range(n_out)]
            if all(x is None for x in gy):
                continue
            opdef = get_op(data["op"])
            if opdef.nondiff:
                continue
            if opdef.grad is None:
                raise GradientError(f"op '{data['op']}' has no gradient rule (node %{nid})")
            view = NodeView(graph, nid)
            inputs = view.inputs
            gx = opdef.grad(view, gy)
            if len(gx) != len(inputs):
                raise GradientError(f"gradient rule of '{data['op']}' returned {len(gx)} "
                                    f"gradients for {len(inputs)} inputs")
            for slot, (x, gxi) in enumerate(zip(inputs, gx)):
                if gxi is None or slot in opdef.nondiff_inputs or x.node not in active:
                    continue
                if not _is_float(x):
                    continue
                if gxi.shape != x.shape and None not in gxi.shape + x.shape:
                    raise GradientError(f"gradient rule of '{data['op']}' gave shape {gxi.shape} "
                                        f"for input {slot} of shape {x.shape}")
                key = (x.node, x.index)
                grads[key] = gxi if key not in grads else grads[key] + gxi
        out = []
        for v in wrt:
            gv = grads.get((v.node, v.index))
            out.append(gv if gv is not None else ops.zeros_like(v))
    return out
