"""Training benchmark: MLP 784-64-32-10 (relu, relu, softmax), Adam (Keras defaults,
lr 1e-3), categorical crossentropy, 60,000 random samples (x uniform [0, 1), one-hot y),
one shuffled epoch per run at batch 32 and 128, after a short warm-up that is not timed.

kgraph: model.fit(x, y, batch_size=B, epochs=1, verbose=0, shuffle=True), compiled with
metrics=['accuracy'].
PyTorch eager, idiomatic: nn.Sequential (logits) + torch.optim.Adam(eps=1e-7, Keras's
epsilon) + F.cross_entropy, a shuffled index loop (no DataLoader), the running loss and
accuracy read back every step (as Keras's fit does), torch.set_flush_denormal(True).

Each run is a fresh process (one framework, one batch size), the frameworks interleaved;
both start from the same data and the same initial weights (numpy, fixed seed).

    python benchmarks/train_mlp.py [--repeats 3] [--batches 32 128] [--threads N]
    python benchmarks/train_mlp.py --framework kgraph --batch 32        # one run, prints JSON
    python benchmarks/train_mlp.py --profile [--profile-steps 300]      # cProfile of a kgraph fit
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
from common import N_SAMPLES, default_threads, fmt_rate, make_data, make_weights, print_table

WARMUP_STEPS = 50
HERE = os.path.dirname(os.path.abspath(__file__))


# -- one run, in this process ---------------------------------------------------------------
def run_kgraph(batch, samples, threads, seed, metrics=True):
    import kgraph
    common.kgraph_set_threads(threads)
    kgraph.utils.set_random_seed(seed)
    x, y, _ = make_data(samples)
    model = common.kgraph_mlp()
    model.compile(optimizer=kgraph.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"] if metrics else None)
    w = min(len(x), WARMUP_STEPS * batch)
    model.fit(x[:w], y[:w], batch_size=batch, epochs=1, verbose=0, shuffle=True)  # builds the step graph
    model.set_weights(make_weights())  # the same start for every run; the optimizer runs on
    c0, t0 = time.process_time(), time.perf_counter()
    hist = model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return dt, cpu, float(hist.history["loss"][-1])


def run_torch(batch, samples, threads, seed, metrics=True):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(seed)
    x_np, _, labels_np = make_data(samples)
    x, labels = torch.from_numpy(x_np), torch.from_numpy(labels_np)
    n = len(x)

    def epoch(model, opt, count):
        perm = torch.randperm(n)
        loss_sum, correct = 0.0, 0
        for i in range(0, count, batch):
            idx = perm[i:i + batch]
            xb, yb = x[idx], labels[idx]
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            if metrics:
                correct += (logits.argmax(1) == yb).sum().item()
        return loss_sum / count

    model = common.torch_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    model.train()
    epoch(model, opt, min(n, WARMUP_STEPS * batch))
    # as for kgraph: the weights go back to the common start, the optimizer runs on
    with torch.no_grad():
        for p, q in zip(model.parameters(), common.torch_mlp().parameters()):
            p.copy_(q)
    c0, t0 = time.process_time(), time.perf_counter()
    loss = epoch(model, opt, n)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return dt, cpu, loss


def child(args):
    fn = run_kgraph if args.framework == "kgraph" else run_torch
    dt, cpu, loss = fn(args.batch, args.samples, args.threads, args.seed, not args.no_metrics)
    print("RESULT " + json.dumps({"framework": args.framework, "batch": args.batch, "threads": args.threads,
                                  "seconds": dt, "cpu_seconds": cpu, "samples_per_s": args.samples / dt,
                                  "samples_per_cpu_s": args.samples / cpu, "loss": loss}))


# -- profile ------------------------------------------------------------------------------------
def _split(stats):
    """(seconds in onnxruntime's run calls, seconds in kgraph's _prepare, total) of a cProfile."""
    ort_run = sum(v[3] for k, v in stats.stats.items()
                  if k[0] == "~" and ("run_with_iobinding" in k[2] or "pybind11_state.run}" in k[2]
                                      or k[2].endswith("pybind11_state.InferenceSession' objects>")
                                      and "run" in k[2]))
    prep = sum(v[3] for k, v in stats.stats.items() if k[2] == "_prepare" and "training_api" in k[0])
    return ort_run, prep, stats.total_tt


def profile(args):
    """cProfile of kgraph fits at --batch (after warm-up): --profile-steps steps, then a full
    epoch; then onnxruntime's per-kernel profile of the train step. The profiler's clock is
    the process CPU time with one thread (robust to other load on the machine), wall time
    otherwise."""
    import cProfile
    import pstats

    import kgraph
    common.kgraph_set_threads(args.threads)
    kgraph.utils.set_random_seed(args.seed)
    x, y, _ = make_data(args.samples)
    steps, b = args.profile_steps, args.batch
    model = common.kgraph_mlp()
    model.compile(optimizer=kgraph.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy",
                  metrics=None if args.no_metrics else ["accuracy"])
    model.fit(x[:WARMUP_STEPS * b], y[:WARMUP_STEPS * b], batch_size=b, epochs=1, verbose=0)
    clock = time.process_time if args.threads == 1 else time.perf_counter
    clock_name = "CPU" if args.threads == 1 else "wall"
    xs, ys = x[:steps * b], y[:steps * b]
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(xs, ys, batch_size=b, epochs=1, verbose=0, shuffle=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"kgraph fit, batch {b}, {steps} steps, {args.threads} thread(s), unprofiled: "
          f"{wall / steps * 1e6:.0f} us/step wall, {cpu / steps * 1e6:.0f} us/step CPU")
    for label, (fx, fy, n_steps) in (("%d steps" % steps, (xs, ys, steps)),
                                      ("full epoch", (x, y, -(-len(x) // b)))):
        prof = cProfile.Profile(clock)
        prof.enable()
        model.fit(fx, fy, batch_size=b, epochs=1, verbose=0, shuffle=True)
        prof.disable()
        st = pstats.Stats(prof)
        ort_run, prep, total = _split(st)
        us = lambda s: f"{s / n_steps * 1e6:.0f} us/step"  # noqa: E731
        print(f"cProfile ({clock_name} clock), {label} ({n_steps} steps, {len(fx):,} samples): total {us(total)}; "
              f"onnxruntime run {us(ort_run)} ({ort_run / total * 100:.0f}%); kgraph fit() data checks "
              f"(_prepare) {us(prep)} ({prep / total * 100:.0f}%); the rest (Python) {us(total - ort_run - prep)} "
              f"({(total - ort_run - prep) / total * 100:.0f}%)")
        if label != "full epoch":
            st.sort_stats("tottime").print_stats(12)
    if args.profile_out:
        prof.dump_stats(args.profile_out)
        print(f"full-epoch profile written to {args.profile_out}")
    ort_op_profile(model, x[:b], y[:b], args.threads, runs=args.profile_steps)


def ort_op_profile(model, xb, yb, threads, runs=300):
    """onnxruntime's own profiler on kgraph's single train-step graph (the body of the
    K-step loop): time per op type, per step."""
    import glob
    import tempfile

    import numpy as np
    import onnxruntime as ort
    runner = next(r for k, r in model._runners.items() if k[0] == "train")
    proto = runner.step_model
    feeds = {"lr": np.array(1e-3, np.float32), "t": np.array(1.0, np.float32)}
    for name in list(dict(runner.sig.weight_inputs)) + list(dict(runner.sig.slot_inputs)):
        feeds[name] = runner.state.current(name)
    for name, arr in zip(runner.sig.data_inputs, (xb, yb, np.ones(len(xb), np.float32))):
        feeds[name] = arr
    feeds = {i.name: feeds[i.name] for i in proto.graph.input}
    tmp = tempfile.mkdtemp()
    so = ort.SessionOptions()
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for _ in range(50):
        sess.run(None, feeds)
    clock = time.process_time if threads == 1 else time.perf_counter
    t0 = clock()
    for _ in range(runs):
        sess.run(None, feeds)
    plain = (clock() - t0) / runs * 1e6
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tmp, "ort")
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for _ in range(50 + runs):
        sess.run(None, feeds)
    path = sess.end_profiling()
    events = json.load(open(path))
    for f in glob.glob(os.path.join(tmp, "*")):
        os.remove(f)
    os.rmdir(tmp)
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    # median per node over the runs: robust to the preemptions of a shared machine
    by_node = {}
    for e in nodes:
        by_node.setdefault((e["name"][:-len("_kernel_time")], e["args"].get("op_name", "?")), []).append(e["dur"])
    by_node = {k: statistics.median(v[len(v) * 50 // (50 + runs):]) for k, v in by_node.items()}
    by_op = {}
    for (name, op), d in by_node.items():
        by_op[op] = by_op.get(op, 0) + d
    total = sum(by_op.values())
    print(f"\nonnxruntime profile of kgraph's single train-step graph ({len(proto.graph.node)} nodes, "
          f"{len(by_node)} kernels after onnxruntime's fusions), batch {len(xb)}, {threads} thread(s): "
          f"{plain:.0f} us/run ({'CPU' if threads == 1 else 'wall'}) unprofiled with session.run and numpy "
          f"feeds; sum of per-kernel medians under the profiler {total:.0f} us/run (the profiler adds a few us "
          f"to every kernel: read the shares, and the small kernels' times as upper bounds)")
    print_table(["op type", "us/step", "%", "kernels"],
                [[op, f"{d:.1f}", f"{d / total * 100:.1f}", sum(1 for k in by_node if k[1] == op)]
                 for op, d in sorted(by_op.items(), key=lambda kv: -kv[1])[:15]])
    print()
    print_table(["kernel", "op type", "us/step"],
                [[k[0][:60], k[1], f"{d:.1f}"] for k, d in sorted(by_node.items(), key=lambda kv: -kv[1])[:12]])


# -- driver -----------------------------------------------------------------------------------
def run_child(framework, batch, args):
    cmd = [sys.executable, os.path.join(HERE, "train_mlp.py"), "--framework", framework, "--batch", str(batch),
           "--samples", str(args.samples), "--threads", str(args.threads), "--seed", str(args.seed)]
    if args.no_metrics:
        cmd.append("--no-metrics")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=common.REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def drive(args):
    results = {}
    for batch in args.batches:
        for rep in range(args.repeats):
            for fw in args.frameworks:  # interleaved, so that load drift hits both alike
                r = run_child(fw, batch, args)
                results.setdefault((fw, batch), []).append(r)
                if args.verbose:
                    print(f"  {fw:6s} batch {batch:4d} run {rep + 1}: {fmt_rate(r['samples_per_s'])} samples/s, "
                          f"{r['seconds']:.2f} s wall, {r['cpu_seconds']:.2f} s CPU, loss {r['loss']:.4f}",
                          flush=True)
    med = statistics.median
    rows, summary = [], []
    for batch in args.batches:
        ref = results.get(("torch", batch))
        ref_wall = med(r["samples_per_s"] for r in ref) if ref else None
        ref_cpu = med(r["samples_per_cpu_s"] for r in ref) if ref else None
        for fw in args.frameworks:
            rs = results[(fw, batch)]
            rates = [r["samples_per_s"] for r in rs]
            wall, cpu = med(rates), med(r["samples_per_cpu_s"] for r in rs)
            ratio = wall / ref_wall if ref_wall else float("nan")
            ratio_cpu = cpu / ref_cpu if ref_cpu else float("nan")
            steps = -(-args.samples // batch)
            rows.append([fw, batch, fmt_rate(wall), f"{fmt_rate(min(rates))}/{fmt_rate(max(rates))}",
                         f"{med(r['seconds'] for r in rs) / steps * 1e6:.0f}",
                         f"{ratio:.2f}", fmt_rate(cpu), f"{ratio_cpu:.2f}",
                         f"{med(r['loss'] for r in rs):.4f}"])
            summary.append({"framework": fw, "batch": batch, "threads": args.threads,
                            "samples_per_s_median": wall, "min": min(rates), "max": max(rates),
                            "ratio_vs_torch": ratio, "samples_per_cpu_s_median": cpu,
                            "cpu_ratio_vs_torch": ratio_cpu, "runs": rs})
    print(f"MLP 784-64-32-10 training, Adam lr 1e-3, categorical crossentropy; {args.samples:,} samples, "
          f"1 epoch per run, {args.repeats} runs each (a fresh process per run); {args.threads} intra-op "
          f"thread(s) each")
    print_table(["framework", "batch", "samples/s median", "min/max", "us/step", "kgraph/torch",
                 "samples/CPU-s", "kgraph/torch (CPU)", "loss"], rows)
    if args.json:
        print("JSON " + json.dumps(summary))
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--framework", choices=["kgraph", "torch"], help="run one timed epoch in this process")
    ap.add_argument("--batch", type=int, default=32, help="batch size (with --framework or --profile)")
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--frameworks", nargs="+", default=["kgraph", "torch"], choices=["kgraph", "torch"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=N_SAMPLES)
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads for both frameworks (default 1; see README.md: on a small "
                         "VM torch's OpenMP workers make 2-thread runs slow and erratic); 0: the CPUs available")
    ap.add_argument("--seed", type=int, default=0, help="seed for shuffling (the data's seed is fixed)")
    ap.add_argument("--no-metrics", action="store_true",
                    help="kgraph compiled without metrics, torch not computing accuracy")
    ap.add_argument("--profile", action="store_true", help="cProfile a kgraph fit instead")
    ap.add_argument("--profile-steps", type=int, default=300)
    ap.add_argument("--profile-out", default=None, help="write the cProfile stats to this file")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run on stderr")
    args = ap.parse_args(argv)
    args.threads = args.threads or default_threads()
    if args.profile:
        return profile(args)
    if args.framework:
        return child(args)
    return drive(args)


if __name__ == "__main__":
    main()
