"""Data-parallel training benchmark (kgraph.distribute): samples/s of one fit epoch with
1 and 2 processes on this machine, and the share of the time spent in the allreduce.

Rows per model (same global batch, same data, Adam, categorical crossentropy):
  1 proc, fused     the single-process path: one fused step graph, K steps per call, with
                    all cores (onnxruntime's intra-op threads) and with one thread
  1 proc, split     the data-parallel step on one rank, one thread: gradient graph + update
                    graph, one step per call, no allreduce (isolates the cost of the split)
  2 procs           `mpiexec -n 2`: each rank computes half of every global batch, one
                    Allreduce per step over the fused gradient buffer; the ranks share the
                    cores (1 thread each on a 2-core machine) "allreduce" is the time inside MPI_Allreduce, including the wait for the
slower rank; "isolated" is one Allreduce of the same buffer with both ranks ready (µs).

MLP 784-64-32-10 (common.py), 60,000 samples; CNN Conv(32,3)-MaxPool-Conv(64,3)-MaxPool-
Dense(10) on 28x28x1, 6,000 samples.

    python benchmarks/distributed.py [--models mlp cnn] [--batch 128] [--repeats 2]
    mpiexec -n 2 python benchmarks/distributed.py --worker mlp --batch 128   # one run (JSON)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

import common  # noqa: F401  (puts the repository on sys.path)
from common import fmt_rate, make_data, print_table

SAMPLES = {"mlp": 60_000, "cnn": 6_000}


def build(kind):
    import kgraph
    from kgraph import layers
    if kind == "mlp":
        return common.kgraph_mlp()
    kgraph.utils.set_random_seed(0)
    return kgraph.Sequential([kgraph.Input(shape=(28, 28, 1)),
                              layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
                              layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
                              layers.Flatten(), layers.Dense(10, activation="softmax")])


class OneRankSplit:
    """A stand-in one-rank strategy that still takes the data-parallel path (split step)."""
    rank, size, is_chief, active = 0, 1, True, True

    def allreduce_(self, buf):
        pass

    def broadcast_(self, buf):
        pass

    def broadcast_arrays_(self, arrays):
        pass

    def allgather(self, obj):
        return [obj]

    def any(self, flag):
        return bool(flag)


def worker(kind, batch, split, threads):
    import kgraph
    if threads:
        common.kgraph_set_threads(threads)
    strategy = kgraph.distribute.MPIStrategy()
    n = SAMPLES[kind]
    x, y, _ = make_data(n)
    if kind == "cnn":
        x = x[:, :784].reshape(n, 28, 28, 1)
    scope = OneRankSplit() if split else strategy
    model = build(kind)
    model.compile(optimizer=kgraph.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model._compiled_spec.distribute = scope if split else (strategy if strategy.active else None)
    model.fit(x[:20 * batch], y[:20 * batch], batch_size=batch, epochs=1, verbose=0)   # warm-up
    runner = next((r for k, r in model._runners.items() if k[0] == "train"), None)
    if getattr(runner, "timings", None):
        runner.timings.update(compute=0.0, allreduce=0.0, steps=0)
    if strategy.active:
        strategy.comm.Barrier()
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    dt = time.perf_counter() - t0
    out = {"samples_per_s": n / dt, "seconds": dt}
    if getattr(runner, "timings", None):
        out["allreduce_share"] = runner.timings["allreduce"] / dt
    if strategy.active:
        buf = np.zeros(runner.layout.size, np.float32)
        strategy.comm.Barrier()
        t1 = time.perf_counter()
        for _ in range(200):
            strategy.allreduce_(buf)
        out["isolated_us"] = (time.perf_counter() - t1) / 200 * 1e6
        out["buffer_floats"] = int(runner.layout.size)
    from kgraph.runtime import session
    out["threads"] = session._STATE["intra_op"] or common.default_threads()
    if strategy.is_chief:
        print("RESULT " + json.dumps(out), flush=True)


def run_one(kind, batch, procs, split=False, threads=0):
    me = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--batch", str(batch),
          "--threads", str(threads)]
    cmd = me + (["--split"] if split else [])
    if procs > 1:
        cmd = [shutil.which("mpiexec") or "mpiexec", "-n", str(procs)] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=sorted(SAMPLES))
    ap.add_argument("--split", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=sorted(SAMPLES))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.batch, args.split, args.threads)
    rows = []
    for kind in args.models:
        configs = (("1 proc, fused", 1, False, 0), ("1 proc, fused", 1, False, 1), ("1 proc, split", 1, True, 1),
                   ("2 procs", 2, False, 0))
        results = {c: [] for c in configs}
        for _ in range(args.repeats):      # interleaved: a busy moment hits every configuration
            for c in configs:
                results[c].append(run_one(kind, args.batch, c[1], c[2], c[3]))
        for (label, procs, split, threads), runs in results.items():
            best = max(runs, key=lambda r: r["samples_per_s"])
            share = statistics.median(r.get("allreduce_share", 0.0) for r in runs)
            rows.append((kind, label, best["threads"], fmt_rate(best["samples_per_s"]),
                         " / ".join(fmt_rate(r["samples_per_s"]) for r in runs),
                         f"{100 * share:.0f}%" if procs > 1 else "-",
                         f"{best['isolated_us']:.0f}" if "isolated_us" in best else "-",
                         best.get("buffer_floats", "-")))
    print(f"global batch {args.batch}, {common.default_threads()} cores, best of {args.repeats}")
    print_table(("model", "run", "threads", "samples/s", "runs", "allreduce", "isolated µs", "floats"), rows)


if __name__ == "__main__":
    main()
