"""Opening an untrusted HDF5 image: checked, read ahead, and its CRC-32 computed while the
caller builds the model (Opening).

The HDF5 C library can crash the whole process on a damaged file (measured: random byte
flips in a Keras .h5 gave segmentation faults and endless loops, all while reading
attributes). A file in the classic format that h5py writes by default (Keras's and
kgraph's files) is read without the library, by a pure-Python reader (h5lite), which
cannot crash. Before the process parses any other file with the library, another process
walks all of its metadata (kgraph/saving/preflight.py, kgraph/saving/h5probe.py); if that
fails or dies, the file is reported as damaged with a SavingError instead of taking the
process down. The process then reads the same bytes, which the walk has shown to be safe.
Where the datasets' bytes lie comes from h5lite's parse (for other files: hints, checked
against the library's view) or else from the walk, so that they are read (plain reads)
while the model is built and the walk goes on. An HDF5 image can also be a byte range of
a file (a `.keras` archive's stored member).
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading

import numpy as np

try:  # ISA-L's CRC-32 (carry-less multiply): 3.2 ms for 40 MB where zlib's takes 10.9 ms
    from isal.isal_zlib import crc32
except ImportError:  # a platform without its wheels
    from zlib import crc32

from kgraph.saving import h5files, h5lite, h5probe, preflight
from kgraph.saving.errors import FileChanged, SavingError

# The check in another process costs a few ms per file (a fork of this process until the
# helper is ready). A program that only reads files it wrote itself may set this to
# False; damaged files can then crash the process inside the HDF5 library.
PREFLIGHT = True
# A file that h5lite reads completely (what h5py writes by default, as Keras and kgraph
# do) is loaded without the HDF5 library, so without the check either: pure Python cannot
# crash on a damaged file. False: every file is checked and read by the library.
PURE_PYTHON = True
CRC_PIECE = 4 << 20  # bytes hashed at a time by crc_range
# Reading ahead (Opening): bytes and pieces per preadv; gaps between datasets up to
# MERGE_GAP are read too (into scratch) so that one call covers both.
READ_BATCH = 8 << 20
READ_PIECES = 256
MERGE_GAP = 64 << 10
READER_START_S = 0.002
ALL_DONE = 1 << 62  # Opening._done once the reader has stopped
CRC_QUEUE = 8  # pieces read but not hashed yet, at most (the reader waits)


class Image:
    """Where an HDF5 image lies: a whole file, or `length` bytes of it from `offset`."""

    def __init__(self, path, offset=0, length=None):
        self.path, self.offset, self.length = os.fspath(path), int(offset), length

    def head(self, n=8):
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            return fh.read(n)


_CANCELLED = object()  # Opening's CRC, when its reading stopped early


class Selection:
    """Which datasets a load may read ahead (Opening.select): `accept(name, nbytes)`, and
    no more than `budget` bytes in all. The caller knows the model it loads into, so a
    file cannot make the read-ahead read what the model would never ask for."""

    def __init__(self, accept, budget):
        self.accept, self.budget = accept, int(budget)


def _spawn(target, *args, name):
    """A started daemon thread, or None where no thread can start (then the work is done
    another way, or not ahead of time)."""
    try:
        t = threading.Thread(target=target, args=args, daemon=True, name=name)
        t.start()
        return t
    except RuntimeError:
        return None


class Opening:
    """An untrusted HDF5 image on its way to being opened. With `read_ahead`, it is parsed
    at construction by h5lite; when that parse is complete (PURE_PYTHON), `open()` gives
    h5lite's File, and nothing else is checked. Else, from construction, a background
    thread has it checked in another process (preflight), and `open()` gives the h5py
    file once the verdict is in.

    Where the plain datasets lie comes from the parse (for the library: hints), else from
    the walk, which lists them first; a reader thread reads those the caller's Selection
    (`select()`) accepts, in batches of one preadv each, into fresh arrays, while the walk
    goes on and the caller builds the model. `read_array` inside `open()` takes a
    read-ahead array: for h5py, when this process's HDF5 says the same about the dataset
    (else h5py reads it). Bytes read before the verdict are never used when the verdict
    is bad.

    With `checksum`, the reader also reads the rest of the image, in order, and a hashing
    thread computes its CRC-32 as the pieces arrive (a `.keras` member's check, without a
    second read of the data): `crc()`.

    The walk, the reads and the parse must all see one file, the one `identity` names (by
    default, the file at construction): else FileChanged (the caller loads again: a
    checkpoint replaced by an atomic save while it was being loaded is not an error)."""

    def __init__(self, source, display, checksum=False, read_ahead=False, identity=None):
        image = source if isinstance(source, Image) else Image(source)
        if not os.path.exists(image.path):
            raise SavingError(display, "no such file")
        if os.path.isdir(image.path):
            raise SavingError(display, "is a folder, not a file")
        self._read_ahead = read_ahead and PREFLIGHT  # (unchecked: h5py reads everything)
        hints = parsed = None
        with h5files.reading(display, "open the file"):
            with open(image.path, "rb") as fh:  # (fstat, as the walk and the open report theirs)
                fh.seek(image.offset)
                head = fh.read(8)
                st = os.fstat(fh.fileno())
                if self._read_ahead and head == h5files.HDF5_MAGIC:
                    parsed = h5lite.parse(fh.fileno(), image.offset, image.length)
                    hints = None if parsed is None else parsed.runs
            self._identity = list(identity) if identity is not None else h5probe.identity(st)
        # the file parsed here is the one the caller named (else the library's check
        # reports the change)
        self._lite = (parsed if PURE_PYTHON and parsed is not None and parsed.complete
                      and h5probe.identity(st) == self._identity else None)
        if head != h5files.HDF5_MAGIC:
            raise SavingError(display, "not an HDF5 file (wrong signature"
                                       f"{', empty file' if not head else ''})")
        size = st.st_size
        self.image, self.display = image, display
        self._end = image.offset + image.length if image.length is not None else size
        self._base = image.offset  # where dataset offsets count from (set by open())
        self._checked = threading.Event()  # the verdict is in
        self._planned = threading.Event()  # what is read ahead is known (_index)
        self._selected = threading.Event()
        self._reading = threading.Event()  # the reader's first read has started
        self._selection = None
        self._error = None
        self._index: dict = {}   # name -> (position in reading order, offset, nbytes)
        self._arrays: dict = {}  # name -> uint8 array, once read (until taken)
        self._done = 0           # how many of the indexed datasets are read (or dropped)
        self._cond = threading.Condition()
        self._cancel = False
        self._checksum = checksum
        self._crc = queue.Queue(maxsize=CRC_QUEUE) if checksum else None
        self._crc_result = _CANCELLED  # int, or an OSError, once computed
        self._crc_done = threading.Event()
        self._reader = self._hasher = None
        self._inline = False
        self._changed = False  # the reader found another file at the path
        self._hints = hints  # (the check need not list the datasets then)
        self._runs = None  # the plan with its arrays, made by select() when there are hints
        self._runs_selection = None  # (the selection it was made with)
        if PREFLIGHT or checksum:
            if hints is not None:
                with contextlib.suppress(Exception):
                    self._start_reader(hints)  # reads at once, while the check runs
                if self._reader is None:  # (it could not start)
                    self._hints = None
            if self._lite is not None:  # nothing to check: h5lite serves the file
                if self._reader is None:
                    self._planned.set()  # (nothing read ahead: h5lite reads it all)
                self._checked.set()
            elif _spawn(self._run, name="kgraph-h5-open") is None:
                self._inline = True  # no thread: open() checks (h5py reads what was not read)
        else:
            self._planned.set()
            self._checked.set()

    # -- the background: check, then read ------------------------------------------------
    def _run(self):
        extents = self._hints

        def listed(runs):  # the walk's list of datasets: read them while it goes on
            nonlocal extents
            extents = runs
            self._start_reader(runs)
        try:
            if PREFLIGHT:
                try:
                    reply = preflight.check(self.image.path, self.image.offset, self.image.length,
                                            self.display,
                                            extents=self._read_ahead and not self._inline and extents is None,
                                            on_extents=None if self._inline else listed)
                    walked = reply.get("identity")
                    if walked is not None and list(walked) != self._identity:
                        raise FileChanged(self.display)
                except BaseException as e:  # a SavingError (damaged file), reported by open()
                    self._error = e
                    self.cancel()
            if extents is None and self._error is None and self._checksum and not self._inline:
                self._start_reader([])  # (no list: the checksum still reads it all)
        finally:
            if self._reader is None:
                self._planned.set()
            self._checked.set()

    def _start_reader(self, extents):
        self._reader = _spawn(self._read, extents, name="kgraph-h5-read")
        if self._reader is None:
            self._planned.set()

    def _plan(self, extents):
        """The runs to read ahead, (name, offset, nbytes, None) in file order: accepted by
        the selection, within the image, not overlapping, within the budget."""
        runs, pos, left = [], self.image.offset, 0
        sel = self._selection
        names = {}
        for name, _, _ in extents:  # (a name listed twice is not read ahead: which is it?)
            names[name] = names.get(name, 0) + 1
        if sel is not None and not self._cancel:
            left = sel.budget
            for name, off, n in sorted(extents, key=lambda r: r[1]):
                cost = n + (off - pos if off - pos <= MERGE_GAP else 0)  # (a small gap is read too)
                if (off >= pos and off + n <= self._end and cost <= left and names[name] == 1
                        and sel.accept(name, n)):
                    runs.append((name, off, n, None))
                    pos, left = off + n, left - cost
        return runs

    def _read(self, extents):
        """The planned runs into fresh arrays (one np.empty each, as h5py reads them; made by
        select() when the places were parsed here), with a checksum also every byte between
        them, in file order. Batches of about READ_BATCH bytes (a larger array in parts) are
        read with one preadv each: the GIL is released for a whole batch (a thread waiting
        for it while the caller builds the model waits up to the switch interval, 5 ms,
        each time), and the hashing thread hashes one batch while the next is read."""
        fd, outcome = None, _CANCELLED  # (an unexpected error: crc() reads it all again)
        try:
            if self._checksum:
                self._hasher = _spawn(self._hash, name="kgraph-crc")
            if self._read_ahead and extents:
                self._selected.wait()  # the caller's selection (or a cancel)
            planned_with, used = self._selection, 0
            if extents and extents is self._hints and self._runs is not None:
                runs, planned_with = self._runs, self._runs_selection  # (planned by select())
            else:
                runs = self._plan(extents) if extents else []
            fd = os.open(self.image.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            if h5probe.identity(os.fstat(fd)) != self._identity:
                self._changed = True  # another file now: nothing read (open() and crc() say so)
                raise OSError("the file changed")
            with self._cond:
                self._index = {name: (i, off, n) for i, (name, off, n, _) in enumerate(runs)}
            self._planned.set()
            hashing = self._hasher is not None
            batch, start, size = [], self.image.offset, 0  # (name or None, buffer), offset, bytes
            for name, off, n, buf in self._pieces(runs, hashing):
                if self._cancel:
                    break
                if name is not None and self._selection is not planned_with:
                    # a later selection (the final one, after a provisional one): what it
                    # does not accept is not kept (read for the checksum only)
                    sel = self._selection
                    if not sel.accept(name, n) or used + n > sel.budget:
                        if batch:
                            self._read_batch(fd, batch, start)
                            batch, size = [], 0
                        with self._cond:
                            self._done += 1
                            self._cond.notify_all()
                        for at in range(off, off + n, READ_BATCH) if hashing else ():
                            piece = bytearray(min(READ_BATCH, off + n - at))
                            self._read_batch(fd, [(None, None, piece)], at)
                        continue
                if name is not None:
                    used += n
                if buf is None:
                    buf = np.empty(n, np.uint8) if name is not None else bytearray(n)
                whole = memoryview(buf).cast("B")
                for at in range(0, max(n, 1), READ_BATCH):  # (a large array in parts: the
                    last = at + READ_BATCH >= n             # hashing follows part by part)
                    if batch and (off + at != start + size or size >= READ_BATCH or len(batch) >= READ_PIECES):
                        self._read_batch(fd, batch, start)
                        batch, size = [], 0
                    if not batch:
                        start = off + at
                    part = whole[at:at + READ_BATCH]
                    batch.append((name if last else None, buf if last else None, part))
                    size += len(part)
            if batch and not self._cancel:
                self._read_batch(fd, batch, start)
            if not self._cancel and hashing:
                outcome = None
        except OSError as e:  # h5py reads what was not read here (and reports the problem)
            outcome = e
        finally:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._planned.set()
            with self._cond:
                self._done = ALL_DONE  # (whatever take() waits for is not coming now)
                self._cond.notify_all()
            if self._hasher is not None:
                self._crc.put(outcome)

    def _pieces(self, runs, everything):
        """(name, offset, nbytes, array or None) in file order: the runs, and between them
        (None, ...) the bytes a checksum needs, or (without one) small gaps only, so that
        reads merge."""
        pos = self.image.offset
        for name, off, n, buf in runs + [(None, self._end, 0, None)]:
            gap = off - pos
            if everything or (gap <= MERGE_GAP and name is not None):
                while pos < off:
                    step = min(off - pos, READ_BATCH)
                    yield None, pos, step, None
                    pos += step
            if name is None:
                return
            yield name, off, n, buf
            pos = off + n

    def _read_batch(self, fd, batch, start):
        """Reads the parts of `batch`, (name, array, part) from file offset `start` on; a
        named array is complete once its last part (the one that names it) is read."""
        if not self._reading.is_set():
            self._reading.set()
        h5probe.preadv_all(fd, [part for _, _, part in batch], start)
        sel = self._selection  # (the latest: a read under a provisional one is kept only if
        with self._cond:       # the final one accepts it too)
            for name, buf, _ in batch:
                if name is not None:
                    if not self._cancel and (sel is None or sel.accept(name, len(buf))):
                        self._arrays[name] = buf
                    self._done += 1
            self._cond.notify_all()
        if self._hasher is not None:
            for _, _, part in batch:
                self._crc.put(part)

    def _hash(self):
        value, failed = 0, False
        while True:  # (drains the queue to the end even after a failure: the reader never waits)
            piece = self._crc.get()
            if piece is None or piece is _CANCELLED or isinstance(piece, OSError):
                self._crc_result = _CANCELLED if failed else (value if piece is None else piece)
                self._crc_done.set()
                return
            if not failed:
                try:
                    value = crc32(piece, value)
                except Exception:  # (crc() then reads it all again)
                    failed = True

    # -- the caller ----------------------------------------------------------------------
    def select(self, selection):
        """What may be read ahead (a Selection); until it is given, nothing is. A later
        call narrows what is kept of what is still to read (a provisional selection,
        before the model is known, then the final one)."""
        self._selection = selection
        if self._runs is None and self._hints is not None and not self._cancel:
            # the arrays are made here, in the caller's thread: memory that a thread
            # other than the main one allocates comes from another malloc arena, which
            # returns freed memory to the system, so each load's arrays were new pages
            # to fault in and zero (measured: 7-9 ms of system time per 40 MB load)
            try:
                runs = [(name, off, n, np.empty(n, np.uint8)) for name, off, n, _ in self._plan(self._hints)]
            except MemoryError:  # (no reading ahead: h5py reads, or fails, as it would)
                runs = []
            with self._cond:
                self._runs, self._runs_selection = ([] if self._cancel else runs), selection
            self._selected.set()
            if self._runs or self._checksum:
                # a moment for the reader to start its first read: else it waits for the
                # GIL while this thread builds the model (up to the 5 ms switch interval)
                self._reading.wait(READER_START_S)
        self._selected.set()

    def crc(self):
        """The CRC-32 of the image's bytes (an OSError when they could not be read, a
        FileChanged when the path holds another file now)."""
        if not self._checksum:
            raise ValueError("this Opening computes no checksum")
        self._selected.set()  # (no selection given by now: only the checksum reads)
        if self._inline and not self._checked.is_set():
            self._run()
        self._checked.wait()
        self._planned.wait()
        if self._hasher is not None:
            self._crc_done.wait()
        if self._changed:
            return FileChanged(self.display)
        if self._crc_result is not _CANCELLED:
            return self._crc_result
        try:  # the reading ahead stopped early (or never ran): read it all again
            fd = os.open(self.image.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            try:
                if h5probe.identity(os.fstat(fd)) != self._identity:
                    return FileChanged(self.display)
                return crc_range(fd, self.image.offset, self._end - self.image.offset)
            finally:
                os.close(fd)
        except OSError as e:
            return e

    def take(self, obj, dtype):
        """The read-ahead data of dataset `obj` as an array of `dtype`, or None (not read
        ahead, not readable, or this process's HDF5 says otherwise: then h5py reads it)."""
        if self._selection is None or obj.dtype != dtype:
            return None
        self._planned.wait()
        entry = self._index.get(obj.name)
        if entry is None:
            return None
        run = h5probe.contiguous_extent(obj.id)
        if (run is None or self._base + run[0] != entry[1] or run[1] != entry[2]
                or run[1] != obj.size * dtype.itemsize):
            return None
        buf = self._wait_for(obj.name, entry)
        return None if buf is None else buf.view(dtype).reshape(obj.shape)

    def _take_run(self, name, offset, nbytes):
        """The read-ahead bytes of h5lite's dataset `name` at [offset, offset + nbytes) of
        the file (a uint8 array), or None."""
        if self._selection is None:
            return None
        self._planned.wait()
        entry = self._index.get(name)
        if entry is None or entry[1] != offset or entry[2] != nbytes:
            return None
        return self._wait_for(name, entry)

    def _wait_for(self, name, entry):
        with self._cond:
            while self._done <= entry[0]:
                self._cond.wait()
            return self._arrays.pop(name, None)

    def cancel(self):
        """Stops the reading ahead and drops what it read (the check, if still running,
        finishes in the background)."""
        self._cancel = True
        self._drop()

    def join(self, timeout):
        """Waits (up to `timeout` s) for the reader to stop, e.g. before the file goes."""
        for t in (self._reader, self._hasher):
            if t is not None:
                t.join(timeout)

    @contextlib.contextmanager
    def open(self):
        """The h5py file, once the check has passed; inside, read_array uses the read-ahead."""
        try:
            if self._inline and not self._checked.is_set():
                self._run()
            self._checked.wait()
            if self._error is not None:
                raise self._error
            if self._lite is not None:
                with self._lite_file() as f:
                    yield f
                return
            with contextlib.ExitStack() as stack:
                with h5files.reading(self.display, "open the HDF5 file"):
                    f, self._base, opened = stack.enter_context(h5probe.open_hdf5(
                        self.image.path, self.image.offset, self.image.length))
                if opened != self._identity or self._changed:
                    raise FileChanged(self.display)
                token = h5files._OPENING.set((f.id.fileno, self))
                try:
                    yield f
                finally:
                    h5files._OPENING.reset(token)
                    self._drop()
        except BaseException:
            self.cancel()
            raise

    def _drop(self):
        """Drops the arrays read ahead and not taken (the reader may hold its runs still);
        nothing more is read ahead for a selection not given by now."""
        self._selected.set()
        with self._cond:
            self._arrays.clear()
            self._runs = [] if self._runs is not None else None

    @contextlib.contextmanager
    def _lite_file(self):
        """h5lite's File of the image, served from a descriptor of the file parsed."""
        with h5files.reading(self.display, "open the HDF5 file"):
            fd = os.open(self.image.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            with h5files.reading(self.display, "open the HDF5 file"):
                opened = h5probe.identity(os.fstat(fd))
            if opened != self._identity or self._changed:
                raise FileChanged(self.display)
            yield h5lite.File(self._lite, fd, self._take_run)
        finally:
            os.close(fd)
            self._drop()


def crc_range(fd, offset, length, value=0):
    """CRC-32 of file bytes [offset, offset + length), read in pieces."""
    buf = bytearray(min(CRC_PIECE, max(length, 1)))
    view = memoryview(buf)
    done = 0
    while done < length:
        n = h5probe.pread_into(fd, view[:min(len(buf), length - done)], offset + done)
        if n <= 0:
            raise OSError(f"the file ends {length - done} bytes early")
        value = crc32(view[:n], value)
        done += n
    return value
