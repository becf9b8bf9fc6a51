"""Inference benchmark, one framework per process: the MLP or the CNN (common.py, the
same weights everywhere) predicting random samples.

(a) throughput, samples/s: predicting --samples samples at --batch (median of --repeats
    passes after a warm-up pass);
(b) one-sample latency: the median wall time of one call on one sample, over --calls calls.

Contenders (each in its own process when run by the driver or run.py):
  kgraph        model.predict(x, batch_size=B, verbose=0); model(x1)
  onnxruntime   a bare InferenceSession (default options, --threads intra-op threads) on
                the ONNX model kgraph exports (compile_inference), batches sliced by hand
  torch         PyTorch eager, the same weights, torch.no_grad(), batches sliced by hand;
                model(torch.from_numpy(x1))
  keras-jax     Keras 3 on JAX: model.predict(x, batch_size=B, verbose=0); one sample:
  keras-torch   the faster of model.predict_on_batch(x1) and model(x1) (both are timed)
The driver also checks that every contender's outputs on the first 256 samples agree with
kgraph's.

    python benchmarks/predict_models.py [--model mlp|cnn] [--repeats 5] [--calls 2000] [--threads N]
    python benchmarks/predict_models.py --model cnn --framework torch     # one process, prints JSON
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

import common  # noqa: F401  (puts the repository on sys.path)
import harness
from common import fmt_rate, make_data, print_table

CONTENDERS = ("kgraph", "onnxruntime", "torch", "keras-jax", "keras-torch")
DEFAULTS = {"mlp": {"samples": 60_000, "batch": 1024}, "cnn": {"samples": 8_192, "batch": 256}}
CHECK_ROWS = 256


def median_call_us(fn, x1, calls, budget_s=4.0):
    """(median, p10, p90) in us of `calls` one-sample calls, or of as many as fit in
    `budget_s` seconds (at least 50) when the calls are slow."""
    for _ in range(min(200, calls)):
        fn(x1)
    ts = []
    clock = time.perf_counter_ns
    stop = clock() + budget_s * 1e9
    for i in range(calls):
        t0 = clock()
        fn(x1)
        ts.append(clock() - t0)
        if i >= 50 and t0 > stop:
            break
    ts.sort()
    return ts[len(ts) // 2] / 1e3, ts[len(ts) // 10] / 1e3, ts[len(ts) * 9 // 10] / 1e3


def contender(framework, kind, batch, threads):
    """(predict(x) -> numpy, {label: one-sample fn}, input transform) for one framework."""
    if framework in ("kgraph", "onnxruntime"):
        import kgraph  # noqa: F401
        common.kgraph_set_threads(threads)
        model = common.kgraph_model(kind)
        if framework == "kgraph":
            return (lambda a: model.predict(a, batch_size=batch, verbose=0)), {"model(x)": model}, None
        import onnxruntime as ort
        from kgraph.runtime.inference import compile_inference
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(compile_inference(model).SerializeToString(), sess_options=so,
                                    providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def bare(a):
            return np.concatenate([sess.run(None, {name: a[i:i + batch]})[0] for i in range(0, len(a), batch)])
        return bare, {"session.run": lambda a: sess.run(None, {name: a})[0]}, None
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)
        model = common.torch_model(kind, softmax=True).eval()

        def tpredict(a):
            with torch.no_grad():
                t = torch.from_numpy(a)
                return torch.cat([model(t[i:i + batch]) for i in range(0, len(a), batch)]).numpy()

        def tone(a):
            with torch.no_grad():
                return model(torch.from_numpy(a)).numpy()
        return tpredict, {"model(x)": tone}, (lambda a: common.torch_input(kind, a))
    backend = framework.split("-", 1)[1]
    os.environ.setdefault("KERAS_BACKEND", backend)
    if backend == "torch":
        import torch
        torch.set_num_threads(threads)
    import keras
    model = common.keras_model(kind)
    return ((lambda a: np.asarray(model.predict(a, batch_size=batch, verbose=0))),
            {"predict_on_batch": model.predict_on_batch,
             "model(x)": lambda a: keras.ops.convert_to_numpy(model(a))}, None)


def child(framework, kind, batch, samples, repeats, calls, threads):
    load0 = os.getloadavg()[0]
    harness.apply_thread_limits(framework, threads)
    x, _, _ = make_data(samples)
    predict, ones, transform = contender(framework, kind, batch, threads)
    x = transform(x) if transform else common.model_input(kind, x)
    x = np.ascontiguousarray(x)
    x1 = np.ascontiguousarray(x[:1])
    predict(x[:2 * batch])  # warm-up (and JAX's compilations for the full and the last batch size)
    predict(x[:batch + samples % batch])
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = predict(x)
        rates.append(samples / (time.perf_counter() - t0))
    lat = {label: median_call_us(fn, x1, calls) for label, fn in ones.items()}
    best = min(lat, key=lambda k: lat[k][0])
    return {"framework": framework, "model": kind, "batch": batch, "threads": threads, "samples": samples,
            "rates": rates, "samples_per_s": statistics.median(rates), "latency_us": lat[best][0],
            "latency_p10_us": lat[best][1], "latency_p90_us": lat[best][2], "latency_call": best,
            "latency_all": {k: v[0] for k, v in lat.items()}, "peak_rss_mb": common.peak_rss_mb(),
            "check": np.asarray(out[:CHECK_ROWS], np.float64).round(7).tolist(), "loadavg": load0}


def predict_cmd(framework, kind, batch, samples, repeats, calls, threads):
    return [sys.executable, os.path.join(harness.HERE, "predict_models.py"), "--framework", framework,
            "--model", kind, "--batch", str(batch), "--samples", str(samples), "--repeats", str(repeats),
            "--calls", str(calls), "--threads", str(threads)]


def run_predict(kind, frameworks, batch, samples, repeats, calls, threads, processes=1, verbose=False):
    """Fresh processes per contender, in rounds (contenders interleaved); `processes` is a
    count for all or a {framework: count} dict (default 1). Returns {fw: [results]}."""
    counts = processes if isinstance(processes, dict) else {fw: processes for fw in frameworks}
    results = {}
    for rnd in range(max(counts.get(fw, 1) for fw in frameworks)):
        for fw in frameworks:
            if rnd >= counts.get(fw, 1):
                continue
            r = harness.spawn(predict_cmd(fw, kind, batch, samples, repeats, calls, threads), fw, threads)
            results.setdefault(fw, []).append(r)
            if verbose:
                print(f"  {kind} predict {fw:11s}: {fmt_rate(r['samples_per_s'])} samples/s, one sample "
                      f"{r['latency_us']:.1f} us ({r['latency_call']}), peak RSS {r['peak_rss_mb']:.0f} MB, "
                      f"load {r['loadavg']:.1f}", flush=True)
    return results


def print_predict(kind, results, batch, samples, repeats, calls, threads):
    med = statistics.median
    ref = results.get("torch")
    ref_rate = med(v for r in ref for v in r["rates"]) if ref else None
    ref_lat = med(r["latency_us"] for r in ref) if ref else None
    bare = results.get("onnxruntime")
    bare_rate = med(v for r in bare for v in r["rates"]) if bare else None
    check = np.array(results["kgraph"][0]["check"]) if "kgraph" in results else None
    rows, summary = [], []
    for fw, rs in results.items():
        rates = [v for r in rs for v in r["rates"]]
        rate, lat = med(rates), med(r["latency_us"] for r in rs)
        diff = float(np.abs(np.array(rs[0]["check"]) - check).max()) if check is not None else float("nan")
        s = {"model": kind, "framework": fw, "samples_per_s_median": rate, "min": min(rates), "max": max(rates),
             "ratio_vs_torch": rate / ref_rate if ref_rate else float("nan"),
             "ratio_vs_bare": rate / bare_rate if bare_rate else float("nan"),
             "latency_us": lat, "latency_call": rs[0]["latency_call"],
             "latency_ratio_vs_torch": lat / ref_lat if ref_lat else float("nan"),
             "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "max_abs_diff_vs_kgraph": diff,
             "load": [r["loadavg"] for r in rs]}
        summary.append(s)
        rows.append([harness.LABELS[fw], fmt_rate(rate), f"{fmt_rate(min(rates))}/{fmt_rate(max(rates))}",
                     f"{s['ratio_vs_torch']:.2f}", f"{s['ratio_vs_bare']:.2f}", f"{lat:.1f}",
                     s["latency_call"], f"{s['latency_ratio_vs_torch']:.2f}", f"{s['peak_rss_mb']:.0f}",
                     f"{diff:.1e}"])
    procs = ", ".join(f"{harness.LABELS[fw]} {len(rs)}" for fw, rs in results.items() if len(rs) > 1)
    print(f"{harness.DESCRIPTION[kind]} inference; {samples:,} samples at batch {batch} (median of {repeats} "
          f"passes per process) and one-sample calls (median of up to {calls} per process); each contender in "
          f"its own process{f' (processes: {procs}, interleaved)' if procs else ''}; {threads} intra-op thread(s)")
    print_table(["framework", f"samples/s @{batch}", "min/max", "vs torch", "vs bare ort", "1 sample (us)",
                 "call", "latency vs torch", "peak RSS MB", "max diff vs kgraph"], rows)
    print(harness.load_note([{"load": s["load"]} for s in summary]))
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(DEFAULTS), default="mlp")
    ap.add_argument("--framework", choices=CONTENDERS, help="run one contender in this process")
    ap.add_argument("--frameworks", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    ap.add_argument("--batch", type=int, default=None, help="default: 1024 (MLP), 256 (CNN)")
    ap.add_argument("--samples", type=int, default=None, help="default: 60,000 (MLP), 8,192 (CNN)")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over the data per process")
    ap.add_argument("--calls", type=int, default=2000, help="one-sample calls timed per process")
    ap.add_argument("--processes", type=int, default=1, help="fresh processes per contender")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads (default 1, see README.md; 0: the CPUs available)")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    args.threads = args.threads or common.default_threads()
    args.batch = args.batch or DEFAULTS[args.model]["batch"]
    args.samples = args.samples or DEFAULTS[args.model]["samples"]
    if args.framework:
        r = child(args.framework, args.model, args.batch, args.samples, args.repeats, args.calls, args.threads)
        print("RESULT " + json.dumps(r))
        return r
    results = run_predict(args.model, args.frameworks, args.batch, args.samples, args.repeats, args.calls,
                          args.threads, args.processes, args.verbose)
    summary = print_predict(args.model, results, args.batch, args.samples, args.repeats, args.calls, args.threads)
    if args.json:
        print("JSON " + json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
