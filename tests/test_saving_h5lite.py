"""kgraph/saving/h5lite.py: the pure-Python reader of classic-format HDF5. It must agree
with the HDF5 library (run in-process here on valid files only) on every file Keras,
tf.keras and kgraph write (where datasets lie, and everything a load reads: links, names,
attributes with their types, data), leave incomplete or say None for what it does not
read, never raise or loop on damaged input, and, for a file it reads completely, let a
load go without the library and its check."""
from __future__ import annotations

import glob
import os
import random
import struct
import time
import zipfile

import h5py
import numpy as np
import pytest

import kgraph
from kgraph import layers as L
from kgraph.saving import h5files, h5lite, h5opening, h5probe, keras_zip, preflight

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _parse(path, offset=0, length=None):
    fd = os.open(path, os.O_RDONLY)
    try:
        return h5lite.extents(fd, offset, length)
    finally:
        os.close(fd)


def _library(path, offset=0, length=None):
    """The HDF5 library's list (the helper's walk, run here: the files are valid)."""
    return h5probe.probe(str(path), offset, length, extents=True)["extents"]


def _image(path):
    if str(path).endswith(".keras"):
        with keras_zip.open_archive(str(path), str(path)) as (_, _, member):
            return member.image.offset, member.image.length
    return 0, None


def _fixture_files():
    files = sorted(glob.glob(os.path.join(FIXTURES, "keras", "*")) + glob.glob(os.path.join(FIXTURES, "tfkeras2", "*")))
    return [f for f in files if f.endswith((".h5", ".keras"))]


@pytest.mark.parametrize("path", _fixture_files(), ids=os.path.basename)
def test_agrees_with_the_library_on_keras_and_tf_keras_files(path):
    offset, length = _image(path)
    got = _parse(path, offset, length)
    assert got is not None
    assert sorted(map(tuple, got)) == sorted(map(tuple, _library(path, offset, length)))
    assert got  # (every fixture has weights)


def _model():
    kgraph.utils.set_random_seed(0)
    inp = kgraph.Input((6,))
    model = kgraph.Model(inp, L.Dense(2)(L.LSTM(5)(L.Reshape((2, 3))(inp))))
    model.compile("adam", "mse")
    model.fit(np.ones((4, 6), "f4"), np.ones((4, 2), "f4"), verbose=0)
    return model


@pytest.mark.parametrize("name", ["m.weights.h5", "m.h5", "m.keras"])
def test_agrees_with_the_library_on_kgraph_files(tmp_path, name):
    model = _model()
    path = str(tmp_path / name)
    (model.save_weights if name.endswith(".weights.h5") else model.save)(path)
    offset, length = _image(path)
    got = _parse(path, offset, length)
    assert sorted(map(tuple, got)) == sorted(map(tuple, _library(path, offset, length)))
    assert any(n.startswith("/optimizer") for n, _, _ in got)  # the optimizer state too
    if name.endswith(".keras"):  # the archive's member at offset 512: offsets count from the file's start
        assert offset == keras_zip.WEIGHTS_OFFSET and all(o > offset for _, o, _ in got)


def test_user_blocks_big_groups_and_hard_links(tmp_path):
    """A 4 KiB user block; a group of 300 members (B-tree of several levels); the same
    dataset under two names (listed once, as the library's visit does); a group linked
    into itself; a soft link; an empty and a chunked dataset (not listed)."""
    path = str(tmp_path / "x.h5")
    with h5py.File(path, "w", userblock_size=4096) as f:
        g = f.create_group("many")
        for i in range(300):
            g[f"d{i:03d}"] = np.full(i + 1, i, "f4")
        f["twice"] = g["d007"]
        f["many/loop"] = g
        f["soft"] = h5py.SoftLink("/many/d001")
        f.create_dataset("empty", shape=(0,), dtype="f4")
        f.create_dataset("chunked", data=np.ones(100, "f4"), chunks=(10,))
    got = _parse(path)
    by_name = {n: (o, size) for n, o, size in got}
    ref = {n: (o, size) for n, o, size in _library(path)}
    assert len([n for n in by_name if n.startswith("/many/d")]) == 300
    assert "/chunked" not in by_name and "/empty" not in by_name and "/soft" not in by_name
    assert by_name == ref
    assert len([n for n in by_name if n in ("/many/d007", "/twice")]) == 1
    with h5py.File(path, "r") as f:
        for name in ("/many/d000", "/many/d299", "/many/d007"):
            offset, size = by_name[name]
            data = np.fromfile(path, "f4", count=size // 4, offset=offset)
            np.testing.assert_array_equal(data, f[name][()])


def test_says_none_for_what_it_does_not_read(tmp_path):
    latest = str(tmp_path / "latest.h5")
    with h5py.File(latest, "w", libver="latest") as f:  # superblock 3, new-style groups
        f["a/b"] = np.ones(4, "f4")
    ordered = str(tmp_path / "ordered.h5")
    with h5py.File(ordered, "w") as f:
        f.create_group("g", track_order=True)["x"] = np.ones(4, "f4")  # link messages
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"not hdf5" * 100)
    assert _parse(latest) is None
    assert _parse(ordered) is None
    assert _parse(str(plain)) is None
    assert _library(latest)  # (the helper's list then serves: the library reads them)


def test_damaged_files_give_none_or_a_list_never_an_error(tmp_path):
    """Byte flips and truncations of a Keras file: the parse returns (None or a list of
    [str, int, int]) quickly; what it lists is only ever a hint (h5opening.Opening.take
    compares it with the library's view after the check)."""
    src = open(os.path.join(FIXTURES, "keras", "lstm.weights.h5"), "rb").read()
    rng = random.Random(0)
    path = tmp_path / "f.h5"
    lists = 0
    for i in range(400):
        data = bytearray(src)
        if i % 4 == 0:
            data = data[:rng.randrange(len(data))]
        else:
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(min(len(data), 4096))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        t = time.perf_counter()
        got = _parse(str(path))
        assert time.perf_counter() - t < 1.0
        if got is not None:
            lists += 1
            assert all(isinstance(n, str) and isinstance(o, int) and isinstance(s, int) and 0 <= o and 0 < s
                       and o + s <= len(data) for n, o, s in got)
    assert 0 < lists < 400  # (some flips hit unused bytes, many break the parse)


def test_bounds_hold_on_a_self_referencing_b_tree(tmp_path):
    """A B-tree node whose child is itself (a hostile file) ends the parse with None."""
    path = str(tmp_path / "x.h5")
    with h5py.File(path, "w") as f:
        f["a"] = np.ones(3, "f4")
    data = bytearray(open(path, "rb").read())
    at = data.find(b"TREE")
    data[at + 32:at + 40] = at.to_bytes(8, "little")  # child 0 -> the node itself
    data[at + 5] = 1  # level 1: its children are nodes
    open(path, "wb").write(bytes(data))
    assert _parse(path) is None


def test_wrong_hints_are_never_used(tmp_path, monkeypatch):
    """A parse that points at the wrong bytes (as a hostile file could make it) costs a
    read, not a wrong weight: the library's offsets after the check decide."""
    model = _model()
    model.save_weights(tmp_path / "m.weights.h5")
    real = h5lite.parse

    def shifted(fd, offset=0, length=None):
        parsed = real(fd, offset, length)
        parsed.runs = [[n, o + 4, s] for n, o, s in parsed.runs]
        return parsed
    monkeypatch.setattr(h5lite, "parse", shifted)
    monkeypatch.setattr(h5opening, "PURE_PYTHON", False)  # (hints for the library's read)
    taken = []
    real_take = h5opening.Opening.take

    def spy(self, obj, dtype):
        out = real_take(self, obj, dtype)
        taken.append(out is not None)
        return out
    monkeypatch.setattr(h5opening.Opening, "take", spy)
    loaded = _model()
    loaded.set_weights([w * 0 for w in loaded.get_weights()])
    loaded.load_weights(tmp_path / "m.weights.h5")
    assert taken and not any(taken)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_keras_written_archive_member_is_parsed_in_place(tmp_path):
    """Keras writes model.weights.h5 last, at an arbitrary offset: the parse reads it
    there (addresses count from the member's start)."""
    src = os.path.join(FIXTURES, "keras", "cnn.keras")
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo("model.weights.h5")
    offset, length = _image(src)
    assert offset % 512  # (not where the library would find it in place)
    got = _parse(src, offset, length)
    assert sorted(map(tuple, got)) == sorted(map(tuple, _library(src, offset, length)))
    assert all(offset <= o and o + s <= offset + info.file_size for _, o, s in got)


def _one_dataset_file(path):
    with h5py.File(path, "w") as f:
        f["a"] = np.ones(3, "f4")
    return bytearray(open(path, "rb").read())


def test_a_header_continuing_into_itself_ends_at_once(tmp_path):
    """A 1 MiB continuation block that continues into itself (a hostile file): refused on
    the second visit, not read 65,535 times."""
    path = str(tmp_path / "x.h5")
    data = _one_dataset_file(path)
    root = int.from_bytes(data[64:72], "little")
    symtab = bytes(data[root + 24:root + 40])
    block_at, block = len(data), 1 << 20
    cont = struct.pack("<HHI", 0x10, 16, 0) + struct.pack("<QQ", block_at, block)
    filler = b""
    while len(cont) + len(filler) < block:  # (few, large null messages: the count lasts)
        size = min(block - len(cont) - len(filler) - 8, 65528)
        filler += struct.pack("<HHI", 0, size, 0) + bytes(size)
    data += cont + filler
    header_at = len(data)
    body = struct.pack("<HHI", 0x11, 16, 0) + symtab + cont
    data += struct.pack("<BBHII", 1, 0, 65535, 1, len(body)) + bytes(4) + body
    data[64:72] = header_at.to_bytes(8, "little")
    open(path, "wb").write(bytes(data))
    t = time.perf_counter()
    assert _parse(path) is None
    assert time.perf_counter() - t < 0.5


def test_a_b_tree_reaching_one_node_twice_ends_at_once(tmp_path):
    """Internal B-tree nodes whose two children are one node, 40 levels deep (2^40 paths):
    refused when a node is reached the second time."""
    path = str(tmp_path / "x.h5")
    data = _one_dataset_file(path)
    at = data.find(b"TREE")
    below = at
    for _ in range(40):
        node = len(data)
        data += (b"TREE" + bytes([0, 1]) + struct.pack("<H", 2) + struct.pack("<qq", -1, -1)
                 + struct.pack("<QQQQQ", 0, below, 0, below, 0))
        below = node
    root = int.from_bytes(data[64:72], "little")
    assert struct.unpack_from("<H", data, root + 16)[0] == 0x11  # the root's symbol table message
    data[root + 24:root + 32] = below.to_bytes(8, "little")  # names the B-tree
    open(path, "wb").write(bytes(data))
    t = time.perf_counter()
    assert _parse(path) is None
    assert time.perf_counter() - t < 0.5


def test_a_name_listed_twice_is_refused_and_never_read_ahead(tmp_path, monkeypatch):
    """Two entries of one group with the same name (a hostile file; HDF5 resolves the
    name to one of them): the parse refuses the file, and a list naming a dataset twice
    (from anywhere) has that name left to h5py, so the load neither hangs nor takes the
    other entry's bytes."""
    kgraph.utils.set_random_seed(0)
    inp = kgraph.Input((4,))
    model = kgraph.Model(inp, L.Dense(3)(L.Dense(5)(inp)))
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    fd = os.open(path, os.O_RDONLY)
    listed = h5lite.extents(fd)
    os.close(fd)
    kernel = next(r for r in listed if r[0] == "/layers/dense/vars/0")
    bias = next(r for r in listed if r[0] == "/layers/dense/vars/1")
    decoy = [kernel[0], bias[1], bias[2]]  # the kernel's name on the bias's bytes
    real = h5lite.parse

    def with_decoy(fd, offset=0, length=None):
        parsed = real(fd, offset, length)
        parsed.runs = [decoy] + parsed.runs
        return parsed
    with monkeypatch.context() as mp:
        mp.setattr(h5lite, "parse", with_decoy)
        mp.setattr(h5opening, "PURE_PYTHON", False)  # (hints for the library's read)
        loaded = kgraph.Model(inp, L.Dense(3)(L.Dense(5)(inp)))
        loaded.load_weights(path)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    data = bytearray(path.read_bytes())  # the real thing: two entries named alike
    layers_node = None
    for at in range(len(data)):
        at = data.find(b"SNOD", at)
        if at < 0:
            break
        if struct.unpack_from("<H", data, at + 6)[0] >= 2:
            layers_node = at
    entry = struct.unpack_from("<Q", data, layers_node + 8 + 40)[0]
    struct.pack_into("<Q", data, layers_node + 8, entry)  # entry 0 named as entry 1
    (tmp_path / "dup.h5").write_bytes(bytes(data))
    with h5py.File(tmp_path / "dup.h5", "r") as f:  # (the patch made a repeated name)
        names = list(f[h5py.h5i.get_name(h5py.h5o.open(f.id, b"/layers/dense/vars")).decode()]) \
            if "layers/dense/vars" in f else []
    assert _parse(str(tmp_path / "dup.h5")) is None


# -- the reader: everything a load reads, as h5py gives it ------------------------------
def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and bool((a == b).all())
    return type(a) is type(b) and a == b


def _compare(path, offset=0, length=None):
    """Walks h5py's and h5lite's view of one file side by side."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parsed = h5lite.parse(fd, offset, length)
        assert parsed is not None and parsed.complete, None if parsed is None else parsed.why
        lite = h5lite.File(parsed, fd)
        with h5probe.open_hdf5(path, offset, length) as (f, _, _):
            assert h5files.link_paths(f) == h5files.link_paths(lite)
            count, entered = 0, set()

            def walk(h, li):
                nonlocal count
                count += 1
                assert h.name == li.name
                assert sorted(h.attrs) == sorted(li.attrs)
                for k in h.attrs:
                    assert _same(h.attrs[k], li.attrs[k]), (h.name, k)
                if isinstance(h, h5py.Group):
                    assert h5files.is_group(li) and list(h.keys()) == list(li.keys())
                    if id(li._node) not in entered:  # (each group once: links may loop)
                        entered.add(id(li._node))
                        for k in h.keys():
                            walk(h[k], li[k])
                else:
                    assert h5files.is_dataset(li) and (h.shape, h.dtype) == (li.shape, li.dtype)
                    for dtype in (None, "float32", "float64"):
                        expected = h[()] if dtype is None else h.astype(dtype)[()]
                        got = h5files.read_array(li, dtype)
                        assert got.dtype == expected.dtype and got.flags.c_contiguous
                        np.testing.assert_array_equal(got, expected)
            walk(f, lite)
            return count
    finally:
        os.close(fd)


@pytest.mark.parametrize("path", _fixture_files(), ids=os.path.basename)
def test_reads_keras_and_tf_keras_files_as_the_library_does(path):
    assert _compare(path, *_image(path)) > 3


@pytest.mark.parametrize("name", ["m.weights.h5", "m.h5", "m.keras"])
def test_reads_kgraph_files_as_the_library_does(tmp_path, name):
    model = _model()
    path = str(tmp_path / name)
    (model.save_weights if name.endswith(".weights.h5") else model.save)(path)
    assert _compare(path, *_image(path)) > 3


def test_types_and_layouts_it_reads_and_those_it_leaves_to_the_library(tmp_path):
    """Read here: integers and IEEE floats of either byte order, fixed and variable-length
    strings (scalars and arrays), empty arrays, hard links, a user block. Left to the
    library (incomplete, with the reason): chunked and compressed data, enums (bool),
    compound types, soft links, null attributes."""
    path = str(tmp_path / "ok.h5")
    with h5py.File(path, "w", userblock_size=1024) as f:
        for dt in ("<i1", ">i2", "<u4", ">i8", "<f2", ">f4", ">f8"):
            f[f"n{dt[1:]}{dt[0] == '>'}"] = np.arange(-3, 9).astype(dt).reshape(3, 4)
        g = f.create_group("g")
        g.attrs["text"] = "h\u00e9llo"
        g.attrs["texts"] = ["a", "bc", ""]
        g.attrs["fixed"] = np.array([b"ab", b"c"], "S3")
        g.attrs["one"] = np.bytes_(b"xyz")
        g.attrs["num"] = np.float64(2.5)
        g.attrs["nums"] = np.arange(4, dtype=">i4")
        g.attrs["empty"] = np.array([], np.float64)
        g["scalar"] = np.float32(7)
        f["alias"] = f["nf2False"]  # (a second hard link)
        f.create_dataset("none", shape=(0, 3), dtype="f4")
    assert _compare(path) > 10
    for label, make in [
        ("chunked", lambda f: f.create_dataset("x", data=np.ones(8, "f4"), chunks=(4,))),
        ("compressed", lambda f: f.create_dataset("x", data=np.ones(8, "f4"), compression="gzip")),
        ("bool", lambda f: f.create_dataset("x", data=np.ones(8, bool))),
        ("compound", lambda f: f.attrs.__setitem__("x", np.zeros(2, [("a", "f4"), ("b", "i4")]))),
        ("soft link", lambda f: f.__setitem__("x", h5py.SoftLink("/nowhere"))),
        ("null attribute", lambda f: f.attrs.__setitem__("x", h5py.Empty("f4"))),
        ("unwritten", lambda f: f.create_dataset("x", shape=(4,), dtype="f4")),
    ]:
        other = str(tmp_path / "other.h5")
        with h5py.File(other, "w") as f:
            f["plain"] = np.ones(3, "f4")
            make(f)
        fd = os.open(other, os.O_RDONLY)
        try:
            parsed = h5lite.parse(fd)
        finally:
            os.close(fd)
        assert parsed is not None and not parsed.complete and parsed.why, label
        assert "/plain" in [r[0] for r in parsed.runs]  # (still a hint for the library's read)


@pytest.mark.parametrize("kind", ["weights.h5", "h5", "keras"])
def test_a_file_read_completely_is_loaded_without_the_library(tmp_path, monkeypatch, kind):
    """Neither the check nor h5py is used, every dataset comes from the read-ahead, and the
    numbers are those of the library's path."""
    model = _model()
    path = tmp_path / f"m.{kind}"
    (model.save_weights if kind == "weights.h5" else model.save)(path)

    def load():
        if kind == "weights.h5":
            out = _model()
            out.load_weights(path)
            return out
        return kgraph.models.load_model(path)
    monkeypatch.setattr(h5opening, "PURE_PYTHON", False)
    reference = load()
    monkeypatch.setattr(h5opening, "PURE_PYTHON", True)
    taken = []
    real_take = h5opening.Opening._take_run

    def spy(self, name, offset, nbytes):
        out = real_take(self, name, offset, nbytes)
        taken.append(out is not None)
        return out

    def no(*args, **kwargs):
        raise AssertionError("the HDF5 library was used")
    monkeypatch.setattr(h5opening.Opening, "_take_run", spy)
    monkeypatch.setattr(preflight, "check", no)
    monkeypatch.setattr(h5probe, "open_hdf5", no)
    loaded = load()
    assert taken and all(taken)
    for a, b in zip(reference.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(loaded.get_weights()) == len(model.get_weights())
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    if kind != "weights.h5":  # the optimizer state too: training goes on alike
        x, y = np.ones((4, 6), "f4"), np.ones((4, 2), "f4")
        reference.fit(x, y, verbose=0)
        loaded.fit(x, y, verbose=0)
        for a, b in zip(reference.get_weights(), loaded.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_damaged_files_read_completely_never_raise_in_the_reader(tmp_path):
    """Byte flips of a legacy .h5 (attributes in the global heap, nested groups): a parse
    that says complete gives a reader whose every call (links, attributes, data) works;
    the values may be wrong (the format has no checksums: the library reads such flips
    alike), never out of the file's bounds."""
    model = _model()
    src_path = tmp_path / "m.h5"
    model.save(src_path)
    src = src_path.read_bytes()
    rng = random.Random(1)
    path = tmp_path / "f.h5"
    complete = 0
    for i in range(300):
        data = bytearray(src)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(min(len(data), 8192))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        fd = os.open(path, os.O_RDONLY)
        try:
            t = time.perf_counter()
            parsed = h5lite.parse(fd)
            assert time.perf_counter() - t < 1.0
            if parsed is None or not parsed.complete:
                continue
            complete += 1
            f = h5lite.File(parsed, fd)

            def walk(g):
                dict(g.attrs)
                for k in g.keys():
                    obj = g[k]
                    if h5files.is_group(obj):
                        if obj.name.count("/") < 8:
                            walk(obj)
                    else:
                        assert h5files.read_array(obj).nbytes == obj.nbytes <= len(data)
            walk(f)
        finally:
            os.close(fd)
    assert 0 < complete < 300


# -- hostile structures that parse: bounded, and read as the library reads them --------
def _message_positions(data, header):
    """[(file position, type, length)] of a version 1 object header's messages."""
    count, size = struct.unpack_from("<H", data, header + 2)[0], struct.unpack_from("<I", data, header + 8)[0]
    blocks, out = [(header + 16, size)], []
    while blocks:
        start, n = blocks.pop(0)
        pos = start
        while pos + 8 <= start + n and len(out) < count:
            kind, length = struct.unpack_from("<HH", data, pos)
            out.append((pos, kind, length))
            if kind == 0x10:
                blocks.append(struct.unpack_from("<QQ", data, pos + 8))
            pos += 8 + length
    return out


def _root_header(data):
    return struct.unpack_from("<QQ", data, 56)[1]


def test_strings_pointing_at_one_heap_object_are_decoded_once(tmp_path):
    """4000 elements of a string attribute all pointing at one 256 KiB string (a 0.4 MB
    file): one string is held, not 4000 copies (1 GB), and the values are the library's."""
    import tracemalloc
    path = tmp_path / "many.h5"
    with h5py.File(path, "w") as f:
        f.attrs["big"] = "a" * (256 << 10)
        f.attrs["many"] = np.array(["x"] * 4000, dtype=h5py.string_dtype())
        f["w"] = np.ones(2, "f4")
    data = bytearray(path.read_bytes())

    def pointers(length):
        at, out = 0, []
        while (at := data.find(struct.pack("<I", length), at)) >= 0:
            addr = struct.unpack_from("<Q", data, at + 4)[0]
            if data[addr:addr + 4] == b"GCOL":
                out.append(at)
            at += 1
        return out
    big, = pointers(256 << 10)
    small = pointers(1)
    assert len(small) == 4000
    for at in small:
        data[at:at + 16] = data[big:big + 16]
    path.write_bytes(bytes(data))
    fd = os.open(path, os.O_RDONLY)
    try:
        tracemalloc.start()
        parsed = h5lite.parse(fd)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert parsed is not None and parsed.complete
        assert peak < 8 * len(data)
        values = h5lite.File(parsed, fd).attrs["many"]
        assert len({id(v) for v in values}) == 1
    finally:
        os.close(fd)
    assert _compare(str(path)) == 2


def test_links_back_to_a_group_and_link_paths_bounds(tmp_path, monkeypatch):
    """A group linked into itself and a link back to the root are listed as the library
    lists them (each group entered once, the root included); listing more than
    MAX_LISTED bytes of paths is an error, not a memory bomb."""
    path = str(tmp_path / "cycles.h5")
    with h5py.File(path, "w") as f:
        g = f.create_group("g")
        g["self"] = g
        g["up"] = f["/"]
        g["d"] = np.arange(2.0)
    assert _compare(path) == 5  # /, g, g/d, and g/self, g/up not entered again
    fd = os.open(path, os.O_RDONLY)
    try:
        lite = h5lite.File(h5lite.parse(fd), fd)
        assert lite["g/up/g/d"].name == "/g/up/g/d"
        monkeypatch.setattr(h5lite, "MAX_LISTED", 10)
        with pytest.raises(ValueError, match="bytes of link names"):
            lite.link_paths()
    finally:
        os.close(fd)


def test_names_are_bounded_along_the_path_the_library_visits(tmp_path):
    """A root whose two entries are stored out of name order: walked in stored order, every
    group is near the root; walked in name order (as the library visits, and link_paths
    lists), the groups form a chain of 4000-byte names. The parse goes in name order, so
    its bound on path length holds for what is listed: None (the library's way)."""
    path = tmp_path / "chain.h5"
    name = "A" * 4000
    with h5py.File(path, "w") as f:
        hub = f.create_group("h")
        chain = [hub.create_group(f"{3 - i:02d}") for i in range(3)]
        for a, b in zip(chain, chain[1:]):
            a[name] = b
        f[name] = chain[0]
    data = bytearray(path.read_bytes())
    btree = struct.unpack_from("<QQ", data, 56 + 24)[0]  # the root entry's cached B-tree
    snod = struct.unpack_from("<Q", data, btree + 32)[0]
    assert data[snod:snod + 4] == b"SNOD" and struct.unpack_from("<H", data, snod + 6)[0] == 2
    data[snod + 8:snod + 88] = data[snod + 48:snod + 88] + data[snod + 8:snod + 48]
    path.write_bytes(bytes(data))
    assert _parse(str(path)) is None


def test_malformed_attributes_leave_the_parse_incomplete(tmp_path):
    """An attribute message with no body, and an empty string attribute of a 2 GiB string
    type: incomplete (the library decides), never an exception out of parse."""
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.attrs["a"] = np.float64(1.0)
        f["x"] = np.arange(3.0)
    data = bytearray(path.read_bytes())
    header = _root_header(data)
    pos, _, length = next(m for m in _message_positions(data, header) if m[1] == 0x0C)
    struct.pack_into("<HHB3x", data, pos, 0x0C, 0, 0)
    struct.pack_into("<HHB3x", data, pos + 8, 0x00, length - 8, 0)
    struct.pack_into("<H", data, header + 2, struct.unpack_from("<H", data, header + 2)[0] + 1)
    path.write_bytes(bytes(data))
    huge = tmp_path / "s.h5"
    with h5py.File(huge, "w") as f:
        f.attrs["s"] = np.zeros((0,), "S5")
        f["x"] = np.arange(3.0)
    data = bytearray(huge.read_bytes())
    at = data.find(b"\x13\x01\x00\x00\x05\x00\x00\x00")
    struct.pack_into("<I", data, at + 4, 1 << 31)
    huge.write_bytes(bytes(data))
    for p in (path, huge):
        fd = os.open(p, os.O_RDONLY)
        try:
            parsed = h5lite.parse(fd)
        finally:
            os.close(fd)
        assert parsed is not None and not parsed.complete and "attribute" in parsed.why


def test_a_version_1_superblock(tmp_path):
    """Superblock version 1 (HDF5 writes it for a non-default indexed-storage K): its root
    entry ends at byte 100. Made here from a version 0 file, the root header moved to the
    end to make room."""
    v0 = tmp_path / "v0.h5"
    with h5py.File(v0, "w") as f:
        f["x"] = np.arange(3.0)
        f.attrs["t"] = "text"
    data = bytearray(v0.read_bytes())
    base, free, _, driver = struct.unpack_from("<QQQQ", data, 24)
    name_at, header, cache, scratch = struct.unpack_from("<QQI4x16s", data, 56)
    size = struct.unpack_from("<I", data, header + 8)[0]
    moved = len(data) + (-len(data)) % 8
    data += bytes(moved - len(data)) + data[header:header + 16 + size]
    sb = data[:24]
    sb[8] = 1
    sb += struct.pack("<HHQQQQ", 64, 0, base, free, len(data), driver)
    sb += struct.pack("<QQI4x16s", name_at, moved, cache, scratch)
    data[:100] = sb
    v1 = tmp_path / "v1.h5"
    v1.write_bytes(bytes(data))
    assert _compare(str(v1)) == 2


def test_conversions_are_the_librarys_or_refused(tmp_path):
    """Integers to narrower integers saturate (as the library converts); floats to
    integers, where the library's NaN depends on the width, are refused here; null-padded
    strings are kept whole, null-terminated ones end at the first NUL; attributes are
    listed by name."""
    path = str(tmp_path / "c.h5")
    with h5py.File(path, "w") as f:
        f["i"] = np.array([2 ** 40, -1, -2 ** 40, 255, 256], "i8")
        f["f"] = np.array([1.5, np.nan], "f8")
        f.attrs["b"] = np.array([b"ab\x00cd"], "S6")  # (h5py writes null-padded)
        f.attrs["a"] = 1
    fd = os.open(path, os.O_RDONLY)
    try:
        lite = h5lite.File(h5lite.parse(fd), fd)
        with h5py.File(path, "r") as f:
            for dtype in ("i4", "u4", "i1", "u1", "f4"):
                expected = np.empty(5, dtype)
                f["i"].read_direct(expected)
                np.testing.assert_array_equal(h5files.read_array(lite["i"], dtype), expected)
            assert list(lite.attrs) == list(f.attrs) == ["a", "b"]
            assert _same(lite.attrs["b"], f.attrs["b"]) and lite.attrs["b"][0] == b"ab\x00cd"
        with pytest.raises(ValueError, match="not read as int32"):
            h5files.read_array(lite["f"], "i4")
    finally:
        os.close(fd)
