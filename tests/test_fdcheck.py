"""The finite-difference checker itself: it must pass right gradients and catch wrong ones."""

from __future__ import annotations

import numpy as np
import pytest

import npvae


def cubic(x: np.ndarray) -> float:
    return float(np.sum(x**3) + np.sum(np.sin(x)))


def cubic_grad(x: np.ndarray) -> np.ndarray:
    return 3 * x**2 + np.cos(x)


def test_gradcheck_passes_the_right_gradient():
    x = np.random.default_rng(0).standard_normal((4, 3))
    res = npvae.gradcheck(cubic, x, cubic_grad(x))
    assert res.ok and res.max_rel_error < 1e-8, res


@pytest.mark.parametrize("error", [1e-4, 1e-2])
def test_gradcheck_catches_a_slightly_wrong_gradient(error):
    x = np.random.default_rng(0).standard_normal((4, 3))
    g = cubic_grad(x)
    g[2, 1] *= 1 + error
    res = npvae.gradcheck(cubic, x, g, n_directions=5)
    assert not res.ok and res.max_rel_error > error / 100, res
    assert "FAILED" in str(res)


def test_gradcheck_catches_a_swapped_entry():
    x = np.random.default_rng(1).standard_normal(6)
    g = cubic_grad(x)
    g[[0, 1]] = g[[1, 0]]
    assert not npvae.gradcheck(cubic, x, g)


def test_check_vjp_on_a_matrix_function():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((3, 5))
    x = rng.standard_normal((4, 3))

    def fun(v):
        return np.tanh(v @ A)

    def vjp(dy):
        return (dy * (1 - np.tanh(x @ A) ** 2)) @ A.T

    assert (res := npvae.check_vjp(fun, vjp, x)).max_rel_error < 1e-8, res
    assert not npvae.check_vjp(fun, lambda dy: vjp(dy) * 1.001, x)
    assert not npvae.check_vjp(fun, lambda dy: dy @ A.T, x)  # forgot the activation's derivative


def test_numerical_gradient_matches_analytic():
    x = np.random.default_rng(3).standard_normal(5)
    np.testing.assert_allclose(npvae.numerical_gradient(cubic, x), cubic_grad(x), rtol=1e-8)


def test_noise_floor_only_excuses_derivatives_at_rounding_level():
    """A large function value with a tiny true derivative: the floor applies; a real error does not hide."""
    x = np.array([0.3, -0.2])

    def f(v):
        return 1e6 + 1e-9 * float(np.sum(v**2))

    true = 2e-9 * x
    assert npvae.gradcheck(f, x, true).ok
    assert not npvae.gradcheck(f, x, true + 1e-2).ok


def test_a_correct_gradient_with_strong_curvature_still_passes():
    """A small derivative next to a large third derivative: plain central differences
    miss it by more than rtol; the extrapolated difference does not (a case hypothesis found in the VAE)."""
    x = np.zeros(1)

    def f(v):
        return 0.5 + 1e-2 * float(v[0]) + 1e4 * float(v[0]) ** 3

    grad = np.array([1e-2])
    u = np.random.default_rng(5).standard_normal(1)  # the direction gradcheck draws with this rng
    h = 1e-5
    plain = (f(x + h * u) - f(x - h * u)) / (2 * h)
    assert abs(plain - 1e-2 * u[0]) / abs(1e-2 * u[0]) > 1e-5  # what the check used to compare with
    res = npvae.gradcheck(f, x, grad, rng=np.random.default_rng(5), n_directions=1)
    assert res.ok and res.max_rel_error < 1e-8, res
    assert not npvae.gradcheck(f, x, grad * (1 + 1e-5), rng=np.random.default_rng(5), n_directions=1).ok


def test_gradcheck_refuses_float32():
    with pytest.raises(TypeError, match="float64"):
        npvae.gradcheck(cubic, np.ones(3, np.float32), np.ones(3, np.float32))
