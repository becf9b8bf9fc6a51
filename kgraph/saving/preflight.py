"""Checks an untrusted HDF5 file in another process before this process parses it.

The walk itself is kgraph/saving/h5probe.py. Where it runs:
- a helper process (a fresh Python with only h5py loaded, kept for all checks): a check
  then costs the walk plus a pipe round trip, a few ms. It starts when kgraph is imported
  (`import kgraph` takes about 0.5 s, the helper's start about 0.2 s on another core), so
  that it is ready for the first load; KGRAPH_HDF5_HELPER=lazy starts it on the first
  check instead, =off never;
- until the helper is ready, or where it cannot run, a forked child of this process.
  That costs 50-150 ms in a process that has onnxruntime loaded: the fork, and
  copy-on-write faults in both processes while the child lives. The child is reaped in
  the background, so the caller does not wait for its exit.
A helper or child that crashes, or does not answer in time, makes the file a SavingError;
a new helper starts on the next check. Damaged files can make the HDF5 library loop
forever (measured: 9 of 20,000 byte-flipped files), so the time allowed is
PREFLIGHT_TIMEOUT_S plus a second per PREFLIGHT_BYTES_PER_S bytes of the file (a valid
file's walk takes milliseconds; chunked datasets, which Keras never writes, are read).
"""
from __future__ import annotations

import atexit
import contextlib
import faulthandler
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
import warnings

from kgraph.saving import h5probe
from kgraph.saving.errors import SavingError

# A walk longer than this (plus the size allowance) is treated as stuck on a damaged file.
PREFLIGHT_TIMEOUT_S = 10.0
PREFLIGHT_BYTES_PER_S = 50e6
# When the helper process starts: "eager" (start_helper(), called by kgraph/__init__.py),
# "lazy" (on the first check), or "off" (every check forks).
HELPER_START = os.environ.get("KGRAPH_HDF5_HELPER", "eager").strip().lower()
if HELPER_START not in ("eager", "lazy", "off"):
    warnings.warn(f"KGRAPH_HDF5_HELPER should be 'eager', 'lazy' or 'off', not {HELPER_START!r}: "
                  "using 'eager'", RuntimeWarning, stacklevel=1)
    HELPER_START = "eager"
# Whether a persistent helper process may be used (else every check forks).
USE_HELPER = HELPER_START != "off"

_HELPER_CODE = ("import importlib.util as u, sys\n"
                "del sys.path[0]\n"
                "s = u.spec_from_file_location('kgraph_h5probe', sys.argv[1])\n"
                "m = u.module_from_spec(s)\n"
                "s.loader.exec_module(m)\n"
                "m.serve()\n")


class _Helper:
    """One helper process and a thread that turns its output lines into a queue."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _HELPER_CODE, h5probe.__file__],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                     start_new_session=True)
        self.pid_owner = os.getpid()
        self.lines: queue.Queue = queue.Queue()
        self.ready = False
        try:
            threading.Thread(target=self._pump, daemon=True, name="kgraph-h5probe-reader").start()
        except RuntimeError:
            self.kill()
            raise

    def _pump(self):
        try:
            for line in self.proc.stdout:
                self.lines.put(line)
        except (OSError, ValueError):
            pass
        self.lines.put(None)  # the helper ended

    def poll_ready(self, timeout=0.0):
        if not self.ready:
            try:
                line = self.lines.get(timeout=timeout) if timeout else self.lines.get_nowait()
            except queue.Empty:
                return False
            if line != "ready\n":  # it could not start (no h5py for that interpreter?)
                _STATE["failed_starts"] += 1
                self.kill()
                return False
            self.ready = True
            _STATE["failed_starts"] = 0
        return True

    def ask(self, request, timeout, early):
        """The reply dict; None when the helper died (crashed) or timed out (then killed).
        A line before the verdict (the extents) goes to `early`."""
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                return "timeout"
            if line is None:
                self.proc.wait()
                return None
            reply = json.loads(line)
            if "ok" in reply:
                return reply
            early(reply)

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.proc.wait(timeout=5)

    def close(self):
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()  # the helper leaves at end of input
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2)
            return
        self.kill()


_LOCK = threading.Lock()
_STATE: dict = {"helper": None, "failed_starts": 0}
MAX_FAILED_STARTS = 3  # then this process checks by forking only


def _helper():
    """The ready helper, or None (starting one when there is none)."""
    h = _STATE["helper"]
    if h is not None and (h.pid_owner != os.getpid() or not h.alive()):
        h = _STATE["helper"] = None
    if h is None:
        if (_STATE["failed_starts"] >= MAX_FAILED_STARTS or not sys.executable
                or getattr(sys, "frozen", False)):  # (a frozen app's executable is the app)
            return None
        try:
            h = _STATE["helper"] = _Helper()
        except Exception:
            _STATE["failed_starts"] += 1
            return None
    wait = 0.0 if hasattr(os, "fork") else PREFLIGHT_TIMEOUT_S  # no fork: wait for it
    return h if h.poll_ready(wait) else None


def start_helper():
    """Starts the helper in the background (when KGRAPH_HDF5_HELPER is "eager"), so that it
    is ready by the first check; the caller does not wait (about 1 ms: vfork and exec).
    Not in a frozen application (its executable is not Python), without an executable,
    or in a multiprocessing child (most never load a file: they start one when they do)."""
    import multiprocessing
    if (HELPER_START != "eager" or not USE_HELPER or not sys.executable or getattr(sys, "frozen", False)
            or multiprocessing.parent_process() is not None  # (a fork worker)
            or multiprocessing.current_process().name != "MainProcess"):  # (spawn, forkserver)
        return
    with _LOCK:
        if _STATE["helper"] is None and _STATE["failed_starts"] < MAX_FAILED_STARTS:
            try:
                _STATE["helper"] = _Helper()
            except Exception:  # (the first check starts one, or forks)
                _STATE["failed_starts"] += 1


def _close_helper():
    h = _STATE.get("helper")
    if h is not None and h.pid_owner == os.getpid():
        if h.ready or h.poll_ready():
            h.close()
        else:  # still starting (a short program that loaded nothing): not waited for
            with contextlib.suppress(OSError):
                h.proc.kill()


def _forget_in_child():
    """After a fork, the child has no helper of its own, and no check in progress: the pipe
    to the parent's helper points to /dev/null before it is closed (so that nothing
    buffered reaches the helper), and the lock is new (a check another thread was running
    at the fork holds the old one)."""
    global _LOCK
    _LOCK = threading.Lock()
    h = _STATE.get("helper")
    _STATE["helper"] = None
    if h is not None:
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, h.proc.stdin.fileno())
            finally:
                os.close(null)
        with contextlib.suppress(OSError, ValueError):
            h.proc.stdin.close()


atexit.register(_close_helper)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _raise_for(reply, display, signal_number=None, timeout=None):
    if reply == "timeout":
        raise SavingError(display, "the HDF5 structure could not be read within "
                                   f"{timeout:.0f} s (damaged file?)")
    if reply is None:
        raise SavingError(display, "the HDF5 structure is damaged (reading it crashed the HDF5 "
                                   f"library{f' with signal {signal_number}' if signal_number else ''})")
    if reply.get("problem"):
        raise SavingError(display, f"refused: {reply['problem']}")
    raise SavingError(display, "cannot read the HDF5 file: the file is damaged or not in the "
                               f"expected format ({reply.get('error', 'unknown error')})")


def _reap(pid):
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)


def _fork_check(request, timeout, early):
    """The reply of a forked child walking the file (None: it died; "timeout"); a line
    before the verdict (the extents) goes to `early`."""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return {"ok": True, "unchecked": True}
    if pid == 0:  # child: walk, write one line, leave without cleanup
        try:
            os.close(r)
            faulthandler.disable()  # a crash here is expected and reported by the parent
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            def send(reply):
                data = json.dumps(reply).encode() + b"\n"
                while data:
                    data = data[os.write(w, data):]
            send(h5probe.probe(request["path"], request["offset"], request["length"],
                               request["extents"], send))
        finally:
            os._exit(0)
    os.close(w)
    data, deadline, held = b"", time.monotonic() + timeout, []
    try:
        while True:
            while b"\n" in data:
                line, data = data.split(b"\n", 1)
                reply = json.loads(line)
                if "ok" in reply:
                    threading.Thread(target=_reap, args=(pid,), daemon=True).start()
                    for line_before in held:  # (reading ahead while the child shares this
                        early(line_before)    # process's pages would copy each page it writes)
                    return reply
                held.append(reply)
            ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)
                _reap(pid)
                return "timeout"
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    return ("crash", os.WTERMSIG(status) if os.WIFSIGNALED(status) else None)


def check(path, offset, length, display, extents=False, on_extents=None):
    """Raises SavingError unless the HDF5 image at path[offset:offset+length] (length None:
    to the end) walks cleanly in another process. Returns the walk's reply.

    With `extents`, the walk also lists the datasets stored as plain runs of bytes
    (h5probe.probe), before it walks the rest: they go to `on_extents(list)` as soon as
    they arrive (the file is not checked yet: they may be read, not parsed), else into
    the reply's "extents". A reply of an unchecked fork failure has none."""
    request = {"path": os.path.abspath(path), "offset": int(offset),
               "length": None if length is None else int(length), "extents": bool(extents)}
    early_runs = {}

    def early(reply):
        if "extents" in reply and "extents" not in early_runs:
            early_runs["extents"] = reply["extents"]
            if on_extents is not None:
                try:
                    on_extents(reply["extents"])
                except Exception:  # (nothing is read ahead then; the check goes on)
                    pass
    size = length if length is not None else os.path.getsize(path) - offset
    timeout = PREFLIGHT_TIMEOUT_S + max(size, 0) / PREFLIGHT_BYTES_PER_S
    with _LOCK:
        h = _helper() if USE_HELPER else None
        reply = None
        if h is not None:
            try:
                reply = h.ask(request, timeout, early)
            except (OSError, ValueError):  # it ended between checks, or garbled: fork instead
                h.kill()
                _STATE["helper"] = None
                h = None
            except BaseException:  # (interrupted: its reply would answer the next request)
                h.kill()
                _STATE["helper"] = None
                raise
            else:
                if reply is None or reply == "timeout":
                    code = h.proc.returncode
                    _STATE["helper"] = None
                    _raise_for(reply, display, -code if code is not None and code < 0 else None, timeout)
        if h is None:
            if not hasattr(os, "fork"):
                return {"ok": True, "unchecked": True}
            reply = _fork_check(request, timeout, early)
            if isinstance(reply, tuple):
                _raise_for(None, display, reply[1])
    if reply == "timeout":
        _raise_for(reply, display, timeout=timeout)
    if not reply.get("ok"):
        _raise_for(reply, display)
    if on_extents is None and "extents" in early_runs:
        reply = dict(reply, extents=early_runs["extents"])
    return reply
