"""Named pass pipelines: one readable list per purpose."""
from __future__ import annotations

import os

from kgraph.passes import (  # noqa: F401 (registers the passes)
    cleanup, constant_folding, conv_training_lowering, cse, flatten_order, fold_affine, fusion_conv,
    fusion_dense, fusion_softmax_crossentropy, layout)
from kgraph.passes.infra import PassManager

PIPELINES = {
    # predict graphs and files for serving
    # (weights are frozen to constants first, so BatchNormalization folds into the conv)
    "inference": ["remove_identities", "constant_folding", "layout_transposes",
                  "common_subexpression_elimination", "fuse_dense_activation",
                  "fold_affine_into_conv", "fuse_conv_activation", "dead_code_elimination"],
    # forward + loss of a training graph, before autodiff: fused ops get fused gradients
    "training_forward": ["remove_identities", "layout_transposes", "conv_training_lowering",
                         "layout_transposes", "flatten_order_into_weight", "common_subexpression_elimination",
                         "fuse_dense_activation", "fuse_conv_activation", "fuse_softmax_crossentropy",
                         "dead_code_elimination"],
    # the whole train step after autodiff and the optimizer update
    "training": ["constant_folding", "common_subexpression_elimination", "dead_code_elimination"],
}


# With optimizations off only the passes that correctness needs run (the graph must be
# lowerable: dead nodes would still be lowered, identities are harmless).
REQUIRED = ["dead_code_elimination"]
_ENABLED = {"on": os.environ.get("KGRAPH_PASSES", "on") != "off"}


def set_passes_enabled(enabled: bool):
    """Turns kgraph's optimizing passes on or off (for measurements; default on)."""
    _ENABLED["on"] = bool(enabled)


def run_pipeline(name, graph, verify=False, passes=None):
    """Runs the pipeline `name` (or the explicit list `passes`) on `graph` in place and
    returns the per-pass records."""
    if passes is None:
        passes = PIPELINES[name] if _ENABLED["on"] else [p for p in PIPELINES[name] if p in REQUIRED]
    return PassManager(passes, verify=verify, tag=name).run(graph)
