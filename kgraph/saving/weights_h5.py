"""Keras 3's weights store: the `.weights.h5` file and the `model.weights.h5` inside a
`.keras` archive.

Layout: `layers/<snake_case_class>[_N]/vars/<i>` per layer (LSTM/GRU under `.../cell/vars`),
the object's name in each `vars` group's `name` attribute, the model's own (empty)
`vars`, and `optimizer/vars/<i>`. Keras finds a layer's group by that path, which depends
on the layer's class and position, not its name; when a file's groups carry names that
match the model's layers but sit at other positions (a model built in another order),
the names win.
"""
from __future__ import annotations

import warnings

from kgraph.saving import h5files, layout, optimizer_state
from kgraph.saving.errors import SavingError


# -- writing ----------------------------------------------------------------------------
def write(f, model, values: dict, optimizer=None):
    """Writes the store into an open h5py file. `values`: {id(variable): array};
    `optimizer`: (names, arrays) or None."""
    for e in layout.store_entries(model):
        grp = f.require_group(e.vars_path)
        grp.attrs["name"] = e.name
        for i, w in enumerate(e.weights):
            grp.create_dataset(str(i), data=values[id(w)])
    if optimizer is not None:
        names, arrays = optimizer
        grp = f.create_group("optimizer/vars")
        grp.attrs["name"] = model.optimizer.name
        for i, a in enumerate(arrays):
            grp.create_dataset(str(i), data=a)


# -- reading ----------------------------------------------------------------------------
def _vars_groups(root, display):
    """{path: group} for every `vars` group (to any depth)."""
    names = [name.decode("utf8", "surrogateescape") for name in h5files.link_paths(root)
             if name == b"vars" or name.endswith(b"/vars")]
    found = {}
    for name in names:
        obj = root.get(name)
        if obj is None:  # a soft link to nowhere
            continue
        if not h5files.is_group(obj):
            raise SavingError(display, f"'{obj.name}' should be a group, found a dataset")
        found[name[:-len("/vars")] if name != "vars" else ""] = obj
    return found


def _indexed(grp, display):
    """The datasets `0..n-1` of a vars group, as a list (checked to be exactly those)."""
    keys = list(grp.keys())
    idx = []
    for k in keys:
        if not k.isdigit():
            raise SavingError(display, f"unexpected entry '{k}' in '{grp.name}' (expected "
                                       "datasets named 0, 1, ...)")
        idx.append(int(k))
    if sorted(idx) != list(range(len(idx))):
        raise SavingError(display, f"the datasets in '{grp.name}' are not numbered 0..{len(idx) - 1}: "
                                   f"{sorted(keys)}")
    return [str(i) for i in range(len(idx))]


def _skip(display, msg):
    warnings.warn(f"Model file '{display}': {msg}", UserWarning, stacklevel=6)


def read(f, model, display, with_optimizer=True, skip_mismatch=False, objects_to_skip=()):
    """Validated values for every weight ({id(variable): array}) and the optimizer plan
    (None when absent, not wanted, or not matching). Nothing is assigned here.
    `skip_mismatch`: a layer whose group is missing or holds another number of weights,
    and a weight whose shape differs, is left as it is (with a warning) instead of an
    error. `objects_to_skip`: layers (or the optimizer) not to load."""
    renamed = "layers" not in f and "_layer_checkpoint_dependencies" in f  # Keras 2.13's name
    groups = _vars_groups(f, display)
    if "layers" not in f and "_layer_checkpoint_dependencies" not in f and "vars" not in f:
        raise SavingError(display, "not a Keras weights file: it has no `layers` or `vars` group "
                                   f"(top-level entries: {sorted(f.keys())[:8]})")
    by_name: dict[str, list[str]] = {}
    names = {path: h5files.text_attr(grp, "name", display, required=False) for path, grp in groups.items()}
    for path, nm in names.items():
        if nm is not None:
            by_name.setdefault(nm, []).append(path)
    skip_ids = {id(o) for o in objects_to_skip}
    entries = layout.store_entries(model)
    used, values = set(), {}
    for e in entries:
        if not e.weights:
            continue
        path = e.path
        if renamed:
            path = path.replace("layers", "_layer_checkpoint_dependencies", 1)
        grp = groups.get(path)
        found_name = None if grp is None else names[path]
        if grp is None or (found_name is not None and found_name != e.name):
            named = [p for p in by_name.get(e.name, []) if p not in used]
            if len(named) == 1:
                path, grp = named[0], groups[named[0]]
        if id(e.top) in skip_ids or id(e.layer) in skip_ids:
            used.add(path)
            continue
        label = f"layer '{e.layer.name}' ({type(e.layer).__name__})"
        if e.top is not e.layer:
            label += f" in '{e.top.name}' ({type(e.top).__name__})"
        if grp is None:
            problem = f"no weights for {label}: the group '{path}/vars' is missing"
            if skip_mismatch:
                _skip(display, f"skipping {label}: the group '{path}/vars' is missing")
                continue
            raise SavingError(display, problem)
        if path in used:
            raise SavingError(display, f"the weights in '{path}/vars' would be loaded into two layers")
        used.add(path)
        keys = _indexed(grp, display)
        if len(keys) != len(e.weights):
            if skip_mismatch:
                _skip(display, f"skipping {label}: it has {len(e.weights)} weights, '{path}/vars' "
                               f"holds {len(keys)}")
                continue
            raise SavingError(display, f"{label} has {len(e.weights)} weights, but '{path}/vars' "
                                       f"holds {len(keys)}")
        for k, w in zip(keys, e.weights):
            try:
                obj = h5files.dataset_obj(grp, k, display, shape=None if skip_mismatch else w.shape)
                if tuple(obj.shape) != w.shape:
                    _skip(display, f"skipping weight '{w.path}' of {label}: the model expects shape "
                                   f"{w.shape}, the file holds {tuple(obj.shape)}")
                    continue
                values[id(w)] = h5files.read_array(obj, w.dtype)
            except SavingError as err:
                raise SavingError(display, f"{label}, weight '{w.name}': {err.problem}") from None
    extra = sorted(p for p, g in groups.items()
                   if p not in used and p.split("/")[0] in ("layers", "_layer_checkpoint_dependencies")
                   and len(g.keys()))
    if extra:
        msg = (f"the file holds weights for layers the model does not have: "
               f"{extra[:6]}{' ...' if len(extra) > 6 else ''}")
        if not skip_mismatch:
            raise SavingError(display, msg)
        _skip(display, f"{msg} (ignored)")
    plan = None
    opt = getattr(model, "optimizer", None)
    if with_optimizer and opt is not None and id(opt) not in skip_ids and "optimizer" in groups:
        grp = groups["optimizer"]
        keys = _indexed(grp, display)
        dsets = [h5files.dataset_obj(grp, k, display) for k in keys]
        plan = optimizer_state.plan(model, [None] * len(keys), lambda i: h5files.read_array(dsets[i]),
                                    [d.shape for d in dsets], display, skip_mismatch=skip_mismatch)
    return values, plan
