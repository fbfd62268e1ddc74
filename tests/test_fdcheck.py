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


def test_noise_floor_makes_a_tiny_derivative_inconclusive_not_ok():
    """A large function value with a tiny true derivative: the rounding noise swamps it, so the check
    cannot decide and says so (it said ok before, issue #20); a real error still fails."""
    x = np.array([0.3, -0.2])

    def f(v):
        return 1e6 + 1e-9 * float(np.sum(v**2))

    true = 2e-9 * x
    res = npvae.gradcheck(f, x, true)
    assert not res.ok and res.inconclusive and res.status == "inconclusive", res
    assert str(res).startswith("gradcheck inconclusive: ") and "rounding noise" in str(res)
    wrong = npvae.gradcheck(f, x, true + 1e-2)
    assert not wrong.ok and not wrong.inconclusive and str(wrong).startswith("gradcheck FAILED"), wrong


def test_a_huge_constant_with_a_zero_gradient_is_inconclusive():
    """Issue #20: ``1e12 + sum(v)`` with a claimed gradient of 0 was reported ok with relative error 1.0."""
    x = np.random.default_rng(0).standard_normal(6)
    f = lambda v: 1e12 + v.sum()  # noqa: E731
    res = npvae.gradcheck(f, x, np.zeros(6))
    assert not res and res.inconclusive and "unresolved" in res.outcomes, res
    assert str(res).startswith("gradcheck inconclusive: ") and " ok" not in str(res)
    assert npvae.gradcheck(f, x, np.ones(6)).inconclusive  # the right one cannot be confirmed either
    assert npvae.gradcheck(f, x, np.full(6, 1e3)).status == "FAILED"  # far above the noise: a real failure


def test_a_resolved_derivative_within_the_noise_is_still_ok():
    """Derivative 5e-7 at |f| = 0.69 (docs/derivation.md's one-pixel model with beta = 0): rounding limits
    the agreement to ~1e-5, above rtol, but the derivative is far above the noise: ok, and str() says so."""
    x = np.random.default_rng(0).standard_normal(6)
    res = npvae.gradcheck(lambda v: 0.69 + 5e-7 * float(np.sum(v)), x, np.full(6, 5e-7))
    assert res.ok and "within noise" in res.outcomes and res.max_rel_error > res.rtol, res
    assert str(res).startswith("gradcheck ok (") and "within the rounding noise" in str(res)


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


# ------------------------------------------------ issue #20/#21: functions that change their input

def centred_square(v: np.ndarray) -> float:
    v -= v.mean()  # changes its argument in place
    return float(np.sum(v**2))


def test_numerical_gradient_gives_every_evaluation_a_fresh_copy():
    """One scratch copy reused across calls gave entries like -5.03e4 where the gradient is 0.18."""
    x = np.random.default_rng(0).standard_normal(6)
    before = x.copy()
    g = npvae.numerical_gradient(centred_square, x)
    np.testing.assert_allclose(g, 2 * (x - x.mean()), rtol=1e-7, atol=1e-8)
    np.testing.assert_array_equal(x, before)
    assert npvae.gradcheck(centred_square, x, 2 * (x - x.mean())).ok
    np.testing.assert_array_equal(x, before)


def test_check_vjp_never_hands_fun_the_callers_x():
    """``np.tanh(v, out=v)`` failed the check and overwrote the caller's x."""
    x = np.random.default_rng(1).standard_normal((3, 4))
    before = x.copy()

    def vjp(dy):
        return dy * (1 - np.tanh(before) ** 2)

    res = npvae.check_vjp(lambda v: np.tanh(v, out=v), vjp, x)
    np.testing.assert_array_equal(x, before)
    assert res.ok and res.max_rel_error < 1e-8, res


def test_gradcheck_reads_grad_before_f_runs():
    """A claimed gradient in a buffer that f overwrites (a model's grads, recomputed by each loss call)
    is copied first, so the check compares the gradient that was claimed."""
    x = np.random.default_rng(2).standard_normal(5)
    buffer = cubic_grad(x)

    def f(v):
        buffer[...] = cubic_grad(v)  # what a loss-and-gradients call does to its gradient buffer
        return cubic(v)

    res = npvae.gradcheck(f, x, buffer)
    assert res.ok and res.max_rel_error < 1e-8, res


# ------------------------------------------------ issue #21: what f returns, grad, options

@pytest.mark.parametrize("wrap", [lambda v: np.array([v]), lambda v: np.array([[v]]), np.float64])
def test_f_may_return_an_array_of_size_one(wrap):
    x = np.random.default_rng(3).standard_normal(5)
    f = lambda v: wrap(cubic(v))  # noqa: E731
    assert (res := npvae.gradcheck(f, x, cubic_grad(x))).ok and res.max_rel_error < 1e-8, res
    np.testing.assert_allclose(npvae.numerical_gradient(f, x), cubic_grad(x), rtol=1e-8)


def test_f_returning_a_vector_is_a_clear_type_error():
    x = np.ones(3)
    with pytest.raises(TypeError, match=r"f must return a scalar .*got array of shape \(3,\)"):
        npvae.gradcheck(lambda v: v**2, x, 2 * x)
    with pytest.raises(TypeError, match=r"f must return a scalar .*got array of shape \(3,\)"):
        npvae.numerical_gradient(lambda v: v**2, x)
    with pytest.raises(TypeError, match=r"f must return a scalar .*got NoneType"):
        npvae.gradcheck(lambda v: None, x, 2 * x)


def test_f_not_finite_near_x_is_a_clear_value_error():
    with pytest.raises(ValueError, match=r"f returned nan at x \+ h u"):
        npvae.gradcheck(lambda v: float("nan"), np.ones(3), np.ones(3))


def test_grad_may_be_any_array_like_of_the_right_shape():
    x = np.random.default_rng(4).standard_normal((2, 3))
    assert (res := npvae.gradcheck(cubic, x, cubic_grad(x).tolist())).ok, res
    with pytest.raises(ValueError, match=r"grad must have the shape of x \(2, 3\), got \(3,\)"):
        npvae.gradcheck(cubic, x, [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match=r"grad must be an array of real numbers"):
        npvae.gradcheck(cubic, x, [[1.0, 2.0], [3.0]])
    with pytest.raises(TypeError, match=r"grad must be an array of real numbers"):
        npvae.gradcheck(cubic, x, "abc")


@pytest.mark.parametrize("check", ["gradcheck", "check_vjp"])
def test_zero_directions_is_refused(check):
    x = np.ones(3)
    args = (cubic, x, cubic_grad(x)) if check == "gradcheck" else (np.tanh, lambda dy: dy, x)
    with pytest.raises(ValueError, match=r"n_directions must be >= 1, got 0"):
        getattr(npvae, check)(*args, n_directions=0)
    with pytest.raises(ValueError, match=r"h must be > 0, got 0"):
        getattr(npvae, check)(*args, h=0.0)


def test_an_empty_result_is_not_ok():
    res = npvae.GradcheckResult()
    assert not res and res.inconclusive and "no direction" in str(res)
