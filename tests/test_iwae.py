"""objective="iwae": the importance-weighted bound with k = n_samples (docs/derivation.md, Eqs. (IW1), (IW2)).

What is proven here:

* each new kernel against its NumPy twin, float32 and float64;
* the loss value against a plain NumPy formula written here from the
  definition (log-densities from z and mu, not from eps; no npvae code);
* the whole loss's gradient, every entry of every parameter, in float64 to
  1e-6 relative, for both likelihoods, dense and gated layers, k = 1..5;
* k = 1: the decoder's gradients are the ELBO's, and the loss is the ELBO
  with the KL replaced by its one-sample estimate, whose mean over many
  draws is the closed-form KL;
* for a one-dimensional latent, -L_k falls with k towards -log p(x)
  computed by quadrature;
* float32 stays finite where the naive log-mean-exp underflows;
* beta is refused, loss_terms/evaluate return (loss, 0.0), training takes
  the layer path without allocating per minibatch, save/load round-trips.
"""

from __future__ import annotations

import numpy as np
import pytest
from _entry_check import entry_gradcheck
from hypothesis import given
from hypothesis import strategies as st

import npvae
from npvae import kernels as K
from npvae import reference as R

RTOL = 1e-6
DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
seeds = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------------------- kernels against their twins
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bounds", [(-np.inf, K.LOGVAR_MAX), (-6.0, 2.0)])
@given(b=st.integers(1, 10), k=st.integers(1, 6), n=st.integers(1, 5), seed=seeds)
def test_latent_kernels_match_reference(dtype, bounds, b, k, n, seed):
    rng = np.random.default_rng(seed)
    lo, hi = dtype(bounds[0]), dtype(bounds[1])
    ml = (rng.standard_normal((b, 2 * k)) * 3).astype(dtype)
    eps = rng.standard_normal((n, b, k)).astype(dtype)
    z, sigma, logr = np.empty((n * b, k), dtype), np.empty((b, k), dtype), np.empty(n * b)
    K.iwae_latent_forward(ml, eps, z, sigma, logr, lo, hi)
    rz, rsigma, rlogr = R.iwae_latent_forward(ml, eps, lo, hi)
    np.testing.assert_allclose(z, rz, **TOL[dtype])
    np.testing.assert_allclose(sigma, rsigma, **TOL[dtype])
    # logr adds squares of z: one rounding of z in float32 moves it by about 1e-7 z^2 per coordinate
    atol = (2e-6 * (1 + float(np.max(rz.astype(np.float64) ** 2))) if dtype == np.float32 else 1e-12) * k
    np.testing.assert_allclose(logr, rlogr, rtol=TOL[dtype]["rtol"], atol=atol)
    dz = rng.standard_normal((n * b, k)).astype(dtype)
    wt = rng.random(n * b)
    dml, db = np.empty_like(ml), np.empty(2 * k, dtype)
    K.iwae_latent_backward(dz, eps, ml, sigma, z, wt, dml, db, dtype(1 / b), lo, hi)
    rdml, rdb = R.iwae_latent_backward(dz, eps, ml, sigma, z, wt, dtype(1 / b), lo, hi)
    np.testing.assert_allclose(dml, rdml, **TOL[dtype])
    np.testing.assert_allclose(db, rdb, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * b * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@given(rows=st.integers(1, 12), p=st.integers(1, 300), seed=seeds)
def test_row_likelihood_kernels_match_reference(dtype, rows, p, seed):
    rng = np.random.default_rng(seed)
    bx = rows if rows % 2 else max(1, rows // 2)
    while rows % bx:
        bx -= 1
    logits = (rng.standard_normal((rows, p)) * 5).astype(dtype)
    x = rng.random((bx, p)).astype(dtype)
    d, nll = np.empty_like(logits), np.empty(rows)
    K.bernoulli_nll_rows(logits, x, d, nll, np.empty(p, dtype))
    rnll, rd = R.bernoulli_nll_rows(logits, x)
    np.testing.assert_allclose(nll, rnll, rtol=TOL[dtype]["rtol"] * 10)
    np.testing.assert_allclose(d, rd, **TOL[dtype])
    K.gaussian_sq_err_rows(logits, x, d, nll)
    rsq, rd = R.gaussian_sq_err_rows(logits, x)
    np.testing.assert_allclose(nll, rsq, rtol=TOL[dtype]["rtol"])
    np.testing.assert_allclose(d, rd, **TOL[dtype])
    wt = rng.random(rows)
    db = np.empty(p, dtype)
    K.scale_rows_colsum(d, wt, 0.3, db)
    rd2, rdb = R.scale_rows_colsum(rd, wt, 0.3)
    np.testing.assert_allclose(d, rd2, **TOL[dtype])
    np.testing.assert_allclose(db, rdb, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * rows * 10)


@given(b=st.integers(1, 8), n=st.integers(1, 6), spread=st.sampled_from([1.0, 50.0, 1e4]), seed=seeds)
def test_iwae_weights_match_reference(b, n, spread, seed):
    rng = np.random.default_rng(seed)
    logr, nll = rng.standard_normal((2, n * b)) * spread
    nll = np.abs(nll) * 10
    wt = np.empty(n * b)
    total = K.iwae_weights(logr, nll, 0.7, 3.0, n, wt)
    rtotal, rwt = R.iwae_weights(logr, nll, 0.7, 3.0, n)
    assert total == pytest.approx(rtotal, rel=1e-12, abs=1e-9)
    np.testing.assert_allclose(wt, rwt, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(wt.reshape(n, b).sum(axis=0), 1.0, rtol=1e-14)
    assert np.all(np.isfinite(wt)) and np.isfinite(total)


# ---------------------------------------------------------------------------- the formula, written from the definition
def plain_forward(vae, h, side):
    """The hidden layers of one side (encoder or decoder), plain NumPy: tanh or softplus dense, or gated."""
    P = vae.params
    for i in range(len(vae.hidden_dims)):
        name = f"{side}.{i}"
        pre = h @ P[f"{name}.W"] + P[f"{name}.b"]
        if vae.layer == "gated":
            h = pre / (1 + np.exp(-(h @ P[f"{name}.V"] + P[f"{name}.c"])))
        elif vae.activation == "tanh":
            h = np.tanh(pre)
        else:
            assert vae.activation == "softplus"
            h = np.log(1 + np.exp(pre))
    return h


def log_normal(v, mean, sd):
    return -0.5 * ((v - mean) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)


def log_px_given_z(vae, x, out):
    if vae.likelihood == "bernoulli":
        prob = 1 / (1 + np.exp(-out))
        return np.sum(x * np.log(prob) + (1 - x) * np.log(1 - prob), axis=-1)
    return np.sum(log_normal(x, out, vae.sigma_dec), axis=-1)


def plain_iwae_loss(vae, x, eps):
    """-mean_i log (1/k) sum_l p(x_i|z_il) p(z_il) / q(z_il|x_i), z_il = mu_i + sd_i eps_il, in plain NumPy."""
    P, K_ = vae.params, vae.latent_dim
    ml = plain_forward(vae, x, "encoder") @ P["encoder.head.W"] + P["encoder.head.b"]
    mu, logvar = ml[:, :K_], ml[:, K_:]
    if vae.logvar_bounds is not None:
        logvar = np.clip(logvar, *vae.logvar_bounds)
    sd = np.sqrt(np.exp(logvar))
    z = mu + sd * eps  # (k, B, K)
    out = plain_forward(vae, z.reshape(-1, K_), "decoder") @ P["decoder.out.W"] + P["decoder.out.b"]
    out = out.reshape(eps.shape[0], x.shape[0], -1)
    log_w = (log_px_given_z(vae, x, out) + np.sum(log_normal(z, 0.0, 1.0), axis=-1)
             - np.sum(log_normal(z, mu, sd), axis=-1))  # (k, B)
    top = log_w.max(axis=0)
    return float(-np.mean(top + np.log(np.mean(np.exp(log_w - top), axis=0))))


def iwae_model(likelihood="bernoulli", *, layer="dense", activation="tanh", k=3, sigma_dec=0.7, bounds=None, seed=0):
    """A 5-(4, 3)-2 float64 model with nonzero biases, a batch of 3, fixed noise (k, 3, 2)."""
    kw = {} if layer == "gated" else {"activation": activation}
    vae = npvae.VAE(5, (4, 3), 2, likelihood=likelihood, n_samples=k, seed=seed, dtype=np.float64,
                    sigma_dec=sigma_dec, layer=layer, logvar_bounds=bounds, objective="iwae", **kw)
    rng = np.random.default_rng(seed + 1)
    for name, p in vae.params.items():
        if name.endswith(".b") or name.endswith(".c"):
            p[...] = rng.uniform(0.05, 0.3, p.shape) * rng.choice([-1, 1], p.shape)
    return vae, rng.random((3, 5)), rng.standard_normal((k, 3, 2))


VALUE_CASES = [("bernoulli", "dense", "tanh", 5, None), ("gaussian", "dense", "softplus", 3, None),
               ("bernoulli", "gated", None, 4, (-1.0, 0.5)), ("gaussian", "gated", None, 1, None),
               ("bernoulli", "dense", "tanh", 1, None)]


@pytest.mark.parametrize("likelihood,layer,activation,k,bounds", VALUE_CASES)
def test_iwae_loss_matches_the_plain_formula(likelihood, layer, activation, k, bounds):
    vae, x, eps = iwae_model(likelihood, layer=layer, activation=activation, k=k, bounds=bounds)
    want = plain_iwae_loss(vae, x, eps)
    loss, _ = vae.loss_and_grads(x, eps)
    assert loss == pytest.approx(want, rel=1e-12)
    assert vae.loss_terms(x, eps) == (pytest.approx(want, rel=1e-12), 0.0)


GRAD_CASES = [("bernoulli", "dense", "tanh", 1), ("bernoulli", "dense", "softplus", 4),
              ("gaussian", "dense", "tanh", 3), ("bernoulli", "gated", None, 5), ("gaussian", "gated", None, 2)]


@pytest.mark.parametrize("likelihood,layer,activation,k", GRAD_CASES)
def test_iwae_full_loss_gradient_every_entry(likelihood, layer, activation, k):
    vae, x, eps = iwae_model(likelihood, layer=layer, activation=activation, k=k)
    worst, n = entry_gradcheck(vae, x, eps)
    assert n == vae.n_params and worst <= RTOL


def test_weights_are_not_uniform_in_the_gradient_checks():
    """The checks above would not see a gradient that weights the samples equally unless the weights differ."""
    vae, x, eps = iwae_model("bernoulli", layer="gated", k=5)
    vae.loss_and_grads(x, eps)
    wt = vae._iw.get(15)["wt"].reshape(5, 3)
    assert np.all(wt.max(axis=0) > 1.5 * wt.min(axis=0))


# ---------------------------------------------------------------------------- k = 1 is the ELBO
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_k1_is_the_elbo_with_a_sampled_kl(likelihood):
    """With k = 1, log w = log p(x|z) - (log q(z|x) - log p(z)): the ELBO's reconstruction term, exactly, and
    a one-sample estimate of its KL. So the decoder's gradients equal the ELBO's (beta = 1), and the loss
    minus the ELBO is the sampled KL minus the closed-form one, whose mean over many draws is 0."""
    vae, x, eps = iwae_model(likelihood, k=1)
    elbo = npvae.VAE(**{**vae.config(), "objective": "elbo"})
    for name in vae.params:
        elbo.params[name][...] = vae.params[name]
    l_iw, g_iw = vae.loss_and_grads(x, eps)
    l_el, g_el = elbo.loss_and_grads(x, eps)
    for name in g_el:
        if name.startswith("decoder."):
            np.testing.assert_allclose(g_iw[name], g_el[name], rtol=1e-12, atol=1e-15)
    rec, kl = elbo.loss_terms(x, eps)
    mu, logvar = elbo.encode(x)
    z = mu + np.exp(logvar / 2) * eps[0]
    sampled_kl = np.sum(log_normal(z, mu, np.exp(logvar / 2)) - log_normal(z, 0.0, 1.0), axis=1).mean()
    assert l_iw == pytest.approx(rec + sampled_kl, rel=1e-12)
    assert l_el == pytest.approx(rec + kl, rel=1e-12)

    # in expectation: one example, 20,000 draws as 20,000 rows
    n = 20_000
    xs = np.repeat(x[:1], n, axis=0)
    draws = np.random.default_rng(7).standard_normal((1, n, 2))
    diff_rows = []
    for model in (vae, elbo):
        diff_rows.append(model.loss_terms(xs, draws))
    (iw, _), (rec_n, kl_n) = diff_rows
    mu1, lv1 = elbo.encode(x[:1])
    zs = mu1 + np.exp(lv1 / 2) * draws[0]
    per_row = np.sum(log_normal(zs, mu1, np.exp(lv1 / 2)) - log_normal(zs, 0.0, 1.0), axis=1) - kl_n
    se = per_row.std() / np.sqrt(n)
    assert iw - (rec_n + kl_n) == pytest.approx(per_row.mean(), rel=1e-9, abs=1e-12)
    assert abs(iw - (rec_n + kl_n)) < 4 * se, (iw, rec_n + kl_n, se)


def test_bound_tightens_with_k_towards_log_px_by_quadrature():
    """One latent dimension: log p(x) = log of the integral of p(x|z) N(z; 0, 1) over z, by the trapezoid rule
    on [-12, 12]. -L_k (each averaged over 400 independent draws) must fall with k and stay above -log p(x)
    (up to its Monte Carlo error), and -L_1000 must be within 0.01 nats of it."""
    vae = npvae.VAE(6, (5,), 1, activation="tanh", dtype=np.float64, seed=3, objective="iwae")
    x = (np.random.default_rng(0).random((1, 6)) < 0.5).astype(np.float64)
    grid = np.linspace(-12, 12, 48_001)
    prob = vae.decode(grid[:, None])
    log_joint = np.sum(x * np.log(prob) + (1 - x) * np.log(1 - prob), axis=1) + log_normal(grid, 0.0, 1.0)
    top = log_joint.max()
    neg_log_px = -(top + np.log(np.trapezoid(np.exp(log_joint - top), grid)))
    rows = 400
    xs = np.repeat(x, rows, axis=0)
    losses = []
    for k in (1, 10, 1000):
        vae.n_samples = k
        losses.append(vae.loss_terms(xs, np.random.default_rng(k).standard_normal((k, rows, 1)))[0])
    assert losses[0] > losses[1] > losses[2] > neg_log_px - 0.01, (losses, neg_log_px)
    assert losses[0] - neg_log_px > 0.1  # the test means something: the ELBO is loose for this model
    assert losses[2] - neg_log_px < 0.01, (losses, neg_log_px)


# ---------------------------------------------------------------------------- float32
def test_float32_is_stable_where_the_naive_formula_underflows():
    """sigma_dec = 0.01 makes each log w about -1e4: exp underflows in either precision, log-sum-exp does not."""
    cfg = dict(input_dim=20, hidden_dims=(8,), latent_dim=3, likelihood="gaussian", sigma_dec=0.01,
               activation="tanh", n_samples=4, objective="iwae", seed=0)
    v32, v64 = npvae.VAE(**cfg, dtype=np.float32), npvae.VAE(**cfg, dtype=np.float64)
    rng = np.random.default_rng(0)
    x, eps = rng.random((6, 20)), rng.standard_normal((4, 6, 3))
    l32, g32 = v32.loss_and_grads(x.astype(np.float32), eps.astype(np.float32))
    l64, g64 = v64.loss_and_grads(x, eps)
    logw = v64._iw.get(24)
    assert l64 > 1e3 and np.all(np.exp(-l64 * 0.5) == 0.0)  # a naive mean of exp(log w) would be log(0)
    assert np.isfinite(l32) and l32 == pytest.approx(l64, rel=1e-5)
    assert logw["wt"].reshape(4, 6).sum(axis=0) == pytest.approx(1.0, rel=1e-14)
    for name in g64:
        assert np.all(np.isfinite(g32[name]))
        np.testing.assert_allclose(g32[name], g64[name], rtol=2e-3, atol=2e-5 * np.abs(g64[name]).max())


# ---------------------------------------------------------------------------- the API
def test_beta_is_refused_and_the_terms_are_documented():
    with pytest.raises(ValueError, match=r"beta must be 1 with objective='iwae' .* got 2"):
        npvae.VAE(6, (5,), 2, objective="iwae", beta=2.0)
    vae = npvae.VAE(6, (5,), 2, objective="iwae", n_samples=3, seed=0, dtype=np.float64)
    with pytest.raises(ValueError, match="beta must be 1 with objective='iwae'"):
        vae.beta = 0.5
    vae.beta = 1.0
    assert vae.beta == 1.0
    with pytest.raises(ValueError, match=r"objective must be one of 'elbo', 'iwae'; got 'vimco'"):
        npvae.VAE(6, (5,), 2, objective="vimco")
    x = np.random.default_rng(0).random((50, 6))
    rec, kl = vae.evaluate_terms(x, batch_size=20)
    assert kl == 0.0 and vae.evaluate(x, batch_size=20) == rec
    eps = np.random.default_rng(1).standard_normal((3, 50, 2))
    assert vae.loss_terms(x, eps) == (vae.loss_and_grads(x, eps)[0], 0.0)
    with pytest.raises(ValueError, match=r"eps must have shape \(3, 50, 2\)"):
        vae.loss_terms(x, eps[0])


def test_training_takes_the_layer_path_allocates_nothing_per_step_and_lowers_the_loss():
    import tracemalloc

    rng = np.random.default_rng(0)
    x = (rng.random((640, 30)) < 0.3).astype(np.float32)
    vae = npvae.VAE(30, (16,), 4, layer="gated", logvar_bounds=(-6, 2), objective="iwae", n_samples=5, seed=0)
    before = vae.evaluate(x)
    with pytest.raises(ValueError, match=r"fused=True.*negative ELBO only, not objective='iwae'|"
                                         r"fused=True.*dense hidden layers only"):
        npvae.train(vae, x, epochs=1, batch_size=64, fused=True)
    npvae.train(vae, x, epochs=1, batch_size=64, seed=0)  # warm the kernels and the workspaces
    rises, levels = [], []

    def measure(epoch, batch, n_batches, loss):
        current, peak = tracemalloc.get_traced_memory()
        if levels:
            rises.append(peak - levels[-1])
        levels.append(current)
        tracemalloc.reset_peak()

    tracemalloc.start()
    try:
        npvae.train(vae, x, epochs=2, batch_size=64, seed=1, x_val=x[:64], on_batch=measure)
    finally:
        tracemalloc.stop()
    steps = [r for i, r in enumerate(rises) if (i + 1) % 10 != 0]  # not the epoch boundary (validation)
    assert len(steps) == 18 and max(steps) < 4096, f"a step allocated {max(steps)} bytes of temporaries"
    assert vae.evaluate(x) < before


def assert_same_outputs(a, b, x, eps):
    assert b.config() == a.config()
    assert (b.layer, b.logvar_bounds, b.objective, b.n_samples) == ("gated", (-6.0, 2.0), "iwae", 4)
    l1, g1 = a.loss_and_grads(x, eps)
    l2, g2 = b.loss_and_grads(x, eps)
    assert l1 == l2
    for name in g1:
        np.testing.assert_array_equal(g1[name], g2[name])
    for u, v in zip(a.encode(x), b.encode(x), strict=True):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(a.decode(eps[0]), b.decode(eps[0]))
    np.testing.assert_array_equal(a.reconstruct(x), b.reconstruct(x))
    assert a.evaluate(x) == b.evaluate(x)


def test_gated_bounded_iwae_model_round_trips_through_save_and_checkpoint(tmp_path):
    from npvae.checkpoint import load_checkpoint, save_checkpoint

    vae = npvae.VAE(7, (6, 4), 3, likelihood="gaussian", sigma_dec=0.5, layer="gated", logvar_bounds=(-6, 2),
                    objective="iwae", n_samples=4, seed=2, dtype=np.float64)
    rng = np.random.default_rng(5)
    for p in vae.params.values():
        p[...] += rng.standard_normal(p.shape) * 0.1
    x, eps = rng.random((5, 7)), rng.standard_normal((4, 5, 3))
    vae.save(tmp_path / "m.npz")
    assert_same_outputs(vae, npvae.VAE.load(tmp_path / "m.npz"), x, eps)
    opt = npvae.Adam()
    vae.loss_and_grads(x, eps)
    opt.step(vae.params, vae.grads)
    save_checkpoint(tmp_path / "c.npz", vae, opt, {"epoch": 1})
    back, opt2, progress = load_checkpoint(tmp_path / "c.npz")
    assert_same_outputs(vae, back, x, eps)
    assert progress == {"epoch": 1}
