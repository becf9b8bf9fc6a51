"""Where Keras keeps each weight: layer order, weight order and store paths.

Keras loads legacy `.h5` weights by layer order and `.weights.h5` weights by a path
made from the class name and the position among the model's layers, so kgraph must
walk a model in exactly Keras's order (not its own) for files to line up both ways.
"""
from __future__ import annotations

import re

from kgraph.engine.input_layer import InputLayer

# Keras keeps these layers' weights in a sub-object (LSTM(...).cell): store path
# `layers/lstm/cell/vars`, and the cell's own name in the group's `name` attribute.
SUBOBJECTS = {"LSTM": ("cell", "lstm_cell"), "GRU": ("cell", "gru_cell"),
              "SimpleRNN": ("cell", "simple_rnn_cell")}


# Bidirectional keeps its two recurrent layers as these attributes (store sub-paths).
WRAPPED = ("forward_layer", "backward_layer")


def keras_snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case (differs from kgraph's for `Conv2D` -> `conv2d`)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def is_model(layer) -> bool:
    from kgraph.models.functional import Model
    return isinstance(layer, Model)


def is_sequential(layer) -> bool:
    from kgraph.models.sequential import Sequential
    return isinstance(layer, Sequential)


def keras_layers(model) -> list:
    """`model.layers` in Keras's order. Sequential: the stack. Functional: operations by
    decreasing depth (distance to an output), ties by first visit in a depth-first walk
    from the outputs (keras.src.ops.function.map_graph)."""
    if is_sequential(model):
        return list(model.layers)
    input_ids = {id(t) for t in model.inputs}
    order_index, finished, nodes = {}, set(), []

    def visit(tensor):
        layer, ni, _ = tensor._history
        node = layer._inbound_nodes[ni]
        if id(node) in finished:
            return
        if id(tensor) in input_ids and not isinstance(layer, InputLayer):
            finished.add(id(node))
            return
        order_index.setdefault(id(layer), (len(order_index), layer))
        for t in node.inputs:
            visit(t)
        finished.add(id(node))
        nodes.append(node)

    for t in model.outputs:
        visit(t)
    node_depth, layer_depth = {}, {}
    in_graph = {id(n) for n in nodes}
    for node in reversed(nodes):
        depth = node_depth.setdefault(id(node), 0)
        depth = max(depth, layer_depth.get(id(node.layer), 0))
        layer_depth[id(node.layer)] = depth
        node_depth[id(node)] = depth
        for t in node.inputs:
            parent = t._history[0]._inbound_nodes[t._history[1]]
            if id(parent) in in_graph:
                node_depth[id(parent)] = max(depth + 1, node_depth.get(id(parent), 0))
    for t in model.inputs:
        layer = t._history[0]
        if id(layer) not in layer_depth:
            layer_depth[id(layer)] = 0
            order_index[id(layer)] = (-1, layer)
    ranked = sorted(order_index.values(), key=lambda e: (-layer_depth[id(e[1])], e[0]))
    return [layer for _, layer in ranked]


def legacy_weights(layer) -> list:
    """Legacy `.h5` order: trainable weights, then the others."""
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def store_weights(layer) -> list:
    """`.weights.h5` order: weights created trainable, then the others (Keras's
    `_trainable_variables + _non_trainable_variables`, independent of `layer.trainable`)."""
    ws = list(layer.weights)
    return [w for w in ws if w.trainable] + [w for w in ws if not w.trainable]


def model_trainable_weights(model) -> list:
    """The trainable weights in Keras's order (the order of its optimizer's slots)."""
    if not model.trainable:
        return []
    out, seen = [], set()
    for layer in keras_layers(model):
        ws = model_trainable_weights(layer) if is_model(layer) else layer.trainable_weights
        for w in ws:
            if id(w) not in seen:
                seen.add(id(w))
                out.append(w)
    return out


class StoreEntry:
    """One `<path>/vars` group: the object's name (the group's `name` attribute), the
    weights stored there, the layer's class key (snake-case class name), the layer that
    owns the weights and `top`, the model's layer it belongs to (a Bidirectional for the
    LSTM inside it)."""

    def __init__(self, path, name, weights, class_key, layer, top=None):
        self.path, self.name, self.weights = path, name, weights
        self.class_key, self.layer, self.top = class_key, layer, top if top is not None else layer

    @property
    def vars_path(self):
        return f"{self.path}/vars" if self.path else "vars"


def store_entries(model, prefix="") -> list[StoreEntry]:
    """Every vars group Keras writes for a model, in its walk order."""
    entries = [StoreEntry(prefix, model.name, [], "", model)]
    used: dict[str, int] = {}
    for layer in keras_layers(model):
        key = keras_snake_case(type(layer).__name__)
        if is_model(layer) and not is_sequential(layer):
            key = "functional"
        if key in used:
            used[key] += 1
            unique = f"{key}_{used[key]}"
        else:
            used[key] = 0
            unique = key
        path = f"{prefix}/layers/{unique}" if prefix else f"layers/{unique}"
        if is_model(layer):
            nested = store_entries(layer, path)
            for e in nested:
                e.class_key = key if e.layer is layer else e.class_key
            entries += nested
            continue
        entries += _layer_entries(layer, path, key, layer)
    return entries


def _layer_entries(layer, path, key, top):
    """The vars groups of one layer (not a model) stored at `path`."""
    from kgraph.layers.recurrent import Bidirectional
    if isinstance(layer, Bidirectional):  # `<path>/forward_layer/cell/vars`, `.../backward_layer/...`
        out = [StoreEntry(path, layer.name, [], key, layer, top)]
        for attr in WRAPPED:
            out += _layer_entries(getattr(layer, attr), f"{path}/{attr}", key, top)
        return out
    sub = SUBOBJECTS.get(type(layer).__name__)
    if sub is not None:
        return [StoreEntry(path, layer.name, [], key, layer, top),
                StoreEntry(f"{path}/{sub[0]}", sub[1], store_weights(layer), key, layer, top)]
    return [StoreEntry(path, layer.name, store_weights(layer), key, layer, top)]
