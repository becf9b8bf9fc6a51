"""Inference benchmark: MLP 784-64-32-10 (relu, relu, softmax).

(a) throughput, samples/s, predicting 60,000 random samples at batch 1024;
(b) latency of one call at batch 1 (median over --calls calls),
for kgraph (model.predict / model.predict_on_batch), a bare onnxruntime
InferenceSession on the ONNX model kgraph exports (default session options, numpy
feeds), and PyTorch eager (nn.Sequential with the same weights, torch.no_grad()).

    python benchmarks/predict_mlp.py [--calls 3000] [--repeats 5] [--threads N] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import common  # noqa: F401  (puts the repository on sys.path)
from common import N_SAMPLES, default_threads, fmt_rate, kgraph_mlp, make_data, print_table, torch_mlp


def throughput(fns, x, repeats):
    """samples/s of each fn(x), the contenders interleaved pass by pass so that drift in
    the machine's load hits them alike. Returns {name: (rates, last output)}."""
    res = {}
    for name, fn in fns.items():
        fn(x[:4096])  # warm-up
        res[name] = ([], None)
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out = fn(x)
            res[name][0].append(len(x) / (time.perf_counter() - t0))
            res[name] = (res[name][0], out)
    return res


def latency(fns, x1, calls, rounds=10):
    """Wall time of single calls fn(x1) in microseconds, `calls` per contender, taken in
    `rounds` interleaved rounds. Returns {name: sorted list of times}."""
    clock = time.perf_counter_ns
    ts = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(200):
            fn(x1)
    per_round = -(-calls // rounds)
    for _ in range(rounds):
        for name, fn in fns.items():
            acc = ts[name]
            for _ in range(per_round):
                t0 = clock()
                fn(x1)
                acc.append(clock() - t0)
    return {name: sorted(v / 1e3 for v in acc) for name, acc in ts.items()}


def pct(sorted_ts, p):
    return sorted_ts[min(len(sorted_ts) - 1, int(p * len(sorted_ts)))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1024, help="batch size for the throughput run")
    ap.add_argument("--samples", type=int, default=N_SAMPLES)
    ap.add_argument("--calls", type=int, default=3000, help="batch-1 calls timed per framework (>= 2000)")
    ap.add_argument("--repeats", type=int, default=10, help="timed passes over the data for throughput")
    ap.add_argument("--threads", type=int, default=None,
                    help="intra-op threads for kgraph, torch (and the bare session when given); "
                         "default: the CPUs available, onnxruntime's default for the bare session")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch

    import kgraph  # noqa: F401
    from kgraph.runtime.inference import compile_inference

    threads = args.threads or default_threads()
    common.kgraph_set_threads(threads)
    torch.set_num_threads(threads)

    x, _, _ = make_data(args.samples)
    x1 = np.ascontiguousarray(x[:1])
    bs = args.batch

    # -- the three contenders -------------------------------------------------------
    model = kgraph_mlp()
    proto = compile_inference(model)
    so = ort.SessionOptions()
    if args.threads:
        so.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(proto.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    tmodel = torch_mlp(softmax=True).eval()

    def kg_predict(a):
        return model.predict(a, batch_size=bs, verbose=0)

    def bare_predict(a):
        return np.concatenate([sess.run(None, {in_name: a[i:i + bs]})[0] for i in range(0, len(a), bs)])

    def torch_predict(a):
        with torch.no_grad():
            t = torch.from_numpy(a)
            return torch.cat([tmodel(t[i:i + bs]) for i in range(0, len(a), bs)]).numpy()

    def kg_one(a):
        return model.predict_on_batch(a)

    def bare_one(a):
        return sess.run(None, {in_name: a})[0]

    def torch_one(a):
        with torch.no_grad():
            return tmodel(torch.from_numpy(a)).numpy()

    names = ("kgraph", "onnxruntime (bare)", "torch eager")
    thr = throughput(dict(zip(names, (kg_predict, bare_predict, torch_predict))), x, args.repeats)
    lat = latency(dict(zip(names, (kg_one, bare_one, torch_one))), x1, args.calls)
    results = {}
    for name, one in zip(names, (kg_one, bare_one, torch_one)):
        rates, out = thr[name]
        ts = lat[name]
        results[name] = {"throughput": statistics.median(rates), "throughput_min": min(rates),
                         "throughput_max": max(rates), "latency_us": statistics.median(ts),
                         "latency_p10_us": pct(ts, 0.10), "latency_p90_us": pct(ts, 0.90),
                         "latency_calls": len(ts), "out": out, "out1": one(x1)}

    kg, bare, tc = results["kgraph"], results["onnxruntime (bare)"], results["torch eager"]
    print(f"MLP 784-64-32-10 inference; {args.samples:,} samples, batch {bs}; batch-1 latency: median of "
          f"{args.calls} calls (10 interleaved rounds); threads: kgraph {threads}, torch {threads}, bare session "
          f"{args.threads or 'onnxruntime default'}; torch {torch.__version__}, onnxruntime {ort.__version__}")
    rows = []
    for name, r in results.items():
        rows.append([name, fmt_rate(r["throughput"]), f"{fmt_rate(r['throughput_min'])}/{fmt_rate(r['throughput_max'])}",
                     f"{r['latency_us']:.1f}", f"{r['latency_p10_us']:.1f}/{r['latency_p90_us']:.1f}",
                     f"{r['throughput'] / bare['throughput']:.2f}", f"{r['latency_us'] / bare['latency_us']:.2f}"])
    print_table(["framework", f"samples/s @{bs}", "min/max", "latency @1 (us)", "p10/p90",
                 "thru vs bare", "lat vs bare"], rows)
    overhead = (kg["latency_us"] - bare["latency_us"]) / bare["latency_us"] * 100
    print(f"kgraph overhead over the bare session at batch 1: {overhead:+.1f}% "
          f"({kg['latency_us'] - bare['latency_us']:+.1f} us per call)")
    d_kb = float(np.abs(kg["out"] - bare["out"]).max())
    d_kt = float(np.abs(kg["out"] - tc["out"]).max())
    d_bt = float(np.abs(bare["out"] - tc["out"]).max())
    d1 = max(float(np.abs(kg["out1"] - bare["out1"]).max()), float(np.abs(kg["out1"] - tc["out1"]).max()))
    print(f"max abs diff over {args.samples:,} outputs: kgraph-bare {d_kb:.2e}, kgraph-torch {d_kt:.2e}, "
          f"bare-torch {d_bt:.2e}; batch-1 outputs: {d1:.2e}")
    ok = max(d_kb, d_kt, d_bt, d1) < 1e-5
    print("outputs agree (tolerance 1e-5)" if ok else "OUTPUTS DIFFER (tolerance 1e-5)")
    summary = {name: {k: v for k, v in r.items() if not k.startswith("out")} for name, r in results.items()}
    summary.update({"overhead_pct_batch1": overhead, "max_abs_diff": max(d_kb, d_kt, d_bt, d1), "ok": ok})
    if args.json:
        print("JSON " + json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
