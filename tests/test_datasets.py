"""Tests for kgraph.datasets: the bundled UCI digits and the local-only MNIST loader."""

import os

import numpy as np
import pytest

from kgraph.datasets import digits, mnist


# ---------------------------------------------------------------- digits

def test_digits_shapes_dtypes_and_ranges():
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    # round(1797 * 0.2) = round(359.4) = 359 test samples.
    assert x_train.shape == (1438, 8, 8)
    assert x_test.shape == (359, 8, 8)
    assert y_train.shape == (1438,)
    assert y_test.shape == (359,)
    for a in (x_train, y_train, x_test, y_test):
        assert a.dtype == np.uint8
    x = np.concatenate([x_train, x_test])
    y = np.concatenate([y_train, y_test])
    assert x.min() == 0 and x.max() == 16
    assert set(np.unique(y).tolist()) == set(range(10))


def test_digits_splits_are_disjoint_and_cover_all_samples():
    (x_train, y_train), (x_test, y_test) = digits.load_data(test_split=0.25, seed=7)
    assert len(x_train) + len(x_test) == digits.NUM_SAMPLES == 1797
    assert len(x_test) == round(1797 * 0.25)
    # Compare against the full, unsplit data: each sample appears exactly once.
    x_all, y_all = digits._load_all()
    assert x_all.shape == (1797, 8, 8) and y_all.shape == (1797,)

    def keys(x, y):
        return [xi.tobytes() + bytes([yi]) for xi, yi in zip(x, y)]

    full = sorted(keys(x_all, y_all))
    split = sorted(keys(x_train, y_train) + keys(x_test, y_test))
    assert split == full
    # The 1,797 images are all distinct, so train and test share no image at all.
    assert len(set(keys(x_all, y_all))) == 1797
    assert not set(keys(x_train, y_train)) & set(keys(x_test, y_test))


def test_digits_split_is_deterministic_and_seed_dependent():
    a = digits.load_data()
    b = digits.load_data(test_split=0.2, seed=113)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    (_, _), (x_other, y_other) = digits.load_data(seed=114)
    assert x_other.shape == a[1][0].shape
    assert not np.array_equal(x_other, a[1][0])


def test_digits_class_balance_is_roughly_uniform():
    (_, y_train), (_, y_test) = digits.load_data()
    counts = np.bincount(np.concatenate([y_train, y_test]), minlength=10)
    assert counts.sum() == 1797
    assert counts.tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert counts.min() >= 0.9 * 1797 / 10 and counts.max() <= 1.1 * 1797 / 10
    # The shuffled test split should also cover every class in fair numbers.
    test_counts = np.bincount(y_test, minlength=10)
    assert test_counts.min() >= 20 and test_counts.max() <= 55


def test_digits_images_are_not_trivial():
    (x_train, y_train), _ = digits.load_data()
    # Mean images of different digits differ clearly (guards against a scrambled file).
    means = np.stack([x_train[y_train == k].astype(np.float64).mean(axis=0) for k in range(10)])
    dists = np.linalg.norm((means[:, None] - means[None, :]).reshape(10, 10, -1), axis=-1)
    off_diag = dists[~np.eye(10, dtype=bool)]
    assert off_diag.min() > 5.0


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, -0.1, 1.5, float("nan"), "abc", None])
def test_digits_rejects_bad_test_split(bad):
    with pytest.raises(ValueError, match=r"Received: test_split="):
        digits.load_data(test_split=bad)


# ---------------------------------------------------------------- mnist

def _write_small_mnist(path, **drop):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8),
        "y_train": np.array([0, 1, 2, 3, 4], dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8),
        "y_test": np.array([9, 8, 7], dtype=np.uint8),
    }
    for k in drop:
        arrays.pop(k)
    np.savez_compressed(path, **arrays)
    return arrays


def test_mnist_round_trip(tmp_path):
    path = tmp_path / "mnist.npz"
    ref = _write_small_mnist(path)
    (x_train, y_train), (x_test, y_test) = mnist.load_data(path)
    for name, got in [("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test)]:
        assert got.dtype == ref[name].dtype == np.uint8
        np.testing.assert_array_equal(got, ref[name])
    assert x_train.shape == (5, 28, 28) and x_test.shape == (3, 28, 28)
    # A str path works too, and so does a path relative to the working directory.
    (x2, _), _ = mnist.load_data(str(path))
    np.testing.assert_array_equal(x2, ref["x_train"])


def test_mnist_default_path_is_relative_to_cwd(tmp_path, monkeypatch):
    ref = _write_small_mnist(tmp_path / "mnist.npz")
    monkeypatch.chdir(tmp_path)
    (_, y_train), (_, y_test) = mnist.load_data()
    np.testing.assert_array_equal(y_train, ref["y_train"])
    np.testing.assert_array_equal(y_test, ref["y_test"])


def test_mnist_missing_file_never_downloads(tmp_path):
    missing = tmp_path / "nowhere" / "mnist.npz"
    with pytest.raises(FileNotFoundError) as info:
        mnist.load_data(missing)
    msg = str(info.value)
    assert str(missing) in msg
    assert "never downloads" in msg
    assert os.path.join("~", ".keras", "datasets", "mnist.npz") in msg
    assert not missing.exists() and not missing.parent.exists()


def test_mnist_missing_keys(tmp_path):
    path = tmp_path / "partial.npz"
    _write_small_mnist(path, y_test=None)
    with pytest.raises(ValueError, match=r"missing key\(s\) y_test;"):
        mnist.load_data(path)

    path2 = tmp_path / "partial2.npz"
    _write_small_mnist(path2, x_train=None, y_train=None)
    with pytest.raises(ValueError, match=r"missing key\(s\) x_train, y_train;"):
        mnist.load_data(path2)
