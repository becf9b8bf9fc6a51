"""Lost-rank detection: a heartbeat among the ranks, in a thread of its own.

Why: when a rank dies, MPI collectives on the other ranks may wait forever (MPI itself
promises nothing after a failure), and a rank that hangs (a frozen machine, a network
partition) is invisible to the launcher. So every rank sends a small message to every
other rank each `interval` seconds on a communicator of its own, and checks when it last
heard from each. A rank silent for `timeout` seconds is declared lost: this process
prints which rank (host, pid), and exits with status 75 (EX_TEMPFAIL: resume from the last
checkpoint), whatever its main thread is blocked in. Checkpoint files are written whole
(a temporary file and a rename), so the last good one stays intact.

MPICH's launcher (hydra, `mpiexec -disable-auto-cleanup`) sends SIGUSR1 to the others when
a process of the job fails; that notice shortens the wait to a few heartbeat intervals.
Without -disable-auto-cleanup, hydra itself kills every other process of the job at once.

At a normal exit every rank says goodbye, then waits for the others' goodbyes (as
MPI_Finalize would wait for them anyway), still watching them."""
from __future__ import annotations

import atexit
import os
import select
import signal
import threading
import time

import numpy as np

LOST_EXIT_STATUS = 75
_BEAT, _BYE = 1.0, -1.0
_TAG = 7331


class Watchdog:
    def __init__(self, MPI, comm, timeout, interval, who):
        self.MPI, self.comm = MPI, comm.Dup()
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.timeout, self.interval, self.who = float(timeout), float(interval), who
        self.peers = [r for r in range(self.size) if r != self.rank]
        now = time.monotonic()
        self.last_seen = {p: now for p in self.peers}
        self.gone = set()                      # peers that said goodbye
        self._inbox = {p: np.zeros(1, np.float64) for p in self.peers}
        self._recvs = {}
        self._sends = []
        self._beat = np.array([_BEAT])
        self._bye = np.array([_BYE])
        self._stop = threading.Event()
        self._said_bye = False
        self.abnormal = False                  # an uncaught exception ends this process
        self.in_collective = 0                 # the main thread waits in a training collective
        self.collective_since = 0.0            # ... since then (time.monotonic)
        self.gone_at = {}                      # when each peer said goodbye
        self._notice = False                   # the launcher reported a failed process
        self._wake_r = None
        self._install_notice()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="kgraph-watchdog", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    # -- the launcher's failure notice ----------------------------------------------
    def _install_notice(self):
        """SIGUSR1 would otherwise end this process silently (its default action). The
        signal's C handler writes to a wakeup pipe at once, even while the main thread is
        blocked in a collective, so the watchdog thread sees it without delay."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None):
            return
        signal.signal(signal.SIGUSR1, lambda signum, frame: None)
        r, w = os.pipe()
        os.set_blocking(w, False)
        os.set_blocking(r, False)
        try:
            old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:
            os.close(r)
            os.close(w)
            return
        if old != -1:                          # someone else's (an event loop's): leave theirs
            signal.set_wakeup_fd(old)
            os.close(r)
            os.close(w)
            return
        self._wake_r = r

    def _check_notice(self, wait):
        if self._wake_r is None:
            time.sleep(wait)
            return
        ready, _, _ = select.select([self._wake_r], [], [], wait)
        if ready:
            try:
                data = os.read(self._wake_r, 64)
            except BlockingIOError:
                data = b""
            if signal.SIGUSR1 in data:
                self._notice = True

    # -- heartbeat ------------------------------------------------------------------
    def _run(self):
        MPI = self.MPI
        next_beat = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                with self._lock:
                    if now >= next_beat:
                        self._send(self._beat)
                        next_beat = now + self.interval
                    self._receive()
                self._judge()
                self._check_notice(min(0.1, self.interval / 4))
        except MPI.Exception as e:             # MPI reports a failed peer as an error here
            self._stop_rank(f"lost a rank: the heartbeat failed: {str(e).strip().splitlines()[0]}")

    def _send(self, payload):
        if self._said_bye:
            return
        self._sends = [r for r in self._sends if not r.Test()]
        if len(self._sends) > 4 * len(self.peers) * max(1, int(self.timeout / self.interval)):
            return                             # a silent peer is not taking them: stop piling up
        for p in self.peers:     # gone peers too: they wait for this rank's goodbye
            self._sends.append(self.comm.Isend(payload, dest=p, tag=_TAG))

    def _receive(self):
        for p in self.peers:
            if p in self.gone:
                continue
            req = self._recvs.get(p)
            if req is None:
                req = self._recvs[p] = self.comm.Irecv(self._inbox[p], source=p, tag=_TAG)
            while req is not None and req.Test():
                self.last_seen[p] = time.monotonic()
                if self._inbox[p][0] == _BYE:
                    self.gone.add(p)
                    self.gone_at[p] = time.monotonic()
                    self._recvs.pop(p)
                    req = None
                else:
                    req = self._recvs[p] = self.comm.Irecv(self._inbox[p], source=p, tag=_TAG)

    def _judge(self):
        now = time.monotonic()
        # a collective that a finished peer had joined completes at once; one that has waited
        # for seconds since the peer left never will
        grace = max(2.0, 2 * self.interval)
        late = [p for p in self.gone if now - max(self.gone_at[p], self.collective_since) > grace]
        if self.in_collective and late:
            p = min(late)
            self._stop_rank(f"rank {p} has finished while this rank waits in a collective that rank "
                            f"{p} will never join (every rank must call fit and evaluate alike, not "
                            f"only rank 0)")
        # after the launcher's notice a live peer is never more than a beat or two late
        limit = min(self.timeout, 3 * self.interval + 0.5) if self._notice else self.timeout
        for p in self.peers:
            if p not in self.gone and now - self.last_seen[p] > limit:
                why = f"no heartbeat for {now - self.last_seen[p]:.1f} s"
                if self._notice:
                    why += " after the MPI launcher reported a failed process"
                self._stop_rank(f"lost rank {p} ({self.who(p)}): {why}")

    def _stop_rank(self, what):
        msg = (f"kgraph.distribute: rank {self.rank} of {self.size}: {what}. Stopping this rank with "
               f"exit status {LOST_EXIT_STATUS}; checkpoints already written stay intact.\n")
        try:
            os.write(2, msg.encode())
        finally:
            os._exit(LOST_EXIT_STATUS)

    # -- normal end -----------------------------------------------------------------
    def close(self):
        """Goodbye to every peer, then wait for theirs (while still judging silence)."""
        if self._stop.is_set():
            return
        if self.abnormal:
            # the peers cannot finish without this rank: end the whole job now (MPI_Abort),
            # rather than wait in MPI_Finalize for ranks that wait for this one
            self.comm.Abort(1)
        with self._lock:
            self._send(self._bye)
            self._said_bye = True
        while not all(p in self.gone for p in self.peers):
            time.sleep(0.02)
            if not self.thread.is_alive():
                break
        self._stop.set()
        self.thread.join(timeout=5)
        deadline = time.monotonic() + 5
        while self._sends and time.monotonic() < deadline:
            self._sends = [r for r in self._sends if not r.Test()]
            time.sleep(0.01)
        self.comm.Free()
