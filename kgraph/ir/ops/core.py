"""Shared helpers for op definitions: operand coercion, broadcasting, node emission."""
from __future__ import annotations

import contextlib

import numpy as np

from kgraph.ir.graph import Graph, TensorType, Value

_BUILDING: list[Graph] = []


@contextlib.contextmanager
def building(graph: Graph):
    """Makes `graph` the target for operands that are not Values yet (weights, constants)."""
    _BUILDING.append(graph)
    try:
        yield graph
    finally:
        _BUILDING.pop()


def current_graph() -> Graph:
    if not _BUILDING:
        raise RuntimeError("no IR graph is being built: use `with building(graph):`")
    return _BUILDING[-1]


def as_value(x, like: Value | None = None, graph: Graph | None = None) -> Value:
    """A Value for `x`: Values pass through; objects with `__ir_value__` (weights)
    resolve in the graph being built; numbers and arrays become constants in the
    dtype of `like` (float32 when there is none)."""
    if isinstance(x, Value):
        return x
    g = graph or (like.graph if like is not None else current_graph())
    if hasattr(x, "__ir_value__"):
        return x.__ir_value__(g)
    if isinstance(x, np.ndarray) and like is None:
        return g.const(x)
    dtype = like.dtype if like is not None else np.float32
    return g.const(np.asarray(x, dtype=dtype))


def coerce(*xs) -> list[Value]:
    """Values for a mixed list: the first Value (or weight) decides graph and dtype."""
    anchor = next((x for x in xs if isinstance(x, Value)), None)
    if anchor is None:
        anchor = next((as_value(x) for x in xs if hasattr(x, "__ir_value__")), None)
    return [as_value(x, like=anchor) for x in xs]


def emit(op: str, *inputs, **attrs):
    """Adds one node; returns its Value, or a tuple when it has several outputs."""
    vals = coerce(*inputs)
    outs = vals[0].graph.add_node(op, vals, attrs)
    return outs[0] if len(outs) == 1 else tuple(outs)


def broadcast_shapes(a: tuple, b: tuple, op: str = "") -> tuple:
    """numpy broadcasting where None is a dimension only known at run time."""
    ra, rb = len(a), len(b)
    a = (1,) * (rb - ra) + tuple(a)
    b = (1,) * (ra - rb) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        elif x is None:
            out.append(y)
        elif y is None or x == y:
            out.append(x)
        else:
            raise ValueError(f"op '{op}': shapes {a} and {b} cannot be broadcast together")
    return tuple(out)


def same_as_input(types, attrs):
    return [types[0]]


def norm_axis(axis: int, rank: int, op: str = "") -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"op '{op}': axis {axis} is out of range for rank {rank}")
    return axis % rank


def sum_to(g: Value, shape: tuple) -> Value:
    """Sums a broadcast gradient back to `shape` (the reverse of broadcasting)."""
    from kgraph.ir.ops.reduce import reduce_sum

    lead = g.type.rank - len(shape)
    if lead > 0:
        g = reduce_sum(g, axes=tuple(range(lead)), keepdims=False)
    axes = tuple(i for i, (gd, td) in enumerate(zip(g.shape, shape)) if td == 1 and gd != 1)
    if axes:
        g = reduce_sum(g, axes=axes, keepdims=True)
    return g


def float_type(t: TensorType) -> bool:
    return np.issubdtype(t.dtype, np.floating)
