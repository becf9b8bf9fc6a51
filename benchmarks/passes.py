"""What the optimizing passes buy: kgraph's pass pipelines on/off x onnxruntime's graph
optimization level disable/basic/all, for the MLP (batch 32), the CNN and the LSTM (batch
128), each configuration in a fresh process (the settings apply to sessions created from
then on), the configurations interleaved, --repeats processes each.

Measured per configuration:
  train step    kgraph `fit` (the default path: K steps per onnxruntime call), wall time per
                step, median over --epochs timed epochs per process (after a warm-up fit)
  predict       model.predict over the data at batch 1024 (MLP) / 256 (CNN, LSTM), time per
                batch, median of --predict-repeats passes
  sessions      onnxruntime session creation (InferenceSession construction, timed around
                onnxruntime's constructor) during the first fit (the train-step session and
                the K-step Loop session) and the first predict (the inference session)
  first fit     the whole first fit on 2 batches: graph building, passes, lowering, session
                creation and the 2 steps
  nodes         ONNX nodes of the lowered train-step and inference graphs (before onnxruntime's
                own optimizations)

    python benchmarks/passes.py [--models mlp cnn lstm] [--repeats 2] [--threads 1]
    python benchmarks/passes.py --child --model cnn --passes off --ort basic      # one process, JSON
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import common  # noqa: F401  (puts the repository on sys.path)
from common import make_data, print_table

HERE = os.path.dirname(os.path.abspath(__file__))
LEVELS = ("disable", "basic", "all")
CONFIGS = [(p, lvl) for p in ("on", "off") for lvl in LEVELS]
DEFAULT = ("on", "all")
SETTINGS = {  # batch, training samples, predict batch, predict samples
    "mlp": (32, 8192, 1024, 16384),
    "cnn": (128, 1024, 256, 2048),
    "lstm": (128, 2048, 256, 2048),
}


def child(kind, passes, level, threads, epochs, predict_repeats, seed=0):
    import onnxruntime as ort

    created = []

    class TimedSession(ort.InferenceSession):
        """onnxruntime's session, its construction timed."""

        def __init__(self, *args, **kwargs):
            t0 = time.perf_counter()
            super().__init__(*args, **kwargs)
            created.append(time.perf_counter() - t0)

    ort.InferenceSession = TimedSession  # kgraph creates its sessions as ort.InferenceSession(...)

    import kgraph
    from kgraph.passes.pipelines import set_passes_enabled
    from kgraph.runtime.session import set_ort_optimization_level
    set_passes_enabled(passes == "on")
    set_ort_optimization_level(level)
    common.kgraph_set_threads(threads)
    kgraph.utils.set_random_seed(seed)
    batch, samples, pbatch, psamples = SETTINGS[kind]
    x, y, _ = make_data(max(samples, psamples))
    x = common.model_input(kind, x)
    model = common.kgraph_model(kind)
    model.compile(optimizer=kgraph.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(x[:2 * batch], y[:2 * batch], batch_size=batch, epochs=1, verbose=0)
    first_fit = time.perf_counter() - t0
    train_sessions = list(created)
    model.fit(x[:samples], y[:samples], batch_size=batch, epochs=1, verbose=0)  # warm-up
    steps = -(-samples // batch)
    step_us = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.fit(x[:samples], y[:samples], batch_size=batch, epochs=1, verbose=0)
        step_us.append((time.perf_counter() - t0) / steps * 1e6)
    n_before = len(created)
    t0 = time.perf_counter()
    model.predict(x[:pbatch], batch_size=pbatch, verbose=0)
    first_predict = time.perf_counter() - t0
    predict_sessions = created[n_before:]
    xp = x[:psamples]
    model.predict(xp, batch_size=pbatch, verbose=0)
    batch_us = []
    for _ in range(predict_repeats):
        t0 = time.perf_counter()
        model.predict(xp, batch_size=pbatch, verbose=0)
        batch_us.append((time.perf_counter() - t0) / -(-psamples // pbatch) * 1e6)
    runner = next(r for k, r in model._runners.items() if k[0] == "train")
    return {"model": kind, "passes": passes, "ort": level, "threads": threads, "step_us": step_us,
            "predict_batch_us": batch_us, "train_sessions_ms": [s * 1e3 for s in train_sessions],
            "predict_sessions_ms": [s * 1e3 for s in predict_sessions], "first_fit_s": first_fit,
            "first_predict_s": first_predict, "train_nodes": len(runner.step_model.graph.node),
            "predict_nodes": len(model._inference_runner().onnx_model.graph.node),
            "loadavg": os.getloadavg()[0]}


def spawn(kind, passes, level, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--model", kind, "--passes", passes,
           "--ort", level, "--threads", str(args.threads), "--epochs", str(args.epochs),
           "--predict-repeats", str(args.predict_repeats)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=common.REPO, env=env, timeout=1200)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def spread(values):
    """Relative half-range of per-process medians (how far apart the processes landed)."""
    m = statistics.median(values)
    return (max(values) - min(values)) / 2 / m if m else 0.0


def report(kind, runs, repeats, epochs):
    med = statistics.median
    batch, samples, pbatch, psamples = SETTINGS[kind]
    rows, stats = [], {}
    for cfg in CONFIGS:
        rs = runs[cfg]
        steps = [v for r in rs for v in r["step_us"]]
        per_proc = [med(r["step_us"]) for r in rs]
        preds = [v for r in rs for v in r["predict_batch_us"]]
        stats[cfg] = {"step": med(steps), "step_min": min(steps), "step_max": max(steps),
                      "per_proc": per_proc, "predict": med(preds), "predict_min": min(preds),
                      "predict_max": max(preds), "predict_per_proc": [med(r["predict_batch_us"]) for r in rs]}
        tr_ms = med(sum(r["train_sessions_ms"]) for r in rs)
        pr_ms = med(sum(r["predict_sessions_ms"]) for r in rs)
        first = med(r["first_fit_s"] for r in rs)
        rows.append([f"{cfg[0]:>3s} / {cfg[1]}" + ("  (default)" if cfg == DEFAULT else ""),
                     f"{stats[cfg]['step']:.0f}", f"{min(steps):.0f}/{max(steps):.0f}",
                     f"{stats[cfg]['predict']:.0f}", f"{min(preds):.0f}/{max(preds):.0f}",
                     "+".join(f"{v:.0f}" for v in rs[0]["train_sessions_ms"]) + f" (med sum {tr_ms:.0f})",
                     f"{pr_ms:.1f}", f"{first * 1e3:.0f}", rs[0]["train_nodes"], rs[0]["predict_nodes"]])
    fastest = min(CONFIGS, key=lambda c: stats[c]["step"])
    fastest_p = min(CONFIGS, key=lambda c: stats[c]["predict"])
    base = stats[DEFAULT]
    for c in CONFIGS:
        i = CONFIGS.index(c)
        rows[i].insert(2, f"{stats[c]['step'] / stats[fastest]['step']:.2f}")
        rows[i].insert(5, f"{stats[c]['predict'] / stats[fastest_p]['predict']:.2f}")
    print(f"\n{kind.upper()}: train step at batch {batch} ({samples:,} samples, {repeats} "
          f"process(es) x {epochs} epochs), predict at batch {pbatch} ({psamples:,} samples)")
    print_table(["passes / ort level", "step us", "x fastest", "min/max", "predict us/batch", "x fastest",
                 "min/max", "train sessions ms", "predict session ms", "first fit ms", "train nodes",
                 "predict nodes"], rows)
    verdicts = {}
    for what, key, best in (("train step", "step", fastest), ("predict", "predict", fastest_p)):
        per = "per_proc" if key == "step" else "predict_per_proc"
        ratio = base[key] / stats[best][key]
        noise = max(spread(base[per]), spread(stats[best][per]))
        # the processes' medians overlap: the fastest process of the default is at least as
        # fast as the slowest process of the fastest configuration
        overlap = min(base[per]) <= max(stats[best][per])
        within = best == DEFAULT or ratio <= 1.03 or overlap
        verdicts[what] = {"fastest": best, "ratio": ratio, "within_noise": within}
        print(f"{kind.upper()} {what}: fastest configuration passes {best[0]} / ort {best[1]}; the default "
              f"(passes on / all) is {ratio:.2f}x its time: "
              + ("it IS the fastest" if best == DEFAULT else
                 ("within noise" if within else "OUTSIDE noise")
                 + (" (gap <= 3%; " if ratio <= 1.03 else " (")
                 + f"the processes' medians spread +-{noise * 100:.0f}% and "
                 + ("overlap" if overlap else "do not overlap") + ")"))
    return {"stats": {f"{c[0]}/{c[1]}": s for c, s in stats.items()}, "verdicts": {
        k: {"fastest": f"{v['fastest'][0]}/{v['fastest'][1]}", "ratio": v["ratio"], "within_noise": v["within_noise"]}
        for k, v in verdicts.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=sorted(SETTINGS), default=["mlp", "cnn", "lstm"])
    ap.add_argument("--repeats", type=int, default=2, help="fresh processes per configuration")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per process")
    ap.add_argument("--predict-repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (0: the CPUs available)")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--model", choices=sorted(SETTINGS))
    ap.add_argument("--passes", choices=["on", "off"], default="on")
    ap.add_argument("--ort", choices=LEVELS, default="all")
    args = ap.parse_args(argv)
    args.threads = args.threads or common.default_threads()
    if args.child:
        r = child(args.model, args.passes, args.ort, args.threads, args.epochs, args.predict_repeats)
        print("RESULT " + json.dumps(r))
        return r
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    out, loads = {}, []
    for kind in args.models:
        runs = {}
        for _ in range(args.repeats):
            for cfg in CONFIGS:
                r = spawn(kind, *cfg, args)
                runs.setdefault(cfg, []).append(r)
                loads.append(r["loadavg"])
        out[kind] = report(kind, runs, args.repeats, args.epochs)
    print(f"\n{args.threads} intra-op thread(s); load average: start {load0:.1f}, during the runs median "
          f"{statistics.median(loads):.1f}, max {max(loads):.1f} ({common.default_threads()} CPUs); "
          f"{time.perf_counter() - t0:.0f} s")
    if args.json:
        print("JSON " + json.dumps(out))
    return out


if __name__ == "__main__":
    main()
