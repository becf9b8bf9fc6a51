"""Runs the kgraph benchmarks and prints their tables:

  1. predict_mlp.py  inference: kgraph vs a bare onnxruntime session vs PyTorch eager
  2. train_mlp.py    training, one process per framework and run: kgraph fit vs PyTorch eager
  3. (when kgraph's batch-32 training throughput is under --profile-below x PyTorch's, or
     with --profile always) a profile of kgraph's per-step time: train_mlp.py --profile

    python benchmarks/run.py [--repeats 3] [--train-threads 1] [--predict-threads N] [--profile auto]

About 2-4 minutes on a 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def run(script, *args, capture=False):
    cmd = [sys.executable, os.path.join(HERE, script), *map(str, args)]
    print(f"$ {' '.join(['python', os.path.relpath(cmd[1], REPO), *cmd[2:]])}", flush=True)
    if not capture:
        subprocess.run(cmd, check=True, cwd=REPO)
        return None
    proc = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True)
    out = [line for line in proc.stdout.splitlines() if not line.startswith("JSON ")]
    print("\n".join(out), flush=True)
    return next((json.loads(line[5:]) for line in proc.stdout.splitlines() if line.startswith("JSON ")), None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="training runs per framework and batch size")
    ap.add_argument("--train-threads", type=int, default=1, help="intra-op threads in training (0: all CPUs)")
    ap.add_argument("--predict-threads", type=int, default=0,
                    help="threads for kgraph/torch inference (0: all CPUs; the bare session keeps its default)")
    ap.add_argument("--calls", type=int, default=3000, help="batch-1 calls timed per framework")
    ap.add_argument("--profile", choices=["auto", "always", "never"], default="auto")
    ap.add_argument("--profile-below", type=float, default=2.5,
                    help="with --profile auto: profile when kgraph/torch at batch 32 is below this")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    print("=" * 100)
    print("1. Inference")
    print("=" * 100, flush=True)
    pargs = ["--calls", args.calls]
    if args.predict_threads:
        pargs += ["--threads", args.predict_threads]
    run("predict_mlp.py", *pargs)

    print()
    print("=" * 100)
    print("2. Training")
    print("=" * 100, flush=True)
    summary = run("train_mlp.py", "--repeats", args.repeats, "--threads", args.train_threads, "--json", "-v",
                  capture=True)
    ratio = next((r["ratio_vs_torch"] for r in summary or [] if r["framework"] == "kgraph" and r["batch"] == 32),
                 None)

    if args.profile == "always" or (args.profile == "auto" and ratio is not None and ratio < args.profile_below):
        print()
        print("=" * 100)
        why = "" if args.profile == "always" else \
            f" (kgraph/torch at batch 32 = {ratio:.2f}, below {args.profile_below})"
        print(f"3. Profile of kgraph's training step{why}")
        print("=" * 100, flush=True)
        run("train_mlp.py", "--profile", "--batch", 32, "--threads", args.train_threads)
    print(f"\nall benchmarks: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
