"""`kgraph train ... --np N`: the command starts itself again under mpiexec, N times."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys


def mpiexec_command(nprocs: int, argv: list) -> list:
    """mpiexec (or $KGRAPH_MPIEXEC, e.g. "mpiexec -f hosts") -n N python -m kgraph.cli ARGV."""
    launcher = shlex.split(os.environ.get("KGRAPH_MPIEXEC", "mpiexec"))
    if shutil.which(launcher[0]) is None:
        raise FileNotFoundError(
            f"--np {nprocs} needs an MPI launcher, and '{launcher[0]}' is not on PATH: install MPI "
            f"(Debian/Ubuntu: `apt-get install mpich libmpich-dev`) and `pip install \"kgraph[distributed]\"`, "
            f"or name the launcher in KGRAPH_MPIEXEC")
    return launcher + ["-n", str(nprocs), sys.executable, "-m", "kgraph.cli"] + list(argv)


def relaunch(nprocs: int, argv: list) -> int:
    """Runs the command under mpiexec; returns its exit status."""
    return subprocess.call(mpiexec_command(nprocs, argv))
