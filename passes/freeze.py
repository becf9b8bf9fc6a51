"""Freezing: weight inputs become constants (inference and serving only), so constant
folding can pre-compute everything that depends on weights alone (kernel layout
transposes, BatchNormalization's scale and shift) and the folding passes can merge
affine ops into the convolution before them. Constants keep the weight's name.
Guarantee: outputs unchanged for the given values."""
from __future__ import annotations

import numpy as np


def freeze_inputs(graph, values: dict) -> bool:
    """Replaces the inputs named in `values` by named constants; returns whether any was."""
    changed = False
    for v in list(graph.inputs):
        name = graph.g.nodes[v.node]["attrs"]["name"]
        if name not in values:
            continue
        const = graph.const(np.asarray(values[name], dtype=v.dtype), name=name)
        graph.replace_uses(v, const)
        graph.remove_node(v.node)
        changed = True
    return changed
