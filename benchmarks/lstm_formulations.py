"""Recurrent train-step formulations compared: LSTM(128) (or GRU(128)) on 28 steps x 28
features -> Dense(10, softmax), batch 128, Adam, `fit` (32 steps per onnxruntime call).

Each configuration runs in a fresh process on the same data; per run: node count of the
single train-step ONNX graph (by op type) and samples/s over timed epochs (wall and CPU,
CPU being the steadier figure on a loaded machine). The configurations are the values of
`kgraph.layers.recurrent.FUSED_SEQUENCE` (True: the fused `lstm_sequence` op in training
graphs; False: the per-step unrolled IR, differentiated by autodiff). GRU has no fused
op: both configurations run the unrolled cell (a baseline).

    python benchmarks/lstm_formulations.py [--layer lstm|gru] [--repeats 3] [--epochs 3]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time

import common  # noqa: F401  (puts the repository on sys.path)
from common import make_data, sequences


def one_run(layer, fused, epochs, samples, threads):
    import kgraph
    from kgraph import layers
    from kgraph.layers import recurrent
    recurrent.FUSED_SEQUENCE = fused
    common.kgraph_set_threads(threads)
    kgraph.utils.set_random_seed(0)
    x, y, _ = make_data(samples)
    x = sequences(x)
    cell = layers.LSTM(128) if layer == "lstm" else layers.GRU(128)
    model = kgraph.Sequential([kgraph.Input(shape=(28, 28)), cell, layers.Dense(10, activation="softmax")])
    model.compile(optimizer=kgraph.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x[:1024], y[:1024], batch_size=128, epochs=1, verbose=0)
    runner = next(r for k, r in model._runners.items() if k[0] == "train")
    ops = collections.Counter(n.op_type for n in runner.step_model.graph.node)
    walls, cpus = [], []
    for _ in range(epochs):
        c0, t0 = time.process_time(), time.perf_counter()
        model.fit(x, y, batch_size=128, epochs=1, verbose=0)
        walls.append(samples / (time.perf_counter() - t0))
        cpus.append(samples / (time.process_time() - c0))
    return {"layer": layer, "fused": fused, "nodes": sum(ops.values()), "ops": dict(ops.most_common(12)),
            "wall_sps": statistics.median(walls), "cpu_sps": statistics.median(cpus),
            "load": os.getloadavg()[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", choices=("lstm", "gru"), default="lstm")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=6144)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", nargs="+", default=["unrolled", "fused"])
    ap.add_argument("--child", choices=("unrolled", "fused"))
    a = ap.parse_args()
    if a.child:
        print("RESULT " + json.dumps(one_run(a.layer, a.child == "fused", a.epochs, a.samples, a.threads)))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    res = collections.defaultdict(list)
    for _ in range(a.repeats):
        for cfg in a.configs:  # interleaved, fresh process each
            out = subprocess.run([sys.executable, __file__, "--child", cfg, "--layer", a.layer,
                                  "--epochs", str(a.epochs), "--samples", str(a.samples),
                                  "--threads", str(a.threads)], capture_output=True, text=True, env=env)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if not line:
                sys.exit(out.stderr)
            res[cfg].append(json.loads(line[0][7:]))
    for cfg, runs in res.items():
        print(f"{a.layer} {cfg:9s} nodes {runs[0]['nodes']:4d}  "
              f"wall {statistics.median(r['wall_sps'] for r in runs):6.0f}/s  "
              f"cpu {statistics.median(r['cpu_sps'] for r in runs):6.0f}/s  "
              f"load {statistics.median(r['load'] for r in runs):.1f}  ops {runs[0]['ops']}")


if __name__ == "__main__":
    main()
