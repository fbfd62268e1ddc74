"""Every fused kernel agrees with its plain NumPy reference, in float32 and float64.

These tests also run with NUMBA_DISABLE_JIT=1 (see test_kernels_without_jit in
test_jit.py), so the kernels are checked both compiled and as plain Python.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npvae import kernels as K
from npvae import reference as R

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
ACTS = list(K.ACTIVATIONS)

dims = st.integers(min_value=1, max_value=40)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@given(n=dims, d=dims, seed=seeds)
def test_bias_act_forward_matches_reference(dtype, act, n, d, seed):
    rng = np.random.default_rng(seed)
    pre = (rng.standard_normal((n, d)) * 3).astype(dtype)
    b = rng.standard_normal(d).astype(dtype)
    out = pre.copy()
    K.bias_act_forward(out, b, K.ACTIVATIONS[act], dtype(0.01))
    np.testing.assert_allclose(out, R.bias_act_forward(pre, b, act), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@given(n=dims, d=dims, seed=seeds)
def test_act_backward_matches_reference(dtype, act, n, d, seed):
    rng = np.random.default_rng(seed)
    y = R.activate((rng.standard_normal((n, d)) * 3).astype(dtype), act)
    dy = rng.standard_normal((n, d)).astype(dtype)
    dpre, db = np.empty_like(dy), np.empty(d, dtype)
    K.act_backward(dy, y, dpre, db, K.ACTIVATIONS[act], dtype(0.01))
    ref_dpre, ref_db = R.act_backward(dy, y, act)
    np.testing.assert_allclose(dpre, ref_dpre, **TOL[dtype])
    np.testing.assert_allclose(db, ref_db, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * n * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@given(n=dims, d=dims, seed=seeds, data=st.data())
def test_act_backward_on_a_block_of_columns_does_those_alone(dtype, act, n, d, seed, data):
    """The fused step's split by columns: columns [c0, hi) as the reference does them, nothing else touched."""
    c0 = data.draw(st.integers(0, d))
    hi = data.draw(st.integers(c0, d))
    rng = np.random.default_rng(seed)
    y = R.activate((rng.standard_normal((n, d)) * 3).astype(dtype), act)
    dy = rng.standard_normal((n, d)).astype(dtype)
    dpre, db = np.full_like(dy, 7.0), np.full(d, 7.0, dtype)
    K.act_backward_cols(dy, y, dpre, db, K.ACTIVATIONS[act], dtype(0.01), c0, hi)
    ref_dpre, ref_db = R.act_backward(dy[:, c0:hi], y[:, c0:hi], act)
    np.testing.assert_allclose(dpre[:, c0:hi], ref_dpre, **TOL[dtype])
    np.testing.assert_allclose(db[c0:hi], ref_db, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * n * 10)
    assert np.all(np.delete(dpre, np.s_[c0:hi], axis=1) == 7.0) and np.all(np.delete(db, np.s_[c0:hi]) == 7.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_act_backward_may_run_in_place(dtype):
    rng = np.random.default_rng(0)
    y = R.activate(rng.standard_normal((5, 6)).astype(dtype), "tanh")
    dy = rng.standard_normal((5, 6)).astype(dtype)
    expect, _ = R.act_backward(dy, y, "tanh")
    K.act_backward(dy, y, dy, np.empty(6, dtype), K.TANH, dtype(0))
    np.testing.assert_allclose(dy, expect, **TOL[dtype])


def test_exp_nonpositive_is_accurate_over_its_range():
    x = -np.concatenate([np.linspace(0, 1, 1001), np.geomspace(1e-12, 700, 5000)])
    got = np.array([K._exp_nonpositive(float(v)) for v in x])
    np.testing.assert_allclose(got, np.exp(x), rtol=2e-15, atol=0)
    assert K._exp_nonpositive(-0.0) == 1.0
    assert 0.0 <= K._exp_nonpositive(-1e6) < 1e-300


def test_exp_nonpositive_f32_is_accurate_to_float32_rounding():
    x = -np.concatenate([np.linspace(0, 1, 1001), np.geomspace(1e-7, 86, 3000)]).astype(np.float32)
    got = np.array([K._exp_nonpositive_f32(v) for v in x], dtype=np.float32)
    np.testing.assert_allclose(got, np.exp(x.astype(np.float64)), rtol=1.5e-7, atol=0)
    assert K._exp_nonpositive_f32(np.float32(-0.0)) == 1.0
    assert 0.0 <= K._exp_nonpositive_f32(np.float32(-1e4)) < 2e-38


@pytest.mark.parametrize("dtype, rtol, limit", [(np.float64, 3e-15, 700.0), (np.float32, 2.5e-7, 86.0)])
def test_exp_any_is_accurate_for_both_signs(dtype, rtol, limit):
    mag = np.concatenate([np.linspace(0, 1, 1001), np.geomspace(1e-7, limit, 3000)])
    x = np.concatenate([-mag, mag]).astype(dtype)
    got = np.array([K._exp_any(v) for v in x], dtype=dtype)
    np.testing.assert_allclose(got, np.exp(x.astype(np.float64)), rtol=rtol, atol=0)
    assert K._exp_any(dtype(0.0)) == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
@given(b=st.integers(1, 12), p=st.integers(1, 600), n_samples=st.integers(1, 3), seed=seeds)
def test_bernoulli_nll_matches_reference(dtype, b, p, n_samples, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n_samples * b, p)) * 5).astype(dtype)
    x = rng.random((b, p)).astype(dtype)
    x[:, ::3] = np.round(x[:, ::3])  # binary and grey pixels
    scale = dtype(1 / (b * n_samples))
    dlogits, db = np.empty_like(logits), np.empty(p, dtype)
    total = K.bernoulli_nll(logits, x, dlogits, scale, db, np.empty(p, dtype))
    ref_total, ref_d, ref_db = R.bernoulli_nll(logits.astype(np.float64), x.astype(np.float64), float(scale))
    assert total == pytest.approx(ref_total, rel=1e-12 if dtype == np.float64 else 1e-6)
    np.testing.assert_allclose(dlogits, ref_d, **TOL[dtype])
    np.testing.assert_allclose(db, ref_db, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * b * n_samples)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bernoulli_nll_stays_finite_and_right_for_huge_logits(dtype):
    logits = np.array([[-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4]], dtype)
    x = np.array([[0.0, 1.0, 0.5, 0.3, 0.0, 1.0, 1.0]], dtype)
    d, db = np.empty_like(logits), np.empty(7, dtype)
    total = K.bernoulli_nll(logits, x, d, dtype(1), db, np.empty(7, dtype))
    # softplus(l) - x l, exactly for these values: l large => l (1 - x); l very negative => -x l
    lf, xf = logits.astype(np.float64), x.astype(np.float64)
    expect = np.sum(np.logaddexp(0, lf) - xf * lf)
    assert np.isfinite(total) and total == pytest.approx(expect, rel=1e-12)
    assert np.all(np.isfinite(d))
    np.testing.assert_allclose(d, R.sigmoid(lf) - xf, **(TOL[dtype] if dtype == np.float64 else dict(atol=1e-7)))


def test_bernoulli_nll_wide_rows_do_not_overflow_the_running_product():
    p = 5000  # 2**5000 would overflow float64 if the product were not taken in chunks
    logits = np.zeros((2, p))
    x = np.zeros((2, p))
    total = K.bernoulli_nll(logits, x, np.empty_like(logits), 1.0, np.empty(p), np.empty(p))
    assert total == pytest.approx(2 * p * np.log(2), rel=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@given(b=st.integers(1, 12), p=st.integers(1, 100), n_samples=st.integers(1, 3), seed=seeds)
def test_gaussian_sq_err_matches_reference(dtype, b, p, n_samples, seed):
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal((n_samples * b, p)).astype(dtype)
    x = rng.standard_normal((b, p)).astype(dtype)
    scale = dtype(0.37)
    d, db = np.empty_like(mean), np.empty(p, dtype)
    total = K.gaussian_sq_err(mean, x, d, scale, db)
    ref_total, ref_d, ref_db = R.gaussian_sq_err(mean, x, float(scale))
    assert total == pytest.approx(ref_total, rel=1e-12 if dtype == np.float64 else 1e-5)
    np.testing.assert_allclose(d, ref_d, **TOL[dtype])
    np.testing.assert_allclose(db, ref_db, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * b * n_samples)


@pytest.mark.parametrize("dtype", DTYPES)
@given(b=st.integers(1, 10), k=st.integers(1, 8), n_samples=st.integers(1, 4), seed=seeds)
def test_reparam_kl_forward_and_backward_match_reference(dtype, b, k, n_samples, seed):
    rng = np.random.default_rng(seed)
    ml = rng.standard_normal((b, 2 * k)).astype(dtype)
    eps = rng.standard_normal((n_samples, b, k)).astype(dtype)
    z, sigma = np.empty((n_samples * b, k), dtype), np.empty((b, k), dtype)
    kl = K.reparam_kl_forward(ml, eps, z, sigma)
    ref_kl, ref_z, ref_sigma = R.reparam_kl_forward(ml, eps)
    # Within rtol of the sum of the terms' magnitudes (the condition of the sum): each term
    # mu^2 + sigma^2 - 1 - logvar is rounded relative to mu^2 + sigma^2 + 1 + |logvar|, and cancels to
    # about logvar^2 / 2 near logvar = 0. The former abs=1e-6 was a million times the float64 rtol on a
    # KL near 1, so it, not rel=1e-12, was the test. Measured over 20,000 random draws: at most 3.1e-16
    # (float64) and 1.6e-7 (float32) of the magnitude.
    lv = np.minimum(ml[:, k:].astype(np.float64), K.LOGVAR_MAX)
    magnitude = 0.5 * float(np.sum(ml[:, :k].astype(np.float64) ** 2 + np.exp(lv) + 1 + np.abs(lv)))
    rtol = TOL[dtype]["rtol"] if dtype == np.float64 else 1e-5
    assert abs(kl - ref_kl) <= rtol * magnitude, (kl, ref_kl, magnitude)
    np.testing.assert_allclose(z, ref_z, **TOL[dtype])
    np.testing.assert_allclose(sigma, ref_sigma, **TOL[dtype])

    dz = rng.standard_normal((n_samples * b, k)).astype(dtype)
    dml, db = np.empty_like(ml), np.empty(2 * k, dtype)
    kl_scale = dtype(0.3)
    K.reparam_kl_backward(dz, eps, ml, sigma, dml, db, kl_scale)
    ref_dml, ref_db = R.reparam_kl_backward(dz, eps, ml, sigma, float(kl_scale))
    np.testing.assert_allclose(dml, ref_dml, **TOL[dtype])
    np.testing.assert_allclose(db, ref_db, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * b * 10)


#: ``sum(g**2)`` from the optimizer kernels. Each 512-element chunk is summed in
#: the arrays' precision; float32 keeps the 1e-6 the float64 accumulator met
#: (measured worst over 3,000 random arrays: 1.2e-7).
SQ_RTOL = {np.float32: 1e-6, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=st.integers(1, 2000), t=st.integers(1, 50), seed=seeds)
def test_adam_update_matches_reference(dtype, n, t, seed):
    rng = np.random.default_rng(seed)
    p, g, m = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(n)).astype(dtype)
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
    ref_p, ref_m, ref_v = R.adam_update(p.astype(np.float64), g.astype(np.float64), m.astype(np.float64),
                                        v.astype(np.float64), t, lr, b1, b2, eps)
    p_before = p.astype(np.float64)
    f = dtype
    sq = K.adam_update(p, g, m, v, f(lr / (1 - b1**t)), f(b1), f(1 - b1), f(b2), f(1 - b2), f(1 / (1 - b2**t)), f(eps))
    assert sq == pytest.approx(float(np.sum(g.astype(np.float64) ** 2)), rel=SQ_RTOL[dtype])
    np.testing.assert_allclose(m, ref_m, **TOL[dtype])
    np.testing.assert_allclose(v, ref_v, **TOL[dtype])
    if dtype == np.float64:  # rounded relative to max(|p|, |update|): the former atol=1e-9 was 1000 times
        # rtol for |p| ~ 1 (an update ~1e-3 could be 1e-6 wrong); measured over 3,000 draws: 6.9e-16
        bound = TOL[dtype]["rtol"] * np.maximum(np.abs(p_before), np.abs(ref_p - p_before))
        assert np.all(np.abs(p - ref_p) <= bound), np.max(np.abs(p - ref_p) / bound)
    else:
        np.testing.assert_allclose(p, ref_p, rtol=TOL[dtype]["rtol"], atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=st.integers(1, 2000), seed=seeds)
def test_sgd_momentum_update_matches_reference(dtype, n, seed):
    rng = np.random.default_rng(seed)
    p, g, buf = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    ref_p, ref_buf = R.sgd_momentum_update(p, g, buf, 0.05, 0.9)
    sq = K.sgd_momentum_update(p, g, buf, dtype(0.05), dtype(0.9))
    assert sq == pytest.approx(float(np.sum(g.astype(np.float64) ** 2)), rel=SQ_RTOL[dtype])
    np.testing.assert_allclose(buf, ref_buf, **TOL[dtype])
    np.testing.assert_allclose(p, ref_p, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_and_sum_squares(dtype):
    a = np.arange(1, 8, dtype=dtype)
    assert K.sum_squares(a) == 140.0  # exact: small integers (approx's default rel=1e-6 hid an error of 1e-4)
    K.scale_inplace(a, dtype(0.5))
    np.testing.assert_array_equal(a, np.arange(1, 8) * 0.5)  # exact: halving


def test_kernels_keep_nan_visible():
    """fastmath without nnan/ninf: a NaN input must propagate, not be optimized away."""
    logits = np.array([[0.5, np.nan]])
    total = K.bernoulli_nll(logits, np.array([[0.5, 0.5]]), np.empty_like(logits), 1.0, np.empty(2), np.empty(2))
    assert np.isnan(total)
    p = np.zeros(3)
    sq = K.adam_update(p, np.array([1.0, np.inf, 0.0]), np.zeros(3), np.zeros(3),
                       1e-3, 0.9, 0.1, 0.999, 0.001, 1000.0, 1e-8)
    assert not np.isfinite(sq)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pixels", [False, True], ids=["float", "uint8"])
@given(n=st.integers(1, 60), d=dims, batch=st.integers(1, 60), seed=seeds)
def test_gather_rows_matches_reference(dtype, pixels, n, d, batch, seed):
    """The minibatch gather is exact: the same rows, scaled with one rounding, as take-then-multiply."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 256, (n, d)).astype(np.uint8) if pixels else rng.random((n, d)).astype(dtype)
    scale = 1 / 255 if pixels else 1.0
    idx = rng.integers(0, n, batch)
    out = np.full((batch, d), np.nan, dtype)
    K.gather_rows(src, idx, dtype(scale), out)
    np.testing.assert_array_equal(out, R.gather_rows(src, idx, scale, np.dtype(dtype)))


def test_optimizer_gradient_norm_stays_finite_when_float32_squares_overflow():
    """Gradients near 1e20 are finite, but their squares overflow float32: the chunk is summed again in float64."""
    with np.errstate(over="ignore", invalid="ignore"):  # the float32 squares overflow on purpose
        f = np.float32
        n = 3 * 512 + 7  # whole chunks and a tail
        g = np.full(n, 1e20, f)
        g[5] = g[-1] = f(3e19)
        expected = float(np.sum(g.astype(np.float64) ** 2))
        p, m, v, buf = (np.zeros(n, f) for _ in range(4))
        sq = K.adam_update(p, g, m, v, f(1e-3), f(0.9), f(0.1), f(0.999), f(0.001), f(1.0), f(1e-8))
        assert sq == pytest.approx(expected, rel=1e-12)
        assert K.sgd_momentum_update(p, g, buf, f(0.1), f(0.9)) == pytest.approx(expected, rel=1e-12)
        g[700] = f(np.inf)
        assert not np.isfinite(K.adam_update(p, g, m, v, f(1e-3), f(0.9), f(0.1), f(0.999), f(0.001), f(1.0), f(1e-8)))
        g[700] = f(np.nan)
        assert np.isnan(K.sgd_momentum_update(p, g, buf, f(0.1), f(0.9)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_moments_never_go_denormal(dtype):
    """A parameter whose gradient has become 0 must not leave its moments in the (slow) denormal range."""
    tiny = np.finfo(dtype).tiny
    n = 8
    p, g = np.ones(n, dtype), np.zeros(n, dtype)
    m = np.full(n, tiny * 4, dtype)  # decays by beta1 per step into the denormal range
    v = np.full(n, tiny * 4, dtype)
    buf = np.full(n, tiny * 4, dtype)
    f = dtype
    for _ in range(40):
        K.adam_update(p, g, m, v, f(1e-3), f(0.9), f(0.1), f(0.999), f(0.001), f(1.0), f(1e-8))
        K.sgd_momentum_update(p, g, buf, f(0.1), f(0.9))
        for a in (m, v, buf):
            assert np.all((a == 0) | (np.abs(a) >= tiny)), a
    assert np.all(m == 0) and np.all(buf == 0)
    assert np.all(p > 0.99)
