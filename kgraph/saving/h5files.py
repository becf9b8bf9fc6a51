"""HDF5 files: atomic writes, string attributes, groups and datasets checked as a load
expects them, and datasets read into fresh arrays that become the weights without
another copy (from what kgraph/saving/h5opening.py read ahead, where it did).

Writes go to a temporary file in the target's folder, are fsynced and renamed over
the target (the pattern of kgraph/saving_atomic.py), so a crash leaves the old file.

Reading: every file is untrusted (the HDF5 library can crash on a damaged one), so it is
opened through kgraph/saving/h5opening.py, which gives an h5py file only after another
process has walked it, or h5lite's pure-Python reader; the helpers here serve both.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
import tempfile
import zipfile

import h5py
import numpy as np

from kgraph.saving import h5lite, h5probe
from kgraph.saving.errors import SavingError

HDF5_MAGIC = h5probe.HDF5_MAGIC
ZIP_MAGIC = b"PK\x03\x04"
# Exceptions that a damaged file raises from h5py, zipfile, json and numpy.
READ_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, OverflowError,
               UnicodeDecodeError, IndexError, AttributeError, EOFError, MemoryError,
               zipfile.BadZipFile, json.JSONDecodeError)


@contextlib.contextmanager
def reading(path, what="read"):
    """Turns any low-level failure while reading `path` into a SavingError naming it."""
    try:
        yield
    except SavingError:
        raise
    except READ_ERRORS as e:
        raise SavingError(path, f"cannot {what}: the file is damaged or not in the expected "
                                f"format ({type(e).__name__}: {e})") from None


# -- writing ------------------------------------------------------------------------
def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; on success it replaces `path` atomically."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SavingError(path, f"cannot write: the folder '{folder}' does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".kgraph", dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_h5(path):
    """An h5py file open for writing whose content appears at `path` only when complete."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            yield f


def set_list_attr(obj, name, values):
    """A list of strings as Keras writes it: split over `name0`, `name1`, ... when it would
    exceed HDF5's 64 KiB object-header limit; an empty list as an empty float array."""
    values = list(values)
    if not values:
        obj.attrs[name] = np.array([], np.float64)
        return
    limit, chunks = 64512, [[]]
    size = 0
    for v in values:
        n = len(v.encode("utf8")) + 16
        if chunks[-1] and size + n > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(v)
        size += n
    if len(chunks) == 1:
        obj.attrs[name] = values
    else:
        for i, c in enumerate(chunks):
            obj.attrs[f"{name}{i}"] = c


# -- reading ------------------------------------------------------------------------
# (the file number of an h5py file and the h5opening.Opening that read it ahead, while open)
_OPENING: contextvars.ContextVar = contextvars.ContextVar("kgraph_h5_opening", default=None)


def text_attr(obj, name, display, required=True):
    """A string attribute (Keras 3 writes str, tf.keras 2 wrote bytes)."""
    if name not in obj.attrs:
        if required:
            raise SavingError(display, f"missing the `{name}` attribute in '{obj.name}'")
        return None
    v = obj.attrs[name]
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if isinstance(v, (bytes, np.bytes_)):
        try:
            v = bytes(v).decode("utf8")
        except UnicodeDecodeError:
            raise SavingError(display, f"the `{name}` attribute is not UTF-8 text") from None
    if not isinstance(v, str):
        raise SavingError(display, f"the `{name}` attribute should be text, found {type(v).__name__}")
    return v


def json_attr(obj, name, display, required=True):
    text = text_attr(obj, name, display, required)
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise SavingError(display, f"the `{name}` attribute is not valid JSON ({e})") from None


def list_attr(obj, name, display) -> list[str]:
    """A list-of-strings attribute, also when Keras split it into `name0`, `name1`, ..."""
    if name in obj.attrs:
        raw = [obj.attrs[name]]
    else:
        raw, i = [], 0
        while f"{name}{i}" in obj.attrs:
            raw.append(obj.attrs[f"{name}{i}"])
            i += 1
        if not raw:
            return []
    out = []
    for part in raw:
        arr = np.asarray(part)
        if arr.size == 0:
            continue
        if arr.ndim != 1:
            raise SavingError(display, f"the `{name}` attribute of '{obj.name}' should be a list "
                                       f"of names, found shape {arr.shape}")
        for v in arr:
            if isinstance(v, (bytes, np.bytes_)):
                try:
                    v = bytes(v).decode("utf8")
                except UnicodeDecodeError:
                    raise SavingError(display, f"the `{name}` attribute of '{obj.name}' is "
                                               "not UTF-8 text") from None
            if not isinstance(v, str):
                raise SavingError(display, f"the `{name}` attribute of '{obj.name}' should hold "
                                           f"names, found {type(v).__name__}")
            out.append(v)
    return out


def is_group(obj):
    """Whether `obj` is a group (of h5py or h5lite)."""
    return isinstance(obj, (h5py.Group, h5lite.Group))


def is_dataset(obj):
    return isinstance(obj, (h5py.Dataset, h5lite.Dataset))


def link_paths(root):
    """Every link below the group `root` (bytes paths, depth first in name order): h5py's
    low-level visit, which makes no object per node (the high-level visititems does)."""
    if isinstance(root, h5lite.Group):
        return root.link_paths()
    names = []
    root.id.links.visit(names.append)
    return names


def group(parent, name, display):
    """A subgroup that must exist and be a group."""
    obj = parent.get(name)
    if obj is None:
        raise SavingError(display, f"missing the group '{parent.name.rstrip('/')}/{name}'")
    if not is_group(obj):
        raise SavingError(display, f"'{obj.name}' should be a group, found a dataset")
    return obj


def dataset_obj(parent, name, display, shape=None):
    """A numeric dataset, its shape checked against `shape`; no data is read."""
    if isinstance(parent.get(name, getlink=True), h5py.ExternalLink):
        raise SavingError(display, f"refused: '{parent.name.rstrip('/')}/{name}' is an external "
                                   "link (to another file)")
    obj = parent.get(name)
    if obj is None:
        raise SavingError(display, f"missing the dataset '{parent.name.rstrip('/')}/{name}'")
    if not is_dataset(obj):
        raise SavingError(display, f"'{obj.name}' should be a dataset, found a group")
    if obj.dtype.kind not in "fiub":
        raise SavingError(display, f"dataset '{obj.name}' has non-numeric type {obj.dtype}")
    # (h5lite reads plain datasets of the file itself only)
    why = None if isinstance(obj, h5lite.Dataset) else h5probe.refused(obj)
    if why:
        raise SavingError(display, f"refused: {why}")
    if shape is not None and tuple(obj.shape) != tuple(shape):
        raise SavingError(display, f"dataset '{obj.name}' has shape {tuple(obj.shape)}, but the "
                                   f"model expects {tuple(shape)}")
    return obj


def read_array(obj, dtype=None):
    """A dataset's data in a new C-ordered array of `dtype` (default: the file's), read
    straight into it (HDF5 converts the type on the way)."""
    if isinstance(obj, h5lite.Dataset):
        return obj.read(dtype)
    dtype = np.dtype(dtype or obj.dtype)
    opening = _OPENING.get()
    if opening is not None and opening[0] == obj.id.fileno:
        out = opening[1].take(obj, dtype)
        if out is not None:
            return out
    out = np.empty(obj.shape, dtype)
    if out.size == 0:
        return out
    if obj.dtype.kind == "b" or dtype.kind == "b":  # HDF5 stores bool as an enum
        return np.asarray(obj[()]).astype(dtype)
    obj.read_direct(out)
    return out
