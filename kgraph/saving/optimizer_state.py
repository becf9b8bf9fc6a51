"""Optimizer state in Keras's variable order, to and from kgraph's runtime slots.

Keras 3 keeps `optimizer.variables` as: iteration, learning_rate (unless it is a
schedule), then per slot group one variable per trainable weight, interleaved within a
group (Adam: m0, v0, m1, v1, ...; amsgrad's velocity_hats as a second group), then
extra globals (Nadam's u_product). An optimizer that never stepped has only the first
two. Files store them by position (`optimizer/vars/<i>`, or legacy `optimizer_weights`).

tf.keras 2 (optimizer_v2) files name every variable (`Adam/iter:0`,
`Adam/dense/kernel/m:0`, grouped: all m, then all v), so those are matched by name.
"""
from __future__ import annotations

import re
import warnings

import numpy as np

from kgraph.saving import layout
from kgraph.saving.errors import SavingError

# kgraph slot name -> Keras 3 variable suffix
KERAS_SLOT = {"m": "momentum", "v": "velocity", "vhat": "velocity_hat", "u": "norm"}
# tf.keras 2 (optimizer_v2) slot names per kgraph slot name, by optimizer class
TF2_SLOT = {"RMSprop": {"velocity": "rms", "momentum": "momentum", "average_gradient": "mg"},
            "Adadelta": {"accumulated_grad": "accum_grad", "accumulated_delta_var": "accum_var"},
            "Adamax": {"m": "m", "u": "v"}}


def slot_groups(opt) -> list[tuple[str, ...]]:
    """kgraph slot names grouped as Keras's build() creates them."""
    name = type(opt).__name__
    if name in ("Adam", "AdamW"):
        return [("m", "v")] + ([("vhat",)] if opt.amsgrad else [])
    if name == "RMSprop":
        return [(s,) for s in opt.slot_names]
    if name in ("Adadelta", "Adamax", "Nadam"):
        return [tuple(opt.slot_names)]
    return [(s,) for s in opt.slot_names]


def _has_lr_variable(opt) -> bool:
    from kgraph.schedules import LearningRateSchedule
    return not isinstance(opt.learning_rate, LearningRateSchedule)


def entries(model) -> list[tuple]:
    """The optimizer's variables in Keras order: (kind, variable or None, name)."""
    opt = model.optimizer
    out = [("iterations", None, "iteration")]
    if _has_lr_variable(opt):
        out.append(("learning_rate", None, "learning_rate"))
    weights = layout.model_trainable_weights(model)
    for group in slot_groups(opt):
        for w in weights:
            for s in group:
                out.append(("slot", w, s))
    for g in opt.global_slots():
        out.append(("global", None, g))
    return out


def export(model):
    """(names, arrays) of the optimizer state as Keras writes it. Before the first step
    (no slots created) only iteration and learning rate, like an unbuilt Keras optimizer."""
    opt = model.optimizer
    state = getattr(model, "_state", None)
    slots = state.slot_values() if state is not None else {}
    ents = entries(model)
    if not slots:
        ents = [e for e in ents if e[0] in ("iterations", "learning_rate")]
    names, arrays = [], []
    for kind, w, sname in ents:
        if kind == "iterations":
            value = np.array(opt.iterations, np.int64)
        elif kind == "learning_rate":
            value = np.array(opt.current_learning_rate(), np.float32)
        elif kind == "slot":
            value = slots.get((w.path, sname))
            if value is None:
                value = np.asarray(opt.slot_initial(sname, w.numpy()), w.dtype)
            sname = KERAS_SLOT.get(sname, sname)
        else:
            value = slots.get(("", sname))
            if value is None:
                value = np.asarray(opt.global_slots()[sname], np.float32)
        label = sname if w is None else f"{w.path.replace('/', '_')}_{sname}"
        names.append(f"{opt.name}/{label}")
        arrays.append(np.asarray(value))
    return names, arrays


class Restore:
    """A validated optimizer state, applied only after everything else has loaded."""

    def __init__(self, iterations=None, learning_rate=None, slots=None):
        self.iterations, self.learning_rate = iterations, learning_rate
        self.slots = slots or {}

    def apply(self, model):
        from kgraph.runtime.state import TrainingState
        opt = model.optimizer
        if self.iterations is not None:
            opt.iterations = int(self.iterations)
        if self.learning_rate is not None and _has_lr_variable(opt):
            opt.learning_rate = float(self.learning_rate)
        if self.slots:
            if model._state is None:
                # the runtime creates its state lazily; create it now so the restored slots
                # are there when the first train step registers them
                model._state = TrainingState(model.weights, opt)
            model._state.restore_slots(self.slots)


def _scalar(value, display, what):
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "fiu":
        raise SavingError(display, f"the optimizer's {what} should be one number, found shape "
                                   f"{arr.shape} of type {arr.dtype}")
    return arr.reshape(())[()]


def _warn(display, msg):
    warnings.warn(f"Model file '{display}': {msg}; the optimizer starts from a fresh state.",
                  UserWarning, stacklevel=4)


def plan(model, names, read, shapes, display, skip_mismatch=False) -> Restore | None:
    """Match saved optimizer variables to kgraph's slots, checking shapes before reading.
    `names`: saved names (None entries when the file stores only positions); `shapes[i]`
    the saved shape; `read(i)` the saved value. Returns None (with a warning, as Keras)
    when the saved state belongs to a different optimizer or model; also, with
    `skip_mismatch`, when a saved variable's shape differs."""
    if not names:
        return None
    if any(n and n.endswith(":0") for n in names):
        return _plan_tf2(model, names, read, shapes, display, skip_mismatch)
    ents = entries(model)
    head = [e for e in ents if e[0] in ("iterations", "learning_rate")]
    if len(names) == len(head):
        ents = head
    elif len(names) != len(ents):
        _warn(display, f"the saved optimizer state has {len(names)} variables, kgraph's "
                       f"{type(model.optimizer).__name__} for this model has {len(ents)}")
        return None
    for i, (kind, w, sname) in enumerate(ents):
        want = () if w is None else w.shape
        if tuple(shapes[i]) != tuple(want):
            return _mismatch(display, f"optimizer variable #{i} ({names[i] or kind}) has shape "
                                      f"{tuple(shapes[i])}, expected {tuple(want)}", skip_mismatch)
    out = Restore(slots={})
    for i, (kind, w, sname) in enumerate(ents):
        value = read(i)
        if kind == "iterations":
            out.iterations = _scalar(value, display, "iteration count")
        elif kind == "learning_rate":
            out.learning_rate = _scalar(value, display, "learning rate")
        elif kind == "slot":
            out.slots[(w.path, sname)] = np.asarray(value, w.dtype)
        else:
            out.slots[("", sname)] = np.asarray(value, np.float32)
    return out


def _mismatch(display, problem, skip_mismatch):
    """A saved optimizer state that does not fit: with skip_mismatch a warning and no state
    (None: the optimizer starts fresh), else a SavingError."""
    if skip_mismatch:
        _warn(display, problem)
        return None
    raise SavingError(display, problem)


def _plan_tf2(model, names, read, shapes, display, skip_mismatch=False):
    """tf.keras 2 names: `<Opt>/iter:0`, `<Opt>/<layer>/<weight>/<slot>:0` (optimizer_v2) or
    `<Opt>/<slot>/<layer>/<weight>:0` (2.11+ optimizer)."""
    opt = model.optimizer
    tf2 = TF2_SLOT.get(type(opt).__name__, {})
    by_tf_name = {tf2.get(s, s): s for s in opt.slot_names}
    weights = {w.path: w for w in layout.model_trainable_weights(model)}
    out, missing = Restore(slots={}), set()
    for i, raw in enumerate(names):
        name = re.sub(r":\d+$", "", raw)
        parts = name.split("/")
        if parts[-1] in ("iter", "iteration", "iterations", "learning_rate", "lr") \
                and int(np.prod(shapes[i])) != 1:
            raise SavingError(display, f"optimizer variable '{raw}' should be one number, found "
                                       f"shape {tuple(shapes[i])}")
        if parts[-1] in ("iter", "iteration", "iterations"):
            out.iterations = _scalar(read(i), display, "iteration count")
            continue
        if parts[-1] in ("learning_rate", "lr"):
            out.learning_rate = _scalar(read(i), display, "learning rate")
            continue
        body = parts[1:] if len(parts) > 2 else parts
        var = slot = None
        if body and body[-1] in by_tf_name and "/".join(body[:-1]) in weights:
            var, slot = weights["/".join(body[:-1])], by_tf_name[body[-1]]
        elif body and body[0] in by_tf_name and "/".join(body[1:]) in weights:
            var, slot = weights["/".join(body[1:])], by_tf_name[body[0]]
        if var is None:
            continue  # e.g. Nadam's momentum_cache: no kgraph counterpart
        if tuple(shapes[i]) != var.shape:
            return _mismatch(display, f"optimizer variable '{raw}' has shape {tuple(shapes[i])}, "
                                      f"but weight '{var.path}' has shape {var.shape}", skip_mismatch)
        out.slots[(var.path, slot)] = np.asarray(read(i), var.dtype)
    for w in weights.values():
        for s in opt.slot_names:
            if (w.path, s) not in out.slots:
                missing.add(f"{w.path}/{s}")
    if out.slots and missing:
        _warn(display, f"the saved optimizer state lacks {sorted(missing)[:4]}"
                       f"{' ...' if len(missing) > 4 else ''}")
        return None
    return out
