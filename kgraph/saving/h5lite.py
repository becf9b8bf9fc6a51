"""HDF5 files of the classic format read without the HDF5 library: a small parser of what
h5py writes by default (and so Keras, tf.keras and kgraph): superblock version 0 or 1,
groups as symbol tables (v1 B-tree, local heap, symbol nodes), version 1 object headers,
contiguous datasets of plain integer and IEEE float types, attributes of those types and
of fixed or variable-length strings (the latter in the global heap).

Why: the HDF5 C library can crash or loop forever on a damaged file, so a file it parses
is first walked in another process (preflight), which costs that process's walk and a
round trip, 3-6 ms on a busy 2-core machine, on the critical path of every load. Pure
Python cannot crash: a file this module reads completely is loaded without the library
and without the walk (h5opening.Opening, File below). Each structure is checked as it is
parsed (signatures, versions, sizes, every address within the image, every dataset's
size against its shape and type) and the parse is bounded: an untrusted file cannot make
it loop or allocate more than the file holds.

Anything else ends in one of two ways. A structure it does not know in a group (new-style
links) or a malformed one makes `parse` return None: the library reads the file, after
the walk, as before. A dataset or attribute it does not read (chunked or compressed data,
compound or enum types, soft links, ...) leaves the parse incomplete (`Parsed.complete`
false, `why` says what): the library reads the file, and the plain datasets' places are
still hints for reading ahead (`Parsed.runs`; checked there against the library's view).
"""
from __future__ import annotations

import os
import struct
from collections.abc import Mapping

import numpy as np

# Bounds on what an untrusted file can make the parse do.
MAX_OBJECTS = 10000    # objects visited
MAX_DEPTH = 64         # nested groups (and B-tree levels)
MAX_BLOCK = 1 << 20    # bytes of one structure read (an object header, a local heap)
MAX_HEAP = 64 << 20    # bytes of one global heap collection (a long model config)
MAX_BLOCKS = 64        # continuation blocks of one object header
MAX_NAME = 4096        # bytes of one link name
MAX_NAMES = 4 << 20    # bytes of all dataset paths listed
MAX_LISTED = 64 << 20  # bytes of all link paths File.link_paths lists
MAX_RANK = 32          # dimensions of a dataspace (HDF5's own limit)
# All reads together: at most this many, and no more bytes than twice the image plus
# MAX_BLOCK (a valid file's metadata is read once; a hostile one cannot make it loop).
MAX_READS = 50000
WINDOW = 64 << 10      # bytes read at once from the start of the image (most metadata is there)
USERBLOCKS = 8         # superblock positions tried: 0, 512, 1024, ... 32768

UNDEFINED = 0xFFFFFFFFFFFFFFFF
_SYMBOL_ENTRY = struct.Struct("<QQI4x16s")  # name offset, header address, cache type, scratch
# Object header message types.
_NIL, _DATASPACE, _DATATYPE, _FILL_OLD, _FILL = 0x00, 0x01, 0x03, 0x04, 0x05
_LAYOUT, _ATTRIBUTE, _CONTINUATION, _SYMBOL_TABLE = 0x08, 0x0C, 0x10, 0x11
_LINK_INFO, _LINK = 0x02, 0x06  # new-style groups: not parsed (None)
# Messages that change nothing about reading a group or a plain dataset: modification
# times (0x0E, 0x12), a comment (0x0D), a reference count (0x16).
_IGNORED = {_NIL, _FILL_OLD, _FILL, 0x0D, 0x0E, 0x12, 0x16}
_SHARED = 0x02  # message flag: the message lives elsewhere (a committed type, ...)

# IEEE formats: size -> (precision, exponent location, exponent size, mantissa location,
# mantissa size, exponent bias, sign location)
_IEEE = {2: (16, 10, 5, 0, 10, 15, 15), 4: (32, 23, 8, 0, 23, 127, 31), 8: (64, 52, 11, 0, 52, 1023, 63)}


class Unsupported(Exception):
    """A structure this parser does not read, or a malformed one."""


class _Image:
    """Reads of `length` bytes of the file `fd` from `offset`, at addresses relative to the
    superblock (found at `base` within the image)."""

    def __init__(self, fd, offset, length):
        self.fd, self.offset, self.length, self.base = fd, offset, length, 0
        self.head = os.pread(fd, min(WINDOW, length), offset)
        self.reads, self.budget = 0, 2 * length + MAX_BLOCK

    def read(self, addr, n, limit=MAX_BLOCK):
        start = self.base + addr
        if addr < 0 or n < 0 or n > limit or start + n > self.length:
            raise Unsupported(f"{n} bytes at address {addr}: outside the image")
        self.reads, self.budget = self.reads + 1, self.budget - n
        if self.reads > MAX_READS or self.budget < 0:
            raise Unsupported("more metadata read than the file holds")
        if start + n <= len(self.head):
            return self.head[start:start + n]
        data = os.pread(self.fd, n, self.offset + start)
        if len(data) != n:
            raise Unsupported("the file ends early")
        return data


def _superblock(img):
    """(root object header address) after finding the superblock and setting img.base."""
    for i in range(USERBLOCKS):
        at = 0 if i == 0 else 512 << (i - 1)
        if at + 100 > img.length:
            break
        img.base = 0
        sb = img.read(at, 100)  # (the root's entry ends at 96 in version 0, at 100 in version 1)
        if sb[:8] != b"\x89HDF\r\n\x1a\n":
            continue
        version = sb[8]
        if version not in (0, 1) or sb[13] != 8 or sb[14] != 8:  # sizes of offsets, lengths
            raise Unsupported(f"superblock version {version}")
        img.base = at
        fields = 24 if version == 0 else 28
        base, _, eof, driver = struct.unpack_from("<QQQQ", sb, fields)
        # (the library counts addresses from where it found the superblock, and moves the
        # end of file with it; a file shorter than that end is one it calls truncated)
        if driver != UNDEFINED or eof < base or at + eof - base > img.length:
            raise Unsupported("a driver block, or the file is shorter than its superblock says")
        return _SYMBOL_ENTRY.unpack_from(sb, fields + 32)[1]
    raise Unsupported("no superblock")


def _messages(img, addr):
    """[(type, flags, data)] of the version 1 object header at `addr`, in order."""
    head = img.read(addr, 16)
    version, count, size = head[0], struct.unpack_from("<H", head, 2)[0], struct.unpack_from("<I", head, 8)[0]
    if version != 1:
        raise Unsupported(f"object header version {version} at {addr}")
    out = []
    blocks, done = [(addr + 16, size)], set()
    while blocks and len(out) < count:
        if len(done) >= MAX_BLOCKS:
            raise Unsupported("too many continuation blocks")
        at, n = blocks.pop(0)
        if at in done:
            raise Unsupported("an object header continues into itself")
        done.add(at)
        data, pos = img.read(at, n), 0
        while pos + 8 <= len(data) and len(out) < count:
            kind, length, flags = struct.unpack_from("<HHB", data, pos)
            body = data[pos + 8:pos + 8 + length]
            if len(body) != length:
                raise Unsupported("a message runs past its header")
            out.append((kind, flags, body))
            if kind == _CONTINUATION:
                blocks.append(struct.unpack_from("<QQ", body))
            pos += 8 + length
    if len(out) != count:
        raise Unsupported(f"the object header at {addr} holds fewer messages than it says")
    return out


def _contiguous(layout):
    """(address, size) of a contiguous layout message (UNDEFINED address: not written),
    else None."""
    if len(layout) >= 18 and layout[0] in (3, 4) and layout[1] == 1:
        return struct.unpack_from("<QQ", layout, 2)
    return None


# -- types, shapes, attributes ----------------------------------------------------------
_STRING, _VLEN_STRING = "string", "vlen string"


def _datatype(b):
    """(what, bytes used): `what` is a numpy dtype (numbers), (_STRING, size,
    null-terminated) or (_VLEN_STRING, utf8)."""
    if len(b) < 8:
        raise Unsupported("a short datatype")
    cls, version = b[0] & 0x0F, b[0] >> 4
    bits = b[1] | b[2] << 8 | b[3] << 16
    size = struct.unpack_from("<I", b, 4)[0]
    if version not in (1, 2, 3):
        raise Unsupported(f"datatype version {version}")
    order = ">" if bits & 1 else "<"
    if cls == 0:  # fixed point
        if len(b) < 12 or bits & ~0x9 or size not in (1, 2, 4, 8) or struct.unpack_from("<HH", b, 8) != (0, 8 * size):
            raise Unsupported("an integer type numpy does not hold as is")
        return np.dtype(f"{order}{'i' if bits & 8 else 'u'}{size}"), 12
    if cls == 1:  # floating point
        if len(b) < 20 or size not in _IEEE:
            raise Unsupported("a float type that is not IEEE")
        off, prec, eloc, esize, mloc, msize, bias = struct.unpack_from("<HHBBBBI", b, 8)
        if (bits & ~0xFF31 or (bits >> 4) & 3 != 2 or off != 0
                or (prec, eloc, esize, mloc, msize, bias, bits >> 8) != _IEEE[size]):
            raise Unsupported("a float type that is not IEEE")
        return np.dtype(f"{order}f{size}"), 20
    if cls == 3:  # fixed-length string: null-terminated or null-padded, ASCII or UTF-8
        if bits & ~0x1F or bits & 0xF > 1 or not 0 < size <= MAX_BLOCK:
            raise Unsupported("a string type other than null-terminated or null-padded")
        return (_STRING, size, bits & 0xF == 0), 8
    if cls == 9 and bits & 0xF == 1:  # variable-length string
        if bits & ~0x1FF or (bits >> 8) > 1:
            raise Unsupported("a variable-length string in another character set")
        base, used = _datatype(b[8:])
        if not isinstance(base, np.dtype) or base.itemsize != 1:
            raise Unsupported("a variable-length string of wide characters")
        return (_VLEN_STRING, bool(bits >> 8)), 8 + used
    raise Unsupported(f"datatype class {cls}")


def _dataspace(b):
    """The shape (a tuple; () scalar), or None for a null dataspace."""
    if len(b) < 8:
        raise Unsupported("a short dataspace")
    version, rank, flags = b[0], b[1], b[2]
    if version == 1:
        at = 8
    elif version == 2:
        if b[3] == 2:
            return None
        if b[3] not in (0, 1):
            raise Unsupported("a dataspace of unknown type")
        at = 4
    else:
        raise Unsupported(f"dataspace version {version}")
    if rank > MAX_RANK or flags & ~1 or len(b) < at + 8 * rank * (2 if flags & 1 else 1):
        raise Unsupported("a dataspace with a permutation, or too many dimensions")
    return struct.unpack_from(f"<{rank}Q", b, at)


def _key(name):
    """The order of names in a group (the library's: by their bytes)."""
    return name.encode("utf8", "surrogateescape")


def _count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def _pad8(n):
    return (n + 7) & ~7


class _Heaps:
    """Objects of global heap collections (what variable-length strings point to)."""

    def __init__(self, img):
        self.img, self.collections, self.texts = img, {}, {}

    def text(self, length, addr, index):
        """A variable-length string (decoded once per heap object: a string many elements
        point at is held once, and counted against the parse's budget once)."""
        if not length:
            return ""
        key = (length, addr, index)
        text = self.texts.get(key)
        if text is None:
            raw = self.get(addr, index)
            if len(raw) < length:
                raise Unsupported("a string points past its heap object")
            self.img.budget -= length
            if self.img.budget < 0:
                raise Unsupported("more text than the file holds")
            try:
                text = self.texts[key] = raw[:length].decode("utf8")
            except UnicodeDecodeError:
                raise Unsupported("a string that is not UTF-8 text") from None
        return text

    def get(self, addr, index):
        objects = self.collections.get(addr)
        if objects is None:
            head = self.img.read(addr, 16)
            if head[:4] != b"GCOL" or head[4] != 1:
                raise Unsupported(f"no global heap at {addr}")
            size = struct.unpack_from("<Q", head, 8)[0]
            data = self.img.read(addr, size, MAX_HEAP)
            objects, pos = {}, 16
            while pos + 16 <= size:
                i, _, n = struct.unpack_from("<HH4xQ", data, pos)
                if i == 0:  # free space: the rest
                    break
                if pos + 16 + n > size or i in objects:
                    raise Unsupported("a damaged global heap")
                objects[i] = data[pos + 16:pos + 16 + n]
                pos += 16 + _pad8(n)
            self.collections[addr] = objects
        if index not in objects:
            raise Unsupported(f"no object {index} in the global heap at {addr}")
        return objects[index]


def _attribute(b, heaps):
    """(name, value) of an attribute message, the value as h5py gives it: a numpy scalar
    or array, bytes (np.bytes_) for a fixed string, str for a variable-length one."""
    if len(b) < 9 or b[0] not in (1, 2, 3) or b[1]:  # (v2/v3 flags: a shared type or space)
        raise Unsupported("a short attribute message, of an unknown version, or with shared parts")
    version = b[0]
    nsize, tsize, ssize = struct.unpack_from("<HHH", b, 2)
    pad = _pad8 if version == 1 else (lambda n: n)
    pos = 8 if version != 3 else 9
    name = b[pos:pos + nsize].split(b"\x00", 1)[0]
    pos += pad(nsize)
    what, _ = _datatype(b[pos:pos + tsize])
    pos += pad(tsize)
    shape = _dataspace(b[pos:pos + ssize])
    pos += pad(ssize)
    if shape is None:
        raise Unsupported("an attribute with a null dataspace")
    try:
        key = name.decode("utf8")
    except UnicodeDecodeError:
        raise Unsupported("an attribute name that is not UTF-8") from None
    n, data = _count(shape), b[pos:]
    if isinstance(what, np.dtype):
        if len(data) < n * what.itemsize:
            raise Unsupported(f"attribute '{key}' holds less data than its shape")
        value = np.frombuffer(data, what, count=n).reshape(shape).copy()
    elif what[0] == _STRING:
        _, size, terminated = what
        if len(data) < n * size:
            raise Unsupported(f"attribute '{key}' holds less data than its shape")
        value = np.frombuffer(data, f"S{size}", count=n).reshape(shape).copy()
        if terminated:  # (null-padded: whole, as numpy holds it; null-terminated: to the first NUL)
            value = np.array([v.split(b"\x00", 1)[0] for v in value.ravel()], f"S{size}").reshape(shape)
    else:
        if len(data) < 16 * n:
            raise Unsupported(f"attribute '{key}' holds less data than its shape")
        items = [heaps.text(*struct.unpack_from("<IQI", data, 16 * i)) for i in range(n)]
        value = np.array(items, dtype=object).reshape(shape)
    return key, (value[()] if value.ndim == 0 else value)


# -- the walk ---------------------------------------------------------------------------
class _Node:
    """One object: a group (`links`: name -> header address) or a dataset (`shape`,
    `dtype`, `at`: its data's file offset, `nbytes`), with its attributes."""
    __slots__ = ("links", "attrs", "shape", "dtype", "at", "nbytes")

    def __init__(self, links=None, attrs=None, shape=None, dtype=None, at=None, nbytes=0):
        self.links, self.attrs, self.shape, self.dtype, self.at, self.nbytes = links, attrs, shape, dtype, at, nbytes


class _Walk:
    def __init__(self, img):
        self.img, self.heaps = img, _Heaps(img)
        self.objects: dict = {}  # header address -> _Node (or None: not read here)
        self.runs, self.names, self.listed = [], set(), 0
        self.nodes = set()  # B-tree and symbol nodes read (each once: a cycle is refused)
        self.why = None  # the first thing that keeps the parse from being complete

    def incomplete(self, why):
        if self.why is None:
            self.why = why

    def node(self, addr):
        if addr in self.nodes:
            raise Unsupported(f"the node at {addr} is reached twice")
        self.nodes.add(addr)

    def object(self, addr, path, depth):
        if addr in self.objects:
            return
        if len(self.objects) >= MAX_OBJECTS or depth > MAX_DEPTH or len(path) > MAX_NAME:
            raise Unsupported("too many objects, or nested too deep")
        self.objects[addr] = None
        msgs = _messages(self.img, addr)
        kinds = {}
        for kind, flags, body in msgs:
            kinds.setdefault(kind, []).append((flags, body))
        if _SYMBOL_TABLE in kinds:
            btree, heap = struct.unpack_from("<QQ", kinds[_SYMBOL_TABLE][0][1])
            links = {}
            self.group(btree, self.heap(heap), path, depth, links)
            # in name order, as the library visits them (so the first path to each object,
            # which the bounds on names and depth apply to, is the one link_paths takes)
            links = {k: links[k] for k in sorted(links, key=_key)}
            for name, header in links.items():
                self.object(header, f"{path}/{name}", depth + 1)
            node = _Node(links=links)
        elif _LINK_INFO in kinds or _LINK in kinds:
            raise Unsupported(f"group '{path or '/'}' keeps its links in the new format")
        elif _LAYOUT in kinds:
            node = self.dataset(kinds, path)
        else:
            self.incomplete(f"'{path or '/'}' is neither a group nor a dataset")
            return
        if node is None:
            return
        try:
            node.attrs = self.attributes(msgs, kinds, path)
        except (Unsupported, struct.error, ValueError, TypeError, OverflowError, IndexError) as e:
            self.incomplete(f"an attribute of '{path or '/'}': {e}")
            return
        self.objects[addr] = node

    def dataset(self, kinds, path):
        run = _contiguous(kinds[_LAYOUT][0][1])
        if run is not None and run[0] != UNDEFINED and run[1]:
            if path in self.names:  # (two entries of one name: the library's view is one)
                raise Unsupported(f"two datasets named '{path}'")
            self.names.add(path)
            self.listed += len(path)
            if self.listed > MAX_NAMES:
                raise Unsupported("too many or too long names")
            self.runs.append([path, self.img.base + run[0], run[1]])
        try:
            if run is None:
                raise Unsupported("data that is not one contiguous run (chunked, compact, virtual)")
            unread = set(kinds) - _IGNORED - {_DATASPACE, _DATATYPE, _LAYOUT, _ATTRIBUTE, _CONTINUATION}
            if unread:  # (filters, external storage, ...)
                raise Unsupported(f"header messages {sorted(unread)}")
            if any(flags & _SHARED for k in (_DATASPACE, _DATATYPE, _LAYOUT) for flags, _ in kinds.get(k, ())):
                raise Unsupported("a shared (committed) type or dataspace")
            if len(kinds.get(_DATASPACE, ())) != 1 or len(kinds.get(_DATATYPE, ())) != 1 or len(kinds[_LAYOUT]) != 1:
                raise Unsupported("not one dataspace, type and layout")
            dtype, _ = _datatype(kinds[_DATATYPE][0][1])
            shape = _dataspace(kinds[_DATASPACE][0][1])
            if not isinstance(dtype, np.dtype) or shape is None:
                raise Unsupported("data that is not numbers")
            nbytes = _count(shape) * dtype.itemsize
            addr, size = run
            if nbytes and (addr == UNDEFINED or size != nbytes or self.img.base + addr + size > self.img.length):
                raise Unsupported("data not written, or of another size than its shape and type")
        except (Unsupported, struct.error) as e:
            self.incomplete(f"dataset '{path}': {e}")
            return None
        return _Node(shape=tuple(int(d) for d in shape), dtype=dtype,
                     at=self.img.base + addr if nbytes else 0, nbytes=nbytes)

    def attributes(self, msgs, kinds, path):
        unread = set(kinds) - _IGNORED - {_DATASPACE, _DATATYPE, _LAYOUT, _ATTRIBUTE, _CONTINUATION, _SYMBOL_TABLE}
        if unread:
            raise Unsupported(f"header messages {sorted(unread)}")
        attrs = {}
        for kind, flags, body in msgs:
            if kind == _ATTRIBUTE:
                if flags & _SHARED:
                    raise Unsupported("a shared attribute")
                name, value = _attribute(body, self.heaps)
                if name in attrs:
                    raise Unsupported(f"two attributes named '{name}'")
                attrs[name] = value
        return {k: attrs[k] for k in sorted(attrs, key=lambda k: k.encode("utf8"))}  # (h5py's order)

    def heap(self, addr):
        head = self.img.read(addr, 32)
        if head[:4] != b"HEAP" or head[4] != 0:
            raise Unsupported(f"no local heap at {addr}")
        size, _, data = struct.unpack_from("<QQQ", head, 8)
        return self.img.read(data, size)

    def group(self, node, names, path, depth, links):
        if depth > MAX_DEPTH:
            raise Unsupported("B-tree nested too deep")
        self.node(node)
        head = self.img.read(node, 24)
        if head[:4] != b"TREE" or head[4] != 0:
            raise Unsupported(f"no group B-tree node at {node}")
        level, used = head[5], struct.unpack_from("<H", head, 6)[0]
        body = self.img.read(node + 24, used * 16 + 8)
        for i in range(used):
            child = struct.unpack_from("<Q", body, 8 + 16 * i)[0]
            if level:
                self.group(child, names, path, depth + 1, links)
            else:
                self.symbols(child, names, path, depth, links)

    def symbols(self, addr, names, path, depth, links):
        self.node(addr)
        head = self.img.read(addr, 8)
        if head[:4] != b"SNOD" or head[4] != 1:
            raise Unsupported(f"no symbol table node at {addr}")
        count = struct.unpack_from("<H", head, 6)[0]
        body = self.img.read(addr + 8, count * _SYMBOL_ENTRY.size)
        for i in range(count):
            name_at, header, cache, _ = _SYMBOL_ENTRY.unpack_from(body, i * _SYMBOL_ENTRY.size)
            end = names.find(b"\x00", name_at, name_at + MAX_NAME)
            if name_at >= len(names) or end < 0:
                raise Unsupported("a link name outside its heap, or too long")
            raw = names[name_at:end]
            name = raw.decode("utf8", "surrogateescape")
            if cache == 2:  # a soft link (the library resolves it; no hint)
                self.incomplete(f"'{path}/{name}' is a soft link")
                continue
            if not raw or b"/" in raw or name in links:
                raise Unsupported(f"a link named {raw!r} in '{path or '/'}', or twice")
            links[name] = header


class Parsed:
    """The result of `parse`: `runs` ([[path, file offset, nbytes]] of the contiguous
    datasets, hints for reading ahead), `complete` (every object read here: File can
    serve the file), `why` (else, the first thing that was not)."""

    def __init__(self, walk, root, offset, length):
        self.root, self.objects, self.why = root, walk.objects, walk.why
        self.complete = walk.why is None and all(n is not None for n in walk.objects.values())
        if self.complete is False and self.why is None:
            self.why = "an object not read"
        self.offset, self.length = offset, length
        self.runs = [[name, offset + at, n] for name, at, n in walk.runs if at + n <= length]


def parse(fd, offset=0, length=None):
    """The classic-format HDF5 image at [offset, offset + length) of the open file `fd`
    (length None: to its end) as a Parsed (dataset offsets counted from the start of
    that file); None when it is not in the classic format or cannot be parsed."""
    try:
        if length is None:
            length = os.fstat(fd).st_size - offset
        img = _Image(fd, offset, length)
        walk = _Walk(img)
        root = _superblock(img)
        walk.object(root, "", 0)
    except Exception:  # (Unsupported, or what a malformed structure made Python raise)
        return None
    for node in walk.objects.values():  # (absolute offsets: of the file, not the image)
        if node is not None and node.links is None and node.nbytes:
            node.at += offset
    return Parsed(walk, root, offset, length)


def extents(fd, offset=0, length=None):
    """[[name, file offset, nbytes], ...] of the contiguous datasets (Parsed.runs), or None."""
    parsed = parse(fd, offset, length)
    return None if parsed is None else parsed.runs


# -- reading a parsed file, as h5py would -----------------------------------------------
class Attributes(Mapping):
    """An object's attributes (read-only), values as h5py gives them."""

    def __init__(self, values):
        self._values = values

    def __getitem__(self, name):
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)


class _Object:
    def __init__(self, file, node, name):
        self.file, self._node, self.name = file, node, name

    @property
    def attrs(self):
        return Attributes(self._node.attrs)


class Group(_Object):
    """A group, with the part of h5py's Group that loading uses."""

    def _find(self, path):
        node, parts = self._node, []
        if path.startswith("/"):
            node, parts = self.file._node, []
        else:
            parts = [p for p in self.name.split("/") if p]
        for part in path.split("/"):
            if part in ("", "."):
                continue
            if node.links is None or part not in node.links:
                return None
            node = self.file._parsed.objects[node.links[part]]
            parts.append(part)
        return node, "/" + "/".join(parts)

    def get(self, path, default=None, getlink=False):
        found = self._find(path)
        if found is None:
            return default
        if getlink:
            import h5py  # (what h5py returns: a hard link, the only kind read here)
            return h5py.HardLink()
        node, name = found
        return (Group if node.links is not None else Dataset)(self.file, node, name)

    def __getitem__(self, path):
        obj = self.get(path)
        if obj is None:
            raise KeyError(f"no object '{path}' in '{self.name}'")
        return obj

    def __contains__(self, path):
        return self._find(path) is not None

    def keys(self):
        return list(self._node.links)  # (in name order)

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self._node.links)

    def link_paths(self):
        """Every link below this group, as h5py's `id.links.visit` lists them (bytes paths,
        depth first in name order, each group entered once, this one included). ValueError
        past MAX_DEPTH groups deep or MAX_LISTED bytes of paths (a hostile file: every link
        to a group already entered is listed too)."""
        out, listed = [], 0
        objects = self.file._parsed.objects
        seen = {id(self._node)}
        stack = [(iter(self._node.links.items()), b"")]
        while stack:
            entry = next(stack[-1][0], None)
            if entry is None:
                stack.pop()
                continue
            name, addr = entry
            path = stack[-1][1] + _key(name)
            listed += len(path)
            if listed > MAX_LISTED:
                raise ValueError(f"more than {MAX_LISTED} bytes of link names")
            out.append(path)
            child = objects[addr]
            if child.links is not None and id(child) not in seen:
                if len(stack) >= MAX_DEPTH:
                    raise ValueError(f"groups nested more than {MAX_DEPTH} deep")
                seen.add(id(child))
                stack.append((iter(child.links.items()), path + b"/"))
        return out


class Dataset(_Object):
    """A contiguous numeric dataset: its shape and type, and its data read on request."""

    @property
    def shape(self):
        return self._node.shape

    @property
    def dtype(self):
        return self._node.dtype

    @property
    def ndim(self):
        return len(self._node.shape)

    @property
    def size(self):
        return _count(self._node.shape)

    @property
    def nbytes(self):
        return self._node.nbytes

    def read(self, dtype=None):
        """The data in a new C-ordered array of `dtype` (default: the file's type),
        converted as the HDF5 library converts (`_convert`)."""
        node = self._node
        target = np.dtype(dtype) if dtype is not None else node.dtype
        raw = self.file._take(self.name, node.at, node.nbytes)
        if raw is None:
            raw = np.empty(node.nbytes, np.uint8)
            if node.nbytes:
                self.file._read_into(raw, node.at)
        out = raw.view(node.dtype).reshape(node.shape)
        return out if out.dtype == target else _convert(out, target)


def _convert(data, target):
    """`data` as `target`, as the HDF5 library converts: floats and integers to floats
    round to nearest (a numpy cast), integers to integers saturate at the target's range.
    Floats to integers (where the library's handling of NaN depends on the width) are
    not done here."""
    if target.kind in "iu" and data.dtype.kind in "iu":
        info = np.iinfo(target)
        return np.clip(data, max(info.min, np.iinfo(data.dtype).min),
                       min(info.max, np.iinfo(data.dtype).max)).astype(target)
    if target.kind == "f" or target.kind == "b":
        return data.astype(target)
    raise ValueError(f"data of type {data.dtype} is not read as {target} here")


class File(Group):
    """A parsed image served from the open file `fd` (the caller's, left open); `take(name,
    offset, nbytes)` may give a dataset's bytes read ahead (h5opening.Opening)."""

    def __init__(self, parsed, fd, take=None):
        self._parsed, self._fd, self._taker = parsed, fd, take
        super().__init__(self, parsed.objects[parsed.root], "/")

    def _take(self, name, offset, nbytes):
        return self._taker(name, offset, nbytes) if self._taker is not None and nbytes else None

    def _read_into(self, buf, offset):
        from kgraph.saving import h5probe
        h5probe.preadv_all(self._fd, [memoryview(buf)], offset)
