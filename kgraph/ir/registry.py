"""One registry for primitive ops: shape rule, gradient rule and ONNX lowering together.

An op definition is created with `define(name, infer=..., lower=...)` and its
gradient attached with `@op.gradient`. Gradient rules have one fixed signature,
`rule(node: NodeView, grad_outputs: list[Value | None]) -> list[Value | None]`
(one entry per input), and are written with IR ops, so backward graphs go
through the same passes and lowering as forward graphs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

_REGISTRY: dict[str, "OpDef"] = {}


@dataclass
class OpDef:
    name: str
    infer: Callable  # (input types, attrs) -> output types
    lower: Callable | None  # (ctx, node view, input names, output names) -> None
    grad: Callable | None = None
    # inputs that never carry a gradient (indices, shapes, masks)
    nondiff_inputs: tuple = ()
    # ops whose outputs are not differentiable at all (comparisons, argmax, shapes)
    nondiff: bool = False
    doc: str = field(default="", repr=False)

    def gradient(self, fn):
        self.grad = fn
        return fn


def define(name, infer, lower=None, nondiff=False, nondiff_inputs=(), doc=""):
    if name in _REGISTRY:
        raise ValueError(f"op '{name}' is already registered")
    op = OpDef(name, infer, lower, nondiff=nondiff, nondiff_inputs=tuple(nondiff_inputs), doc=doc)
    _REGISTRY[name] = op
    return op


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown IR op '{name}'; registered ops: {sorted(_REGISTRY)}") from None


def all_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)


class NodeView:
    """What a gradient or lowering rule sees of one node."""

    def __init__(self, graph, nid):
        self.graph, self.id = graph, nid
        data = graph.g.nodes[nid]
        self.op, self.attrs, self.types = data["op"], data["attrs"], data["types"]

    @property
    def inputs(self):
        return self.graph.node_inputs(self.id)

    @property
    def outputs(self):
        return self.graph.node_outputs(self.id)
