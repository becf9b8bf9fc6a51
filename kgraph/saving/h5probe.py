"""Walks an untrusted HDF5 file's structure where a crash cannot hurt: in another process.

The HDF5 C library can crash (segmentation fault) or loop forever on a damaged file.
Measured with HDF5 2.0 on 20,000 byte-flipped kgraph files: 10 crashes and 9 endless
loops, all while reading an attribute (variable-length strings point into a global heap
that the library follows without bounds checks); reading a contiguous dataset is a
bounds-checked plain read. So the probe touches all metadata a loader will touch (every
link, every attribute, every dataset's header, the chunk index of non-contiguous data)
and the loader then reads the same bytes in its own process.

It also refuses what a Keras file never holds but a hostile one could use to read other
files: external links, datasets stored in external raw files, virtual datasets.

A file to probe may be a byte range of another file (a `.keras` archive's stored member):
HDF5 opens it in place where it starts where HDF5 looks for a superblock (kgraph's
archives), else RangeFile serves the range to h5py, here and in the loader.

This module imports only the standard library, numpy and h5py, so that the helper
(`python -c` loading this file by path, see kgraph/saving/preflight.py) starts fast;
`serve()` is its main loop: one JSON request per line on stdin, one reply per line.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys

import h5py
import numpy as np

# Datasets whose data the probe reads (non-contiguous ones) up to this size.
MAX_PROBE_READ = 1 << 31


def pread_into(fd, view, offset):
    """Reads into `view` from file offset `offset`; the number of bytes read."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    os.lseek(fd, offset, os.SEEK_SET)  # (no preadv: Windows) each fd has one user
    data = os.read(fd, len(view))
    view[:len(data)] = data
    return len(data)


def preadv_all(fd, views, offset):
    """Fills every buffer of `views` (memoryviews of bytes) from file offset `offset` on, in
    order: one preadv call where the system has it (the GIL is released for all of it)."""
    views = [v for v in views if len(v)]
    while views:
        if hasattr(os, "preadv"):
            n = os.preadv(fd, views, offset)
        else:
            n = pread_into(fd, views[0], offset)
        if n <= 0:
            raise OSError(f"the file ends at {offset}, before the data it lists")
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def pwrite_all(fd, data, offset):
    """Writes all of `data` at file offset `offset`."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        if hasattr(os, "pwrite"):
            done += os.pwrite(fd, view[done:], offset + done)
        else:
            os.lseek(fd, offset + done, os.SEEK_SET)
            done += os.write(fd, view[done:])
    return done


class RangeFile(io.RawIOBase):
    """Bytes [offset, offset + length) of a file as a seekable, read-only file object (a zip
    member stored uncompressed, written by Keras), for h5py's file-object driver."""

    def __init__(self, path, offset=0, length=None):
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._offset, self._pos = int(offset), 0
        if length is None:
            length = max(0, os.fstat(self._fd).st_size - self._offset)
        self._length = int(length)

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        if base + pos < 0:
            raise OSError(f"seek to a negative position ({base + pos})")
        self._pos = base + pos
        return self._pos

    def tell(self):
        return self._pos

    def readinto(self, buffer):
        view = memoryview(buffer).cast("B")
        n = min(len(view), max(0, self._length - self._pos))
        if n == 0:
            return 0
        got = pread_into(self._fd, view[:n], self._offset + self._pos)
        self._pos += got
        return got

    def fileno(self):
        return self._fd

    def close(self):
        if not self.closed:
            os.close(self._fd)
        super().close()


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _stored_length(sb):
    """How many bytes from the superblock on its file holds, by what the superblock (its
    first 64 bytes) records: end-of-file address less base address; None for a layout
    this does not know."""
    if len(sb) < 64 or sb[:8] != HDF5_MAGIC:
        return None
    version = sb[8]
    if version in (0, 1):
        if sb[13] != 8:  # size of offsets
            return None
        base = 24 if version == 0 else 28
        eof = base + 16
    elif version in (2, 3):
        if sb[9] != 8:
            return None
        base, eof = 12, 28
    else:
        return None
    return int.from_bytes(sb[eof:eof + 8], "little") - int.from_bytes(sb[base:base + 8], "little")


def natively_readable(path, offset, length):
    """Whether the HDF5 library, opening the whole file at `path`, finds exactly the image
    at [offset, offset + length): the library looks for a superblock at 0, 512, 1024, 2048
    ..., so the image must start at one of these with no superblock before it, and end
    within `length`. (kgraph writes a `.keras` archive's weights at 512 for this: read
    natively, its metadata parses several times faster than through RangeFile.)"""
    if offset < 512 or offset & (offset - 1) or length is None:
        return False
    with open(path, "rb") as fh:
        at = 0
        while at < offset:
            fh.seek(at)
            if fh.read(8) == HDF5_MAGIC:
                return False
            at = 512 if at == 0 else at * 2
        fh.seek(offset)
        stored = _stored_length(fh.read(64))
    return stored is not None and 0 < stored <= length


def identity(st):
    """What tells one version of a file from another: device, inode, size, mtime."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _opened_identity(f, path):
    """identity() of the file HDF5 opened: of its own handle with the default (POSIX) driver;
    of the path just after the open with another (HDF5_DRIVER=stdio, core, ...), where a
    race can only make a load start again."""
    if f.driver == "sec2":
        try:
            return identity(os.fstat(f.id.get_vfd_handle()))
        except (OSError, TypeError, ValueError):
            pass
    return identity(os.stat(path))


@contextlib.contextmanager
def open_hdf5(path, offset=0, length=None):
    """(h5py file for reading, the file offset its dataset offsets count from, identity() of
    the file opened): the file itself, or a byte range of it (opened natively where
    possible, else via RangeFile)."""
    if (offset == 0 and length is None) or natively_readable(path, offset, length):
        # (best-effort locking: where the filesystem has no locks, as some NFS and Lustre
        # mounts, HDF5 would refuse the file)
        with h5py.File(path, "r", locking="best-effort") as f:
            yield f, 0, _opened_identity(f, path)
    else:
        with RangeFile(path, offset, length) as rf, h5py.File(rf, "r") as f:
            yield f, offset, identity(os.fstat(rf.fileno()))


def refused(obj):
    """Why a dataset (h5py Dataset or its id) is refused (it would read other files), or None."""
    dsid = obj.id if isinstance(obj, h5py.Dataset) else obj
    plist = dsid.get_create_plist()
    name = obj.name if isinstance(obj, h5py.Dataset) else h5py.h5i.get_name(dsid).decode("utf8", "replace")
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        return f"dataset '{name}' is a virtual dataset (it maps other files)"
    if plist.get_external_count() > 0:
        return f"dataset '{name}' keeps its data in external files"
    return None


def _read_attributes(oid, count):
    for i in range(count):
        aid = h5py.h5a.open(oid, index=i)
        if aid.get_space().get_simple_extent_type() == h5py.h5s.NULL:
            continue
        dtype = aid.dtype
        aid.read(np.zeros(aid.shape, dtype), mtype=h5py.h5t.py_create(dtype))


def contiguous_extent(dsid):
    """(file offset, byte count) of a numeric dataset stored as one plain run of bytes in
    the file itself, in exactly numpy's layout of its type, else None. HDF5 gives an offset
    only for such a run (none for chunked, compact, external or unallocated data). The
    offset counts from the start of what h5py opened (a user block included)."""
    dtype = dsid.dtype
    if dtype.kind not in "fiu" or not dsid.get_type().equal(h5py.h5t.py_create(dtype)):
        return None  # (an integer of fewer bits, or at a bit offset: HDF5 converts it)
    addr = dsid.get_offset()
    if addr is None:
        return None
    return int(addr), int(dsid.get_storage_size())


def walk(f):
    """Touches every piece of metadata a loader reads (with h5py's low-level API: a third
    of the high-level walk's time). Returns a problem (text) for a file that is
    well-formed but refused, else None; a damaged file raises (or crashes)."""
    problems = []

    def link(name, info):
        if info.type not in (h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT):
            problems.append(f"'{name.decode('utf8', 'replace')}' is an external link (to another file)")
            return 1  # stops the visit
        return None
    f.id.links.visit(link, info=True)
    if problems:
        return problems[0]
    _read_attributes(f.id, h5py.h5o.get_info(f.id).num_attrs)  # the root (not visited)

    def visit(name, info):
        oid = h5py.h5o.open(f.id, name)
        _read_attributes(oid, info.num_attrs)
        if info.type == h5py.h5o.TYPE_DATASET:
            _ = oid.shape, oid.dtype
            why = refused(oid)
            if why:
                problems.append(why)
                return 1
            if oid.get_create_plist().get_layout() != h5py.h5d.CONTIGUOUS:
                ds = h5py.Dataset(oid)
                if ds.nbytes <= MAX_PROBE_READ:
                    _ = ds[()]  # parses the chunk index
        return None
    h5py.h5o.visit(f.id, visit, info=True)
    return problems[0] if problems else None


def list_extents(f):
    """[name, offset, nbytes] of every dataset stored as a plain run of bytes (a quick
    pass: no attributes read)."""
    runs = []

    def visit(name, info):
        if info.type == h5py.h5o.TYPE_DATASET:
            run = contiguous_extent(h5py.h5o.open(f.id, name))
            if run is not None and run[1]:
                runs.append(["/" + name.decode("utf8", "surrogateescape"), *run])
    h5py.h5o.visit(f.id, visit, info=True)
    return runs


def probe(path, offset=0, length=None, extents=False, early=None):
    """{"ok": True, "identity": identity() of the file walked} or {"ok": False, "problem" |
    "error": text} for one file.

    With `extents`, the plain-run datasets as [name, offset in the file at `path`,
    nbytes] (what a loader may read with plain preads while the walk goes on, see
    h5opening.Opening): given to `early({"extents": [...]})` before the walk when it is
    given, else in an ok reply."""
    runs = None
    try:
        with open_hdf5(path, offset, length) as (f, base, walked):
            if extents:
                limit = offset + (length if length is not None else os.path.getsize(path) - offset)
                runs = [[n, base + a, b] for n, a, b in list_extents(f)
                        if offset <= base + a and base + a + b <= limit]
                if early is not None:
                    early({"extents": runs})
            problem = walk(f)
    except Exception as e:  # a damaged file: the loader reports it
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    if problem is not None:
        return {"ok": False, "problem": problem}
    reply = {"ok": True, "identity": walked}  # (the loader checks it walked the file it loads)
    if extents and early is None:
        reply["extents"] = runs
    return reply


def serve():
    """The helper's loop: requests {"path", "offset", "length", "extents"} on stdin, replies
    on stdout (with "extents": first a line of them, then the verdict)."""
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the loading process
    out = sys.stdout
    out.write("ready\n")
    out.flush()

    def send(reply):
        out.write(json.dumps(reply) + "\n")
        out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        send(probe(req["path"], req.get("offset", 0), req.get("length"), req.get("extents", False), send))
