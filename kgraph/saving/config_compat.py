"""Model configs read from files (Keras 3 and tf.keras 2.x) turned into the Keras 3 form
kgraph's `from_config` builds, with every problem reported as a SavingError.

What differs between the writers:
- tf.keras 2: `batch_input_shape` (on InputLayer, or on the first layer of a Sequential
  without one), node lists `[[["dense", 0, 0, {}]]]` instead of `{"args", "kwargs"}`,
  `"class_name": "Model"`, a Sequential config that is a bare list (Keras 2.2).
- Keras 3: dtype policies as objects, `shared_object_id` markers, options kgraph does not
  have but that are off by default (`ragged: false`, `quantization_config: null`, ...).
An option kgraph lacks is dropped only when it is off (None, False, 0, empty) or only
tunes execution (`unroll`, `implementation`); any other value is an error, so a model is
never silently loaded with different behaviour.
"""
from __future__ import annotations

import functools
import inspect

from kgraph.saving.errors import SavingError

MODEL_CLASSES = ("Sequential", "Functional", "Model")
# Options that change how a layer runs, not what it computes.
EXECUTION_ONLY = {"unroll", "implementation", "time_major", "jit_compile", "autocast", "optional",
                  "synchronized"}
# Options that only matter when another one is on (BatchNormalization's renorm settings).
DEPENDENT = {"renorm_momentum": "renorm", "renorm_clipping": "renorm"}


def _is_off(value) -> bool:
    return value is None or value is False or value == 0 or value == [] or value == {} or value == ""


def _strip_sharing(obj):
    if isinstance(obj, dict):
        return {k: _strip_sharing(v) for k, v in obj.items() if k != "shared_object_id"}
    if isinstance(obj, list):
        return [_strip_sharing(v) for v in obj]
    return obj


@functools.lru_cache(maxsize=None)
def accepted_kwargs(cls) -> tuple[frozenset, bool]:
    """The keyword arguments `cls(...)` takes, following **kwargs up to the Layer base
    (cached per class: inspect.signature took a third of a model's rebuild)."""
    from kgraph.engine.layer import _BASE_KWARGS, Layer
    names, open_ended = set(), False
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
        if klass is Layer:
            names |= _BASE_KWARGS
            break
    else:
        open_ended = True
    names.discard("self")
    return frozenset(names), open_ended


def fit_kwargs(cls, config: dict, display, where: str) -> dict:
    """`config` restricted to what `cls` accepts; unknown options must be off."""
    names, open_ended = accepted_kwargs(cls)
    if open_ended:
        return dict(config)
    out = {}
    for k, v in config.items():
        if k in names:
            out[k] = v
        elif k in EXECUTION_ONLY or _is_off(v) or (k in DEPENDENT and _is_off(config.get(DEPENDENT[k]))):
            continue
        else:
            raise SavingError(display, f"{where}: option `{k}={v!r}` is not supported by kgraph's "
                                       f"{cls.__name__}")
    return out


def _object_config(value, classes, display, where):
    """A nested Keras object ({class_name, config}) with its config fitted to kgraph's class."""
    if not isinstance(value, dict) or "class_name" not in value:
        return value
    name = value["class_name"]
    cls = classes.get(name) if isinstance(name, str) else None
    cfg = value.get("config") or {}
    if not isinstance(cfg, dict):
        raise SavingError(display, f"{where}: the config of '{name}' should be an object")
    if cls is None:
        return value
    return {"class_name": name, "config": fit_kwargs(cls, cfg, display, f"{where} ({name})")}


def _policy_name(dtype):
    if isinstance(dtype, dict):  # Keras 3 DTypePolicy / tf.keras 2 mixed-precision Policy
        cfg = dtype.get("config")
        return cfg.get("name") if isinstance(cfg, dict) else None
    return dtype


def _activation(value):
    if isinstance(value, dict) and isinstance(value.get("config"), str):
        return value["config"]  # {"class_name": "function", "config": "relu"}
    return value


def _nested_classes():
    from kgraph import initializers, regularizers
    inits = dict(initializers._CLASSES)
    regs = {"L1": regularizers.L1, "L2": regularizers.L2, "L1L2": regularizers.L1L2}
    return inits, regs


# Config keys that hold a whole layer entry (Bidirectional's wrapped layers).
NESTED_LAYERS = ("layer", "backward_layer")


def _layer_config(class_name, cls, config, display, where, custom_objects=None):
    """One layer's config in the form `cls(**config)` accepts (nested layer entries too)."""
    config = dict(config)
    for k in NESTED_LAYERS:
        if isinstance(config.get(k), dict):
            config[k] = normalize(config[k], display, custom_objects, f"{where}, `{k}`")
    if "dtype" in config:
        config["dtype"] = _policy_name(config["dtype"])
        if config["dtype"] is None:
            del config["dtype"]
    if class_name == "InputLayer":
        for old in ("batch_input_shape", "input_shape"):
            if old in config and "batch_shape" not in config and "shape" not in config:
                shape = config.pop(old)
                config["batch_shape"] = shape if old == "batch_input_shape" else [None] + list(shape)
    if class_name == "BatchNormalization" and isinstance(config.get("axis"), list) \
            and len(config["axis"]) == 1:
        config["axis"] = int(config["axis"][0])
    inits, regs = _nested_classes()
    for k, v in list(config.items()):
        if k.endswith("initializer"):
            config[k] = _object_config(v, inits, display, f"{where}, `{k}`")
        elif k.endswith("regularizer"):
            config[k] = _object_config(v, regs, display, f"{where}, `{k}`")
        elif k in ("activation", "recurrent_activation"):
            config[k] = _activation(v)
    return fit_kwargs(cls, config, display, where)


def _node_kwargs(kwargs, display, where):
    if not isinstance(kwargs, dict):
        raise SavingError(display, f"{where}: call arguments should be an object")
    out = {}
    for k, v in kwargs.items():
        if k == "training" and v is not None:
            out[k] = v
        elif v is not None and k != "mask":
            raise SavingError(display, f"{where}: call argument `{k}={v!r}` is not supported")
    return out


def _ref(name, ni, ti, display, where):
    if not isinstance(name, str) or not isinstance(ni, int) or not isinstance(ti, int):
        raise SavingError(display, f"{where}: bad tensor reference {[name, ni, ti]!r}")
    return {"class_name": "__keras_tensor__", "config": {"keras_history": [name, ni, ti]}}


def _convert_node(node, display, where):
    """A call record in Keras 3's form {"args": [...], "kwargs": {...}}."""
    if isinstance(node, dict):  # Keras 3
        args = node.get("args")
        if not isinstance(args, list) or not args:
            raise SavingError(display, f"{where}: a call record has no arguments")

        def check(a):
            if isinstance(a, list):
                return [check(x) for x in a]
            if not isinstance(a, dict) or a.get("class_name") != "__keras_tensor__":
                raise SavingError(display, f"{where}: unsupported call argument {a!r}")
            hist = (a.get("config") or {}).get("keras_history")
            if not isinstance(hist, list) or len(hist) != 3:
                raise SavingError(display, f"{where}: bad tensor reference {hist!r}")
            return _ref(*hist, display, where)
        if len(args) != 1:
            raise SavingError(display, f"{where}: calls with {len(args)} positional arguments are "
                                       "not supported")
        return {"args": [check(args[0])], "kwargs": _node_kwargs(node.get("kwargs") or {}, display, where)}
    if not isinstance(node, list) or not node:  # tf.keras 2: [[name, node, tensor, kwargs], ...]
        raise SavingError(display, f"{where}: bad call record {node!r}")
    refs, kwargs = [], {}
    for entry in node:
        if not isinstance(entry, list) or len(entry) not in (3, 4):
            raise SavingError(display, f"{where}: bad call record entry {entry!r}")
        refs.append(_ref(entry[0], entry[1], entry[2], display, where))
        if len(entry) == 4 and entry[3]:
            kwargs.update(_node_kwargs(entry[3], display, where))
    return {"args": [refs] if len(refs) > 1 else refs, "kwargs": kwargs}


def _endpoints(value, display, key):
    """`input_layers`/`output_layers` as a list of [name, node, tensor] triples."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SavingError(display, f"the model config's `{key}` is missing or empty")
    for e in value:
        if not (isinstance(e, list) and len(e) == 3 and isinstance(e[0], str)
                and isinstance(e[1], int) and isinstance(e[2], int)):
            raise SavingError(display, f"the model config's `{key}` has a bad entry {e!r}")
    return value


def normalize(entry, display, custom_objects=None, where="model"):
    """A layer or model entry ({class_name, config, ...}) from any supported writer, in the
    Keras 3 form kgraph builds from. Raises SavingError naming the first problem."""
    from kgraph.models.serialization import layer_classes
    if not isinstance(entry, dict):
        raise SavingError(display, f"{where}: a layer entry should be an object, found {type(entry).__name__}")
    entry = _strip_sharing(entry)
    class_name = entry.get("class_name")
    config = entry.get("config")
    if not isinstance(class_name, str):
        raise SavingError(display, f"{where}: a layer entry has no `class_name`")
    if class_name == "Model":
        class_name = "Functional"
    if class_name == "Sequential" and isinstance(config, list):  # Keras 2.2
        config = {"layers": config}
    if not isinstance(config, dict):
        raise SavingError(display, f"{where} ('{class_name}'): `config` should be an object")
    custom = custom_objects or {}
    classes = layer_classes(custom)
    name = config.get("name") or entry.get("name")
    label = f"layer '{name}'" if name else where
    if class_name not in classes:
        raise SavingError(display, f"{label} has class '{class_name}', which kgraph does not know. "
                                   f"Pass it in `custom_objects` if it is a custom layer")
    out = {"class_name": class_name, "module": entry.get("module"), "registered_name": None}
    if "name" in entry:
        out["name"] = entry["name"]
    if class_name == "Sequential" and class_name not in custom:
        out["config"] = _sequential(config, display, custom_objects, label)
    elif class_name == "Functional" and class_name not in custom:
        out["config"] = _functional(config, display, custom_objects, label)
    elif class_name in custom:
        out["config"] = dict(config)
    else:
        out["config"] = _layer_config(class_name, classes[class_name], config, display, label,
                                      custom_objects)
    if "inbound_nodes" in entry:
        nodes = entry["inbound_nodes"]
        if not isinstance(nodes, list):
            raise SavingError(display, f"{label}: `inbound_nodes` should be a list")
        out["inbound_nodes"] = [_convert_node(n, display, label) for n in nodes]
    return out


def _sequential(config, display, custom_objects, label):
    layers = config.get("layers")
    if not isinstance(layers, list):
        raise SavingError(display, f"{label}: the Sequential config has no `layers` list")
    out_layers = []
    for i, lcfg in enumerate(layers):
        if not isinstance(lcfg, dict):
            raise SavingError(display, f"{label}: layer #{i} should be an object")
        inner = lcfg.get("config")
        if i == 0 and lcfg.get("class_name") != "InputLayer" and isinstance(inner, dict) \
                and inner.get("batch_input_shape") is not None:
            # tf.keras 2: the first layer carries the input shape
            out_layers.append({"class_name": "InputLayer", "config": {
                "batch_shape": list(inner["batch_input_shape"]),
                "dtype": _policy_name(inner.get("dtype")) or "float32",
                "name": f"{inner.get('name', 'layer')}_input"}})
        if isinstance(inner, dict) and lcfg.get("class_name") != "InputLayer":
            lcfg = {**lcfg, "config": {k: v for k, v in inner.items()
                                       if k not in ("batch_input_shape", "input_shape", "input_dim")}}
        out_layers.append(normalize(lcfg, display, custom_objects, f"{label}, layer #{i}"))
    out = {"name": config.get("name"), "layers": out_layers}
    if config.get("build_input_shape") is not None:
        out["build_input_shape"] = config["build_input_shape"]
    return out


def _functional(config, display, custom_objects, label):
    layers = config.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SavingError(display, f"{label}: the Functional config has no `layers` list")
    out_layers, names = [], set()
    for i, lcfg in enumerate(layers):
        if not isinstance(lcfg, dict):
            raise SavingError(display, f"{label}: layer #{i} should be an object")
        inner = lcfg.get("config")
        if isinstance(inner, dict) and lcfg.get("class_name") != "InputLayer":
            lcfg = {**lcfg, "config": {k: v for k, v in inner.items()
                                       if k not in ("batch_input_shape", "input_shape", "input_dim")}}
        norm = normalize(lcfg, display, custom_objects, f"{label}, layer #{i}")
        lname = norm.get("name") or (norm["config"].get("name") if isinstance(norm["config"], dict) else None)
        if not isinstance(lname, str):
            raise SavingError(display, f"{label}: layer #{i} has no name")
        if lname in names:
            raise SavingError(display, f"{label}: two layers are named '{lname}'")
        names.add(lname)
        norm["name"] = lname
        norm.setdefault("inbound_nodes", [])
        out_layers.append(norm)
    inputs = _endpoints(config.get("input_layers"), display, "input_layers")
    outputs = _endpoints(config.get("output_layers"), display, "output_layers")
    for e in inputs + outputs:
        if e[0] not in names:
            raise SavingError(display, f"{label}: the model's inputs/outputs name a layer "
                                       f"'{e[0]}' that the config does not define")
    for lcfg in out_layers:
        for node in lcfg["inbound_nodes"]:
            def refs(a):
                return [r for x in a for r in refs(x)] if isinstance(a, list) else [a]
            for r in refs(node["args"]):
                if r["config"]["keras_history"][0] not in names:
                    raise SavingError(display, f"layer '{lcfg['name']}' is called on the output of "
                                               f"'{r['config']['keras_history'][0]}', which the "
                                               "config does not define")
    return {"name": config.get("name"), "layers": out_layers, "input_layers": inputs,
            "output_layers": outputs}
