"""Steps per onnxruntime call: the MLP (common.py) trained by kgraph `fit` at batch 32 with
  K=1        kgraph.config.set_auto_steps_per_call(1): one step per call (IO binding, the
             batch gathered in numpy)
  K=32       kgraph.config.set_auto_steps_per_call(32): an ONNX Loop of 32 steps per call
             over data bound once per fit
  K=auto     the default: the same Loop, as many steps per call as take about 0.1 s
             (kgraph.config.AUTO_CALL_SECONDS), measured as fit goes
  K=epoch    compile(steps_per_execution=<steps in one epoch>): the whole epoch in one call
Each run is a fresh process, the configurations interleaved; the same data, weights and
shuffling seed in each (so the losses agree: the numbers are the same, only the calls
differ). Protocol as in harness.py (warm-up fit, weights reset, timed epochs).

    python benchmarks/steps_per_call.py [--repeats 5] [--epochs 2] [--samples 60000] [--batch 32]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import common  # noqa: F401  (puts the repository on sys.path)
import harness
from common import fmt_rate, print_table

CONFIGS = ("K=1", "K=32", "K=auto", "K=epoch")


def child(config, batch, samples, threads, epochs, seed):
    steps = -(-samples // batch)
    extra = {"K=1": {"auto_steps": 1}, "K=32": {"auto_steps": 32}, "K=auto": {},
             "K=epoch": {"steps_per_execution": steps}}[config]
    runs = harness.run_kgraph("mlp", batch, samples, threads, seed, True, 50, epochs, **extra)
    import kgraph
    return {"config": config, "auto_steps_per_call": kgraph.config.auto_steps_per_call() or "~0.1 s",
            "steps_per_epoch": steps, "runs": [{"seconds": dt, "cpu_seconds": cpu, "loss": loss,
                                                "samples_per_s": samples / dt} for dt, cpu, loss in runs],
            "peak_rss_mb": common.peak_rss_mb(), "loadavg": os.getloadavg()[0]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--samples", type=int, default=60_000)
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes per configuration")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per process")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (0: the CPUs available)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", choices=CONFIGS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    args.threads = args.threads or common.default_threads()
    if args.child:
        r = child(args.child, args.batch, args.samples, args.threads, args.epochs, args.seed)
        print("RESULT " + json.dumps(r))
        return r
    t0 = time.perf_counter()
    res = {c: [] for c in CONFIGS}
    for rep in range(args.repeats):
        for c in CONFIGS:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", c, "--batch", str(args.batch),
                   "--samples", str(args.samples), "--threads", str(args.threads), "--epochs", str(args.epochs),
                   "--seed", str(args.seed + rep)]
            res[c].append(harness.spawn(cmd, "kgraph", args.threads))
    med = statistics.median
    rates = {c: [r["samples_per_s"] for p in res[c] for r in p["runs"]] for c in CONFIGS}
    cpu = {c: [args.samples / r["cpu_seconds"] for p in res[c] for r in p["runs"]] for c in CONFIGS}
    base, base_cpu = med(rates["K=1"]), med(cpu["K=1"])
    rows = []
    for c in CONFIGS:
        k = {"K=1": 1, "K=32": 32, "K=auto": res[c][0]["auto_steps_per_call"],
             "K=epoch": res[c][0]["steps_per_epoch"]}[c]
        rows.append([c, k, fmt_rate(med(rates[c])), f"{fmt_rate(min(rates[c]))}/{fmt_rate(max(rates[c]))}",
                     f"{med(rates[c]) / base:.2f}", fmt_rate(med(cpu[c])), f"{med(cpu[c]) / base_cpu:.2f}",
                     f"{med(r['loss'] for p in res[c] for r in p['runs']):.6f}"])
    loads = [p["loadavg"] for c in CONFIGS for p in res[c]]
    print(f"MLP 784-64-32-10, kgraph fit at batch {args.batch}, {args.samples:,} samples "
          f"({res['K=1'][0]['steps_per_epoch']} steps per epoch); {args.repeats} processes x {args.epochs} "
          f"timed epochs per configuration, interleaved; {args.threads} intra-op thread(s)")
    print_table(["configuration", "steps/call", "samples/s median", "min/max", "speed-up vs K=1",
                 "samples/CPU-s", "speed-up (CPU)", "loss (median)"], rows)
    print(f"load average during the runs: median {med(loads):.1f}, max {max(loads):.1f} "
          f"({common.default_threads()} CPUs); {time.perf_counter() - t0:.0f} s")
    if args.json:
        print("JSON " + json.dumps(res))
    return res


if __name__ == "__main__":
    main()
