"""Model configs in Keras 3's JSON form: get_config / from_config / to_json."""
from __future__ import annotations

import json

from kgraph.engine.input_layer import InputLayer


def layer_classes(custom_objects=None):
    from kgraph import layers, models
    classes = {name: obj for name, obj in vars(layers).items() if isinstance(obj, type)}
    classes.update({"Sequential": models.Sequential, "Functional": models.Model, "Model": models.Model})
    classes.update(custom_objects or {})
    return classes


def serialize_layer(layer):
    from kgraph.models.functional import Model
    from kgraph.models.sequential import Sequential
    class_name = type(layer).__name__
    if isinstance(layer, Model) and not isinstance(layer, Sequential):
        class_name = "Functional"
    module = "keras" if isinstance(layer, Model) else "keras.layers"
    out = {"module": module, "class_name": class_name, "config": layer.get_config(),
           "registered_name": None}
    if layer._inbound_nodes and not isinstance(layer, InputLayer):
        shapes = [list(t.shape) for t in layer._inbound_nodes[0].inputs]
        out["build_config"] = {"input_shape": shapes[0] if len(shapes) == 1 else shapes}
    return out


def deserialize_layer(cfg, custom_objects=None):
    classes = layer_classes(custom_objects)
    name = cfg["class_name"]
    if name not in classes:
        raise ValueError(f"Unknown layer class '{name}'. Pass it in `custom_objects` if it is a "
                         f"custom layer. Known classes: {sorted(classes)}")
    cls = classes[name]
    config = dict(cfg["config"])
    if hasattr(cls, "from_config") and name in ("Sequential", "Functional", "Model"):
        return cls.from_config(config, custom_objects)
    return cls.from_config(config)


def sequential_config(model):
    layers = []
    if model._input_layer is not None:
        layers.append(serialize_layer(model._input_layer))
    layers += [serialize_layer(l) for l in model.layers]
    cfg = {"name": model.name, "trainable": model.trainable, "dtype": model.dtype.name, "layers": layers}
    if model._input_layer is not None:
        cfg["build_input_shape"] = list(model._input_layer.batch_shape)
    return cfg


def sequential_from_config(config, custom_objects=None):
    from kgraph.models.sequential import Sequential
    model = Sequential(name=config.get("name"))
    for lcfg in config["layers"]:
        model.add(deserialize_layer(lcfg, custom_objects), rebuild=False)
    if model._input_layer is None and config.get("build_input_shape"):
        model.build(tuple(config["build_input_shape"]))
    elif model._input_layer is not None and model._stack:
        model._build_graph()
    return model


def _tensor_ref(t, node_index_of):
    layer, ni, ti = t._history
    return {"class_name": "__keras_tensor__",
            "config": {"shape": list(t.shape), "dtype": t.dtype.name,
                       "keras_history": [layer.name, node_index_of(layer, ni), ti]}}


def functional_config(model):
    model_nodes = [n for n in model._nodes]
    ids = {id(n) for n in model_nodes}

    def node_index_of(layer, ni):
        if isinstance(layer, InputLayer):
            return 0
        mine = [n for n in layer._inbound_nodes if id(n) in ids]
        return mine.index(layer._inbound_nodes[ni])

    layers = []
    for layer in model.layers:
        entry = serialize_layer(layer)
        entry["name"] = layer.name
        inbound = []
        for node in layer._inbound_nodes:
            if id(node) not in ids:
                continue
            refs = [_tensor_ref(t, node_index_of) for t in node.inputs]
            inbound.append({"args": [refs] if node.structure == "list" else refs, "kwargs": node.kwargs})
        entry["inbound_nodes"] = inbound
        layers.append(entry)

    def endpoint(t):
        layer, ni, ti = t._history
        return [layer.name, node_index_of(layer, ni), ti]

    return {"name": model.name, "trainable": model.trainable, "layers": layers,
            "input_layers": [endpoint(t) for t in model.inputs],
            "output_layers": [endpoint(t) for t in model.outputs]}


def functional_from_config(config, custom_objects=None):
    from kgraph.models.functional import Model
    created, outputs_of = {}, {}  # layer name -> layer; (name, node index) -> outputs
    pending = []
    for lcfg in config["layers"]:
        layer = deserialize_layer(lcfg, custom_objects)
        created[lcfg["name"]] = layer
        if isinstance(layer, InputLayer):
            outputs_of[(layer.name, 0)] = [layer.output_tensor]
        for i, node in enumerate(lcfg.get("inbound_nodes", [])):
            pending.append((layer, i, node))

    def resolve(ref):
        if isinstance(ref, list):
            return [resolve(r) for r in ref]
        name, ni, ti = ref["config"]["keras_history"]
        outs = outputs_of.get((name, ni))
        if outs is None:
            raise KeyError(name)
        return outs[ti]

    while pending:
        progressed = False
        for item in list(pending):
            layer, i, node = item
            args = node["args"] if isinstance(node, dict) else node
            try:
                inputs = resolve(args[0] if len(args) == 1 else args)
            except KeyError:
                continue
            out = layer(inputs, **node.get("kwargs", {})) if isinstance(node, dict) else layer(inputs)
            outputs_of[(layer.name, i)] = out if isinstance(out, list) else [out]
            pending.remove(item)
            progressed = True
        if not progressed:
            raise ValueError("Model config has layer calls whose inputs never become available: "
                             f"{[(l.name, i) for l, i, _ in pending]}")

    def endpoint(e):
        name, ni, ti = e
        return outputs_of[(name, ni)][ti]

    ins = [endpoint(e) for e in config["input_layers"]]
    outs = [endpoint(e) for e in config["output_layers"]]
    return Model(ins if len(ins) > 1 else ins[0], outs if len(outs) > 1 else outs[0],
                 name=config.get("name"))


def model_to_json(model, **kwargs):
    return json.dumps(serialize_layer(model) | {"module": "keras"}, **kwargs)


def model_from_json(json_string, custom_objects=None):
    cfg = json.loads(json_string)
    return deserialize_layer(cfg, custom_objects)


def clone_model(model):
    """A new model with the same architecture and freshly initialised weights."""
    return deserialize_layer(serialize_layer(model))
