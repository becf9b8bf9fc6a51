"""Training benchmark: MLP 784-64-32-10 (relu, relu, softmax), Adam (Keras defaults,
lr 1e-3), categorical crossentropy, 60,000 random samples (x uniform [0, 1), one-hot y),
one shuffled epoch per run at batch 32 and 128, after a short warm-up that is not timed.

Frameworks (harness.py has the protocol): kgraph `fit`; PyTorch eager, idiomatic
(nn.Sequential producing logits, torch.optim.Adam(eps=1e-7, Keras's epsilon),
F.cross_entropy, a shuffled index loop, the running loss and accuracy read back every
step as Keras's fit does, torch.set_flush_denormal(True)); Keras 3 `fit` on the JAX and
on the torch backend. kgraph and Keras are compiled with metrics=['accuracy'].

Each run is a fresh process (one framework, one batch size), the frameworks interleaved;
all start from the same data and the same initial weights (numpy, fixed seed).

    python benchmarks/train_mlp.py [--repeats 3] [--batches 32 128] [--threads N] [--frameworks kgraph torch]
    python benchmarks/train_mlp.py --framework kgraph --batch 32        # one run, prints JSON
    python benchmarks/train_mlp.py --profile [--profile-steps 300]      # cProfile of a kgraph fit
"""
from __future__ import annotations

import argparse
import json
import time

import common  # noqa: F401  (puts the repository on sys.path)
import harness
from common import N_SAMPLES, default_threads, make_data

WARMUP_STEPS = 50


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
    harness.ort_op_profile(model, x[:b], y[:b], args.threads, runs=args.profile_steps)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--framework", choices=harness.FRAMEWORKS, help="run one timed epoch in this process")
    ap.add_argument("--batch", type=int, default=32, help="batch size (with --framework or --profile)")
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--frameworks", nargs="+", default=list(harness.FRAMEWORKS), choices=harness.FRAMEWORKS)
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per framework and batch size")
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs per process")
    ap.add_argument("--samples", type=int, default=N_SAMPLES)
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads for every framework (default 1; see README.md: on a small "
                         "VM torch's OpenMP workers make 2-thread runs slow and erratic); 0: the CPUs available")
    ap.add_argument("--seed", type=int, default=0, help="seed for shuffling (the data's seed is fixed)")
    ap.add_argument("--no-metrics", action="store_true",
                    help="compiled without metrics (kgraph, Keras), torch not computing accuracy")
    ap.add_argument("--profile", action="store_true", help="cProfile a kgraph fit instead")
    ap.add_argument("--profile-steps", type=int, default=300)
    ap.add_argument("--profile-out", default=None, help="write the cProfile stats to this file")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = ap.parse_args(argv)
    args.threads = args.threads or default_threads()
    if args.profile:
        return profile(args)
    if args.framework:
        r = harness.train_child("mlp", args.framework, args.batch, args.samples, args.threads, args.seed,
                                not args.no_metrics, WARMUP_STEPS, args.epochs)
        print("RESULT " + json.dumps(r))
        return r
    results = harness.run_training("mlp", args.batches, args.frameworks, args.repeats, args.samples, args.threads,
                                   args.seed, not args.no_metrics, WARMUP_STEPS, args.epochs, args.verbose)
    summary = harness.print_training("mlp", results, args.batches, args.frameworks, args.samples, args.repeats,
                                     args.threads, epochs=args.epochs)
    if args.json:
        print("JSON " + json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
