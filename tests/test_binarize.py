"""npvae.datasets.binarize: one fixed Bernoulli draw per pixel, in x's dtype."""

from __future__ import annotations

import numpy as np
import pytest

from npvae.datasets import binarization as datasets
from npvae.datasets import binarize


def grey(shape=(50, 40), dtype=np.float32, seed=0):
    return np.random.default_rng(seed).random(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_is_exactly_the_documented_draw(dtype, monkeypatch):
    """``default_rng(seed).random(x.shape) < x``, also when drawn in several chunks."""
    x = grey(dtype=dtype)
    expect = (np.random.default_rng(7).random(x.shape) < x).astype(dtype)
    np.testing.assert_array_equal(binarize(x, seed=7), expect)
    monkeypatch.setattr(datasets, "_BINARIZE_CHUNK", 333)  # 2000 elements: 7 chunks, the last one short
    np.testing.assert_array_equal(binarize(x, seed=7), expect)


def test_deterministic_per_seed_and_seeds_differ():
    x = grey()
    a, b, c = binarize(x, seed=1), binarize(x, seed=1), binarize(x, seed=2)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.2  # independent draws of p(1-p) ~ 1/6 on average, twice
    gen = binarize(x, seed=np.random.default_rng(1))
    np.testing.assert_array_equal(gen, a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_dtype_and_shape_kept_values_binary(dtype):
    x = grey((6, 7, 8))
    if dtype == np.uint8:
        x = np.round(x * 255).astype(np.uint8)
    else:
        x = x.astype(dtype)
    out = binarize(x)
    assert out.dtype == np.dtype(dtype) and out.shape == x.shape
    assert set(np.unique(out)) <= {0, 1}


def test_mean_matches_the_probabilities():
    x = grey((400, 784), seed=3) ** 2  # mean 1/3
    out = binarize(x, seed=0)
    # the mean of 313,600 independent Bernoulli draws: standard error below 1e-3
    assert abs(out.mean() - x.mean()) < 4e-3
    # per pixel column too (400 draws each): the column means track the column probabilities
    assert np.corrcoef(out.mean(axis=0), x.mean(axis=0))[0, 1] > 0.5


def test_uint8_pixels_are_read_as_x_over_255():
    x = np.round(grey((300, 50), seed=4) * 255).astype(np.uint8)
    expect = (np.random.default_rng(5).random(x.shape) < x / 255.0).astype(np.uint8)
    np.testing.assert_array_equal(binarize(x, seed=5), expect)
    assert abs(binarize(x, seed=5).mean() - x.mean() / 255) < 0.01


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_zero_and_one_are_fixed_points(dtype):
    top = 255 if dtype == np.uint8 else 1
    x = np.array([[0, top] * 500], dtype=dtype)
    for seed in range(5):
        np.testing.assert_array_equal(binarize(x, seed=seed), np.array([[0, 1] * 500], dtype=dtype))


def test_empty_array_is_fine():
    assert binarize(np.zeros((0, 784), np.float32)).shape == (0, 784)


@pytest.mark.parametrize("bad, err, match", [
    (np.array([[0.5, 1.5]], np.float32), ValueError, r"\[0, 1\].*\[0.5, 1.5\].*divide by 255"),
    (np.array([[-0.25, 0.5]]), ValueError, r"\[0, 1\].*-0.25"),
    (np.array([[np.nan, 0.5]]), ValueError, "1 NaN"),
    (np.array([[0, 1]], np.int64), TypeError, "int64"),
    ([[0.5]], TypeError, "NumPy array.*list"),
])
def test_bad_input_is_named(bad, err, match):
    with pytest.raises(err, match=match):
        binarize(bad)


def test_float32_just_above_one_is_refused_and_printed_with_its_digits():
    with pytest.raises(ValueError, match="1.0000001"):
        binarize(np.array([np.float32(1) + np.finfo(np.float32).eps]))


@pytest.mark.parametrize("seed, err", [(None, TypeError), (1.5, TypeError), (-1, ValueError),
                                       (np.random.RandomState(0), TypeError)])
def test_bad_seed_is_named(seed, err):
    with pytest.raises(err, match="seed"):
        binarize(grey(), seed=seed)
