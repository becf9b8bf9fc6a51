"""Named pass pipelines: one readable list per purpose."""
from __future__ import annotations

import os

from kgraph.passes import cleanup

PIPELINES = {
    "inference": [cleanup.remove_identities, cleanup.dead_code_elimination],
    "training": [cleanup.dead_code_elimination],
}


def run_pipeline(name, graph, verify=False):
    """Runs the passes of `name` in order; returns {pass name: changed}. With
    KGRAPH_DUMP_IR=dir, writes the IR after each pass as text."""
    from kgraph.ir.verify import verify as verify_ir
    dump = os.environ.get("KGRAPH_DUMP_IR")
    report = {}
    for i, p in enumerate(PIPELINES[name]):
        changed = p(graph)
        report[p.__name__] = changed
        if verify:
            verify_ir(graph)
        if dump:
            os.makedirs(dump, exist_ok=True)
            with open(os.path.join(dump, f"{graph.name}.{name}.{i:02d}.{p.__name__}.txt"), "w") as f:
                f.write(graph.dump())
    return report
