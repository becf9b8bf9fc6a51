"""The training protocol shared by train_mlp.py, train_cnn.py, train_lstm.py and run.py:
timed epochs of one model, one framework, one batch size, in this process; and the
driver that runs such epochs in fresh processes, the frameworks interleaved, and prints
the table.

Frameworks (same data, same initial weights, Adam lr 1e-3 with Keras's epsilon 1e-7,
categorical crossentropy on the softmax, accuracy computed every step):
  kgraph       model.fit(x, y, batch_size=B, epochs=1, verbose=0, shuffle=True)
  torch        PyTorch eager, idiomatic: nn.Sequential/nn.Module producing logits,
               torch.optim.Adam(eps=1e-7), F.cross_entropy, a torch.randperm index loop,
               the running loss and accuracy read back every step (as Keras's fit does),
               torch.set_flush_denormal(True)
  keras-jax    Keras 3 on the JAX backend (KERAS_BACKEND=jax set before `import keras`),
               model.fit as for kgraph
  keras-torch  Keras 3 on the torch backend, model.fit, denormals flushed as for PyTorch

Protocol per run: a warm-up fit of `warmup` steps plus a batch of the epoch's ragged tail
size (so that JAX's compilations, for the full and for the last partial batch, and kgraph's
graph building and session creation happen before the clock starts), the weights reset to
the common initial values (the optimizer state runs on), then a timed shuffled epoch
(`epochs` of them, the weights reset before each).
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
from common import fmt_rate, make_data, print_table

FRAMEWORKS = ("kgraph", "torch", "keras-jax", "keras-torch")
LABELS = {"kgraph": "kgraph", "torch": "PyTorch eager", "keras-jax": "Keras 3 / JAX",
          "keras-torch": "Keras 3 / torch", "onnxruntime": "onnxruntime (bare)"}
HERE = os.path.dirname(os.path.abspath(__file__))
DESCRIPTION = {
    "mlp": "MLP 784-64-32-10 (relu, relu, softmax)",
    "cnn": "CNN Conv2D(32,3,relu)-MaxPool2-Conv2D(64,3,relu)-MaxPool2-Flatten-Dropout(0.5)-Dense(10,softmax), "
           "28x28x1",
    "lstm": "LSTM(128) on 28 steps x 28 features -> Dense(10, softmax)",
}


def child_env(framework, threads):
    """Environment of a benchmark child: Keras's backend, and thread limits that must be
    set before the libraries load (XLA's CPU thread pool, OpenMP, OpenBLAS)."""
    env = dict(os.environ)
    env.pop("KERAS_BACKEND", None)
    if framework.startswith("keras-"):
        env["KERAS_BACKEND"] = framework.split("-", 1)[1]
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(threads)
    if framework == "keras-jax" and threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def apply_thread_limits(framework, threads):
    """In a child, before the framework loads: the environment of child_env (when run by
    hand), and for JAX a CPU affinity of `threads` CPUs: XLA's CPU client ignores the
    thread flags in current jax releases (measured with them set: a timed 1-thread LSTM
    epoch used 2.08 CPU-seconds in 1.31 s of wall time), and sizes its pools from the
    affinity mask."""
    env = child_env(framework, threads)
    for key in ("KERAS_BACKEND", "XLA_FLAGS"):
        if key in env and key not in os.environ:
            os.environ[key] = env[key]
    if framework == "keras-jax" and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if threads < len(cpus):
            for tid in os.listdir("/proc/self/task"):  # every thread (numpy's BLAS pool exists already)
                os.sched_setaffinity(int(tid), cpus[-threads:])


def warmup_rows(samples, batch, steps):
    """Rows of the warm-up fit: `steps` full batches plus the epoch's ragged tail."""
    return min(samples, steps * batch + samples % batch)


# -- one run, in this process -------------------------------------------------------------------
def timed_epochs(fit_epoch, reset, epochs):
    """[(wall s, CPU s, loss)] of `epochs` timed epochs, the weights reset before each."""
    out = []
    for _ in range(epochs):
        reset()
        c0, t0 = time.process_time(), time.perf_counter()
        loss = fit_epoch()
        out.append((time.perf_counter() - t0, time.process_time() - c0, loss))
    return out


def run_kgraph(kind, batch, samples, threads, seed, metrics=True, warmup=50, epochs=1, steps_per_execution=1,
               auto_steps=None):
    import kgraph
    common.kgraph_set_threads(threads)
    if auto_steps is not None:
        kgraph.config.set_auto_steps_per_call(auto_steps)
    kgraph.utils.set_random_seed(seed)
    x, y, _ = make_data(samples)
    x = common.model_input(kind, x)
    model = common.kgraph_model(kind)
    model.compile(optimizer=kgraph.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"] if metrics else None, steps_per_execution=steps_per_execution)
    w = warmup_rows(samples, batch, warmup)
    model.fit(x[:w], y[:w], batch_size=batch, epochs=1, verbose=0, shuffle=True)  # builds the step graphs
    # the same start for every timed epoch; the optimizer state runs on
    return timed_epochs(
        lambda: float(model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True).history["loss"][-1]),
        lambda: model.set_weights(common.INITIAL_WEIGHTS[kind]()), epochs)


def run_torch(kind, batch, samples, threads, seed, metrics=True, warmup=50, epochs=1):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(seed)
    x_np, _, labels_np = make_data(samples)
    x, labels = torch.from_numpy(common.torch_input(kind, x_np)), torch.from_numpy(labels_np)
    n = len(x)

    def epoch(model, opt, count):
        perm = torch.randperm(count)
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

    model = common.torch_model(kind)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    model.train()
    epoch(model, opt, warmup_rows(n, batch, warmup))
    initial = [p.detach().clone() for p in common.torch_model(kind).parameters()]

    def reset():  # as for kgraph: the weights go back to the common start, the optimizer runs on
        with torch.no_grad():
            for p, q in zip(model.parameters(), initial):
                p.copy_(q)
    return timed_epochs(lambda: epoch(model, opt, n), reset, epochs)


def run_keras(kind, batch, samples, threads, seed, metrics=True, warmup=50, epochs=1):
    """Keras 3 on the backend named by KERAS_BACKEND (set by the driver, see child_env)."""
    backend = os.environ.get("KERAS_BACKEND")
    if backend not in ("jax", "torch"):
        raise SystemExit(f"run_keras needs KERAS_BACKEND=jax or torch. Received: KERAS_BACKEND={backend!r}")
    if backend == "torch":
        import torch
        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)
    import keras
    keras.utils.set_random_seed(seed)
    x, y, _ = make_data(samples)
    x = common.model_input(kind, x)
    model = common.keras_model(kind)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"] if metrics else None)
    w = warmup_rows(samples, batch, warmup)
    model.fit(x[:w], y[:w], batch_size=batch, epochs=1, verbose=0, shuffle=True)  # traces and compiles
    return timed_epochs(
        lambda: float(model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True).history["loss"][-1]),
        lambda: model.set_weights(common.INITIAL_WEIGHTS[kind]()), epochs)


def train_child(kind, framework, batch, samples, threads, seed, metrics=True, warmup=50, epochs=1, **extra):
    """`epochs` timed epochs in this process; returns one JSON-able result per epoch (each
    with the process's peak RSS and the load average at the start)."""
    load0 = os.getloadavg()[0]
    apply_thread_limits(framework, threads)
    if framework == "kgraph":
        runs = run_kgraph(kind, batch, samples, threads, seed, metrics, warmup, epochs, **extra)
    elif framework == "torch":
        runs = run_torch(kind, batch, samples, threads, seed, metrics, warmup, epochs)
    else:
        runs = run_keras(kind, batch, samples, threads, seed, metrics, warmup, epochs)
    rss = common.peak_rss_mb()
    return [{"model": kind, "framework": framework, "batch": batch, "threads": threads, "samples": samples,
             "seconds": dt, "cpu_seconds": cpu, "samples_per_s": samples / dt, "samples_per_cpu_s": samples / cpu,
             "loss": loss, "peak_rss_mb": rss, "loadavg": [load0, os.getloadavg()[0]]} for dt, cpu, loss in runs]


# -- fresh processes ------------------------------------------------------------------------------
def spawn(cmd, framework, threads, timeout=1800):
    """Runs a child benchmark command; returns the JSON on its `RESULT ` line."""
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=common.REPO, timeout=timeout,
                          env=child_env(framework, threads))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def train_cmd(kind, framework, batch, samples, threads, seed, metrics=True, warmup=50, epochs=1):
    cmd = [sys.executable, os.path.join(HERE, "harness.py"), "--model", kind, "--framework", framework,
           "--batch", str(batch), "--samples", str(samples), "--threads", str(threads), "--seed", str(seed),
           "--warmup", str(warmup), "--epochs", str(epochs)]
    return cmd + ([] if metrics else ["--no-metrics"])


def run_training(kind, batches, frameworks, repeats, samples, threads, seed=0, metrics=True, warmup=50,
                 epochs=1, verbose=False, out=sys.stdout):
    """`repeats` fresh processes per framework and batch size, each timing `epochs` epochs;
    the frameworks interleaved process by process so that drift in the machine's load hits
    them alike. Returns {(fw, batch): [one result per timed epoch]}."""
    results = {}
    for batch in batches:
        for rep in range(repeats):
            for fw in frameworks:
                cmd = train_cmd(kind, fw, batch, samples, threads, seed + rep, metrics, warmup, epochs)
                runs = spawn(cmd, fw, threads)
                results.setdefault((fw, batch), []).extend(runs)
                if verbose:
                    for i, r in enumerate(runs):
                        print(f"  {kind} {fw:11s} batch {batch:4d} process {rep + 1} epoch {i + 1}: "
                              f"{fmt_rate(r['samples_per_s'])} samples/s, {r['seconds']:.2f} s wall, "
                              f"{r['cpu_seconds']:.2f} s CPU, loss {r['loss']:.4f}, peak RSS "
                              f"{r['peak_rss_mb']:.0f} MB, load {r['loadavg'][0]:.1f}", file=out, flush=True)
    return results


def summarize(kind, results, batches, frameworks, extra_cols=None):
    """Per (framework, batch): medians and ratios vs PyTorch eager. extra_cols: optional
    list of (header, fn(summary_row) -> str) appended to the table."""
    med = statistics.median
    rows, summary = [], []
    for batch in batches:
        ref = results.get(("torch", batch))
        ref_wall = med(r["samples_per_s"] for r in ref) if ref else None
        ref_cpu = med(r["samples_per_cpu_s"] for r in ref) if ref else None
        for fw in frameworks:
            rs = results.get((fw, batch))
            if not rs:
                continue
            rates = [r["samples_per_s"] for r in rs]
            wall, cpu = med(rates), med(r["samples_per_cpu_s"] for r in rs)
            steps = -(-rs[0]["samples"] // batch)
            s = {"model": kind, "framework": fw, "batch": batch, "threads": rs[0]["threads"],
                 "samples_per_s_median": wall, "min": min(rates), "max": max(rates),
                 "ratio_vs_torch": wall / ref_wall if ref_wall else float("nan"),
                 "samples_per_cpu_s_median": cpu,
                 "cpu_ratio_vs_torch": cpu / ref_cpu if ref_cpu else float("nan"),
                 "us_per_step": med(r["seconds"] for r in rs) / steps * 1e6,
                 "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "loss": med(r["loss"] for r in rs),
                 "load": [r["loadavg"][0] for r in rs], "runs": rs}
            summary.append(s)
            row = [LABELS[fw], batch, fmt_rate(wall), f"{fmt_rate(min(rates))}/{fmt_rate(max(rates))}",
                   f"{s['us_per_step']:.0f}", f"{s['ratio_vs_torch']:.2f}", fmt_rate(cpu),
                   f"{s['cpu_ratio_vs_torch']:.2f}", f"{s['peak_rss_mb']:.0f}", f"{s['loss']:.4f}"]
            rows.append(row + [fn(s) for _, fn in (extra_cols or [])])
    headers = ["framework", "batch", "samples/s median", "min/max", "us/step", "vs torch", "samples/CPU-s",
               "vs torch (CPU)", "peak RSS MB", "loss"] + [h for h, _ in (extra_cols or [])]
    return headers, rows, summary


def load_note(summary):
    loads = [v for s in summary for v in s["load"]]
    if not loads:
        return ""
    return (f"1-min load average at the start of the runs: median {statistics.median(loads):.1f}, "
            f"min {min(loads):.1f}, max {max(loads):.1f} ({common.default_threads()} CPUs)")


def print_training(kind, results, batches, frameworks, samples, repeats, threads, extra_cols=None, epochs=1):
    headers, rows, summary = summarize(kind, results, batches, frameworks, extra_cols)
    print(f"{DESCRIPTION[kind]} training, Adam lr 1e-3, categorical crossentropy; {samples:,} samples; "
          f"{repeats} fresh process(es) per framework, interleaved, each timing {epochs} epoch(s): medians of "
          f"{repeats * epochs} epochs; {threads} intra-op thread(s) each")
    print_table(headers, rows)
    print(load_note(summary))
    return summary


# -- onnxruntime's profile of kgraph's train step -------------------------------------------------
def ort_op_profile(model, xb, yb, threads, runs=300, top=12):
    """onnxruntime's own profiler on kgraph's single train-step graph (the body of the
    K-step loop): time per op type and the heaviest kernels, per step (medians over runs)."""
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
    warm = max(10, runs // 6)
    tmp = tempfile.mkdtemp()
    so = ort.SessionOptions()
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for _ in range(warm):
        sess.run(None, feeds)
    clock = time.process_time if threads == 1 else time.perf_counter
    t0 = clock()
    for _ in range(runs):
        sess.run(None, feeds)
    plain = (clock() - t0) / runs * 1e6
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tmp, "ort")
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for _ in range(warm + runs):
        sess.run(None, feeds)
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    for f in glob.glob(os.path.join(tmp, "*")):
        os.remove(f)
    os.rmdir(tmp)
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    # median per node over the runs: robust to the preemptions of a shared machine
    by_node = {}
    for e in nodes:
        by_node.setdefault((e["name"][:-len("_kernel_time")], e["args"].get("op_name", "?")), []).append(e["dur"])
    by_node = {k: statistics.median(v[len(v) * warm // (warm + runs):]) for k, v in by_node.items()}
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
    print_table(["kernel", "op type", "us/step", "%"],
                [[k[0][:60], k[1], f"{d:.1f}", f"{d / total * 100:.1f}"]
                 for k, d in sorted(by_node.items(), key=lambda kv: -kv[1])[:top]])
    return {"us_per_run": plain, "by_op": by_op, "total_us": total}


def profile_kgraph(kind, batch, threads, runs=200, seed=0):
    """Builds kgraph's train step for `kind` (one warm-up fit) and profiles it with
    onnxruntime's profiler."""
    import kgraph
    common.kgraph_set_threads(threads)
    kgraph.utils.set_random_seed(seed)
    x, y, _ = make_data(4 * batch)
    x = common.model_input(kind, x)
    model = common.kgraph_model(kind)
    model.compile(optimizer=kgraph.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    return ort_op_profile(model, x[:batch], y[:batch], threads, runs=runs)


# -- command line: the per-model scripts call main(kind, ...) ---------------------------------------
def main(kind=None, argv=None, doc=None, samples=None, batches=(128,), repeats=3, warmup=10):
    ap = argparse.ArgumentParser(description=doc or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if kind is None:
        ap.add_argument("--model", choices=sorted(DESCRIPTION), required=True)
    ap.add_argument("--framework", choices=FRAMEWORKS, help="run one timed epoch in this process")
    ap.add_argument("--batch", type=int, default=batches[0], help="batch size (with --framework or --profile)")
    ap.add_argument("--batches", type=int, nargs="+", default=list(batches))
    ap.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    ap.add_argument("--repeats", type=int, default=repeats, help="fresh processes per framework and batch size")
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs per process")
    ap.add_argument("--samples", type=int, default=samples or 6000)
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads for every framework (default 1: see README.md); 0: the CPUs available")
    ap.add_argument("--warmup", type=int, default=warmup, help="warm-up steps before the timed epoch")
    ap.add_argument("--seed", type=int, default=0, help="seed for shuffling and dropout (the data's seed is fixed)")
    ap.add_argument("--no-metrics", action="store_true", help="no accuracy metric in any framework")
    ap.add_argument("--profile", action="store_true",
                    help="onnxruntime's per-kernel profile of kgraph's train step instead")
    ap.add_argument("--profile-runs", type=int, default=200)
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = ap.parse_args(argv)
    kind = kind or args.model
    args.threads = args.threads or common.default_threads()
    if args.profile:
        return profile_kgraph(kind, args.batch, args.threads, args.profile_runs, args.seed)
    if args.framework:
        r = train_child(kind, args.framework, args.batch, args.samples, args.threads, args.seed,
                        not args.no_metrics, args.warmup, args.epochs)
        print("RESULT " + json.dumps(r))
        return r
    results = run_training(kind, args.batches, args.frameworks, args.repeats, args.samples, args.threads,
                           args.seed, not args.no_metrics, args.warmup, args.epochs, args.verbose)
    summary = print_training(kind, results, args.batches, args.frameworks, args.samples, args.repeats,
                             args.threads, epochs=args.epochs)
    if args.json:
        print("JSON " + json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
