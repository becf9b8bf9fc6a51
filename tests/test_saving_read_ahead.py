"""How a load reads: where the datasets lie comes from a parse in this process (h5lite) or
the check in another process, and they are read ahead (h5opening.Opening) while the file is
still being walked and the model built; a `.keras` member's CRC-32 is computed from the
same read; kgraph's archives are opened by the HDF5 library in place. Each path is checked
both ways: it was taken, and the numbers are those of a plain h5py read.

These tests load through the HDF5 library (h5opening.PURE_PYTHON off), the path of every
file h5lite does not read completely; those marked `engine` run both ways."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

import h5py
import numpy as np
import pytest

import kgraph
from kgraph import layers as L
from kgraph.saving import SavingError, h5files, h5lite, h5opening, h5probe, keras_zip, preflight


def _model(compiled=True):
    kgraph.utils.set_random_seed(3)
    inp = kgraph.Input((12,))
    x = L.Dense(40, activation="relu")(inp)
    model = kgraph.Model(inp, L.Dense(3)(L.Dense(30, activation="tanh")(x)))
    if compiled:
        model.compile("adam", "mse")
        rng = np.random.default_rng(0)
        model.fit(rng.normal(size=(32, 12)).astype("float32"), rng.normal(size=(32, 3)).astype("float32"),
                  batch_size=8, verbose=0)
    return model


def _everything(opening):
    opening.select(h5opening.Selection(lambda name, nbytes: True, 1 << 40))
    return opening


@pytest.fixture(autouse=True)
def engine(request, monkeypatch):
    """Whether files h5lite reads completely are loaded by it (param True) or, as here by
    default, by the HDF5 library after the check."""
    pure = getattr(request, "param", False)
    monkeypatch.setattr(h5opening, "PURE_PYTHON", pure)
    return pure


both_engines = pytest.mark.parametrize("engine", [False, True], ids=["library", "h5lite"], indirect=True)


@pytest.fixture
def taken(monkeypatch):
    """Names of the datasets whose data a load took from the read-ahead."""
    names = []
    real, real_run = h5opening.Opening.take, h5opening.Opening._take_run

    def spy(self, obj, dtype):
        out = real(self, obj, dtype)
        if out is not None:
            names.append(obj.name)
        return out

    def spy_run(self, name, offset, nbytes):
        out = real_run(self, name, offset, nbytes)
        if out is not None:
            names.append(name)
        return out
    monkeypatch.setattr(h5opening.Opening, "take", spy)
    monkeypatch.setattr(h5opening.Opening, "_take_run", spy_run)
    return names


def _h5_arrays(path, offset=0, length=None):
    """Every dataset as h5py reads it (the reference)."""
    out = {}
    with h5probe.open_hdf5(str(path), offset, length) as (f, _, _):
        f.visititems(lambda n, o: out.__setitem__("/" + n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


@both_engines
@pytest.mark.parametrize("kind", ["weights.h5", "h5", "keras"])
def test_every_weight_and_slot_comes_from_the_read_ahead(tmp_path, taken, kind):
    model = _model()
    path = tmp_path / f"m.{kind}"
    (model.save_weights if kind == "weights.h5" else model.save)(path)
    if kind == "weights.h5":
        loaded = _model()
        loaded.load_weights(path)
    else:
        loaded = kgraph.models.load_model(path)
    if kind == "keras":
        with zipfile.ZipFile(path) as zf:
            stored = _h5_arrays(path, keras_zip.WEIGHTS_OFFSET, zf.getinfo("model.weights.h5").file_size)
    else:
        stored = _h5_arrays(path)
    assert sorted(taken) == sorted(stored)  # every dataset of the file: weights and optimizer state
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(1).normal(size=(5, 12)).astype("float32")
    y = np.random.default_rng(2).normal(size=(5, 3)).astype("float32")
    model.fit(x, y, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights()):  # the optimizer state came too
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@both_engines
def test_an_uncompiled_load_does_not_read_the_optimizer_state(tmp_path, taken):
    model = _model()
    model.save_weights(tmp_path / "m.weights.h5")
    plain = _model(compiled=False)
    plain.load_weights(tmp_path / "m.weights.h5")
    assert taken and not [n for n in taken if n.startswith("/optimizer")]
    for a, b in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_read_ahead_takes_only_plain_runs_of_the_asked_type(tmp_path):
    """A chunked+compressed dataset is not a plain run; a float64 dataset asked for as
    float32 is converted by h5py: neither comes from the read-ahead, both read right."""
    path = tmp_path / "mixed.h5"
    rng = np.random.default_rng(4)
    plain, chunked, wide = (rng.normal(size=(50, 20)).astype("f4"), rng.normal(size=(64, 64)).astype("f4"),
                            rng.normal(size=(30,)))
    with h5py.File(path, "w") as f:
        f["plain"] = plain
        f.create_dataset("chunked", data=chunked, chunks=(16, 16), compression="gzip")
        f["wide"] = wide
    opening = _everything(h5opening.Opening(path, str(path), read_ahead=True))
    with opening.open() as f:
        opening._planned.wait()  # (take() waits for the plan; this looks at it first)
        assert sorted(opening._index) == ["/plain", "/wide"]  # what the walk listed
        got = opening.take(f["plain"], np.dtype("f4"))
        np.testing.assert_array_equal(got, plain)
        assert opening.take(f["chunked"], np.dtype("f4")) is None
        assert opening.take(f["wide"], np.dtype("f4")) is None
        np.testing.assert_array_equal(h5files.read_array(f["chunked"], "f4"), chunked)
        np.testing.assert_array_equal(h5files.read_array(f["wide"], "f4"), wide.astype("f4"))


def test_read_ahead_checks_the_offset_this_process_sees(tmp_path, monkeypatch):
    """An entry of the walk's list that disagrees with what this process's HDF5 says (the
    file changed in between) is not used: h5py reads the dataset."""
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f["a"] = np.arange(100, dtype="f4")
    opening = _everything(h5opening.Opening(path, str(path), read_ahead=True))
    with opening.open() as f:
        opening._planned.wait()
        i, off, n = opening._index["/a"]
        opening._index["/a"] = (i, off + 4, n)
        assert opening.take(f["a"], np.dtype("f4")) is None
        np.testing.assert_array_equal(h5files.read_array(f["a"]), np.arange(100, dtype="f4"))


@pytest.mark.parametrize("hints", [True, False], ids=["parsed-here", "listed-by-the-helper"])
def test_a_refused_file_is_never_read_into_the_model(tmp_path, monkeypatch, hints):
    """The datasets' places are known before the walk refuses the file (here: a dataset kept
    in an external file): from this process's parse (h5lite), else listed by the helper
    first. They are read (while the walk goes on, or just after); the load fails and the
    model keeps its weights (the bytes read are never used)."""
    model = _model()
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    (tmp_path / "secret.bin").write_bytes(bytes(40))
    with h5py.File(path, "r+") as f:
        f.create_dataset("layers/extra", shape=(10,), dtype="f4", external=[(str(tmp_path / "secret.bin"), 0, 40)])
    target = _model(compiled=False)
    before = target.get_weights()
    for _ in range(300):  # the helper (started at import) is ready
        if preflight._helper() is not None:
            break
        time.sleep(0.05)
    events = []
    real_check = preflight.check

    def spying_check(*args, on_extents=None, **kwargs):
        events.append(("asked to list", kwargs.get("extents")))

        def seen(runs):
            events.append(("extents", len(runs)))
            on_extents(runs)
        try:
            return real_check(*args, on_extents=seen if on_extents else None, **kwargs)
        finally:
            for _ in range(5000):  # (the verdict waits for the plan: else it can cancel it first)
                if any(k == "read" for k, _ in events):
                    break
                time.sleep(0.001)
            events.append(("verdict", None))

    real_plan = h5opening.Opening._plan

    def spying_plan(self, extents):
        runs = real_plan(self, extents)
        events.append(("read", len(runs)))
        return runs
    monkeypatch.setattr(preflight, "check", spying_check)
    monkeypatch.setattr(h5opening.Opening, "_plan", spying_plan)
    if not hints:
        monkeypatch.setattr(h5lite, "parse", lambda *a, **k: None)
    with pytest.raises(SavingError, match="external files"):
        target.load_weights(path)
    kinds = [k for k, _ in events]
    assert ("asked to list", not hints) in events
    if not hints:
        assert kinds.index("extents") < kinds.index("verdict"), events  # listed before the verdict
    assert ("read", len(target.weights)) in events  # read: the weights, not the optimizer state
    for a, b in zip(before, target.get_weights()):
        np.testing.assert_array_equal(a, b)


# -- .keras ----------------------------------------------------------------------------------
def _keras_layout(src, dst):
    """The same archive laid out as Keras writes it: metadata, config, then the weights."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in ("metadata.json", "config.json", "model.weights.h5"):
            zout.writestr(name, zin.read(name))
    return dst


def test_kgraph_archives_open_in_place_and_keras_layout_through_rangefile(tmp_path, monkeypatch, taken):
    model = _model()
    model.save(tmp_path / "k.keras")
    keras_style = _keras_layout(tmp_path / "k.keras", tmp_path / "keras_style.keras")
    with zipfile.ZipFile(keras_style) as zf:
        info = zf.getinfo("model.weights.h5")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        assert not h5probe.natively_readable(str(keras_style), start, info.file_size)
    ranges = []
    real_range = h5probe.RangeFile

    class Spy(real_range):
        def __init__(self, *a, **k):
            ranges.append(a)
            super().__init__(*a, **k)
    monkeypatch.setattr(h5probe, "RangeFile", Spy)
    native = kgraph.models.load_model(tmp_path / "k.keras")
    assert ranges == [] and taken  # opened by HDF5 in place, read ahead
    taken.clear()
    ranged = kgraph.models.load_model(keras_style)
    assert ranges and taken  # through RangeFile in this process, still read ahead
    for a, b, c in zip(model.get_weights(), native.get_weights(), ranged.get_weights()):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_natively_readable_only_where_hdf5_finds_that_image(tmp_path):
    image = tmp_path / "w.h5"
    with h5py.File(image, "w") as f:
        f["a"] = np.arange(10.0)
    data = image.read_bytes()

    def wrapped(name, prefix, suffix=b"central directory"):
        p = tmp_path / name
        p.write_bytes(prefix + data + suffix)
        return str(p)
    at512 = wrapped("at512", b"PK\x03\x04" + bytes(508))
    assert h5probe.natively_readable(at512, 512, len(data))
    assert not h5probe.natively_readable(at512, 512, len(data) - 1)  # HDF5 data past the member
    at700 = wrapped("at700", b"PK\x03\x04" + bytes(696))
    assert not h5probe.natively_readable(at700, 700, len(data))  # HDF5 does not look at 700
    decoy = bytearray(b"PK\x03\x04" + bytes(1020))
    decoy[512:520] = h5probe.HDF5_MAGIC  # HDF5 would find this one first
    assert not h5probe.natively_readable(wrapped("decoy", bytes(decoy)), 1024, len(data))
    at1024 = wrapped("at1024", b"PK\x03\x04" + bytes(1020))
    assert h5probe.natively_readable(at1024, 1024, len(data))
    with h5probe.open_hdf5(at1024, 1024, len(data)) as (f, base, _):
        assert base == 0 and f["a"].id.get_offset() >= 1024  # offsets in the whole file
        np.testing.assert_array_equal(f["a"][()], np.arange(10.0))


@both_engines
@pytest.mark.parametrize("where", ["data", "metadata"])
def test_damaged_member_is_reported_by_its_crc(tmp_path, where):
    """A flipped byte in a weight's data (which the walk cannot see) or in the HDF5
    metadata: the streamed CRC-32 names the damage; the model loaded before is unchanged."""
    model = _model()
    path = tmp_path / "m.keras"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        size = zf.getinfo("model.weights.h5").file_size
    with h5probe.open_hdf5(str(path), keras_zip.WEIGHTS_OFFSET, size) as (f, _, _):
        kernel_at = f["layers/dense/vars/0"].id.get_offset()
    data = bytearray(path.read_bytes())
    at = kernel_at + 100 if where == "data" else keras_zip.WEIGHTS_OFFSET + 200
    data[at] ^= 0x10
    bad = tmp_path / "bad.keras"
    bad.write_bytes(bytes(data))
    with pytest.raises(SavingError, match=r"bad\.keras.*CRC-32"):
        kgraph.models.load_model(bad)
    target = _model()
    before = target.get_weights()
    with pytest.raises(SavingError, match="CRC-32"):
        target.load_weights(bad)
    for a, b in zip(before, target.get_weights()):
        np.testing.assert_array_equal(a, b)


@both_engines
def test_streamed_crc_equals_zlib_with_and_without_read_ahead(tmp_path, monkeypatch):
    import zlib
    model = _model()
    path = tmp_path / "m.keras"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("model.weights.h5")
        expected = zlib.crc32(zf.read(info))
        assert info.CRC == expected
    image = h5opening.Image(str(path), keras_zip.WEIGHTS_OFFSET, info.file_size)
    for accept in (lambda n, b: True, lambda n, b: not n.startswith("/optimizer"), None):
        opening = h5opening.Opening(image, str(path), checksum=True, read_ahead=accept is not None)
        if accept is not None:
            opening.select(h5opening.Selection(accept, 1 << 30))
        with opening.open():
            pass
        assert opening.crc() == expected
    monkeypatch.setattr(h5opening, "PREFLIGHT", False)
    opening = h5opening.Opening(image, str(path), checksum=True, read_ahead=True)
    assert opening.crc() == expected


@both_engines
def test_a_load_that_fails_early_stops_reading(tmp_path, monkeypatch):
    """config.json names a layer class nobody knows: the error comes from the build, while
    the check and read-ahead had started; both are cancelled, and the next load works."""
    model = _model()
    path = tmp_path / "m.keras"
    model.save(path)
    with zipfile.ZipFile(path) as zin:
        members = {n: zin.read(n) for n in zin.namelist()}
    members["config.json"] = members["config.json"].replace(b'"Dense"', b'"Fancy"', 1)
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(bad, "w") as zout:
        for n, d in members.items():
            zout.writestr(n, d)
    with pytest.raises(SavingError, match="Fancy"):
        kgraph.models.load_model(bad)
    again = kgraph.models.load_model(path)
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("setting, started", [("eager", True), ("lazy", False), ("off", False), ("sometimes", True)])
def test_helper_starts_with_the_import_unless_told_otherwise(setting, started):
    """KGRAPH_HDF5_HELPER: `import kgraph` starts the check's helper process (eager, the
    default), or leaves it to the first check (lazy), or never uses one (off: checks fork);
    an unknown value warns and means eager. Each way, a load works."""
    code = ("import warnings, kgraph, numpy as np\n"
            "from kgraph.saving import preflight\n"
            "print(preflight._STATE['helper'] is not None, preflight.USE_HELPER)\n"
            "m = kgraph.Sequential([kgraph.Input((3,)), kgraph.layers.Dense(2)])\n"
            "m.save_weights(__import__('sys').argv[1])\n"
            "w = m.get_weights(); m.set_weights([np.zeros_like(a) for a in w])\n"
            "m.load_weights(__import__('sys').argv[1])\n"
            "print(all(np.array_equal(a, b) for a, b in zip(w, m.get_weights())))\n")
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, KGRAPH_HDF5_HELPER=setting)
        out = subprocess.run([sys.executable, "-c", code, os.path.join(d, "w.weights.h5")], env=env,
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, loaded = out.stdout.split("\n")[:2]
    assert first == f"{started} {setting != 'off'}" and loaded == "True"
    assert ("KGRAPH_HDF5_HELPER should be" in out.stderr) == (setting == "sometimes")


# -- what a hostile or odd file cannot make the read-ahead do --------------------------------


@both_engines
def test_read_ahead_reads_only_what_the_model_can_hold(tmp_path):
    """A 1 GiB dataset the model never asks for (a sparse file: nothing on disk), and a
    weight of a hostile size: neither is read ahead; the load reads only its weights."""
    model = _model()
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "r+") as f:
        junk = f.create_dataset("junk", shape=(1 << 28,), dtype="f4")
        junk[-1] = 1.0  # allocated, contiguous, all but one page unwritten
        del f["layers/dense/vars/0"]
        f.create_dataset("layers/dense/vars/0", shape=(1 << 26,), dtype="f4")[-1] = 1.0
    plans = []
    real_plan = h5opening.Opening._plan

    def spying_plan(self, extents):
        runs = real_plan(self, extents)
        plans.append(([r[0] for r in extents], [r[0] for r in runs]))
        return runs
    target = _model(compiled=False)
    before = target.get_weights()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(h5opening.Opening, "_plan", spying_plan)
        with pytest.raises(SavingError, match=r"shape \(67108864,\)"):
            target.load_weights(path)
    listed, planned = plans[0]
    assert "/junk" in listed and "/layers/dense/vars/0" in listed
    assert "/junk" not in planned and "/layers/dense/vars/0" not in planned and planned
    for a, b in zip(before, target.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_integers_of_fewer_bits_are_converted_not_copied(tmp_path):
    """An int32 dataset holding 12-bit values at bit offset 4: its bytes are not numpy's
    int32s, so it is not taken from the read-ahead; h5py converts it."""
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        t = h5py.h5t.STD_I32LE.copy()
        t.set_precision(12)
        t.set_offset(4)
        d = h5py.h5d.create(f.id, b"odd", t, h5py.h5s.create_simple((4,)))
        d.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array([1, 2, 3, -1], "i4"))
    opening = _everything(h5opening.Opening(path, str(path), read_ahead=True))
    with opening.open() as f:
        assert h5probe.contiguous_extent(f["odd"].id) is None
        np.testing.assert_array_equal(h5files.read_array(f["odd"]), [1, 2, 3, -1])


@both_engines
def test_loads_without_threads(tmp_path, monkeypatch):
    """Where no thread can start, a load checks and reads in the calling thread, and a
    .keras member's CRC-32 is still checked."""
    model = _model()
    model.save(tmp_path / "m.keras")
    monkeypatch.setattr(h5opening, "_spawn", lambda *a, **k: None)
    loaded = kgraph.models.load_model(tmp_path / "m.keras")
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    data = bytearray((tmp_path / "m.keras").read_bytes())
    data[keras_zip.WEIGHTS_OFFSET + 300] ^= 1
    (tmp_path / "bad.keras").write_bytes(bytes(data))
    with pytest.raises(SavingError, match="CRC-32"):
        kgraph.models.load_model(tmp_path / "bad.keras")


@both_engines
def test_a_failing_read_ahead_leaves_the_checks_in_step(tmp_path, monkeypatch):
    """The reader cannot start for one load: that load still works (h5py reads), and the
    helper's next answer is about the next file (here one it must refuse)."""
    model = _model()
    model.save_weights(tmp_path / "m.weights.h5")
    with h5py.File(tmp_path / "link.weights.h5", "w") as f:
        f["layers/x"] = h5py.ExternalLink(str(tmp_path / "m.weights.h5"), "/layers")
    target = _model()
    with monkeypatch.context() as mp:
        mp.setattr(h5opening.Opening, "_start_reader", lambda self, extents: (_ for _ in ()).throw(RuntimeError("no")))
        target.load_weights(tmp_path / "m.weights.h5")
    for a, b in zip(model.get_weights(), target.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(SavingError, match="external link"):
        target.load_weights(tmp_path / "link.weights.h5")


@both_engines
def test_a_file_replaced_during_the_load_is_an_error(tmp_path):
    """The file is replaced (renamed over) after the check began: the load stops rather
    than mix the old file's data with the new file's."""
    a, b = _model(), _model()
    b.set_weights([w + 1 for w in b.get_weights()])
    a.save_weights(tmp_path / "m.weights.h5")
    b.save_weights(tmp_path / "other.weights.h5")
    opening = _everything(h5opening.Opening(tmp_path / "m.weights.h5", "m.weights.h5", read_ahead=True))
    os.replace(tmp_path / "other.weights.h5", tmp_path / "m.weights.h5")
    with pytest.raises(SavingError, match="replaced or changed while it was being loaded"):
        with opening.open():
            pass


@pytest.mark.parametrize("kind", ["weights.h5", "keras", "h5"])
def test_a_load_whose_file_is_replaced_starts_again(tmp_path, monkeypatch, kind):
    """A checkpoint saved again (renamed over) while it is being loaded: the walk sees the
    new file, the load had begun on the old one; the load starts again and gives the new
    file's weights, never a mix."""
    old, new = _model(), _model()
    new.set_weights([w + 1 for w in new.get_weights()])
    path = tmp_path / f"m.{kind}"
    save = (lambda m, p: m.save_weights(p)) if kind == "weights.h5" else (lambda m, p: m.save(p))
    save(old, path)
    save(new, tmp_path / f"new.{kind}")
    real_check, calls = preflight.check, []

    def replacing_check(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.replace(tmp_path / f"new.{kind}", path)
        return real_check(*args, **kwargs)
    monkeypatch.setattr(preflight, "check", replacing_check)
    if kind == "weights.h5":
        loaded = _model()
        loaded.load_weights(path)
    else:
        loaded = kgraph.models.load_model(path)
    assert len(calls) == 2
    for a, b in zip(new.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


@both_engines
def test_an_archive_replaced_before_its_bytes_are_read_starts_again(tmp_path, monkeypatch):
    """The archive is replaced after it was checked but before the reader opened it: the
    CRC-32 would be of the new file's bytes; the load starts again instead of calling the
    archive damaged."""
    old, new = _model(), _model()
    new.set_weights([w + 1 for w in new.get_weights()])
    path = tmp_path / "m.keras"
    old.save(path)
    new.save(tmp_path / "new.keras")
    real_read, calls = h5opening.Opening._read, []

    def replacing_read(self, extents):
        calls.append(1)
        if len(calls) == 1:
            os.replace(tmp_path / "new.keras", path)
        return real_read(self, extents)
    monkeypatch.setattr(h5opening.Opening, "_read", replacing_read)
    loaded = kgraph.models.load_model(path)
    assert len(calls) >= 2
    for a, b in zip(new.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_loads_with_another_hdf5_driver(tmp_path):
    """HDF5_DRIVER=stdio: HDF5's handle is not a file descriptor; loads work as before."""
    code = ("import sys, numpy as np, kgraph\n"
            "m = kgraph.Sequential([kgraph.Input((3,)), kgraph.layers.Dense(2)])\n"
            "m.compile('adam', 'mse')\n"
            "for path in sys.argv[1:]:\n"
            "    (m.save_weights if path.endswith('.weights.h5') else m.save)(path)\n"
            "    w = m.get_weights()\n"
            "    n = kgraph.models.load_model(path) if not path.endswith('.weights.h5') else m\n"
            "    if n is m: m.load_weights(path)\n"
            "    assert all(np.array_equal(a, b) for a, b in zip(w, n.get_weights()))\n"
            "print('ok')\n")
    paths = [str(tmp_path / f"m.{k}") for k in ("weights.h5", "h5", "keras")]
    out = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, HDF5_DRIVER="stdio"))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_helper_not_started_without_a_python_to_start(monkeypatch):
    monkeypatch.setattr(sys, "executable", "")
    monkeypatch.setattr(preflight, "_STATE", {"helper": None, "failed_starts": 0})
    preflight.start_helper()
    assert preflight._STATE["helper"] is None and preflight._helper() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_child_forked_during_a_check_checks_on_its_own(tmp_path):
    """A fork while another thread holds the check's lock: the child's checks do not wait
    for a lock nobody in the child will release."""
    model = _model()
    model.save_weights(tmp_path / "m.weights.h5")
    with preflight._LOCK:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                reply = preflight.check(str(tmp_path / "m.weights.h5"), 0, None, "m")
                code = 0 if reply.get("ok") else 2
            finally:
                os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("the forked child's check hung")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_no_helper_in_multiprocessing_workers():
    """Workers (spawn: they import kgraph again) start no helper of their own until they
    load a file: a Pool of 32 would otherwise start 32."""
    code = ("import multiprocessing as mp\n"
            "import kgraph  # (at the top: a spawn worker imports it again while it starts)\n"
            "from kgraph.saving import preflight\n"
            "def probe(_):\n"
            "    return preflight._STATE['helper'] is None\n"
            "if __name__ == '__main__':\n"
            "    with mp.get_context('spawn').Pool(2) as pool:\n"
            "        print(preflight._STATE['helper'] is not None, all(pool.map(probe, range(2))))\n")
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "pool.py")
        with open(script, "w") as fh:
            fh.write(code)
        out = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=180,
                             env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True True"


@both_engines
def test_model_file_read_ahead_before_the_model_is_known(tmp_path, monkeypatch, taken):
    """A legacy .h5 holds its model's config: its weights are read ahead from the start,
    within what the file holds on disk; a 1 GiB sparse dataset is not read, and a real
    extra dataset read provisionally is dropped once the model says it does not want it."""
    model = _model()
    path = tmp_path / "m.h5"
    model.save(path)
    with h5py.File(path, "r+") as f:
        f.create_dataset("junk", shape=(1 << 28,), dtype="f4")[-1] = 1.0  # sparse: 1 GiB
        f["extra"] = np.ones(50_000, "f4")  # 200 kB on disk, larger than any weight
    plans, kept, selections = [], [], []
    opening = h5opening.Opening
    real_plan, real_batch, real_select = opening._plan, opening._read_batch, opening.select
    final = threading.Event()

    def spying_plan(self, extents):
        runs = real_plan(self, extents)
        plans.append([r[0] for r in runs])
        return runs

    def spying_select(self, selection):
        selections.append(selection)
        real_select(self, selection)
        if len(selections) == 2:
            final.set()

    def spying_batch(self, fd, batch, start):
        final.wait(10)  # (the reads wait for the model's selection: what it narrows shows)
        out = real_batch(self, fd, batch, start)
        kept.extend(name for name, _, _ in batch if name in self._arrays)
        return out
    monkeypatch.setattr(h5opening.Opening, "_plan", spying_plan)
    monkeypatch.setattr(h5opening.Opening, "select", spying_select)
    monkeypatch.setattr(h5opening.Opening, "_read_batch", spying_batch)
    loaded = kgraph.models.load_model(path)
    assert len(selections) == 2  # provisional, then the model's
    assert "/junk" not in plans[0] and "/extra" in plans[0]  # (planned before the model was known)
    assert "/extra" not in kept and "/extra" not in taken and taken
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


@both_engines
def test_read_ahead_arrays_are_made_in_the_callers_thread(tmp_path, monkeypatch):
    """With the places parsed here, the arrays are made by select() in the loading thread
    (memory another thread allocates comes from another malloc arena, returned to the
    system when freed: each load's arrays were then new pages to fault in)."""
    model = _model()
    model.save_weights(tmp_path / "m.weights.h5")
    threads = []
    real_empty = np.empty

    def spying_empty(shape, dtype=float, *args, **kwargs):
        threads.append(threading.current_thread().name)
        return real_empty(shape, dtype, *args, **kwargs)
    monkeypatch.setattr(h5opening.np, "empty", spying_empty)
    loaded = _model()
    loaded.load_weights(tmp_path / "m.weights.h5")
    assert len(threads) >= len(_h5_arrays(tmp_path / "m.weights.h5"))  # (weights, optimizer state)
    assert set(threads) == {threading.current_thread().name}
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


@both_engines
def test_large_arrays_are_read_and_hashed_in_parts(tmp_path, monkeypatch, taken):
    """An array larger than a batch is read in parts that the hashing thread takes as they
    come: the values and the archive's CRC-32 come out the same, and a flipped byte deep in
    an array is still caught."""
    monkeypatch.setattr(h5opening, "READ_BATCH", 256)
    parts = []
    real_batch = h5opening.Opening._read_batch

    def spying_batch(self, fd, batch, start):
        parts.extend(len(p) for _, _, p in batch)
        return real_batch(self, fd, batch, start)
    monkeypatch.setattr(h5opening.Opening, "_read_batch", spying_batch)
    model = _model()
    model.save(tmp_path / "m.keras")
    loaded = kgraph.models.load_model(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        info = zf.getinfo("model.weights.h5")
    stored = _h5_arrays(tmp_path / "m.keras", keras_zip.WEIGHTS_OFFSET, info.file_size)
    assert max(parts) <= 256 and sorted(taken) == sorted(stored)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    kernel = model.weights[0].numpy().tobytes()
    data = bytearray((tmp_path / "m.keras").read_bytes())
    at = data.find(kernel) + len(kernel) // 2
    assert keras_zip.WEIGHTS_OFFSET < at < keras_zip.WEIGHTS_OFFSET + info.file_size
    data[at] ^= 0x01
    (tmp_path / "bad.keras").write_bytes(bytes(data))
    with pytest.raises(SavingError, match="CRC-32"):
        kgraph.models.load_model(tmp_path / "bad.keras")
