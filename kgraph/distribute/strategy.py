"""MPIStrategy: data-parallel training over the processes of an MPI job.

    strategy = kgraph.distribute.MPIStrategy()   # joins the job: rank, size
    with strategy.scope():
        model = build_model()
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=256, epochs=10)    # batch_size: the global batch

Run the same script as one process (`python train.py`: the strategy has one rank and
training is exactly the single-process path) or as N (`mpirun -n N python train.py`).
With N ranks, every rank passes the same full arrays to fit; each global batch of
`batch_size` rows is cut into N consecutive shards (sizes differ by at most one row), rank
r trains on shard r. Weights and optimizer state start from rank 0's (broadcast at each
fit), the ranks' gradients are summed in one Allreduce per step over one flat float32
buffer, and every rank applies the same update: the weights stay identical everywhere and
equal, up to float rounding, to one process training on the same global batches. Losses and
metrics are reduced as sums (and counts), so every rank logs the global numbers and
callbacks decide alike on every rank. Only rank 0 (`is_chief()`) shows progress; callbacks
that write files write them only there.

Known differences from one process: BatchNormalization normalizes with each shard's own
batch statistics (its moving statistics are averaged over the ranks), dropout masks differ.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import time

import numpy as np

from kgraph.distribute import mpi as _mpi

_JOB = {"job": None}
_SCOPE: list = []


class _Job:
    """This process's membership of the MPI job: one per process, shared by strategies."""

    def __init__(self, timeout, interval):
        MPI = _mpi.import_mpi()
        self.MPI = MPI
        world = MPI.COMM_WORLD
        self.comm = world.Dup()                # kgraph's collectives, apart from the user's
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.hosts = self.comm.allgather((socket.gethostname(), os.getpid()))
        self.local_size = sum(h == self.hosts[self.rank][0] for h, _ in self.hosts)
        self.watchdog = None
        if self.size > 1:
            if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
                print("kgraph.distribute: MPI runs without thread support, so lost ranks are not "
                      "detected (a dead rank may leave the others waiting)", file=sys.stderr)
            else:
                from kgraph.distribute.watchdog import Watchdog
                self.watchdog = Watchdog(MPI, world, timeout, interval, self.describe)
                _chain_excepthook(self.watchdog)
            self._share_cores()

    def describe(self, rank):
        host, pid = self.hosts[rank]
        return f"host {host}, pid {pid}"

    def _share_cores(self):
        """Ranks on one machine split its cores (onnxruntime would start one thread per
        core in each of them), unless the user chose a thread count."""
        from kgraph.runtime import session
        if "KGRAPH_NUM_THREADS" not in os.environ and session._STATE["intra_op"] == 0:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            session.set_num_threads(max(1, (cores or 1) // self.local_size))


def _chain_excepthook(watchdog):
    previous = sys.excepthook

    def hook(kind, value, tb):
        watchdog.abnormal = True
        previous(kind, value, tb)
    sys.excepthook = hook


def _job(timeout=None, interval=None):
    if _JOB["job"] is None:
        timeout = float(os.environ.get("KGRAPH_DIST_TIMEOUT", 30.0)) if timeout is None else timeout
        interval = min(1.0, timeout / 10) if interval is None else interval
        _JOB["job"] = _Job(timeout, interval)
    return _JOB["job"]


class MPIStrategy:
    """Data parallelism over the MPI job this process belongs to (mpirun/mpiexec/srun).

    `timeout`: seconds of silence after which a rank counts as lost (default 30, or the
    KGRAPH_DIST_TIMEOUT environment variable); the others then stop with an error naming
    it (exit status 75). Creating the strategy joins the job: call it early, on every rank.
    Without an MPI launcher it is a one-rank job and mpi4py is not needed."""

    def __init__(self, timeout=None):
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ValueError(f"MPIStrategy: `timeout` must be a positive number of seconds. "
                             f"Received: timeout={timeout!r}")
        self._job = _job(timeout) if _mpi.launched_by_mpi() else None

    @property
    def rank(self) -> int:
        return self._job.rank if self._job else 0

    @property
    def size(self) -> int:
        return self._job.size if self._job else 1

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Several ranks: training takes the data-parallel path."""
        return self.size > 1

    @property
    def comm(self):
        return self._job.comm

    @contextlib.contextmanager
    def scope(self):
        """Models compiled inside train with this strategy."""
        _SCOPE.append(self)
        try:
            yield self
        finally:
            _SCOPE.pop()

    # -- collectives the training loop uses -----------------------------------------
    @contextlib.contextmanager
    def _collective(self):
        """Marks this rank as inside a collective: the watchdog then knows that a peer
        which has already finished (said goodbye) will never join it."""
        wd = self._job.watchdog
        if wd is None:
            yield
            return
        if not wd.in_collective:
            wd.collective_since = time.monotonic()
        wd.in_collective += 1
        try:
            yield
        finally:
            wd.in_collective -= 1

    def allreduce_(self, buf):
        """Sums `buf` (a contiguous numpy array) over the ranks, in place."""
        with self._collective():
            self.comm.Allreduce(self._job.MPI.IN_PLACE, buf, op=self._job.MPI.SUM)

    def broadcast_(self, buf):
        """`buf` (contiguous numpy array) takes rank 0's value on every rank."""
        with self._collective():
            self.comm.Bcast(buf, root=0)

    def broadcast_arrays_(self, arrays):
        """Several arrays (any dtypes) take rank 0's values, in one Bcast of their bytes."""
        arrays = list(arrays)
        if not arrays:
            return
        raw = np.concatenate([np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in arrays])
        self.broadcast_(raw)
        at = 0
        for a in arrays:
            n = a.nbytes
            np.copyto(a, raw[at:at + n].view(a.dtype).reshape(a.shape))
            at += n

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any."""
        with self._collective():
            return bool(self.comm.allreduce(bool(flag), op=self._job.MPI.LOR))

    def allgather(self, obj):
        with self._collective():
            return self.comm.allgather(obj)

    def __repr__(self):
        return f"MPIStrategy(rank={self.rank}, size={self.size})"


def scoped_strategy():
    """The strategy whose scope() is open, or None."""
    return _SCOPE[-1] if _SCOPE else None


def rank() -> int:
    """This process's rank in the data-parallel job (0 when there is none)."""
    job = _JOB["job"]
    return job.rank if job else 0


def size() -> int:
    """Number of ranks in the data-parallel job (1 when there is none)."""
    job = _JOB["job"]
    return job.size if job else 1


def is_chief() -> bool:
    """True except on the ranks other than 0 of a data-parallel job: callbacks that write
    files (checkpoints, logs) or print do so only where this is true."""
    return rank() == 0
