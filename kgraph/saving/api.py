"""The user-facing calls: `model.save`, `model.save_weights`, `model.load_weights` (the
SavingAPI mixin of Model) and `load_model`.

Every call validates before it changes anything: a load reads and checks all arrays
(and the optimizer state) before the first weight is assigned, and a save builds the
file beside the target and renames it over the target only when it is complete. The
format is chosen from the file's content (HDF5 or zip signature), not only its name.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import time

import numpy as np

from kgraph.engine.layer import deferred_initializers
from kgraph.saving import (compile_config, h5files, h5opening, h5probe, keras_zip, legacy_h5, model_config,
                           optimizer_state, weights_h5)
from kgraph.saving.errors import FileChanged, SavingError

LEGACY_SUFFIXES = (".h5", ".hdf5")


def _values(model) -> dict:
    """{id(variable): array} of the model's current weights (pulled from the runtime)."""
    return {id(w): w.numpy() for w in model.weights}


def _optimizer_export(model, include_optimizer):
    if not include_optimizer or not getattr(model, "compiled", False) or model.optimizer is None:
        return None
    return optimizer_state.export(model)


def _check_target(path, overwrite):
    if os.path.isdir(path):
        raise SavingError(path, "cannot write: the path is a folder")
    if not overwrite and os.path.exists(path):
        raise SavingError(path, "the file exists and `overwrite=False`")


@contextlib.contextmanager
def _saving(path):
    """Turns a failure while building a file into a SavingError (the old file stays)."""
    try:
        yield
    except SavingError:
        raise
    except Exception as e:
        raise SavingError(path, f"cannot save: {type(e).__name__}: {e}") from e


def save_model(model, filepath, overwrite=True, include_optimizer=True):
    path = os.fspath(filepath)
    if not getattr(model, "built", False):
        raise SavingError(path, f"model '{model.name}' is not built yet (it has no input shape), "
                                "so it has no weights to save")
    _check_target(path, overwrite)
    if path.endswith(".keras"):
        _save_keras(model, path, include_optimizer)
    elif path.endswith(LEGACY_SUFFIXES):
        _save_legacy(model, path, include_optimizer)
    else:
        raise SavingError(path, "unsupported file extension for `save`: use `.keras` (Keras 3 "
                                "archive) or `.h5` (legacy HDF5)")


def _save_keras(model, path, include_optimizer):
    from kgraph import __version__
    with _saving(path):
        values = _values(model)
        opt = _optimizer_export(model, include_optimizer)
        config = model_config.keras_config(model)
        cc = compile_config.compile_config(model) if include_optimizer else None
        if cc is not None:
            cc["optimizer"] = compile_config.optimizer_config(model.optimizer)
            config["compile_config"] = cc
        metadata = {"keras_version": legacy_h5.KERAS_FORMAT_VERSION, "kgraph_version": __version__,
                    "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
        keras_zip.write(path, metadata, config, lambda f: weights_h5.write(f, model, values, opt))


def _save_legacy(model, path, include_optimizer):
    with _saving(path):
        values = _values(model)
        opt = _optimizer_export(model, include_optimizer)
        cfg = model_config.legacy_config(model)
        training = compile_config.training_config(model) if include_optimizer else None
        json.dumps(cfg), json.dumps(training)  # fail before the file is opened
        with h5files.atomic_h5(path) as f:
            legacy_h5.write(f, model, values, cfg, training, opt)


def save_weights(model, filepath, overwrite=True):
    path = os.fspath(filepath)
    if not path.endswith(".weights.h5"):
        raise SavingError(path, "the file name for `save_weights` must end in `.weights.h5` (use "
                                "`save('model.h5')` for a legacy HDF5 file)")
    if not getattr(model, "built", False):
        raise SavingError(path, f"model '{model.name}' is not built yet, so it has no weights to save")
    _check_target(path, overwrite)
    with _saving(path):
        values = _values(model)
        opt = _optimizer_export(model, True)
        with h5files.atomic_h5(path) as f:
            weights_h5.write(f, model, values, opt)


# -- loading ----------------------------------------------------------------------------
def _signature(path):
    if not os.path.exists(path):
        raise SavingError(path, "no such file")
    if os.path.isdir(path):
        raise SavingError(path, "is a folder, not a model file (SavedModel folders are not supported)")
    with h5files.reading(path, "open the file"):
        with open(path, "rb") as fh:
            return fh.read(8)


def _assign(model, values, plan):
    """Every value read becomes its weight's value (no copy); a weight left pending (no
    value in the file) runs its initializer."""
    for w in model.weights:
        value = values.get(id(w))
        if value is not None:
            w._adopt(value)
        elif not w.initialized:
            w.initialize()
    if plan is not None and getattr(model, "compiled", False):
        plan.apply(model)


def _is_keras3_layout(f):
    return any(k in f for k in ("layers", "vars", "_layer_checkpoint_dependencies"))


def _read_weights_file(f, model, display, with_optimizer, skip_mismatch=False, by_name=None,
                       objects_to_skip=None):
    """(values, optimizer plan) from an open HDF5 file of any supported layout."""
    with h5files.reading(display, "read the weights"):
        if _is_keras3_layout(f):
            if by_name is not None:
                raise SavingError(display, "`by_name` is for legacy HDF5 weights (`.h5`); this is a "
                                           f"Keras 3 weights file. Received: by_name={by_name!r}")
            return weights_h5.read(f, model, display, with_optimizer, skip_mismatch,
                                   objects_to_skip or ())
        if objects_to_skip is not None:
            raise SavingError(display, "`objects_to_skip` is for Keras 3 weights files "
                                       "(`.weights.h5`); this is a legacy HDF5 file")
        root = legacy_h5.weights_root(f, display)
        if root is None:
            raise SavingError(display, "no weights found: the file has neither Keras 3 `layers` "
                                       "nor legacy `model_weights`/`layer_names`")
        values = legacy_h5.read_weights_group(root, model, display, skip_mismatch, bool(by_name))
        plan = legacy_h5.read_optimizer(f, model, display, skip_mismatch) if with_optimizer else None
        return values, plan


# The most optimizer slots kgraph keeps per weight (Adam with amsgrad: m, v, v_hat).
SLOTS_PER_WEIGHT = 3
# Where files keep optimizer state: Keras 3 layout, legacy .h5.
OPTIMIZER_GROUPS = ("/optimizer/", "/optimizer_weights/")


def _selection(model, with_optimizer):
    """What a load into `model` may read ahead (h5opening.Selection): datasets no larger than
    the model's largest weight (an optimizer slot mirrors a weight), the optimizer's only
    when its state is loaded, and in all no more than the weights and their slots take."""
    sizes = [int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights]
    biggest, total = max(sizes, default=0), sum(sizes)
    skip = () if with_optimizer else OPTIMIZER_GROUPS
    budget = total * (1 + (SLOTS_PER_WEIGHT if with_optimizer else 0)) + (1 << 20)
    return h5opening.Selection(lambda name, n: n <= max(biggest, 64) and not name.startswith(skip), budget)


def _read_from_archive(member, opening, model, display, with_optimizer, **options):
    """Values and plan from a .keras archive's weights (`opening`: its h5opening.Opening); a
    damaged member is reported by its CRC-32 (the real cause) before any error it caused
    while parsing."""
    try:
        with opening.open() as f:
            out = _read_weights_file(f, model, display, with_optimizer, **options)
    except FileChanged:
        raise
    except SavingError:
        member.verify()
        raise
    member.verify()
    return out


LOAD_WEIGHTS_OPTIONS = ("by_name", "objects_to_skip")


def load_weights(model, filepath, skip_mismatch=False, **kwargs):
    path = os.fspath(filepath)
    unknown = sorted(set(kwargs) - set(LOAD_WEIGHTS_OPTIONS))
    if unknown:
        raise SavingError(path, f"`load_weights` accepts `skip_mismatch`, `by_name` (legacy .h5) "
                                f"and `objects_to_skip` (.weights.h5). Received: "
                                f"{', '.join(f'{k}={kwargs[k]!r}' for k in unknown)}")
    by_name, objects_to_skip = kwargs.get("by_name"), kwargs.get("objects_to_skip")
    if not getattr(model, "built", False):
        raise SavingError(path, f"model '{model.name}' is not built yet: build it (or call it on "
                                "data) before loading weights")
    head = _signature(path)
    compiled = bool(getattr(model, "compiled", False))
    options = {"skip_mismatch": bool(skip_mismatch), "by_name": by_name,
               "objects_to_skip": objects_to_skip}
    if head[:4] == h5files.ZIP_MAGIC:
        if by_name is not None:
            raise SavingError(path, "`by_name` is for legacy HDF5 weights (`.h5`), not for .keras "
                                    f"archives. Received: by_name={by_name!r}")
        if objects_to_skip is not None:
            raise SavingError(path, "`objects_to_skip` is for `.weights.h5` files, not for .keras "
                                    "archives")
    elif head != h5files.HDF5_MAGIC:
        raise SavingError(path, "not a Keras weights file (neither HDF5 nor a .keras archive)")
    selection = _selection(model, compiled)

    def read():
        if head[:4] == h5files.ZIP_MAGIC:
            with keras_zip.open_archive(path, path) as (_, _, member):
                opening = member.opening(read_ahead=True)
                opening.select(selection)
                return _read_from_archive(member, opening, model, path, compiled, **options)
        opening = h5opening.Opening(path, path, read_ahead=True)
        opening.select(selection)
        with opening.open() as f:
            return _read_weights_file(f, model, path, compiled, **options)
    values, plan = _again_if_replaced(path, read)
    _assign(model, values, plan)


def _compile(model, cfg, display, custom_objects, optimizer_cfg=None):
    args = compile_config.compile_args(cfg, display, model, custom_objects, optimizer_cfg)
    try:
        model.compile(**args)
    except (ValueError, TypeError) as e:
        raise SavingError(display, f"cannot compile the model with the saved training config: {e}") from None


# Before the model is built (its config is in the file), a load may read ahead up to this
# many bytes of what the file holds on disk (allocated blocks: a sparse file's holes do not
# count); the model's own selection then narrows what is kept.
PROVISIONAL_BYTES = 256 << 20


def _provisional(image, with_optimizer):
    """(image: an h5opening.Image)"""
    try:
        st = os.stat(image.path)
        allocated = getattr(st, "st_blocks", 0) * 512 or st.st_size
    except OSError:  # (gone: the open reports it)
        allocated = 0
    if image.length is not None:
        allocated = min(allocated, image.length)
    skip = () if with_optimizer else OPTIMIZER_GROUPS
    return h5opening.Selection(lambda name, n: not name.startswith(skip), min(allocated, PROVISIONAL_BYTES))


# How many times a load starts again when its file is replaced while it is being loaded
# (a checkpoint that a training process saves again: kgraph's atomic saves rename).
LOAD_ATTEMPTS = 3


def _path_identity(path):
    try:
        return h5probe.identity(os.stat(path))
    except OSError:
        return None


def _again_if_replaced(path, load):
    """load(), again (after a short pause) when it failed because the file changed under
    it: FileChanged, or any SavingError while the path came to hold another file (an
    archive's directory read from one file and its member from the next, a file being
    rewritten in place)."""
    for attempt in range(LOAD_ATTEMPTS):
        before = _path_identity(path)
        try:
            return load()
        except SavingError as e:
            if attempt == LOAD_ATTEMPTS - 1 or not (isinstance(e, FileChanged) or _path_identity(path) != before):
                raise
            time.sleep(0.02 * (attempt + 1))


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """A model from a `.keras` archive or a legacy `.h5` file (by content), with its
    weights, and when `compile` its loss, metrics, optimizer and optimizer state."""
    path = os.fspath(filepath)
    head = _signature(path)
    if head[:4] == h5files.ZIP_MAGIC:
        return _again_if_replaced(path, lambda: _load_keras(path, custom_objects, compile))
    if head == h5files.HDF5_MAGIC:
        return _again_if_replaced(path, lambda: _load_legacy(path, custom_objects, compile))
    raise SavingError(path, "not a Keras model file: expected a .keras archive (zip) or an HDF5 "
                            f"file{' (the file is empty)' if not head else ''}")


def _build(raw, display, custom_objects):
    """The model of a file's config, its initializers left pending: the file's values
    replace them (a weight the file does not provide is initialised in `_assign`)."""
    with deferred_initializers():
        return model_config.build(raw, display, custom_objects)


def _load_keras(path, custom_objects, compile):
    with keras_zip.open_archive(path, path) as (_, config, member):
        cc = config.get("compile_config")
        opening = member.opening(read_ahead=True)  # checked and read while the model is built
        opening.select(_provisional(member.image, bool(compile and cc)))
        try:
            model = _build(config, path, custom_objects)
            if compile and cc:
                if not isinstance(cc, dict):
                    raise SavingError(path, "`compile_config` in config.json should be an object")
                _compile(model, cc, path, custom_objects, cc.get("optimizer"))
        except BaseException:
            opening.cancel()
            raise
        compiled = bool(getattr(model, "compiled", False))
        opening.select(_selection(model, compiled))
        values, plan = _read_from_archive(member, opening, model, path, compiled)
    _assign(model, values, plan)
    return model


def _load_legacy(path, custom_objects, compile):
    opening = h5opening.Opening(path, path, read_ahead=True)
    opening.select(_provisional(opening.image, compile))
    with opening.open() as f:
        with h5files.reading(path, "read the model"):
            raw = h5files.json_attr(f, "model_config", path, required=False)
            if raw is None:
                kind = ("a weights-only file: build the model and use `load_weights`"
                        if ("layers" in f or "layer_names" in f.attrs or "vars" in f) else "not a Keras model file")
                raise SavingError(path, f"the `model_config` attribute is missing ({kind})")
            training = h5files.json_attr(f, "training_config", path, required=False)
        model = _build(raw, path, custom_objects)
        if compile and training:
            _compile(model, training, path, custom_objects)
        compiled = bool(getattr(model, "compiled", False))
        opening.select(_selection(model, compiled))
        values, plan = _read_weights_file(f, model, path, compiled)
    _assign(model, values, plan)
    return model


class SavingAPI:
    """save / save_weights / load_weights for Model."""

    def save(self, filepath, overwrite=True, include_optimizer=True):
        """`.keras` (Keras 3 archive) or `.h5` (legacy HDF5), chosen by the extension."""
        save_model(self, filepath, overwrite=overwrite, include_optimizer=include_optimizer)

    def save_weights(self, filepath, overwrite=True):
        """Keras 3 `.weights.h5` (with the optimizer state when compiled)."""
        save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """From `.weights.h5`, `.keras` or legacy `.h5` (by content); on a compiled model
        also the optimizer state the file holds. `skip_mismatch`: weights whose shape
        differs are left as they are (with a warning). `by_name=True` (legacy .h5 only):
        into the layers of the same name. `objects_to_skip` (.weights.h5 only): layers
        not to load."""
        load_weights(self, filepath, skip_mismatch=skip_mismatch, **kwargs)

