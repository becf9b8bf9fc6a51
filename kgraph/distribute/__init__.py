"""Data-parallel training across processes and machines on MPI (through mpi4py, the
transport Horovod uses).

    strategy = kgraph.distribute.MPIStrategy()
    with strategy.scope():
        model.compile(...)
    model.fit(x, y, batch_size=256)      # mpirun -n 4 python train.py

`rank()`, `size()`, `is_chief()` describe the job once a strategy exists (0, 1, True
before, and in a single process). Callbacks that write files or print check
`is_chief()`; callbacks that decide (EarlyStopping, ReduceLROnPlateau) run on every rank
on the same, globally reduced logs and so decide alike. See strategy.py for the rules and
watchdog.py for what happens when a rank is lost.
"""
from kgraph.distribute.mpi import launched_by_mpi
from kgraph.distribute.strategy import MPIStrategy, is_chief, rank, scoped_strategy, size
from kgraph.distribute.watchdog import LOST_EXIT_STATUS

__all__ = ["LOST_EXIT_STATUS", "MPIStrategy", "is_chief", "launched_by_mpi", "rank", "scoped_strategy",
           "size"]
