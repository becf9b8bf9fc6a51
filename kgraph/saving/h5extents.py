"""Where an HDF5 file's datasets lie, found without the HDF5 library: a small parser of
the classic format that h5py writes by default (and so Keras and kgraph): superblock
version 0 or 1, groups as symbol tables (v1 B-tree, local heap, symbol nodes), version 1
object headers, layout message version 3 or 4.

Why: a load reads the weights' bytes while another process checks the file
(h5files.Opening). The check's own list of where they lie arrives after a process round
trip and a walk (3-5 ms, on a machine whose cores the load keeps busy); this parse takes
a fraction of a millisecond in the loading process, so the reads start at once.

What it returns are hints, not facts. The file is untrusted and nothing here is checked
beyond what keeps the parse bounded: a read-ahead array is used only when this process's
HDF5, after the check, reports the same offset, size and type for its dataset
(h5files.Opening.take). Pure Python cannot crash on a damaged file: any malformed or
unknown structure ends the parse with None (the check then lists the datasets).
"""
from __future__ import annotations

import os
import struct

# Bounds on what an untrusted file can make the parse do.
MAX_OBJECTS = 10000    # objects visited
MAX_DEPTH = 64         # nested groups (and B-tree levels)
MAX_BLOCK = 1 << 20    # bytes of one structure read (an object header, a local heap)
MAX_BLOCKS = 64        # continuation blocks of one object header
MAX_NAME = 4096        # bytes of one link name
MAX_NAMES = 4 << 20    # bytes of all dataset paths listed
# All reads together: at most this many, and no more bytes than twice the image plus
# MAX_BLOCK (a valid file's metadata is read once; a hostile one cannot make it loop).
MAX_READS = 50000
WINDOW = 64 << 10      # bytes read at once from the start of the image (most metadata is there)
USERBLOCKS = 8         # superblock positions tried: 0, 512, 1024, ... 32768

UNDEFINED = 0xFFFFFFFFFFFFFFFF
_SYMBOL_ENTRY = struct.Struct("<QQI4x16s")  # name offset, header address, cache type, scratch
# Object header message types used.
_CONTINUATION, _SYMBOL_TABLE, _LAYOUT = 0x10, 0x11, 0x08
_LINK_INFO, _LINK = 0x02, 0x06  # new-style groups: not parsed (the check lists them)


class Unsupported(Exception):
    """A structure this parser does not read, or a malformed one."""


class _Image:
    """Reads of `length` bytes of the file `fd` from `offset`, at addresses relative to the
    superblock (found at `base` within the image)."""

    def __init__(self, fd, offset, length):
        self.fd, self.offset, self.length, self.base = fd, offset, length, 0
        self.head = os.pread(fd, min(WINDOW, length), offset)
        self.reads, self.budget = 0, 2 * length + MAX_BLOCK

    def read(self, addr, n):
        start = self.base + addr
        if addr < 0 or n < 0 or n > MAX_BLOCK or start + n > self.length:
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
        if at + 96 > img.length:
            break
        img.base = 0
        sb = img.read(at, 96)
        if sb[:8] != b"\x89HDF\r\n\x1a\n":
            continue
        version = sb[8]
        if version not in (0, 1) or sb[13] != 8 or sb[14] != 8:  # sizes of offsets, lengths
            raise Unsupported(f"superblock version {version}")
        img.base = at
        entry = 56 if version == 0 else 60
        return _SYMBOL_ENTRY.unpack_from(sb, entry)[1]
    raise Unsupported("no superblock")


def _messages(img, addr):
    """{message type: [message data]} of the version 1 object header at `addr`."""
    head = img.read(addr, 16)
    version, count, size = head[0], struct.unpack_from("<H", head, 2)[0], struct.unpack_from("<I", head, 8)[0]
    if version != 1:
        raise Unsupported(f"object header version {version} at {addr}")
    out: dict = {}
    blocks, seen, done = [(addr + 16, size)], 0, set()
    while blocks and seen < count:
        if len(done) >= MAX_BLOCKS:
            raise Unsupported("too many continuation blocks")
        at, n = blocks.pop(0)
        if at in done:
            raise Unsupported("an object header continues into itself")
        done.add(at)
        data, pos = img.read(at, n), 0
        while pos + 8 <= len(data) and seen < count:
            kind, length = struct.unpack_from("<HH", data, pos)
            body = data[pos + 8:pos + 8 + length]
            if len(body) != length:
                raise Unsupported("a message runs past its header")
            seen += 1
            if kind == _CONTINUATION:
                blocks.append(struct.unpack_from("<QQ", body))
            else:
                out.setdefault(kind, []).append(body)
            pos += 8 + length
    return out


def _contiguous(layout):
    """(address, size) of a contiguous layout message, else None."""
    if len(layout) >= 18 and layout[0] in (3, 4) and layout[1] == 1:
        addr, size = struct.unpack_from("<QQ", layout, 2)
        if addr != UNDEFINED:
            return addr, size
    return None


class _Walk:
    def __init__(self, img):
        self.img, self.visited, self.runs, self.names, self.listed = img, set(), [], set(), 0
        self.nodes = set()  # B-tree and symbol nodes read (each once: a cycle is refused)

    def node(self, addr):
        if addr in self.nodes:
            raise Unsupported(f"the node at {addr} is reached twice")
        self.nodes.add(addr)

    def object(self, addr, path, depth):
        if addr in self.visited:
            return
        if len(self.visited) >= MAX_OBJECTS or depth > MAX_DEPTH or len(path) > MAX_NAME:
            raise Unsupported("too many objects, or nested too deep")
        self.visited.add(addr)
        msgs = _messages(self.img, addr)
        if _SYMBOL_TABLE in msgs:
            btree, heap = struct.unpack_from("<QQ", msgs[_SYMBOL_TABLE][0])
            self.group(btree, self.heap(heap), path, depth)
        elif _LINK_INFO in msgs or _LINK in msgs:
            raise Unsupported(f"group '{path or '/'}' keeps its links in the new format")
        elif _LAYOUT in msgs:
            run = _contiguous(msgs[_LAYOUT][0])
            if run is not None and run[1]:
                if path in self.names:  # (two entries of one name: the library's view is one)
                    raise Unsupported(f"two datasets named '{path}'")
                self.names.add(path)
                self.listed += len(path)
                if self.listed > MAX_NAMES:
                    raise Unsupported("too many or too long names")
                self.runs.append([path, self.img.base + run[0], run[1]])

    def heap(self, addr):
        head = self.img.read(addr, 32)
        if head[:4] != b"HEAP" or head[4] != 0:
            raise Unsupported(f"no local heap at {addr}")
        size, _, data = struct.unpack_from("<QQQ", head, 8)
        return self.img.read(data, size)

    def group(self, node, names, path, depth):
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
                self.group(child, names, path, depth + 1)
            else:
                self.symbols(child, names, path, depth)

    def symbols(self, addr, names, path, depth):
        self.node(addr)
        head = self.img.read(addr, 8)
        if head[:4] != b"SNOD" or head[4] != 1:
            raise Unsupported(f"no symbol table node at {addr}")
        count = struct.unpack_from("<H", head, 6)[0]
        body = self.img.read(addr + 8, count * _SYMBOL_ENTRY.size)
        for i in range(count):
            name_at, header, cache, _ = _SYMBOL_ENTRY.unpack_from(body, i * _SYMBOL_ENTRY.size)
            if cache == 2:  # a soft link (h5py resolves it; no hint)
                continue
            end = names.find(b"\x00", name_at, name_at + MAX_NAME)
            if name_at >= len(names) or end < 0:
                raise Unsupported("a link name outside its heap, or too long")
            name = names[name_at:end].decode("utf8", "surrogateescape")
            self.object(header, f"{path}/{name}", depth + 1)


def extents(fd, offset=0, length=None):
    """[[name, file offset, nbytes], ...] of the contiguous datasets of the HDF5 image at
    [offset, offset + length) of the open file `fd` (length None: to its end), offsets
    counted from the start of that file; None when the image is not in the classic format
    or cannot be parsed."""
    try:
        if length is None:
            length = os.fstat(fd).st_size - offset
        img = _Image(fd, offset, length)
        walk = _Walk(img)
        walk.object(_superblock(img), "", 0)
    except (Unsupported, struct.error, OSError, ValueError, OverflowError, RecursionError):
        return None
    return [[name, offset + at, n] for name, at, n in walk.runs if at + n <= length]
