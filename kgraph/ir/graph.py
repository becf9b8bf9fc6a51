"""The IR: a networkx MultiDiGraph of primitive op instances.

A node is one op instance (`op`, `attrs`, output `types`); an edge carries
`(src_out, dst_in)`. Parameters and data inputs are `input` nodes so that one
compiled graph serves every training step; constants are `const` nodes.
Values (`Value`) are handles to one output of one node and overload the Python
arithmetic operators, so losses and gradient rules read like maths.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import networkx as nx
import numpy as np


@dataclass(frozen=True)
class TensorType:
    shape: tuple  # ints, or None for a dimension unknown until run time (the batch)
    dtype: np.dtype

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __repr__(self):
        dims = ", ".join("None" if d is None else str(d) for d in self.shape)
        return f"{np.dtype(self.dtype).name}[{dims}]"


class Value:
    """One output of one node of a Graph."""

    __slots__ = ("graph", "node", "index")

    def __init__(self, graph: "Graph", node: int, index: int = 0):
        self.graph, self.node, self.index = graph, node, index

    @property
    def type(self) -> TensorType:
        return self.graph.g.nodes[self.node]["types"][self.index]

    @property
    def shape(self) -> tuple:
        return self.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.type.dtype

    @property
    def op(self) -> str:
        return self.graph.g.nodes[self.node]["op"]

    def __hash__(self):
        return hash((self.node, self.index))

    def __eq__(self, other):  # identity of the handle, not an elementwise op
        return isinstance(other, Value) and (self.node, self.index, self.graph) == (
            other.node, other.index, other.graph)

    def __repr__(self):
        return f"Value(%{self.node}:{self.index} {self.op} {self.type})"

    # arithmetic sugar; the functions live in kgraph.ir.ops
    def __add__(self, o): return _ops().add(self, o)
    def __radd__(self, o): return _ops().add(o, self)
    def __sub__(self, o): return _ops().sub(self, o)
    def __rsub__(self, o): return _ops().sub(o, self)
    def __mul__(self, o): return _ops().mul(self, o)
    def __rmul__(self, o): return _ops().mul(o, self)
    def __truediv__(self, o): return _ops().div(self, o)
    def __rtruediv__(self, o): return _ops().div(o, self)
    def __neg__(self): return _ops().neg(self)
    def __matmul__(self, o): return _ops().matmul(self, o)
    def __rmatmul__(self, o): return _ops().matmul(o, self)
    def __pow__(self, o): return _ops().pow(self, o)


def _ops():
    from kgraph.ir import ops
    return ops


class Graph:
    """An ordered-interface wrapper around a MultiDiGraph.

    `inputs` are fed by the caller (data, learning rate, parameters, slots) in
    this order; `outputs` are returned in this order under their names.
    """

    def __init__(self, name: str = "graph"):
        self.name = name
        self.g = nx.MultiDiGraph()
        self._ids = itertools.count()
        self.inputs: list[Value] = []
        self.outputs: list[tuple[str, Value]] = []
        self._const_cache: dict = {}

    # -- construction -------------------------------------------------------
    def add_node(self, op: str, inputs, attrs: dict | None = None, types=None, name=None):
        """Adds one op instance; output types come from the op's shape rule."""
        from kgraph.ir.registry import get_op

        opdef = get_op(op)
        attrs = dict(attrs or {})
        inputs = list(inputs)
        for v in inputs:
            if not isinstance(v, Value) or v.graph is not self:
                raise TypeError(f"op '{op}': inputs must be Values of this graph, received {v!r}")
        if types is None:
            types = opdef.infer([v.type for v in inputs], attrs)
        nid = next(self._ids)
        self.g.add_node(nid, op=op, attrs=attrs, types=list(types), name=name)
        for slot, v in enumerate(inputs):
            self.g.add_edge(v.node, nid, src_out=v.index, dst_in=slot)
        return [Value(self, nid, i) for i in range(len(types))]

    def add_input(self, name: str, shape, dtype) -> Value:
        (v,) = self.add_node("input", [], {"name": name},
                             types=[TensorType(tuple(shape), np.dtype(dtype))])
        self.inputs.append(v)
        return v

    def const(self, value, dtype=None, name=None) -> Value:
        """A constant node; equal values share one node, except named ones (frozen weights
        keep their names as initializers)."""
        arr = np.asarray(value, dtype=dtype)
        if name is not None:
            (v,) = self.add_node("const", [], {"value": arr, "name": name},
                                 types=[TensorType(arr.shape, arr.dtype)])
            return v
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._const_cache:
            (v,) = self.add_node("const", [], {"value": arr},
                                 types=[TensorType(arr.shape, arr.dtype)])
            self._const_cache[key] = v
        return self._const_cache[key]

    def set_outputs(self, named: list[tuple[str, Value]]):
        self.outputs = list(named)

    # -- reading ------------------------------------------------------------
    def node(self, nid: int) -> dict:
        return self.g.nodes[nid]

    def node_inputs(self, nid: int) -> list[Value]:
        edges = sorted(self.g.in_edges(nid, data=True), key=lambda e: e[2]["dst_in"])
        return [Value(self, src, d["src_out"]) for src, _, d in edges]

    def node_outputs(self, nid: int) -> list[Value]:
        return [Value(self, nid, i) for i in range(len(self.g.nodes[nid]["types"]))]

    def consumers(self, v: Value) -> list[tuple[int, int]]:
        """(node, slot) pairs that read `v`."""
        return [(dst, d["dst_in"]) for _, dst, d in self.g.out_edges(v.node, data=True)
                if d["src_out"] == v.index]

    def topological_order(self) -> list[int]:
        return list(nx.lexicographical_topological_sort(self.g))

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, d in self.g.nodes(data=True):
            counts[d["op"]] = counts.get(d["op"], 0) + 1
        return dict(sorted(counts.items()))

    # -- rewriting ----------------------------------------------------------
    def replace_uses(self, old: Value, new: Value):
        """Every reader of `old` (and the graph outputs) reads `new` instead."""
        for _, dst, key, d in list(self.g.out_edges(old.node, keys=True, data=True)):
            if d["src_out"] == old.index:
                self.g.remove_edge(old.node, dst, key)
                self.g.add_edge(new.node, dst, src_out=new.index, dst_in=d["dst_in"])
        self.outputs = [(n, new if v == old else v) for n, v in self.outputs]

    def remove_node(self, nid: int):
        self.g.remove_node(nid)
        self.inputs = [v for v in self.inputs if v.node != nid]
        self._const_cache = {k: v for k, v in self._const_cache.items() if v.node != nid}

    def dump(self) -> str:
        """Readable text form, one node per line in topological order."""
        lines = [f"graph {self.name}"]
        for nid in self.topological_order():
            d = self.g.nodes[nid]
            ins = ", ".join(f"%{v.node}:{v.index}" for v in self.node_inputs(nid))
            attrs = {k: v for k, v in d["attrs"].items() if k != "value"}
            if d["op"] == "const":
                attrs = {"value": np.asarray(d["attrs"]["value"]).ravel()[:4].tolist()}
            types = ", ".join(map(repr, d["types"]))
            lines.append(f"  %{nid} = {d['op']}({ins}) {attrs or ''} -> {types}")
        lines.append("  outputs: " + ", ".join(f"{n}=%{v.node}:{v.index}" for n, v in self.outputs))
        return "\n".join(lines)

    def to_dot(self) -> str:
        out = [f'digraph "{self.name}" {{', "  rankdir=TB; node [shape=box, fontsize=10];"]
        for nid, d in self.g.nodes(data=True):
            label = d["op"] if d["op"] != "input" else f"input {d['attrs']['name']}"
            out.append(f'  n{nid} [label="{label}\\n{", ".join(map(repr, d["types"]))}"];')
        for src, dst, d in self.g.edges(data=True):
            out.append(f"  n{src} -> n{dst};")
        out.append("}")
        return "\n".join(out)
