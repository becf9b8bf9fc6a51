"""Named pass pipelines: one readable list per purpose."""
from __future__ import annotations

from kgraph.passes import cleanup, constant_folding, cse, fusion_dense  # noqa: F401 (registers)
from kgraph.passes.infra import PassManager

PIPELINES = {
    # predict graphs and files for serving
    "inference": ["remove_identities", "constant_folding", "common_subexpression_elimination",
                  "fuse_dense_activation", "dead_code_elimination"],
    # forward + loss of a training graph, before autodiff: fused ops get fused gradients
    "training_forward": ["remove_identities", "common_subexpression_elimination",
                         "fuse_dense_activation", "dead_code_elimination"],
    # the whole train step after autodiff and the optimizer update
    "training": ["constant_folding", "common_subexpression_elimination", "dead_code_elimination"],
}


def run_pipeline(name, graph, verify=False, passes=None):
    """Runs the pipeline `name` (or the explicit list `passes`) on `graph` in place and
    returns the per-pass records."""
    return PassManager(PIPELINES[name] if passes is None else passes, verify=verify, tag=name).run(graph)
