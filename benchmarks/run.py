"""All the framework comparisons in one run, each framework in its own process, on the
same data and the same initial weights:

  0. the machine's GEMM peak: numpy sgemm GFLOP/s on 1 and on all CPUs (gemm_peak.py),
     measured at the start and at the end of the run (the best is the peak)
  1. training: MLP at batch 32 and 128, CNN and LSTM(128) at batch 128
     (harness.py: kgraph fit, PyTorch eager, Keras 3 on JAX, Keras 3 on torch)
  2. inference: MLP (batch 1024) and CNN (batch 256) throughput and one-sample latency
     (predict_models.py: the same four, plus a bare onnxruntime session on kgraph's ONNX)
  3. a summary against issue 9's targets: kgraph vs the fastest peer of this run

One table per task: samples/s (median), ratio vs PyTorch eager, peak memory (the max RSS
of each process), and for the MLP's training the achieved FLOP/s (6 x params per sample
for forward + backward) as a fraction of the measured GEMM peak.

    python benchmarks/run.py            # about 6-10 minutes on a 2-core machine (6 at a load average of 2.5)
    python benchmarks/run.py --quick    # 1 epoch, fewer samples: about 4-5 minutes
    python benchmarks/run.py --frameworks kgraph torch --json-out results.json
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
import gemm_peak
import harness
import predict_models
from common import fmt_rate, print_table

TRAIN_TASKS = (("mlp", 32), ("mlp", 128), ("cnn", 128), ("lstm", 128))
PREDICT_TASKS = ("mlp", "cnn")
# predict processes: kgraph and the bare session are cheap to start and are compared with each
# other (target: within 10%), so they get several interleaved processes
FULL = {"samples": {"mlp": 30_000, "cnn": 6_000, "lstm": 6_000}, "epochs": 3,
        "predict": {"mlp": (60_000, 1024), "cnn": (8_192, 256)}, "predict_repeats": 5, "calls": 2000,
        "predict_processes": {"kgraph": 3, "onnxruntime": 3}}
QUICK = {"samples": {"mlp": 12_000, "cnn": 2_048, "lstm": 3_072}, "epochs": 1,
         "predict": {"mlp": (20_480, 1024), "cnn": (2_048, 256)}, "predict_repeats": 2, "calls": 500,
         "predict_processes": {}}
WARMUP = {"mlp": 50, "cnn": 10, "lstm": 10}


def banner(title):
    print("\n" + "=" * 100 + f"\n{title}\n" + "=" * 100, flush=True)


def mlp_flops_cols(peak, peak1):
    """Extra MLP columns: achieved GFLOP/s (6 x params per trained sample) and its share of
    the GEMM peak on all CPUs and on one thread."""
    per_sample = 6 * common.count_params("mlp")
    gflops = lambda s: s["samples_per_s_median"] * per_sample / 1e9  # noqa: E731
    return [("GFLOP/s", lambda s: f"{gflops(s):.2f}"),
            (f"% of {common.default_threads()}-thread peak", lambda s: f"{100 * gflops(s) / peak:.1f}"),
            ("% of 1-thread peak", lambda s: f"{100 * gflops(s) / peak1:.1f}")]


def targets(train, predict):
    """Issue 9's targets against the fastest peer of this run: rows (task, kgraph, best peer, ratio, target, met)."""
    rows = []

    def best_peer(summary, exclude=("kgraph",)):
        peers = [s for s in summary if s["framework"] not in exclude]
        return max(peers, key=lambda s: s["samples_per_s_median"]) if peers else None

    def add(task, kg, peer, need, ok_extra=True, what="fastest peer"):
        if kg is None or peer is None:
            return
        ratio = kg["samples_per_s_median"] / peer["samples_per_s_median"]
        rows.append([task, fmt_rate(kg["samples_per_s_median"]),
                     f"{harness.LABELS[peer['framework']]} {fmt_rate(peer['samples_per_s_median'])}",
                     f"{ratio:.2f}", f">= {need:g}x {what}", "yes" if ratio >= need and ok_extra else "NO"])

    for (kind, batch), summary in train.items():
        kg = next((s for s in summary if s["framework"] == "kgraph"), None)
        if kind == "mlp":
            add(f"MLP fit b{batch}", kg, best_peer(summary), 1.5)
        elif kind == "cnn":
            add("CNN fit b128", kg, best_peer(summary), 1.2)
        else:
            torch_row = next((s for s in summary if s["framework"] == "torch"), None)
            keras_best = best_peer(summary, exclude=("kgraph", "torch"))
            ahead = kg is not None and (keras_best is None or
                                        kg["samples_per_s_median"] > keras_best["samples_per_s_median"])
            add("LSTM fit b128", kg, torch_row, 0.8, ahead, "PyTorch and ahead of Keras")
    for kind, summary in predict.items():
        kg = next((s for s in summary if s["framework"] == "kgraph"), None)
        bare = next((s for s in summary if s["framework"] == "onnxruntime"), None)
        add(f"{kind.upper()} predict", kg, bare, 0.9, what="bare onnxruntime")
        if kind == "mlp" and kg is not None:
            rows.append(["MLP one-sample model(x)", f"{kg['latency_us']:.1f} us",
                         f"bare onnxruntime {bare['latency_us']:.1f} us" if bare else "-", "-", "< 40 us",
                         "yes" if kg["latency_us"] < 40 else "NO"])
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 timed epoch, fewer samples, fewer predict passes")
    ap.add_argument("--frameworks", nargs="+", choices=harness.FRAMEWORKS, default=list(harness.FRAMEWORKS))
    ap.add_argument("--tasks", nargs="+", default=["mlp32", "mlp128", "cnn", "lstm", "predict-mlp", "predict-cnn"],
                    choices=["mlp32", "mlp128", "cnn", "lstm", "predict-mlp", "predict-cnn"])
    ap.add_argument("--repeats", type=int, default=1, help="fresh processes per framework and training task")
    ap.add_argument("--epochs", type=int, default=None, help="timed epochs per process (default 3; --quick 1)")
    ap.add_argument("--train-threads", type=int, default=1,
                    help="intra-op threads in training (default 1, see README.md; 0: all CPUs)")
    ap.add_argument("--predict-threads", type=int, default=1,
                    help="intra-op threads in inference (default 1, see README.md; 0: all CPUs)")
    ap.add_argument("--profile", action="store_true",
                    help="also onnxruntime's per-kernel profile of kgraph's CNN and LSTM train steps")
    ap.add_argument("--json-out", default=None, help="write every result to this JSON file")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run as it finishes")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    epochs = args.epochs or cfg["epochs"]
    train_threads = args.train_threads or common.default_threads()
    predict_threads = args.predict_threads or common.default_threads()
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    import onnxruntime
    print(f"{common.default_threads()} CPUs; python {sys.version.split()[0]}, onnxruntime {onnxruntime.__version__}; "
          f"load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}; "
          f"{'--quick' if args.quick else 'full run'}: {args.repeats} process(es) x {epochs} timed epoch(s) per "
          f"framework and training task; training {train_threads} thread(s), inference {predict_threads}")

    banner("0. GEMM peak (numpy float32 matmul)")
    gemm = gemm_peak.main(["--threads", "1", str(common.default_threads()),
                           "--repeats", "10" if args.quick else "20"])

    all_results = {"gemm": gemm, "train": {}, "predict": {}}
    train_summaries, predict_summaries = {}, {}
    task_names = {"mlp32": ("mlp", 32), "mlp128": ("mlp", 128), "cnn": ("cnn", 128), "lstm": ("lstm", 128)}
    train_tasks = [task_names[t] for t in args.tasks if t in task_names]
    # the MLP's fraction of the GEMM peak: the peak on all CPUs, re-measured at the end
    peak_box = {"peak": max(r["peak_gflops"] for r in gemm if r["threads"] == common.default_threads()),
                "peak1": max(r["peak_gflops"] for r in gemm if r["threads"] == 1)}
    results_by_task = {}
    for i, (kind, batch) in enumerate(train_tasks, 1):
        banner(f"1.{i} Training: {harness.DESCRIPTION[kind]}, batch {batch}")
        results_by_task[(kind, batch)] = harness.run_training(
            kind, [batch], args.frameworks, args.repeats, cfg["samples"][kind], train_threads, 0, True,
            WARMUP[kind], epochs, args.verbose)
        extra = mlp_flops_cols(peak_box["peak"], peak_box["peak1"]) if kind == "mlp" else None
        train_summaries[(kind, batch)] = harness.print_training(
            kind, results_by_task[(kind, batch)], [batch], args.frameworks, cfg["samples"][kind], args.repeats,
            train_threads, extra, epochs)

    predict_fws = ["kgraph", "onnxruntime"] + [f for f in args.frameworks if f != "kgraph"]
    for i, kind in enumerate([k for k in PREDICT_TASKS if f"predict-{k}" in args.tasks], 1):
        samples, batch = cfg["predict"][kind]
        banner(f"2.{i} Inference: {harness.DESCRIPTION[kind]}")
        res = predict_models.run_predict(kind, predict_fws, batch, samples, cfg["predict_repeats"], cfg["calls"],
                                         predict_threads, cfg["predict_processes"], args.verbose)
        predict_summaries[kind] = predict_models.print_predict(kind, res, batch, samples, cfg["predict_repeats"],
                                                               cfg["calls"], predict_threads)

    gemm_end = gemm_peak.main(["--threads", str(common.default_threads()), "--repeats", "10" if args.quick else "20"])
    end_peak = max(r["peak_gflops"] for r in gemm_end)
    peak = max(peak_box["peak"], end_peak)

    if train_summaries.get(("mlp", 32)) or train_summaries.get(("mlp", 128)):
        banner("MLP training: achieved FLOP/s vs the GEMM peak")
        per_sample = 6 * common.count_params("mlp")
        peak1 = peak_box["peak1"]
        print(f"{common.count_params('mlp'):,} parameters -> {per_sample:,} FLOP per trained sample (6 x params, "
              f"forward + backward); numpy sgemm peak on {common.default_threads()} threads: {peak:.1f} GFLOP/s "
              f"(start {peak_box['peak']:.1f}, end {end_peak:.1f}), on 1 thread {peak1:.1f} GFLOP/s; training "
              f"ran on {train_threads} thread(s)")
        rows = []
        for (kind, batch), summary in train_summaries.items():
            if kind != "mlp":
                continue
            for s in summary:
                gf = s["samples_per_s_median"] * per_sample / 1e9
                rows.append([harness.LABELS[s["framework"]], batch, fmt_rate(s["samples_per_s_median"]),
                             f"{gf:.2f}", f"{100 * gf / peak:.1f}%", f"{100 * gf / peak1:.1f}%"])
        print_table(["framework", "batch", "samples/s", "GFLOP/s", f"of {common.default_threads()}-thread peak",
                     "of 1-thread peak"], rows)

    rows = targets(train_summaries, predict_summaries)
    if rows:
        banner("3. kgraph against issue 9's targets (fastest peer in this run)")
        print_table(["task", "kgraph", "reference in this run", "ratio", "target", "met"], rows)

    if args.profile:
        for kind in ("cnn", "lstm"):
            banner(f"Profile: onnxruntime's kernels in kgraph's {kind.upper()} train step, batch 128")
            subprocess.run([sys.executable, os.path.join(harness.HERE, f"train_{kind}.py"), "--profile",
                            "--threads", str(train_threads)], cwd=common.REPO, check=True)

    load_end = os.getloadavg()
    loads = [v for summ in list(train_summaries.values()) + list(predict_summaries.values()) for s in summ
             for v in s["load"]]
    print(f"\nload average: start {load_start[0]:.2f}, end {load_end[0]:.2f}; at the start of the "
          f"{len(loads)} benchmark processes: median {statistics.median(loads) if loads else float('nan'):.2f}, "
          f"max {max(loads) if loads else float('nan'):.2f} ({common.default_threads()} CPUs)")
    print(f"all benchmarks: {time.perf_counter() - t_start:.0f} s")
    if args.json_out:
        all_results["gemm_end"] = gemm_end
        all_results["train"] = {f"{k}_b{b}": v for (k, b), v in train_summaries.items()}
        all_results["predict"] = predict_summaries
        all_results["load"] = {"start": load_start, "end": load_end, "processes": loads}
        with open(args.json_out, "w") as f:
            json.dump(all_results, f, indent=1, default=float)
        print(f"results written to {args.json_out}")


if __name__ == "__main__":
    main()
