"""HDF5 files: atomic writes, checked opening of untrusted files, string attributes.

Writes go to a temporary file in the target's folder, are fsynced and renamed over
the target (the pattern of kgraph/saving_atomic.py), so a crash leaves the old file.

Reading: the HDF5 C library can crash the whole process on a damaged file (measured:
random byte flips in a Keras .h5 gave a segmentation fault). So before the process
parses a file, a forked child walks all of its metadata (groups, attributes, dataset
headers, chunk indexes); if the child dies or fails, the file is reported as damaged
with a SavingError instead of taking the process down. The parent then reads the same
bytes, which the child has shown to be safe to walk.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import select
import tempfile
import zipfile

import h5py
import numpy as np

from kgraph.saving.errors import SavingError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
# Exceptions that a damaged file raises from h5py, zipfile, json and numpy.
READ_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, OverflowError,
               UnicodeDecodeError, IndexError, AttributeError, EOFError, MemoryError,
               zipfile.BadZipFile, json.JSONDecodeError)
# A child that walks a file longer than this is treated as stuck on a damaged file.
PREFLIGHT_TIMEOUT_S = 120.0
# The forked check costs a fork of this process (tens of ms for a large one). A program
# that only reads files it wrote itself may set this to False; damaged files can then
# crash the process inside the HDF5 library.
PREFLIGHT = True


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


@contextlib.contextmanager
def scratch_path(path):
    """A temporary file beside `path` (same disk), removed afterwards."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".kgraph", dir=folder)
    os.close(fd)
    try:
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
def _walk_all(f):
    """Touches everything a reader will touch: attributes, dataset headers, and the data of
    datasets that are not contiguous (their chunk indexes are parsed on read; a contiguous
    dataset's data is a plain bounds-checked read)."""
    for k in f.attrs:
        _ = f.attrs[k]

    def visit(_name, obj):
        for k in obj.attrs:
            _ = obj.attrs[k]
        if isinstance(obj, h5py.Dataset):
            _ = obj.shape, obj.dtype
            if obj.id.get_create_plist().get_layout() != h5py.h5d.CONTIGUOUS and obj.nbytes <= (1 << 31):
                _ = obj[()]
    f.visititems(visit)


def _open(source):
    return h5py.File(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source, "r")


def _preflight(source, display):
    """Walks the file in a forked child; raises SavingError if the child fails or dies."""
    if not PREFLIGHT or not hasattr(os, "fork"):
        return
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return
    if pid == 0:  # child: walk, report one byte, leave without cleanup
        code = b"0"
        try:
            os.close(r)
            with _open(source) as f:
                _walk_all(f)
            code = b"1"
        except BaseException:
            pass
        finally:
            try:
                os.write(w, code)
            finally:
                os._exit(0)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], PREFLIGHT_TIMEOUT_S)
        out = os.read(r, 1) if ready else None
    finally:
        os.close(r)
    if out is None:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    if out == b"1":
        return
    if out is None:
        raise SavingError(display, "the HDF5 structure could not be read within "
                                   f"{PREFLIGHT_TIMEOUT_S:.0f} s (damaged file?)")
    if out == b"0":
        # a Python-level error: the parent reproduces it with a precise message
        with reading(display, "read the HDF5 file"):
            with _open(source) as f:
                _walk_all(f)
        raise SavingError(display, "the HDF5 structure is damaged")
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    raise SavingError(display, "the HDF5 structure is damaged (reading it crashed the HDF5 "
                               f"library{f' with signal {sig}' if sig else ''})")


def open_h5(source, display):
    """Opens an untrusted HDF5 file (a path or the bytes of one) for reading, checked first.
    The caller closes it."""
    if not isinstance(source, (bytes, bytearray)):
        source = os.fspath(source)
        if not os.path.exists(source):
            raise SavingError(display, "no such file")
        if os.path.isdir(source):
            raise SavingError(display, "is a folder, not a file")
        with open(source, "rb") as fh:
            head = fh.read(8)
    else:
        head = bytes(source[:8])
    if head != HDF5_MAGIC:
        raise SavingError(display, "not an HDF5 file (wrong signature"
                                   f"{', empty file' if not head else ''})")
    _preflight(source, display)
    with reading(display, "open the HDF5 file"):
        return _open(source)


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


def group(parent, name, display):
    """A subgroup that must exist and be a group."""
    obj = parent.get(name)
    if obj is None:
        raise SavingError(display, f"missing the group '{parent.name.rstrip('/')}/{name}'")
    if not isinstance(obj, h5py.Group):
        raise SavingError(display, f"'{obj.name}' should be a group, found a dataset")
    return obj


def dataset(parent, name, display, shape=None):
    """A dataset's value as a numpy array; its shape (and numeric type) checked against
    `shape` before any data is read."""
    obj = parent.get(name)
    if obj is None:
        raise SavingError(display, f"missing the dataset '{parent.name.rstrip('/')}/{name}'")
    if not isinstance(obj, h5py.Dataset):
        raise SavingError(display, f"'{obj.name}' should be a dataset, found a group")
    if obj.dtype.kind not in "fiub":
        raise SavingError(display, f"dataset '{obj.name}' has non-numeric type {obj.dtype}")
    if shape is not None and tuple(obj.shape) != tuple(shape):
        raise SavingError(display, f"dataset '{obj.name}' has shape {tuple(obj.shape)}, but the "
                                   f"model expects {tuple(shape)}")
    return np.asarray(obj[()])
