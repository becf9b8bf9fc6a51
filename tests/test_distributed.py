"""Data-parallel training on MPI (kgraph.distribute), on loopback with two processes.

Each test launches `mpiexec` on a script in tests/distributed_scripts/ with a timeout and
checks what the ranks wrote: the same weights and logs as one process on the same global
batches, and a bounded, explained stop when a rank is lost."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

SCRIPTS = os.path.join(os.path.dirname(__file__), "distributed_scripts")
MPIEXEC = shutil.which("mpiexec")

pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="needs an MPI launcher (mpiexec): .ci/run "
                                "installs MPICH; see README 'Data-parallel training'")


def _env(**extra):
    env = dict(os.environ)
    env.pop("PMI_RANK", None)
    env.setdefault("KGRAPH_NUM_THREADS", "1")
    env.update(extra)
    return env


def run(args, n=None, timeout=240, launcher=(), **env):
    cmd = ([MPIEXEC, *launcher, "-n", str(n)] if n else []) + [sys.executable, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(**env))
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def load(path):
    with np.load(path, allow_pickle=True) as f:
        weights = [f[k] for k in sorted((k for k in f.files if k.startswith("arr_")),
                                        key=lambda k: int(k[4:]))]
        return weights, dict(f["logs"].tolist()), int(f["iterations"]), int(f["size"])


@pytest.mark.parametrize("case", [
    "mlp sgd 203", "mlp adam 203",
    "mlp adam 193 --sample-weight --val",    # last global batch of 1 row: rank 1's shard is empty
    "cnn sgd 203", "cnn adam 197 --val",
    "mlp adam 203 --shuffle",                 # every rank follows rank 0's shuffled order
    "mlp adam 99 --on-batch",                 # train_on_batch / test_on_batch
    "reg sgd 203 --val",                      # weight and activity regularizers
    "mlp sgd 203 --sum-loss --sample-weight",  # a loss summed (not averaged) over the batch
])
def test_two_processes_match_one_process(tmp_path, case):
    script = [os.path.join(SCRIPTS, "train_compare.py")]
    run(script + [str(tmp_path / "one"), *case.split()])
    run(script + [str(tmp_path / "two"), *case.split()], n=2)
    one_w, one_logs, one_it, one_size = load(tmp_path / "one.rank0.npz")
    assert one_size == 1
    for rank in (0, 1):
        w, logs, it, size = load(tmp_path / f"two.rank{rank}.npz")
        assert size == 2 and it == one_it
        for a, b in zip(one_w, w):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
        assert sorted(logs) == sorted(one_logs)
        for key in one_logs:
            np.testing.assert_allclose(logs[key], one_logs[key], rtol=1e-5, err_msg=key)
    w0, logs0 = load(tmp_path / "two.rank0.npz")[:2]
    w1, logs1 = load(tmp_path / "two.rank1.npz")[:2]
    assert all(np.array_equal(a, b) for a, b in zip(w0, w1)), "ranks ended with different weights"
    assert logs0 == logs1, "ranks logged different numbers"


def test_batchnorm_and_dropout_keep_the_ranks_identical(tmp_path):
    # BatchNormalization normalizes with each shard's statistics and dropout masks differ
    # per rank, so the result is not the one-process one; but the moving statistics are
    # averaged over the ranks and every rank applies the same update: identical weights
    run([os.path.join(SCRIPTS, "train_compare.py"), str(tmp_path / "two"), "bn", "adam", "203"], n=2)
    w0, logs0 = load(tmp_path / "two.rank0.npz")[:2]
    w1, logs1 = load(tmp_path / "two.rank1.npz")[:2]
    assert all(np.array_equal(a, b) and np.isfinite(a).all() for a, b in zip(w0, w1))
    assert logs0 == logs1
    moving_variance = w0[5]
    assert not np.allclose(moving_variance, 1.0), "the moving statistics were not updated"


def _start_and_hit(tmp_path, launcher, hit, **env):
    """Starts train_until_killed.py on 2 ranks, waits for rank 1 to be mid-epoch, applies
    `hit` to its pid; returns (returncode, output, seconds from the hit to the end)."""
    cmd = [MPIEXEC, *launcher, "-n", "2", sys.executable, os.path.join(SCRIPTS, "train_until_killed.py"),
           str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(**env), start_new_session=True)
    pid_file = tmp_path / "rank1.pid"
    try:
        deadline = time.monotonic() + 120
        while hit is not None and not pid_file.exists():
            assert proc.poll() is None, f"training ended early:\n{proc.communicate()[0]}"
            assert time.monotonic() < deadline, "rank 1 never reached its second epoch"
            time.sleep(0.05)
        t0 = time.monotonic()
        if hit is not None:
            os.kill(int(pid_file.read_text()), hit)
        out, _ = proc.communicate(timeout=90)
        return proc.returncode, out, time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _checkpoint_loads(tmp_path):
    import kgraph
    from kgraph import layers
    model = kgraph.Sequential([kgraph.Input(shape=(12,)), layers.Dense(32, activation="relu"),
                               layers.Dense(3, activation="softmax")])
    model.load_weights(str(tmp_path / "last.weights.h5"))
    assert all(np.isfinite(w).all() for w in model.get_weights())


# Two "hosts" on loopback (hydra's fork launcher, one proxy per host), as on a real cluster:
# hydra tells the survivors (SIGUSR1) instead of killing them, and kgraph names the lost rank.
TWO_HOSTS = ("-launcher", "fork", "-hosts", "nodeA,nodeB", "-ppn", "1", "-disable-auto-cleanup")


def test_killed_rank_stops_the_others_naming_it(tmp_path):
    rc, out, seconds = _start_and_hit(tmp_path, TWO_HOSTS, signal.SIGKILL)
    assert rc != 0 and seconds < 60, (rc, seconds, out)
    assert "rank 0 of 2: lost rank 1 (host" in out, out
    assert "exit status 75" in out
    _checkpoint_loads(tmp_path)


def test_frozen_rank_is_named_after_the_timeout(tmp_path):
    # a hung rank (SIGSTOP: a frozen machine) is invisible to the launcher; the heartbeat
    # names it after KGRAPH_DIST_TIMEOUT seconds of silence
    rc, out, seconds = _start_and_hit(tmp_path, (), signal.SIGSTOP, KGRAPH_DIST_TIMEOUT="8")
    assert rc != 0 and 7 < seconds < 60, (rc, seconds, out)
    assert "rank 0 of 2: lost rank 1 (host" in out and "no heartbeat for" in out, out
    _checkpoint_loads(tmp_path)


def test_killed_rank_under_default_mpiexec_ends_the_job(tmp_path):
    # plain `mpiexec -n 2` on one machine: hydra itself kills the other ranks at once
    rc, out, seconds = _start_and_hit(tmp_path, (), signal.SIGKILL)
    assert rc != 0 and seconds < 60, (rc, seconds, out)
    _checkpoint_loads(tmp_path)


def test_exception_on_one_rank_ends_the_job(tmp_path):
    # the failing rank aborts the MPI job (MPI_Abort) instead of waiting in MPI_Finalize
    rc, out, seconds = _start_and_hit(tmp_path, (), None, FAIL="raise")
    assert rc != 0 and seconds < 90, (rc, seconds, out)
    assert "rank 1 fails on purpose" in out and "MPI_Abort" in out, out


def test_cli_train_np_2(tmp_path):
    # `kgraph train --np 2` runs itself under mpiexec; rank 1 finishes first and waits for
    # rank 0, which evaluates, reports and writes the files alone
    proc = subprocess.run([sys.executable, "-m", "kgraph.cli", "train", "mlp", "--np", "2", "--epochs", "2",
                           "--verbose", "2", "-o", str(tmp_path / "m.keras")],
                          capture_output=True, text=True, timeout=240, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("test loss:") == 1 and proc.stdout.count("Epoch 2/2") == 1, proc.stdout
    accuracy = float(proc.stdout.split("test loss:")[1].split("accuracy:")[1].split()[0])
    assert accuracy > 0.8
    assert (tmp_path / "m.keras").exists() and (tmp_path / "m.onnx").exists()


def test_collective_on_one_rank_only_is_explained_not_hung():
    cmd = [MPIEXEC, "-n", "2", sys.executable, os.path.join(SCRIPTS, "evaluate_on_chief_only.py")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "rank 1 has finished while this rank waits in a collective" in out, out


def test_cli_np_without_a_launcher_says_what_to_install(monkeypatch):
    from click.testing import CliRunner

    from kgraph.cli import main
    monkeypatch.setenv("KGRAPH_MPIEXEC", "no-such-mpiexec -x")
    result = CliRunner().invoke(main, ["train", "mlp", "--np", "2"])
    assert result.exit_code == 1
    assert "--np 2 needs an MPI launcher, and 'no-such-mpiexec' is not on PATH" in result.output
