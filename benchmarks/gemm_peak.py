"""The machine's measured GEMM peak: numpy's float32 matrix product (OpenBLAS sgemm) on
square matrices, GFLOP/s = 2 n^3 / time, the best of --repeats products per size (the
best is the peak the machine reaches; the median is printed too, as a measure of the
load). The BLAS thread count must be set before numpy loads, so the driver runs each
thread count in a fresh process.

    python benchmarks/gemm_peak.py [--threads 1 2] [--sizes 1024 2048] [--repeats 20]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import common


def measure(sizes, repeats):
    import numpy as np
    rng = np.random.default_rng(0)
    best, med = 0.0, []
    for n in sizes:
        a = rng.random((n, n), dtype=np.float32)
        b = rng.random((n, n), dtype=np.float32)
        c = np.empty((n, n), np.float32)
        np.matmul(a, b, out=c)  # warm-up
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            rates.append(2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
        best = max(best, max(rates))
        med.append(statistics.median(rates))
    return {"peak_gflops": best, "median_gflops": max(med)}


def peak(threads, sizes=(1024, 2048), repeats=20):
    """Runs measure() in a fresh process with `threads` BLAS threads."""
    env = dict(os.environ)
    for key in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[key] = str(threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--sizes", *map(str, sizes),
           "--repeats", str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=common.REPO).stdout
    r = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    r["threads"] = threads
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, common.default_threads()])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(measure(args.sizes, args.repeats)))
        return None
    res = [peak(t, args.sizes, args.repeats) for t in dict.fromkeys(args.threads)]
    for r in res:
        print(f"numpy sgemm, {r['threads']} thread(s), n in {args.sizes}: peak {r['peak_gflops']:.1f} GFLOP/s "
              f"(median {r['median_gflops']:.1f})")
    return res


if __name__ == "__main__":
    main()
