"""The UCI "Optical Recognition of Handwritten Digits" data set (8x8), bundled with kgraph.

The data ships inside the package (``kgraph/datasets/data/digits.npz``, about
45 KB) so that examples and tests have a real image-classification data set
that needs nothing to be downloaded: no network access, no cache directory.

It holds 1,797 grayscale 8x8 images of handwritten digits, pixel values
0..16 (the count of set pixels in a 4x4 block of a 32x32 bitmap), with
labels 0..9 in roughly equal numbers.

Attribution: Alpaydin, E. and Kaynak, C. (1998). Optical Recognition of
Handwritten Digits [Dataset]. UCI Machine Learning Repository.
https://doi.org/10.24432/C50P49. Licensed under CC BY 4.0
(https://creativecommons.org/licenses/by/4.0/); see ``data/README.md``.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["load_data", "NUM_SAMPLES", "NUM_CLASSES"]

NUM_SAMPLES = 1797
NUM_CLASSES = 10

_DATA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "digits.npz")


def _load_all() -> tuple[np.ndarray, np.ndarray]:
    with np.load(_DATA_PATH, allow_pickle=False) as f:
        x = np.asarray(f["x"], dtype=np.uint8)
        y = np.asarray(f["y"], dtype=np.uint8)
    return x, y


def load_data(test_split: float = 0.2, seed: int = 113):
    """Load the bundled 8x8 digits, split into train and test sets.

    Args:
        test_split: fraction of the 1,797 samples to put in the test set,
            strictly between 0 and 1. The test set gets
            ``round(1797 * test_split)`` samples (at least 1, and at least
            1 sample is left for training).
        seed: seed for ``numpy.random.default_rng``; the samples are shuffled
            by one fixed permutation from it, so the same arguments always
            give the same split.

    Returns:
        ``((x_train, y_train), (x_test, y_test))`` in the Keras style:
        ``x_*`` are uint8 arrays of shape ``(n, 8, 8)`` with values 0..16,
        ``y_*`` are uint8 arrays of shape ``(n,)`` with labels 0..9.

    Raises:
        ValueError: if ``test_split`` is not a number strictly between 0 and 1.
    """
    try:
        split = float(test_split)
    except (TypeError, ValueError):
        raise ValueError(
            f"`test_split` must be a number strictly between 0 and 1. Received: test_split={test_split!r}"
        ) from None
    if not 0.0 < split < 1.0:  # also rejects NaN
        raise ValueError(
            f"`test_split` must be strictly between 0 and 1. Received: test_split={test_split!r}"
        )

    x, y = _load_all()
    n = len(x)
    n_test = min(max(int(round(n * split)), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    test_idx, train_idx = order[:n_test], order[n_test:]
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])
