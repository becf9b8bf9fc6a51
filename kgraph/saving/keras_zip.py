"""The `.keras` archive: an uncompressed zip of `metadata.json`, `config.json` and
`model.weights.h5`, exactly those three (Keras 3 writes them with zipfile's default,
ZIP_STORED, the weights built in memory and copied in).

Writing: the zip is laid out here, not by zipfile: model.weights.h5 comes first, its
data at offset 512, which HDF5 writes itself (the 512 bytes before it are HDF5's user
block, where the local header goes afterwards): no temporary .h5 file and no copy. The
member's CRC-32 is computed from the written bytes while the data is being flushed to disk.

Reading: the weights member is read in place. When its data starts where the HDF5
library looks for a superblock (512, 1024, 2048, ...), as in kgraph's archives, the
library opens the archive itself (h5probe.natively_readable); else (Keras writes the
weights last) as a byte range of the archive (h5probe.RangeFile); a compressed member is
extracted to a temporary file. Its CRC-32 is checked in a background thread while the
model is built and the HDF5 structure checked; the loader waits for it before it assigns
anything.

Archives are untrusted input: a member name that is absolute, has `..` or a backslash,
a duplicate, a missing or extra member, a member whose declared size is out of
proportion to what is stored (a decompression bomb), or whose data lies outside the file
is refused before anything is read.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import struct
import tempfile
import threading
import zipfile

import h5py

from kgraph.saving import h5files, h5opening, h5probe
from kgraph.saving.errors import FileChanged, SavingError

MEMBERS = ("metadata.json", "config.json", "model.weights.h5")
MAX_JSON_BYTES = 64 << 20
BOMB_RATIO = 100  # declared size / stored size beyond which a member is refused

_LOCAL = struct.Struct("<IHHHHHIIIHH")            # local file header, 30 bytes
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")    # central directory header, 46 bytes
_END = struct.Struct("<IHHHHIIH")                 # end of central directory, 22 bytes
_END64 = struct.Struct("<IQHHIIQQQQ")             # zip64 end of central directory, 56 bytes
_LOCATOR64 = struct.Struct("<IIQI")               # zip64 end locator, 20 bytes
_U32 = 0xFFFFFFFF
ZIP64_LIMIT = _U32  # sizes and offsets from here on are written in zip64 records
WEIGHTS_OFFSET = 512  # where model.weights.h5's data starts (HDF5's first superblock position)
_PADDING_ID = 0xD935  # an extra field readers skip (zipalign's alignment padding)


# -- writing ----------------------------------------------------------------------------
def _dos_time(stamp):
    y, mo, d, h, mi, s = stamp
    return (h << 11) | (mi << 5) | (s // 2), ((y - 1980) << 9) | (mo << 5) | d


class _Entry:
    def __init__(self, name, offset, crc, size):
        self.name, self.offset, self.crc, self.size = name.encode(), offset, crc, size


def _local_header(entry, t, d, length=None):
    """Local header + name + extra field (a zip64 record when the member needs one), padded
    to `length` bytes in all when given."""
    big = entry.size >= ZIP64_LIMIT
    extra = struct.pack("<HHQQ", 1, 16, entry.size, entry.size) if big else b""
    if length is not None:
        pad = length - _LOCAL.size - len(entry.name) - len(extra) - 4
        assert pad >= 0
        extra += struct.pack("<HH", _PADDING_ID, pad) + bytes(pad)
    size32 = _U32 if big else entry.size
    return _LOCAL.pack(0x04034B50, 45 if big else 20, 0, 0, t, d, entry.crc, size32, size32,
                       len(entry.name), len(extra)) + entry.name + extra


def _central(entries, start, t, d):
    out = []
    for e in entries:
        fields = []
        size32, off32 = e.size, e.offset
        if e.size >= ZIP64_LIMIT:
            fields += [e.size, e.size]
            size32 = _U32
        if e.offset >= ZIP64_LIMIT:
            fields.append(e.offset)
            off32 = _U32
        extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
        version = 45 if fields else 20
        out.append(_CENTRAL.pack(0x02014B50, (3 << 8) | version, version, 0, 0, t, d, e.crc,
                                 size32, size32, len(e.name), len(extra), 0, 0, 0,
                                 (0o600 << 16), off32) + e.name + extra)
    body = b"".join(out)
    tail = b""
    if start >= ZIP64_LIMIT or len(body) >= ZIP64_LIMIT:
        end64 = start + len(body)
        tail = (_END64.pack(0x06064B50, 44, (3 << 8) | 45, 45, 0, 0, len(entries), len(entries),
                            len(body), start)
                + _LOCATOR64.pack(0x07064B50, 0, end64, 1))
    tail += _END.pack(0x06054B50, 0, 0, len(entries), len(entries),
                      _U32 if len(body) >= ZIP64_LIMIT else len(body),
                      _U32 if start >= ZIP64_LIMIT else start, 0)
    return body + tail


def write(path, metadata: dict, config: dict, write_weights):
    """The archive at `path`, atomically; `write_weights(h5py.File)` fills model.weights.h5.

    The weights come first, their data at offset WEIGHTS_OFFSET: HDF5 writes them there
    itself (the archive's first bytes are its user block, where the local header goes
    afterwards), and a reader's HDF5 library opens them in place (h5probe.natively_readable).
    metadata.json and config.json follow, then the central directory."""
    t, d = _dos_time(datetime.datetime.now().timetuple()[:6])
    with h5files.atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=WEIGHTS_OFFSET) as f:
            write_weights(f)
        fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
        try:
            size = os.fstat(fd).st_size - WEIGHTS_OFFSET
            weights = _Entry("model.weights.h5", 0, 0, size)
            # the weights go to disk while their CRC is computed from the page cache
            flusher = threading.Thread(target=os.fsync, args=(fd,), daemon=True)
            flusher.start()
            try:
                weights.crc = h5opening.crc_range(fd, WEIGHTS_OFFSET, size)
            finally:
                flusher.join()
            h5probe.pwrite_all(fd, _local_header(weights, t, d, WEIGHTS_OFFSET), 0)
            entries, pos = [weights], WEIGHTS_OFFSET + size
            for name, data in (("metadata.json", json.dumps(metadata).encode()),
                               ("config.json", json.dumps(config).encode())):
                e = _Entry(name, pos, h5opening.crc32(data), len(data))
                block = _local_header(e, t, d) + data
                h5probe.pwrite_all(fd, block, pos)
                entries.append(e)
                pos += len(block)
            h5probe.pwrite_all(fd, _central(entries, pos, t, d), pos)
        finally:
            os.close(fd)


# -- reading ----------------------------------------------------------------------------
def _check_names(infos, display):
    seen = set()
    for info in infos:
        n = info.filename
        bad = (n.startswith(("/", "\\")) or "\\" in n or "\x00" in n or ":" in n
               or any(part in ("..", ".") for part in n.split("/")))
        if bad:
            raise SavingError(display, f"the archive has a member with an unsafe name {n!r} "
                                       "(absolute, or leaving the archive's folder)")
        if n in seen:
            raise SavingError(display, f"the archive has two members named {n!r}")
        seen.add(n)
    extra = sorted(seen - set(MEMBERS))
    missing = [m for m in MEMBERS if m not in seen]
    if missing:
        raise SavingError(display, f"the archive lacks {missing} (a .keras file holds "
                                   f"{list(MEMBERS)})")
    if extra:
        raise SavingError(display, f"the archive has unexpected members {extra[:6]} (a .keras "
                                   f"file holds only {list(MEMBERS)})")


def _check_sizes(info, display, limit=None):
    if limit is not None and info.file_size > limit:
        raise SavingError(display, f"'{info.filename}' is {info.file_size} bytes, over the "
                                   f"{limit}-byte limit for it")
    if info.file_size > (1 << 20) and info.file_size > BOMB_RATIO * max(info.compress_size, 1):
        raise SavingError(display, f"'{info.filename}' declares {info.file_size} bytes but stores "
                                   f"{info.compress_size}: refusing a possible decompression bomb")


def _read_member(zf, info, display, limit=None):
    _check_sizes(info, display, limit)
    with h5files.reading(display, f"read '{info.filename}' from the archive"):
        data = zf.read(info)  # checks the CRC-32
    if len(data) != info.file_size:
        raise SavingError(display, f"'{info.filename}' has {len(data)} bytes, the archive says "
                                   f"{info.file_size}")
    return data


def _json(data, display, name):
    try:
        obj = json.loads(data.decode("utf8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SavingError(display, f"'{name}' is not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise SavingError(display, f"'{name}' should hold a JSON object, found {type(obj).__name__}")
    return obj


class WeightsMember:
    """model.weights.h5 of an open archive: `image` (where HDF5 reads it) and, when it is
    read in place, its stored CRC-32. `opening()` starts the check and read of it (with
    the CRC-32 computed as it is read); `verify()` waits for that and raises SavingError on
    a mismatch."""

    def __init__(self, display, image, crc=None, extracted=None, identity=None):
        self.display, self.image, self._extracted = display, image, extracted
        self._expected, self._opening, self._identity = crc, None, identity

    def opening(self, read_ahead=False):
        """(`identity`: of the archive whose directory was read, so that a member of an
        archive replaced since is not taken for this one's.)"""
        self._opening = h5opening.Opening(self.image, self.display, checksum=self._expected is not None,
                                        read_ahead=read_ahead, identity=self._identity)
        return self._opening

    def verify(self):
        if self._expected is None or self._opening is None:
            return
        r = self._opening.crc()
        if isinstance(r, FileChanged):
            raise r
        if isinstance(r, OSError):
            raise SavingError(self.display, f"cannot read 'model.weights.h5' from the archive ({r})")
        if r != self._expected:
            raise SavingError(self.display, f"'model.weights.h5' in the archive is damaged: its "
                                            f"CRC-32 is {r:08x}, the archive says {self._expected:08x}")

    def close(self):
        if self._opening is not None:
            self._opening.cancel()
            if self._extracted is not None:
                self._opening.join(5.0)  # (Windows cannot delete a file that is open)
        if self._extracted is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._extracted)


def _stored_range(fh, info, size, display):
    """(offset, length) of a stored member's data, from its local header (read from the
    archive's open file `fh`)."""
    with h5files.reading(display, "read the .keras archive"):
        fh.seek(info.header_offset)
        head = fh.read(_LOCAL.size)
        if len(head) == _LOCAL.size:
            name = fh.read(_LOCAL.unpack(head)[9])
    if len(head) != _LOCAL.size or _LOCAL.unpack(head)[0] != 0x04034B50:
        raise SavingError(display, f"'{info.filename}' has no valid local header in the archive")
    fields = _LOCAL.unpack(head)
    if name != info.filename.encode("utf8") and name != info.filename.encode("cp437", "replace"):
        raise SavingError(display, f"the local header of '{info.filename}' names {name!r}")
    start = info.header_offset + _LOCAL.size + fields[9] + fields[10]
    if start + info.compress_size > size:
        raise SavingError(display, f"'{info.filename}' claims {info.compress_size} bytes at offset "
                                   f"{start}, beyond the end of the {size}-byte file")
    return start, info.compress_size


@contextlib.contextmanager
def open_archive(path, display):
    """(metadata, config, WeightsMember) of a checked archive; the member's temporary
    file (if it had to be extracted) is removed on leaving."""
    with h5files.reading(display, "open the .keras archive"):
        with open(path, "rb") as fh:
            head = fh.read(4)
    if head != h5files.ZIP_MAGIC:
        raise SavingError(display, "not a .keras archive (no zip signature)")
    with h5files.reading(display, "read the .keras archive"):
        zf = zipfile.ZipFile(path)
        st = os.fstat(zf.fp.fileno())  # (everything below reads this one file: zf.fp)
        size, identity = st.st_size, h5probe.identity(st)
    member = None
    try:
        with zf:
            with h5files.reading(display, "read the .keras archive's directory"):
                infos = zf.infolist()
            _check_names(infos, display)
            by_name = {i.filename: i for i in infos}
            metadata = _json(_read_member(zf, by_name["metadata.json"], display, MAX_JSON_BYTES),
                             display, "metadata.json")
            config = _json(_read_member(zf, by_name["config.json"], display, MAX_JSON_BYTES),
                           display, "config.json")
            info = by_name["model.weights.h5"]
            stored = info.compress_type == zipfile.ZIP_STORED and info.flag_bits & 0x1 == 0
            _check_sizes(info, display, size if stored else None)
            if stored:
                offset, length = _stored_range(zf.fp, info, size, display)
                if info.file_size != length:
                    raise SavingError(display, f"'model.weights.h5' stores {length} bytes but "
                                               f"declares {info.file_size}")
                member = WeightsMember(display, h5opening.Image(path, offset, length), info.CRC,
                                       identity=identity)
            else:  # compressed by another tool: extracted beside the archive, CRC checked
                tmp = _extract(zf, info, path, display)
                member = WeightsMember(display, h5opening.Image(tmp), extracted=tmp)
        yield metadata, config, member
    finally:
        if member is not None:
            member.close()


def _extract(zf, info, path, display):
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".h5", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with h5files.reading(display, f"read '{info.filename}' from the archive"):
            with zf.open(info) as src, os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)  # zipfile checks the CRC-32 at the end
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp
