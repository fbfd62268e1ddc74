"""The gated dense layer, h = (x W + b) * sigmoid(x V + c) (docs/derivation.md, Eq. (H1)).

Its kernels against their NumPy twins, the layer's backward against central
differences (check_vjp) and against the formulas written out, and a VAE with
layer="gated" checked entry by entry on the whole loss in float64, with its
loss value against an independent NumPy forward pass.
"""

from __future__ import annotations

import numpy as np
import pytest
from _entry_check import entry_gradcheck
from hypothesis import given
from hypothesis import strategies as st

import npvae
from npvae import check_vjp
from npvae import kernels as K
from npvae import reference as R
from npvae.layers import GatedDense

RTOL = 1e-6
DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
dims = st.integers(1, 30)
seeds = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------------------- kernels against their twins
@pytest.mark.parametrize("dtype", DTYPES)
@given(n=dims, d=dims, seed=seeds)
def test_gated_forward_matches_reference(dtype, n, d, seed):
    rng = np.random.default_rng(seed)
    xw, xv = (rng.standard_normal((2, n, d)) * 4).astype(dtype)
    b, c = rng.standard_normal((2, d)).astype(dtype)
    a, g, h = xw.copy(), xv.copy(), np.empty((n, d), dtype)
    K.gated_forward(a, g, h, b, c)
    ra, rg, rh = R.gated_forward(xw, xv, b, c)
    for got, want in ((a, ra), (g, rg), (h, rh)):
        np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=dims, d=dims, seed=seeds)
def test_gated_backward_matches_reference(dtype, n, d, seed):
    rng = np.random.default_rng(seed)
    dh, a = rng.standard_normal((2, n, d)).astype(dtype)
    g = R.sigmoid(rng.standard_normal((n, d)) * 3).astype(dtype)
    da, ds, db, dc = (np.empty((n, d), dtype), np.empty((n, d), dtype), np.empty(d, dtype), np.empty(d, dtype))
    K.gated_backward(dh, a, g, da, ds, db, dc)
    for got, want in zip((da, ds, db, dc), R.gated_backward(dh, a, g), strict=True):
        np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * n * 10)


def test_gated_forward_is_stable_for_large_gate_inputs():
    a = np.ones((1, 4))
    g = np.array([[-1e4, -800.0, 800.0, 1e4]])
    h = np.empty_like(a)
    K.gated_forward(a, g, h, np.zeros(4), np.zeros(4))
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(h))
    np.testing.assert_allclose(g, [[0.0, 0.0, 1.0, 1.0]], rtol=1e-15, atol=1e-300)  # exp clamped at -708
    np.testing.assert_allclose(h, [[0.0, 0.0, 1.0, 1.0]], rtol=1e-15, atol=1e-300)


# ---------------------------------------------------------------------------- the layer
@given(n=st.integers(1, 7), d_in=st.integers(1, 7), d_out=st.integers(1, 7), seed=seeds)
def test_gated_dense_backward_wrt_input_and_every_param(n, d_in, d_out, seed):
    rng = np.random.default_rng(seed)
    layer = GatedDense(d_in, d_out, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(d_out)
    layer.params["c"][:] = rng.standard_normal(d_out)
    x = rng.standard_normal((n, d_in))

    def vjp_x(dy):
        layer.forward(x)
        return layer.backward(dy).copy()

    assert (res := check_vjp(layer.forward, vjp_x, x, rng=rng)).ok, res
    assert layer.grads.keys() == layer.params.keys() == {"W", "b", "V", "c"}
    for key in ("W", "b", "V", "c"):
        p = layer.params[key]
        orig = p.copy()

        def fwd_p(v, p=p, orig=orig):
            p[...] = v
            y = layer.forward(x).copy()
            p[...] = orig
            return y

        def vjp_p(dy, key=key):
            layer.forward(x)
            layer.backward(dy)
            return layer.grads[key].copy()

        assert (res := check_vjp(fwd_p, vjp_p, orig.copy(), rng=rng)).ok, (key, res)


def test_gated_dense_matches_the_formulas_written_out():
    """dW = x^T (dh g), dV = x^T (dh a g (1 - g)), dx = (dh g) W^T + (dh a g (1 - g)) V^T (issue #13)."""
    rng = np.random.default_rng(3)
    layer = GatedDense(5, 4, rng=rng, dtype=np.float64)
    for k in ("b", "c"):
        layer.params[k][:] = rng.standard_normal(4)
    x, dh = rng.standard_normal((6, 5)), rng.standard_normal((6, 4))
    P = layer.params
    a = x @ P["W"] + P["b"]
    g = 1 / (1 + np.exp(-(x @ P["V"] + P["c"])))
    np.testing.assert_allclose(layer.forward(x), a * g, rtol=1e-13)
    dx = layer.backward(dh)
    np.testing.assert_allclose(layer.grads["W"], x.T @ (dh * g), rtol=1e-12)
    np.testing.assert_allclose(layer.grads["b"], (dh * g).sum(0), rtol=1e-12)
    np.testing.assert_allclose(layer.grads["V"], x.T @ (dh * a * g * (1 - g)), rtol=1e-12)
    np.testing.assert_allclose(layer.grads["c"], (dh * a * g * (1 - g)).sum(0), rtol=1e-12)
    np.testing.assert_allclose(dx, (dh * g) @ P["W"].T + (dh * a * g * (1 - g)) @ P["V"].T, rtol=1e-12)
    assert layer.backward(dh, need_dx=False) is None


def test_gated_dense_checks_its_arguments():
    layer = GatedDense(5, 4, rng=np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="GatedDense.backward called before forward"):
        layer.backward(np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"x must have 5 columns"):
        layer.forward(np.ones((3, 6)))
    layer.forward(np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"dy must have the shape of the last forward output, \(3, 4\)"):
        layer.backward(np.ones((3, 5)))
    with pytest.raises(TypeError, match="cannot be rebound"):
        layer.params["V"] = np.zeros((5, 4))
    y1 = layer.forward(np.ones((3, 5)))
    assert layer.forward(np.ones((3, 5))) is y1  # one buffer per row count


# ---------------------------------------------------------------------------- the VAE with layer="gated"
def gated_model(likelihood="bernoulli", *, beta=1.0, n_samples=1, sigma_dec=1.0, seed=0, **kw):
    """A 5-(4, 3)-2 float64 gated model with nonzero biases, a batch of 3 and fixed noise (L, 3, 2)."""
    vae = npvae.VAE(5, (4, 3), 2, likelihood=likelihood, beta=beta, n_samples=n_samples, seed=seed,
                    dtype=np.float64, sigma_dec=sigma_dec, layer="gated", **kw)
    rng = np.random.default_rng(seed + 1)
    for k, p in vae.params.items():
        if k.endswith(".b") or k.endswith(".c"):
            p[...] = rng.uniform(0.05, 0.3, p.shape) * rng.choice([-1, 1], p.shape)
    return vae, rng.random((3, 5)), rng.standard_normal((n_samples, 3, 2))


def gated_reference_loss(vae, x, eps):
    """(mean NLL, mean KL) of a gated VAE, from scratch in plain NumPy."""
    P, k = vae.params, vae.latent_dim

    def gate(h, name):
        return (h @ P[f"{name}.W"] + P[f"{name}.b"]) / (1 + np.exp(-(h @ P[f"{name}.V"] + P[f"{name}.c"])))

    h = x
    for i in range(len(vae.hidden_dims)):
        h = gate(h, f"encoder.{i}")
    ml = h @ P["encoder.head.W"] + P["encoder.head.b"]
    mu, var = ml[:, :k], np.exp(ml[:, k:])
    h = (mu[None] + np.sqrt(var)[None] * eps).reshape(-1, k)
    for i in range(len(vae.hidden_dims)):
        h = gate(h, f"decoder.{i}")
    out = (h @ P["decoder.out.W"] + P["decoder.out.b"]).reshape(eps.shape[0], x.shape[0], -1)
    if vae.likelihood == "bernoulli":
        prob = 1 / (1 + np.exp(-out))
        logp = np.sum(x * np.log(prob) + (1 - x) * np.log(1 - prob), axis=-1)
    else:
        s = vae.sigma_dec
        logp = np.sum(-0.5 * ((x - out) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi), axis=-1)
    kl = 0.5 * np.sum(mu**2 + var - 1 - np.log(var), axis=1)
    return float(-logp.mean()), float(kl.mean())


GATED_CASES = [("bernoulli", 1.0, 1, 1.0), ("bernoulli", 0.4, 3, 1.0), ("gaussian", 2.5, 2, 0.7)]


@pytest.mark.parametrize("likelihood,beta,n_samples,sigma_dec", GATED_CASES)
def test_gated_vae_full_loss_gradient_every_entry(likelihood, beta, n_samples, sigma_dec):
    vae, x, eps = gated_model(likelihood, beta=beta, n_samples=n_samples, sigma_dec=sigma_dec)
    worst, n = entry_gradcheck(vae, x, eps)
    assert n == vae.n_params == 169
    assert worst <= RTOL


@pytest.mark.parametrize("likelihood,beta,n_samples,sigma_dec", GATED_CASES)
def test_gated_vae_loss_matches_independent_numpy(likelihood, beta, n_samples, sigma_dec):
    vae, x, eps = gated_model(likelihood, beta=beta, n_samples=n_samples, sigma_dec=sigma_dec)
    rec, kl = gated_reference_loss(vae, x, eps)
    assert vae.loss_terms(x, eps) == pytest.approx((rec, kl), rel=1e-12)
    assert vae.loss_and_grads(x, eps)[0] == pytest.approx(rec + beta * kl, rel=1e-12)


def test_gated_vae_structure_names_and_activation_rule():
    vae = npvae.VAE(8, (6, 5), 3, layer="gated", seed=0)
    names = list(vae.params)
    assert names[:4] == ["encoder.0.W", "encoder.0.b", "encoder.0.V", "encoder.0.c"]
    for layer in ("encoder.0", "encoder.1", "decoder.0", "decoder.1"):  # every hidden layer is gated
        assert {f"{layer}.{k}" for k in "WbVc"} <= set(names)
        assert vae.params[f"{layer}.V"].shape == vae.params[f"{layer}.W"].shape
    for layer in ("encoder.head", "decoder.out"):  # the head and the output layer stay affine
        assert [n for n in names if n.startswith(layer + ".")] == [f"{layer}.W", f"{layer}.b"]
    assert vae.activation == "identity" and vae.config()["layer"] == "gated"
    assert npvae.VAE(8, (6,), 3, layer="gated", activation="identity").activation == "identity"
    with pytest.raises(ValueError, match=r"activation must be left unset with layer='gated'.*got 'relu'"):
        npvae.VAE(8, (6,), 3, layer="gated", activation="relu")
    with pytest.raises(ValueError, match=r"layer must be one of 'dense', 'gated'; got 'conv'"):
        npvae.VAE(8, (6,), 3, layer="conv")
    assert npvae.VAE(8, (6,), 3).activation == "relu"  # the dense default is unchanged


def test_gated_float32_agrees_with_float64():
    v64 = npvae.VAE(50, (30,), 5, layer="gated", dtype=np.float64, seed=1)
    v32 = npvae.VAE(50, (30,), 5, layer="gated", dtype=np.float32, seed=1)
    rng = np.random.default_rng(0)
    x, eps = rng.random((16, 50)), rng.standard_normal((16, 5))
    l64, g64 = v64.loss_and_grads(x, eps)
    l32, g32 = v32.loss_and_grads(x.astype(np.float32), eps.astype(np.float32))
    assert l32 == pytest.approx(l64, rel=1e-5)
    for k in g64:
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-3, atol=1e-5 * np.abs(g64[k]).max())


def test_gated_training_lowers_the_loss_and_fused_true_says_why_not():
    rng = np.random.default_rng(0)
    x = (rng.random((256, 20)) < 0.3).astype(np.float32)
    vae = npvae.VAE(20, (16,), 3, layer="gated", seed=0)
    before = vae.evaluate(x)
    npvae.train(vae, x, epochs=5, batch_size=32, optimizer=npvae.Adam(3e-3), seed=0)
    assert vae.evaluate(x) < before
    with pytest.raises(ValueError, match=r"fused=True.*dense hidden layers only, not layer='gated'"):
        npvae.train(vae, x, epochs=1, batch_size=32, fused=True)
