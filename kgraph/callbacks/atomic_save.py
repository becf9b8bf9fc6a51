"""Checkpoint files written whole or not at all: the saver writes a temporary file in
the destination folder, which then replaces the destination in one rename. A process
killed at any moment leaves either the previous file or the new one, never a torn one."""
from __future__ import annotations

import os
import tempfile
import uuid


def _fsync(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_atomically(save, path):
    """`save(tmp_path)` writes the file; it then replaces `path`. The temporary name keeps
    the destination's ending (`.keras`, `.h5`, `.weights.h5`), which savers dispatch on."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{os.path.basename(path)}")
    try:
        save(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(folder, directory=True)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_writable(path, who):
    """Raise OSError now (before any training) when files cannot be created at `path`:
    its first existing ancestor must be a folder that accepts a new file."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise OSError(f"{who}: the filepath is an existing directory; give a file path. "
                      f"Received: filepath={path}")
    folder = os.path.dirname(path)
    while not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    if not os.path.isdir(folder):
        raise OSError(f"{who}: cannot create files under '{path}' because '{folder}' is not a "
                      f"directory. Received: filepath={path}")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OSError(f"{who}: cannot write to '{folder}' ({e.strerror or e}). "
                      f"Received: filepath={path}") from e
