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

import h5py
import numpy as np

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
    """{path: group} for every `vars` group below `layers/` (to any depth)."""
    found = {}

    def visit(name, obj):
        if name.endswith("/vars") or name == "vars":
            if not isinstance(obj, h5py.Group):
                raise SavingError(display, f"'{obj.name}' should be a group, found a dataset")
            found[name[:-len("/vars")] if name != "vars" else ""] = obj
    root.visititems(visit)
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


def read(f, model, display, with_optimizer=True):
    """Validated values for every weight ({id(variable): array}) and the optimizer plan
    (None when absent, not wanted, or not matching). Nothing is assigned here."""
    renamed = "layers" not in f and "_layer_checkpoint_dependencies" in f  # Keras 2.13's name
    groups = _vars_groups(f, display)
    if "layers" not in f and "_layer_checkpoint_dependencies" not in f and "vars" not in f:
        raise SavingError(display, "not a Keras weights file: it has no `layers` or `vars` group "
                                   f"(top-level entries: {sorted(f.keys())[:8]})")
    by_name: dict[str, list[str]] = {}
    for path, grp in groups.items():
        if "name" in grp.attrs:
            nm = h5files.text_attr(grp, "name", display, required=False)
            by_name.setdefault(nm, []).append(path)
    entries = layout.store_entries(model)
    used, values = set(), {}
    for e in entries:
        if not e.weights:
            continue
        path = e.path
        if renamed:
            path = path.replace("layers", "_layer_checkpoint_dependencies", 1)
        grp = groups.get(path)
        found_name = None if grp is None else h5files.text_attr(grp, "name", display, required=False)
        if grp is None or (found_name is not None and found_name != e.name):
            named = [p for p in by_name.get(e.name, []) if p not in used]
            if len(named) == 1:
                path, grp = named[0], groups[named[0]]
        if grp is None:
            raise SavingError(display, f"no weights for layer '{e.layer.name}' "
                                       f"({type(e.layer).__name__}): the group '{path}/vars' is missing")
        if path in used:
            raise SavingError(display, f"the weights in '{path}/vars' would be loaded into two layers")
        used.add(path)
        keys = _indexed(grp, display)
        if len(keys) != len(e.weights):
            raise SavingError(display, f"layer '{e.layer.name}' ({type(e.layer).__name__}) has "
                                       f"{len(e.weights)} weights, but '{path}/vars' holds {len(keys)}")
        for k, w in zip(keys, e.weights):
            try:
                values[id(w)] = h5files.dataset(grp, k, display, shape=w.shape)
            except SavingError as err:
                raise SavingError(display, f"layer '{e.layer.name}', weight '{w.name}': "
                                           f"{err.problem}") from None
    extra = sorted(p for p, g in groups.items()
                   if p not in used and p.split("/")[0] in ("layers", "_layer_checkpoint_dependencies")
                   and len(g.keys()))
    if extra:
        raise SavingError(display, f"the file holds weights for layers the model does not have: "
                                   f"{extra[:6]}{' ...' if len(extra) > 6 else ''}")
    plan = None
    if with_optimizer and getattr(model, "optimizer", None) is not None and "optimizer" in groups:
        grp = groups["optimizer"]
        keys = _indexed(grp, display)
        dsets = []
        for k in keys:
            d = grp[k]
            if not isinstance(d, h5py.Dataset) or d.dtype.kind not in "fiub":
                raise SavingError(display, f"'{grp.name}/{k}' should be a numeric dataset")
            dsets.append(d)
        plan = optimizer_state.plan(model, [None] * len(keys),
                                    lambda i: np.asarray(dsets[i][()]),
                                    [d.shape for d in dsets], display)
    return values, plan
