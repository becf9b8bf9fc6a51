"""Atomic file writes: a temporary file in the same folder, then a rename, so a crash
never leaves a half-written file where a good one was."""
from __future__ import annotations

import os
import tempfile


def atomic_write_bytes(path, data: bytes):
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
