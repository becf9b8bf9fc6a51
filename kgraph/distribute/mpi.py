"""mpi4py, imported only when a data-parallel job starts: single-process kgraph never
needs MPI installed. MPI itself comes from the system (MPICH or Open MPI packages);
mpi4py from the `distributed` extra."""
from __future__ import annotations

import os

# Variables the common launchers set in every process they start: mpiexec/mpirun of MPICH
# (hydra) and Intel MPI, Open MPI, PMIx-based launchers, and Slurm's srun with PMI.
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


def launched_by_mpi() -> bool:
    """Whether an MPI launcher started this process (its environment says so); no MPI call."""
    return any(v in os.environ for v in _LAUNCHER_SIZE_VARS + ("PMI_RANK", "OMPI_COMM_WORLD_RANK",
                                                               "PMIX_RANK"))


def import_mpi():
    """mpi4py's MPI module, or an ImportError that says what to install."""
    try:
        import mpi4py
    except ImportError:
        raise ImportError("kgraph.distribute needs mpi4py and an MPI library: install MPI from the "
                          "system packages (Debian/Ubuntu: `apt-get install mpich libmpich-dev`), then "
                          "`pip install \"kgraph[distributed]\"`") from None
    # every collective and the heartbeat thread raise Python exceptions instead of aborting
    mpi4py.rc.errors = "exception"
    mpi4py.rc.thread_level = "multiple"
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as e:
        hint = ""
        if "libmpi.so" in str(e):
            hint = (" (Debian's MPICH names its library libmpich.so.12 while mpi4py's binary wheel "
                    "loads libmpi.so.12: link one to the other, e.g. `ln -s libmpich.so.12 "
                    "/usr/lib/x86_64-linux-gnu/libmpi.so.12 && ldconfig`, or build mpi4py against "
                    "the system MPI with `pip install --no-binary mpi4py mpi4py`)")
        raise ImportError(f"kgraph.distribute: mpi4py cannot load the MPI library: {e}{hint}") from None
    return MPI
