"""Save and load time of a 10M-parameter model against a raw write/read of the same arrays.

    python benchmarks/save_load.py [--repeats 5] [--dir /tmp]

The model: Dense 1000 -> 2500 -> 2500 -> 500 (10.0M float32 parameters, 40 MB), compiled
with Adam and trained one step, so the files also hold the optimizer state (3x the
weights) unless `include_optimizer=False`. Baselines: h5py writing/reading the same
weight arrays as plain datasets (with and without fsync: kgraph fsyncs every file it
writes, to make the rename atomic), and numpy.save/np.load of one .npz.

kgraph reads its own files (HDF5's classic format) with a pure-Python reader,
kgraph/saving/h5lite.py. Rows marked "HDF5 library" load them as kgraph loads any other
HDF5 file (kgraph.saving.h5opening.PURE_PYTHON off): the structure is walked in another
process first (damaged files cannot crash the process; kgraph/saving/preflight.py), a
helper process started when kgraph is imported, or a fork of this process until it is
ready, then h5py parses it. Rows marked "unchecked" use h5py without that walk
(kgraph.saving.h5opening.PREFLIGHT off). The "first load" line times the very first load
of the process, and one load through the library checked by a fork. `load_model` also
rebuilds and compiles the model from its config (initializers skipped: the file's values
replace them). Every
operation, baselines included, runs once per round (interleaved: see `interleaved`);
medians of `--repeats` rounds after an untimed one; the files live in `--dir` (page
cache warm).
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kgraph  # noqa: E402
from kgraph import layers as L  # noqa: E402


def build():
    kgraph.utils.set_random_seed(0)
    inp = kgraph.Input((1000,))
    x = L.Dense(2500, activation="relu")(inp)
    x = L.Dense(2500, activation="relu")(x)
    model = kgraph.Model(inp, L.Dense(500)(x))
    model.compile("adam", "mse")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(32, 1000)).astype("float32"), rng.normal(size=(32, 500)).astype("float32"),
              batch_size=32, verbose=0)
    return model


def interleaved(ops, repeats):
    """{name: median seconds}: every operation once per round, `repeats` rounds after an
    untimed one, so the baselines and kgraph's rows see the same machine (on a noisy 2-core
    machine, blocks measured one after another drifted by 20-40 %). Each run follows a
    garbage collection (loaded models are cyclic garbage: freeing one inside the next
    run's timing added up to 100 ms at random)."""
    times = {name: [] for name in ops}
    for k in range(repeats + 1):
        for name, fn in ops.items():
            gc.collect()
            t = time.perf_counter()
            fn()
            if k:
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def raw_h5_write(path, arrays, fsync):
    with h5py.File(path, "w") as f:
        for i, a in enumerate(arrays):
            f.create_dataset(str(i), data=a)
    if fsync:
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())


def raw_h5_read(path, n):
    with h5py.File(path, "r") as f:
        return [f[str(i)][()] for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    folder = tempfile.mkdtemp(dir=args.dir)
    model = build()
    arrays = model.get_weights()
    params = sum(a.size for a in arrays)
    mb = sum(a.nbytes for a in arrays) / 1e6
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    r = args.repeats

    from kgraph.saving import h5opening, optimizer_state
    with_slots = arrays + optimizer_state.export(model)[1]
    plain = kgraph.models.clone_model(model)  # uncompiled: weights only
    plain.set_weights(arrays)
    plain.save_weights(p("first.weights.h5"))
    t = time.perf_counter()
    plain.load_weights(p("first.weights.h5"))
    first = time.perf_counter() - t
    from kgraph.saving import preflight
    preflight.USE_HELPER = False  # one check by a forked child, as before the helper is ready
    h5opening.PURE_PYTHON = False
    t = time.perf_counter()
    plain.load_weights(p("first.weights.h5"))
    forked = time.perf_counter() - t
    preflight.USE_HELPER = h5opening.PURE_PYTHON = True

    def setting(name, value, fn):
        def run():
            setattr(h5opening, name, value)
            try:
                fn()
            finally:
                setattr(h5opening, name, not value)
        return run
    unchecked = lambda fn: setting("PREFLIGHT", False, fn)  # noqa: E731
    library = lambda fn: setting("PURE_PYTHON", False, fn)  # noqa: E731
    # (label, data, save, load)
    cases = [
        ("save_weights / load_weights (.weights.h5)", "w",
         lambda: plain.save_weights(p("plain.weights.h5")), lambda: plain.load_weights(p("plain.weights.h5"))),
        ("save / load_model (.keras, include_optimizer=False)", "w",
         lambda: model.save(p("n.keras"), include_optimizer=False),
         lambda: kgraph.models.load_model(p("n.keras"), compile=False)),
        ("save_weights / load_weights, compiled (.weights.h5)", "w+opt",
         lambda: model.save_weights(p("m.weights.h5")), lambda: model.load_weights(p("m.weights.h5"))),
        ("save / load_model (.h5)", "w+opt", lambda: model.save(p("m.h5")),
         lambda: kgraph.models.load_model(p("m.h5"))),
        ("save / load_model (.keras)", "w+opt", lambda: model.save(p("m.keras")),
         lambda: kgraph.models.load_model(p("m.keras"))),
        ("save_weights / load_weights (.weights.h5), HDF5 library", "w",
         lambda: plain.save_weights(p("l.weights.h5")), library(lambda: plain.load_weights(p("l.weights.h5")))),
        ("save / load_model (.keras, no optimizer), HDF5 library", "w",
         lambda: model.save(p("l.keras"), include_optimizer=False),
         library(lambda: kgraph.models.load_model(p("l.keras"), compile=False))),
        ("save / load_model (.h5), HDF5 library", "w+opt", lambda: model.save(p("l.h5")),
         library(lambda: kgraph.models.load_model(p("l.h5")))),
        ("save_weights / load_weights (.weights.h5), unchecked", "w",
         lambda: plain.save_weights(p("u.weights.h5")), unchecked(lambda: plain.load_weights(p("u.weights.h5")))),
        ("save / load_model (.h5), unchecked", "w+opt", lambda: model.save(p("u.h5")),
         unchecked(lambda: kgraph.models.load_model(p("u.h5")))),
    ]
    ops = {}
    for tag, arrs in (("w", arrays), ("w+opt", with_slots)):
        ops[f"raw write {tag}"] = lambda arrs=arrs, tag=tag: raw_h5_write(p(f"raw-{tag}.h5"), arrs, fsync=True)
        ops[f"raw read {tag}"] = lambda arrs=arrs, tag=tag: raw_h5_read(p(f"raw-{tag}.h5"), len(arrs))
    ops["raw write nosync"] = lambda: raw_h5_write(p("raw.h5"), arrays, fsync=False)
    ops["savez"] = lambda: np.savez(p("raw.npz"), *arrays)
    ops["np.load"] = lambda: [a for a in np.load(p("raw.npz")).values()]
    for label, _, save, load in cases:
        ops[f"save {label}"], ops[f"load {label}"] = save, load
    med = interleaved(ops, r)
    base = {tag: (med[f"raw write {tag}"], med[f"raw read {tag}"]) for tag in ("w", "w+opt")}
    raw_w_nosync, np_w, np_r = med["raw write nosync"], med["savez"], med["np.load"]
    rows = []
    for label, tag, _, _ in cases:
        w, rd = med[f"save {label}"], med[f"load {label}"]
        rows.append((label, tag, w, w / base[tag][0], rd, rd / base[tag][1]))

    print(f"model: {params / 1e6:.2f}M parameters, {mb:.1f} MB of weights; medians of {r} runs; "
          f"files in {folder}")
    for tag, (w, rd) in base.items():
        print(f"raw h5py, {'weights' if tag == 'w' else 'weights + Adam slots'}: write+fsync {w * 1e3:.0f} ms, "
              f"read {rd * 1e3:.0f} ms")
    print(f"(h5py write without fsync {raw_w_nosync * 1e3:.0f} ms; numpy savez {np_w * 1e3:.0f} ms, "
          f"np.load {np_r * 1e3:.0f} ms)")
    print(f"(first load_weights of the process: {first * 1e3:.0f} ms; a load through the HDF5 library "
          f"checked by a forked child, as until the helper is ready: {forked * 1e3:.0f} ms)")
    print(f"{'operation':58s} {'data':>6s} {'save ms':>8s} {'x raw':>6s} {'load ms':>8s} {'x raw':>6s}")
    for label, tag, w, wr, rd, rr in rows:
        print(f"{label:58s} {tag:>6s} {w * 1e3:8.0f} {wr:6.2f} {rd * 1e3:8.0f} {rr:6.2f}")
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    os.rmdir(folder)


if __name__ == "__main__":
    main()
