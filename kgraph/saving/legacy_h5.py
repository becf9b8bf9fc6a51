"""The legacy full-model `.h5` file (and tf.keras 2's weights-only `.h5`).

Root attributes `model_config`, `training_config` (JSON), `keras_version`, `backend`;
group `model_weights` with attribute `layer_names` (every layer, Keras's order) and one
group per layer whose `weight_names` attribute lists its datasets (trainable weights
first); `optimizer_weights` with its own `weight_names`. Keras matches layers by order
among the layers that have weights, not by name, and so does this reader.
"""
from __future__ import annotations

import json
import warnings


from kgraph.saving import h5files, layout, optimizer_state
from kgraph.saving.errors import SavingError

KERAS_FORMAT_VERSION = "3.15.1"  # the Keras release whose files the fixtures were made with


def _layer_weights(layer):
    if layout.is_model(layer):
        trainable = layout.model_trainable_weights(layer)
        ids = {id(w) for w in trainable}
        return trainable + [w for w in layer.weights if id(w) not in ids]
    return layout.legacy_weights(layer)


# -- writing ----------------------------------------------------------------------------
def write_weights_group(grp, model, values):
    layers = layout.keras_layers(model)
    h5files.set_list_attr(grp, "layer_names", [l.name for l in layers])
    grp.attrs["backend"] = "kgraph"
    grp.attrs["keras_version"] = KERAS_FORMAT_VERSION
    for layer in sorted(layers, key=lambda l: l.name):
        lg = grp.create_group(layer.name)
        ws = _layer_weights(layer)
        names = [w.path for w in ws]
        h5files.set_list_attr(lg, "weight_names", names)
        for n, w in zip(names, ws):
            lg.create_dataset(n, data=values[id(w)])
    top = grp.create_group("top_level_model_weights")
    h5files.set_list_attr(top, "weight_names", [])


def write(f, model, values, model_config, training_config=None, optimizer=None):
    f.attrs["backend"] = "kgraph"
    f.attrs["keras_version"] = KERAS_FORMAT_VERSION
    f.attrs["model_config"] = json.dumps(model_config)
    if training_config is not None:
        f.attrs["training_config"] = json.dumps(training_config)
    write_weights_group(f.create_group("model_weights"), model, values)
    if optimizer is not None:
        names, arrays = optimizer
        og = f.create_group("optimizer_weights")
        h5files.set_list_attr(og, "weight_names", names)
        for n, a in zip(names, arrays):
            og.create_dataset(n, data=a)


# -- reading ----------------------------------------------------------------------------
def _skip(display, msg):
    warnings.warn(f"Model file '{display}': {msg}", UserWarning, stacklevel=6)


def _layer_values(lg, fname, layer, wnames, label, display, skip_mismatch, values):
    """Reads one file layer's datasets into `values` for `layer`'s weights (same count)."""
    for wn, w in zip(wnames, _layer_weights(layer)):
        try:
            obj = h5files.dataset_obj(lg, wn, display, shape=None if skip_mismatch else w.shape)
        except SavingError as err:
            raise SavingError(display, f"{label} (file: '{fname}'), weight '{w.name}': "
                                       f"{err.problem}") from None
        if tuple(obj.shape) != w.shape:
            _skip(display, f"skipping weight '{w.path}' of {label}: the model expects shape "
                           f"{w.shape}, the file holds {tuple(obj.shape)}")
            continue
        with h5files.reading(display, f"read '{obj.name}'"):
            values[id(w)] = h5files.read_array(obj, w.dtype)


def _top_level(grp, display, skip_mismatch):
    if "top_level_model_weights" in grp:
        top = h5files.group(grp, "top_level_model_weights", display)
        n = len(h5files.list_attr(top, "weight_names", display))
        if n:
            msg = (f"the file has {n} top-level model weights, a kgraph model has none")
            if not skip_mismatch:
                raise SavingError(display, msg)
            _skip(display, f"skipping them: {msg}")


def read_weights_group(grp, model, display, skip_mismatch=False, by_name=False):
    """Validated {id(variable): array} from a `model_weights`-style group. By layer order
    (Keras's default), or with `by_name` into the model's layers of the same name (others
    left as they are). `skip_mismatch`: a weight whose shape differs (and, by name, a layer
    whose weight count differs) is left as it is, with a warning."""
    names = h5files.list_attr(grp, "layer_names", display)
    if not names and "layer_names" not in grp.attrs and "layer_names0" not in grp.attrs:
        raise SavingError(display, f"'{grp.name}' has no `layer_names` attribute (not a Keras "
                                   "legacy weights group)")
    if by_name:
        return _read_by_name(grp, names, model, display, skip_mismatch)
    saved = []
    for n in names:
        lg = h5files.group(grp, n, display)
        wnames = h5files.list_attr(lg, "weight_names", display)
        if wnames:
            saved.append((n, lg, wnames))
    layers = [l for l in layout.keras_layers(model) if _layer_weights(l)]
    if len(saved) != len(layers):
        raise SavingError(display, f"the file has weights for {len(saved)} layers "
                                   f"{[s[0] for s in saved][:8]}, the model has {len(layers)} layers "
                                   f"with weights {[l.name for l in layers][:8]}")
    values = {}
    for k, ((n, lg, wnames), layer) in enumerate(zip(saved, layers)):
        ws = _layer_weights(layer)
        if len(wnames) != len(ws):
            raise SavingError(display, f"layer #{k} ('{layer.name}' in the model, '{n}' in the file) "
                                       f"has {len(ws)} weights, the file holds {len(wnames)}")
        _layer_values(lg, n, layer, wnames, f"layer #{k} ('{layer.name}')", display, skip_mismatch, values)
    _top_level(grp, display, skip_mismatch)
    return values


def _read_by_name(grp, names, model, display, skip_mismatch):
    index: dict[str, list] = {}
    for layer in layout.keras_layers(model):
        index.setdefault(layer.name, []).append(layer)
    values = {}
    for k, n in enumerate(names):
        layers = index.get(n, [])
        if not layers:
            continue
        lg = h5files.group(grp, n, display)
        wnames = h5files.list_attr(lg, "weight_names", display)
        for layer in layers:
            ws = _layer_weights(layer)
            label = f"layer '{layer.name}' (#{k} in the file)"
            if len(wnames) != len(ws):
                msg = f"{label} has {len(ws)} weights, the file holds {len(wnames)}"
                if not skip_mismatch:
                    raise SavingError(display, msg)
                _skip(display, f"skipping {msg}")
                continue
            _layer_values(lg, n, layer, wnames, label, display, skip_mismatch, values)
    _top_level(grp, display, skip_mismatch)
    return values


def read_optimizer(f, model, display, skip_mismatch=False):
    """The optimizer plan from `optimizer_weights` (None when absent or not matching)."""
    if "optimizer_weights" not in f or getattr(model, "optimizer", None) is None:
        return None
    og = h5files.group(f, "optimizer_weights", display)
    names = h5files.list_attr(og, "weight_names", display)
    dsets = []
    for n in names:
        try:
            dsets.append(h5files.dataset_obj(og, n, display))
        except SavingError as err:
            raise SavingError(display, f"optimizer weight '{n}': {err.problem}") from None
    return optimizer_state.plan(model, names, lambda i: h5files.read_array(dsets[i]),
                                [d.shape for d in dsets], display, skip_mismatch=skip_mismatch)


def weights_root(f, display):
    """The group holding legacy weights: `model_weights` in a full-model file, the root in
    tf.keras 2's `save_weights('w.h5')` file."""
    if "model_weights" in f:
        return h5files.group(f, "model_weights", display)
    if "layer_names" in f.attrs or "layer_names0" in f.attrs:
        return f
    return None
