"""MNIST from a local ``.npz`` file in Keras's format. kgraph never downloads it.

Keras's ``keras.datasets.mnist.load_data()`` downloads ``mnist.npz`` and caches
it, usually as ``~/.keras/datasets/mnist.npz``. This loader only reads such a
file that is already on disk; for a data set that needs no file at all, use
``kgraph.datasets.digits`` (bundled with the package).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["load_data", "KERAS_CACHE_PATH"]

KERAS_CACHE_PATH = os.path.join("~", ".keras", "datasets", "mnist.npz")

_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_data(path: str | os.PathLike = "mnist.npz"):
    """Load MNIST from a local npz file with keys x_train, y_train, x_test, y_test.

    Args:
        path: path of the npz file (``~`` is expanded). A relative path is
            relative to the current working directory.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``, the arrays as stored in the
        file (Keras's file holds uint8 images of shape ``(n, 28, 28)`` and
        uint8 labels).

    Raises:
        FileNotFoundError: if there is no file at ``path``; nothing is downloaded.
        ValueError: if the file lacks one or more of the four keys.
    """
    full = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(full):
        raise FileNotFoundError(
            f"MNIST file not found: {full!r}. kgraph never downloads data sets; "
            f"pass the path of a local mnist.npz in Keras's format (keys "
            f"{', '.join(_KEYS)}). Keras usually caches it at {KERAS_CACHE_PATH} "
            f"(here: {os.path.expanduser(KERAS_CACHE_PATH)!r})."
        )
    with np.load(full, allow_pickle=False) as f:
        missing = [k for k in _KEYS if k not in f.files]
        if missing:
            raise ValueError(
                f"MNIST file {full!r} is missing key(s) {', '.join(missing)}; "
                f"expected keys {', '.join(_KEYS)} (found: {', '.join(f.files) or 'none'})."
            )
        x_train, y_train, x_test, y_test = (np.asarray(f[k]) for k in _KEYS)
    return (x_train, y_train), (x_test, y_test)
