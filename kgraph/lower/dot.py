"""Graphviz DOT of a lowered ONNX graph (for `kgraph compile --graph`)."""
from __future__ import annotations


def onnx_to_dot(proto) -> str:
    g = proto.graph
    inits = {t.name for t in g.initializer}
    lines = [f'digraph "{g.name}" {{', "  rankdir=TB; node [fontsize=10];"]
    producer = {}
    for i, vi in enumerate(g.input):
        lines.append(f'  in{i} [shape=ellipse, label="{vi.name}"];')
        producer[vi.name] = f"in{i}"
    for i, n in enumerate(g.node):
        label = n.op_type + (f"\\n({n.domain})" if n.domain else "")
        lines.append(f'  n{i} [shape=box, label="{label}"];')
        for x in n.input:
            if x in producer and x not in inits:
                lines.append(f"  {producer[x]} -> n{i};")
        for y in n.output:
            producer[y] = f"n{i}"
    for i, vi in enumerate(g.output):
        lines.append(f'  out{i} [shape=ellipse, label="{vi.name}"];')
        if vi.name in producer:
            lines.append(f"  {producer[vi.name]} -> out{i};")
    lines.append("}")
    return "\n".join(lines)
