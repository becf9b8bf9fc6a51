"""Pass infrastructure: named passes with stated guarantees, a manager that runs a
pipeline (to a fixed point where a pass asks for it), verification and IR dumps.

A pass is a function `IR -> bool` (rewrites in place, returns whether it changed the
graph) registered with `@graph_pass(...)`; its docstring states what it guarantees.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

PASSES: dict[str, "Pass"] = {}


@dataclass
class Pass:
    name: str
    fn: Callable
    fixed_point: bool = False
    doc: str = ""

    def __call__(self, graph) -> bool:
        return self.fn(graph)


def graph_pass(name: str, fixed_point: bool = False):
    def wrap(fn):
        p = Pass(name, fn, fixed_point, (fn.__doc__ or "").strip())
        if name in PASSES:
            raise ValueError(f"pass '{name}' is already registered")
        PASSES[name] = p
        return p
    return wrap


def matches(graph, match):
    """(node id, match result) for each node, in topological order, that is still in the
    graph when reached and for which `match(graph, nid)` is not a reason (a str): the loop
    of a rewrite pass that replaces nodes as it goes."""
    for nid in list(graph.topological_order()):
        if nid in graph.g:
            m = match(graph, nid)
            if not isinstance(m, str):
                yield nid, m


@dataclass
class PassRecord:
    name: str
    changed: bool
    nodes_before: int
    nodes_after: int
    ops_after: dict = field(default_factory=dict)


class PassManager:
    """Runs passes in order. With `verify`, checks the IR after every pass; with
    `dump_dir` (or KGRAPH_DUMP_IR), writes the IR as text and Graphviz DOT after each."""

    MAX_ITERATIONS = 20

    def __init__(self, passes, verify=False, dump_dir=None, tag=""):
        self.passes = [PASSES[p] if isinstance(p, str) else p for p in passes]
        self.verify = verify
        self.dump_dir = dump_dir if dump_dir is not None else os.environ.get("KGRAPH_DUMP_IR")
        self.tag = tag

    def run(self, graph) -> list[PassRecord]:
        from kgraph.ir.verify import verify as verify_ir
        records = []
        if self.dump_dir:
            self._dump(graph, 0, "input")
        for i, p in enumerate(self.passes, 1):
            before = graph.g.number_of_nodes()
            changed = False
            for _ in range(self.MAX_ITERATIONS if p.fixed_point else 1):
                step = bool(p(graph))
                changed |= step
                if not step:
                    break
            if self.verify:
                verify_ir(graph)
            records.append(PassRecord(p.name, changed, before, graph.g.number_of_nodes(), graph.op_counts()))
            if self.dump_dir:
                self._dump(graph, i, p.name)
        if self.dump_dir:
            with open(os.path.join(self.dump_dir, f"{self._stem(graph)}.summary.txt"), "w") as f:
                f.write(format_records(records) + "\n")
        return records

    def _stem(self, graph):
        return f"{graph.name}{'.' + self.tag if self.tag else ''}"

    def _dump(self, graph, i, name):
        os.makedirs(self.dump_dir, exist_ok=True)
        stem = os.path.join(self.dump_dir, f"{self._stem(graph)}.{i:02d}.{name}")
        with open(stem + ".txt", "w") as f:
            f.write(graph.dump() + "\n")
        with open(stem + ".dot", "w") as f:
            f.write(graph.to_dot() + "\n")


def format_records(records) -> str:
    width = max([len(r.name) for r in records] + [4])
    lines = [f"{'pass':<{width}}  changed  nodes before -> after"]
    for r in records:
        lines.append(f"{r.name:<{width}}  {'yes' if r.changed else 'no ':<7}  {r.nodes_before:>6} -> {r.nodes_after}")
    return "\n".join(lines)
