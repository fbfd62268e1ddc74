"""npvae.log_likelihood: the importance-weighted estimate of log p(x) (docs/derivation.md, Eq. (L1)).

What is checked:

* against the exact log p(x) of a model with a one-dimensional latent,
  computed by quadrature: the estimate converges to it as k grows, its mean
  starts at the ELBO (k = 1) and never falls as k grows;
* against the plain NumPy twin (npvae.evaluation.reference) to 1e-10 in
  float64, whatever the chunking;
* float32 against float64, and log-weights far below exp's range;
* the kernels against their twins (the tests named ``*kernel*``, which also
  run with NUMBA_DISABLE_JIT=1 in a subprocess);
* bad input, and the memory bound.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import npvae
from npvae.evaluation import importance as I
from npvae.evaluation import kernels as EK
from npvae.evaluation import reference as R

TESTS = Path(__file__).resolve().parent


def binary(n: int, p: int, seed: int = 0, dtype=np.float64) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, p)) < 0.35).astype(dtype)


# ---------------------------------------------------------------------------- the exact answer, by quadrature
PATTERNS = np.array([[int(b) for b in f"{i:04b}"] for i in range(16)], np.float64)  # every x in {0,1}^4
GRID = np.linspace(-12.0, 12.0, 20_001)


def trapezoid_log_weights() -> np.ndarray:
    w = np.full(GRID.size, GRID[1] - GRID[0])
    w[0] = w[-1] = w[0] / 2
    return np.log(w)


def exact_log_px_and_elbo(vae: npvae.VAE, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log p(x) = log integral p(x|z) N(z; 0, 1) dz and the ELBO, by the trapezoid rule on GRID (float64)."""
    out = R.decoder_forward(vae, GRID[:, None])  # (G, 4) logits
    lpx = np.stack([R.log_px(out, np.broadcast_to(xi, out.shape), "bernoulli") for xi in x])  # (n, G)
    log_prior = -0.5 * GRID**2 - 0.5 * math.log(2 * math.pi)
    exact = R.logsumexp(lpx + log_prior + trapezoid_log_weights(), axis=1)
    mu, logvar = (a.ravel().astype(np.float64) for a in vae.encode(x))
    sd = np.exp(0.5 * logvar)
    q = np.exp(-0.5 * ((GRID - mu[:, None]) / sd[:, None]) ** 2) / (sd[:, None] * math.sqrt(2 * math.pi))
    expected_log_px = np.sum(q * np.exp(trapezoid_log_weights()) * lpx, axis=1)
    kl = 0.5 * (mu**2 + sd**2 - 1 - logvar)
    return exact, expected_log_px - kl


@pytest.fixture(scope="module")
def one_d_model() -> npvae.VAE:
    """A 4-pixel Bernoulli VAE with a 1-D latent, trained on data from a 1-D latent model, then given a
    posterior that is off (mean shifted, too wide) so that the ELBO is clearly below log p(x)."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal(4000)
    a, c = np.array([3.0, -2.5, 1.5, 4.0]), np.array([0.5, 0.0, -1.0, 0.3])
    x = (rng.random((4000, 4)) < 1 / (1 + np.exp(-(z[:, None] * a + c)))).astype(np.float64)
    vae = npvae.VAE(4, (16,), 1, activation="tanh", dtype=np.float64, seed=0)
    npvae.train(vae, x, epochs=30, batch_size=64, fused=False)
    vae.params["encoder.head.b"][0] += 0.3   # mu
    vae.params["encoder.head.b"][1] += 0.7   # logvar: a wider q, a safe proposal
    return vae


def test_quadrature_is_a_normalised_distribution(one_d_model):
    """The reference itself: p(x) summed over the 16 binary images is 1, and the ELBO is below log p(x)."""
    exact, elbo = exact_log_px_and_elbo(one_d_model, PATTERNS)
    assert abs(np.exp(exact).sum() - 1) < 1e-9
    assert np.all(elbo < exact) and (exact - elbo).mean() > 0.2


def test_estimate_converges_to_the_exact_log_likelihood(one_d_model):
    exact, _ = exact_log_px_and_elbo(one_d_model, PATTERNS)
    errors = {}
    for k in (10, 100, 1000, 5000):
        est = np.mean([npvae.log_likelihood(one_d_model, PATTERNS, k=k, rng=seed) for seed in range(4)], axis=0)
        errors[k] = np.abs(est - exact)
    assert errors[5000].max() < 0.02, errors[5000]
    assert errors[5000].mean() < 0.005
    assert errors[5000].mean() < errors[100].mean() < errors[10].mean()


def test_mean_estimate_starts_at_the_elbo_and_never_falls_as_k_grows(one_d_model):
    """E[log p_k] is the ELBO at k = 1 and rises with k (Burda et al., Theorem 1). Averaged over 16 images
    and 20 seeds; each comparison allows 3 standard errors of the difference."""
    exact, elbo = exact_log_px_and_elbo(one_d_model, PATTERNS)
    ks = (1, 10, 100, 1000, 5000)
    runs = {k: np.array([npvae.log_likelihood(one_d_model, PATTERNS, k=k, rng=seed).mean() for seed in range(20)])
            for k in ks}
    mean = {k: runs[k].mean() for k in ks}
    se = {k: runs[k].std(ddof=1) / math.sqrt(runs[k].size) for k in ks}
    assert abs(mean[1] - elbo.mean()) < 4 * se[1], (mean[1], elbo.mean(), se[1])
    for k in ks:
        assert mean[k] > elbo.mean() - 3 * se[k], (k, mean[k], elbo.mean())
        assert mean[k] < exact.mean() + 3 * se[k] + 1e-3, (k, mean[k], exact.mean())  # a lower bound
    for lo, hi in itertools.pairwise(ks):
        assert mean[hi] > mean[lo] - 3 * math.hypot(se[lo], se[hi]), (lo, hi, mean)
    # and it really rises: from the ELBO most of the way to log p(x) by k = 100
    assert mean[10] - mean[1] > 3 * math.hypot(se[1], se[10])
    assert exact.mean() - mean[100] < 0.1 * (exact.mean() - elbo.mean())
    # the model's own ELBO estimate agrees with the quadrature ELBO
    rec, kl = one_d_model.evaluate_terms(np.repeat(PATTERNS, 500, axis=0), rng=0)
    assert abs(-(rec + kl) - elbo.mean()) < 0.03


# ---------------------------------------------------------------------------- the twin and the chunking
CASES = [
    {"likelihood": "bernoulli", "hidden": (7,), "activation": "relu", "k": 37},
    {"likelihood": "bernoulli", "hidden": (), "activation": "relu", "k": 5},
    {"likelihood": "bernoulli", "hidden": (9, 6), "activation": "tanh", "k": 64},
    {"likelihood": "gaussian", "hidden": (8,), "activation": "softplus", "k": 20},
    {"likelihood": "gaussian", "hidden": (5, 5), "activation": "leaky_relu", "k": 1},
]


def small_model(likelihood: str, hidden: tuple, activation: str, p: int = 300, latent: int = 3,
                dtype=np.float64, seed: int = 1, **_: object) -> npvae.VAE:
    vae = npvae.VAE(p, hidden, latent, likelihood=likelihood, activation=activation, dtype=dtype, seed=seed,
                    sigma_dec=0.7)
    rng = np.random.default_rng(seed + 100)
    for name, arr in vae.params.items():  # non-zero biases, so no term of the formula hides behind a 0
        if name.endswith(".b"):
            arr[...] = 0.3 * rng.standard_normal(arr.shape)
    return vae


def data_for(vae: npvae.VAE, n: int, seed: int = 2) -> np.ndarray:
    if vae.likelihood == "bernoulli":
        return binary(n, vae.input_dim, seed, vae.dtype)
    return np.random.default_rng(seed).standard_normal((n, vae.input_dim)).astype(vae.dtype)


@pytest.mark.parametrize("case", CASES, ids=[f"{c['likelihood']}-{c['hidden']}-{c['activation']}" for c in CASES])
def test_equals_the_numpy_twin_in_float64(case):
    vae = small_model(**case)
    x = data_for(vae, 7)
    k = case["k"]
    eps = np.random.default_rng(11).standard_normal((7, k, vae.latent_dim))
    expect = R.log_likelihood_reference(vae, x, eps)
    got = npvae.log_likelihood(vae, x, k=k, rng=11)
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-10)
    assert got.shape == (7,) and got.dtype == np.float64


@pytest.mark.parametrize("logits_bytes, batch_size", [(300 * 8 * 5, None), (300 * 8 * 64, None), (10**9, None),
                                                      (10**9, 3), (300 * 8 * 3, 1), (10**9, 100)])
def test_chunking_changes_nothing(monkeypatch, logits_bytes, batch_size):
    """Samples split over chunks (5 rows: 8 chunks of 5 samples, the last short), several examples per chunk,
    one chunk for everything, a given batch_size: the same numbers as the twin's one big draw."""
    vae = small_model("bernoulli", (6,), "relu")
    x = data_for(vae, 7)
    eps = np.random.default_rng(5).standard_normal((7, 37, vae.latent_dim))
    expect = R.log_likelihood_reference(vae, x, eps)
    monkeypatch.setattr(I, "LOGITS_BYTES", logits_bytes)
    got = npvae.log_likelihood(vae, x, k=37, batch_size=batch_size, rng=np.random.default_rng(5))
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-10)


def test_chunk_plan_bounds_rows_and_wastes_little():
    for n in (1, 2, 7, 1000, 10_000):
        for k in (1, 3, 100, 5000, 50_000):
            for max_rows in (1, 7, 5350, 10_700):
                b, kc = I.plan_chunks(n, k, None, max_rows)
                assert 1 <= b <= n and 1 <= kc <= k
                assert b * kc <= max(max_rows, 1), (n, k, max_rows, b, kc)
                if kc < k:
                    assert b == 1  # samples split only one example at a time: the noise order stays (n, k, K)
                n_chunks, k_chunks = -(-n // b), -(-k // kc)
                assert b * n_chunks - n < n_chunks and kc * k_chunks - k < k_chunks  # evened out
    # the default model at k = 5000: 2 images of 5000 samples per chunk in float32, one in float64
    assert I.plan_chunks(10_000, 5000, None, I.LOGITS_BYTES // (784 * 4)) == (2, 5000)
    assert I.plan_chunks(10_000, 5000, None, I.LOGITS_BYTES // (784 * 8)) == (1, 5000)
    assert I.plan_chunks(10, 5000, 4, 10_700) == (4, 2500)


def test_default_rng_is_seed_zero_and_results_repeat():
    vae = small_model("bernoulli", (6,), "relu")
    x = data_for(vae, 5)
    a = npvae.log_likelihood(vae, x, k=20)
    np.testing.assert_array_equal(a, npvae.log_likelihood(vae, x, k=20))
    np.testing.assert_array_equal(a, npvae.log_likelihood(vae, x, k=20, rng=0))
    assert np.all(a != npvae.log_likelihood(vae, x, k=20, rng=1))
    gen = np.random.default_rng(3)  # a Generator is drawn from, not reset
    assert np.all(npvae.log_likelihood(vae, x, k=20, rng=gen) != npvae.log_likelihood(vae, x, k=20, rng=gen))


def test_logvar_bounds_and_clamp_are_applied_as_in_training():
    """A head that puts logvar at 40 (above the clamp at 30), and a model with logvar_bounds: the estimate
    is the twin's with logvar clamped and clipped, as the model's sampler does."""
    vae = small_model("gaussian", (6,), "tanh", p=20)
    x = data_for(vae, 4)
    k_lat = vae.latent_dim
    vae.params["encoder.head.b"][k_lat:] = [40.0, -3.0, 0.5]
    eps = np.random.default_rng(0).standard_normal((4, 9, k_lat))
    # sigma = e^15 on the first coordinate: decoder means near 1e5 and log-weights near -1e11, so relative
    np.testing.assert_allclose(npvae.log_likelihood(vae, x, k=9), R.log_likelihood_reference(vae, x, eps),
                               rtol=1e-13)
    _, logvar = I.posterior(vae, x)
    assert np.all(logvar[:, 0] == 30.0)
    vae.logvar_bounds = (-2.0, 1.0)
    _, logvar = I.posterior(vae, x)
    assert logvar.min() >= -2.0 and logvar.max() <= 1.0 and np.any(logvar == -2.0) and np.any(logvar == 1.0)
    np.testing.assert_allclose(npvae.log_likelihood(vae, x, k=9), R.log_likelihood_reference(vae, x, eps),
                               rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------- precision and stability
def float32_twin(vae64: npvae.VAE) -> npvae.VAE:
    cfg = vae64.config()
    cfg.update(dtype="float32", hidden_dims=tuple(cfg["hidden_dims"]))
    vae32 = npvae.VAE(**cfg)
    for name, arr in vae64.params.items():
        vae32.params[name][...] = arr
    return vae32


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_float32_agrees_with_float64(likelihood):
    """The same parameters (float32-representable) and noise: float32 decoding costs < 1e-3 nats of ~-200."""
    vae64 = small_model(likelihood, (64,), "relu", p=784, latent=8)
    for arr in vae64.params.values():
        arr[...] = arr.astype(np.float32)
    vae32 = float32_twin(vae64)
    x = data_for(vae64, 6)
    ll64 = npvae.log_likelihood(vae64, x, k=300)
    ll32 = npvae.log_likelihood(vae32, x.astype(np.float32), k=300)
    assert ll32.dtype == np.float64
    assert np.all(np.abs(ll64) > 50)
    np.testing.assert_allclose(ll32, ll64, rtol=0, atol=1e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_weights_far_below_exp_range_stay_exact(dtype):
    """A Gaussian decoder with sigma_dec = 0.01 on 784 pixels: log-weights near -1e6, whose exp is 0 in any
    precision. The estimate is finite and equals the twin's (a naive log(mean(exp)) gives -inf)."""
    vae64 = small_model("gaussian", (32,), "tanh", p=784, latent=4)
    vae64.sigma_dec = 0.01
    for arr in vae64.params.values():
        arr[...] = arr.astype(np.float32)
    vae = vae64 if dtype == np.float64 else float32_twin(vae64)
    x = data_for(vae64, 3)
    got = npvae.log_likelihood(vae, x.astype(dtype), k=50)
    expect = R.log_likelihood_reference(vae64, x, np.random.default_rng(0).standard_normal((3, 50, 4)))
    assert np.all(np.isfinite(got)) and np.all(expect < -1e5)
    # float32 decoding with float64 sums is good to 3e-9 here; summing the 784 squared errors in float32
    # (a planted bug) was off by 1.1e-7
    np.testing.assert_allclose(got, expect, rtol=2e-8 if dtype == np.float32 else 1e-13)


# ---------------------------------------------------------------------------- kernels against their twins
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_draw_codes_kernel_matches_twin(dtype):
    rng = np.random.default_rng(0)
    b, kc, k = 3, 4, 5
    mu, logvar = rng.standard_normal((b, k)), 2 * rng.standard_normal((b, k))
    eps = rng.standard_normal((b * kc - 2, k))  # a short last chunk: rows < b * kc
    z = np.full((b * kc + 1, k), 7.0, dtype)
    lw = np.full(b * kc + 1, 7.0)
    EK.draw_codes(mu, np.exp(0.5 * logvar), 0.5 * logvar.sum(1), eps, kc, z, lw)
    ex = np.arange(eps.shape[0]) // kc
    z_ref, lpq_ref = R.draw_codes(mu[ex], logvar[ex], eps)
    np.testing.assert_allclose(z[:eps.shape[0]], z_ref.astype(dtype), rtol=1e-6 if dtype == np.float32 else 1e-14)
    np.testing.assert_allclose(lw[:eps.shape[0]], lpq_ref, rtol=1e-13, atol=1e-13)
    assert np.all(z[eps.shape[0]:] == 7.0) and np.all(lw[eps.shape[0]:] == 7.0)  # rows past `rows` untouched


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("p", [1, 130, 300])  # below, around and past the 128-column products
def test_add_log_px_kernel_matches_twin(dtype, likelihood, p):
    rng = np.random.default_rng(p)
    b, kc, rows = 3, 5, 13
    out = (rng.standard_normal((rows + 2, p)) * 4).astype(dtype)
    out[0, :3 if p >= 3 else 1] = [1e4, -1e4, 40.0][:3 if p >= 3 else 1]  # logits far past sigmoid's range
    x = (rng.random((b, p)) < 0.4).astype(dtype) if likelihood == "bernoulli" else rng.random((b, p)).astype(dtype)
    lw0 = rng.standard_normal(rows + 2)
    sigma_dec = 0.8
    kind = EK.BERNOULLI if likelihood == "bernoulli" else EK.GAUSSIAN
    const = -p * (math.log(sigma_dec) + 0.5 * math.log(2 * math.pi))
    for n_blocks in (1, 2, 5):
        lw = lw0.copy()
        EK.add_log_px(out, x, kc, rows, kind, 1 / (2 * sigma_dec**2), const, n_blocks, lw)
        expect = lw0[:rows] + R.log_px(out[:rows], x[np.arange(rows) // kc], likelihood, sigma_dec)
        tol = {"rtol": 2e-6, "atol": 1e-3} if dtype == np.float32 else {"rtol": 1e-13, "atol": 1e-9}
        np.testing.assert_allclose(lw[:rows], expect, **tol)
        np.testing.assert_array_equal(lw[rows:], lw0[rows:])
        assert np.all(np.isfinite(lw))


def test_lse_accumulate_kernel_matches_twin_in_any_chunks():
    rng = np.random.default_rng(0)
    n_ex, k = 4, 30
    lw = rng.standard_normal((n_ex, k)) * 50 - 1e5  # far below exp's range, and spread over 100s of nats
    lw[1] = -3.0  # all equal
    expect = R.logsumexp(lw, axis=1)
    for kc in (1, 7, 30):
        m, s = np.full(n_ex, -np.inf), np.zeros(n_ex)
        for s0 in range(0, k, kc):
            part = np.ascontiguousarray(lw[:, s0:s0 + kc]).ravel()
            EK.lse_accumulate(part, min(kc, k - s0), n_ex, m, s)
        np.testing.assert_allclose(m + np.log(s), expect, rtol=1e-14)


def test_kernel_tests_pass_without_jit():
    """The kernel tests above, with every kernel run as the plain Python it is written in."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__)),
         "-k", "kernel and not without_jit"],
        check=False, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NUMBA_DISABLE_JIT": "1", "HYPOTHESIS_PROFILE": "nojit"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout and "deselected" in proc.stdout


# ---------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def bern() -> npvae.VAE:
    return npvae.VAE(6, (5,), 2, seed=0)


def test_bad_input_is_named(bern):
    x = binary(4, 6, dtype=np.float32)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        npvae.log_likelihood(bern, x, k=0)
    with pytest.raises(TypeError, match="k must be an integer, got float 10.0"):
        npvae.log_likelihood(bern, x, k=10.0)
    with pytest.raises(TypeError, match="k must be an integer"):
        npvae.log_likelihood(bern, x, k=True)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        npvae.log_likelihood(bern, x, k=5, batch_size=0)
    with pytest.raises(ValueError, match=r"x must have 6 columns \(shape \(n, 6\)\), got shape \(4, 5\)"):
        npvae.log_likelihood(bern, x[:, :5], k=5)
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        npvae.log_likelihood(bern, bad, k=5)
    with pytest.raises(TypeError, match="vae must be an npvae.VAE, got dict"):
        npvae.log_likelihood({}, x, k=5)
    with pytest.raises(TypeError, match="rng must be a np.random.Generator or an int seed"):
        npvae.log_likelihood(bern, x, k=5, rng=np.random.RandomState(0))
    with pytest.raises(TypeError, match="x must be a NumPy array"):
        npvae.log_likelihood(bern, x.tolist(), k=5)


def test_grey_levels_with_a_bernoulli_decoder_are_refused_with_the_way_out(bern):
    grey = np.random.default_rng(0).random((4, 6)).astype(np.float32)
    with pytest.raises(ValueError, match=r"binary \(0 or 1\).*not the log of a normalised density.*"
                                         r"Eqs. \(B1\) and \(L1\).*npvae.datasets.binarize\(x, seed=0\)"):
        npvae.log_likelihood(bern, grey, k=5)
    with pytest.raises(ValueError, match="divide by 255"):
        npvae.log_likelihood(bern, grey * 255, k=5)
    # the way out works, for float and uint8 pixels alike
    ll = npvae.log_likelihood(bern, npvae.datasets.binarize(grey), k=5)
    u8 = npvae.datasets.binarize((grey * 255).astype(np.uint8))
    assert u8.dtype == np.uint8
    np.testing.assert_allclose(npvae.log_likelihood(bern, u8, k=5),
                               npvae.log_likelihood(bern, u8.astype(np.float32), k=5), rtol=0, atol=0)
    assert np.all(np.isfinite(ll))
    # a Gaussian decoder takes any real data, and raw integer pixels still get the usual hint
    gauss = npvae.VAE(6, (5,), 2, likelihood="gaussian", seed=0)
    assert np.all(np.isfinite(npvae.log_likelihood(gauss, grey * 3 - 1, k=5)))
    with pytest.raises(TypeError, match="x / 255.0"):
        npvae.log_likelihood(bern, (grey * 255).astype(np.uint8), k=5)


def test_a_diverged_model_is_named(bern):
    vae = npvae.VAE(6, (5,), 2, seed=0)
    vae.params["decoder.out.W"][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"vae.params\['decoder.out.W'\] contains NaN"):
        npvae.log_likelihood(vae, binary(4, 6, dtype=np.float32), k=5)


# ---------------------------------------------------------------------------- memory
def peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_chunk_not_by_n_or_k():
    """k = 5000 on the default 784-400-20 float32 model: the peak (the decoder's work buffers for one chunk
    included, since each model is fresh) stays below 200 MB, and does not grow with n or with k."""
    x = binary(40, 784, dtype=np.float32)

    def run(n: int, k: int) -> float:
        vae = npvae.VAE(784, (400,), 20, seed=0)
        return peak_mb(lambda: npvae.log_likelihood(vae, x[:n], k=k))

    npvae.log_likelihood(npvae.VAE(784, (400,), 20, seed=0), x[:1], k=3)  # compile outside the measurement
    small, more_n, more_k = run(2, 5000), run(12, 5000), run(1, 30_000)
    assert small < 200, small
    assert more_n < small * 1.1 + 2, (small, more_n)
    assert more_k < small * 1.1 + 2, (small, more_k)
    # what the whole MNIST test set at k = 5000 would hold: one chunk of 2 x 5000 rows of 784 logits
    b, kc = I.plan_chunks(10_000, 5000, None, I.LOGITS_BYTES // (784 * 4))
    assert b * kc * 784 * 4 <= I.LOGITS_BYTES
