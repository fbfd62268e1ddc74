"""The whole negative ELBO, checked end to end.

The pieces are checked in test_kernels.py and test_layers.py; here the full
loss with fixed noise is differentiated numerically for every parameter, for
both likelihoods, several activations, beta != 1 and L > 1. The loss value
itself is compared with an independent NumPy computation, and the meaning of
logvar is pinned down: sigma = exp(logvar / 2).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

import npvae
from npvae import reference as R

RTOL = 1e-6


def make(likelihood: str, activation: str, *, hidden=(6, 5), input_dim=8, latent=3, beta=1.0,
         n_samples=1, seed=0, sigma_dec=1.0) -> npvae.VAE:
    vae = npvae.VAE(input_dim, hidden, latent, likelihood=likelihood, activation=activation, beta=beta,
                    n_samples=n_samples, seed=seed, dtype=np.float64, sigma_dec=sigma_dec)
    rng = np.random.default_rng(seed + 1)
    for k, p in vae.params.items():  # nonzero biases keep pre-activations off relu's kink
        if k.endswith(".b"):
            p[...] = rng.uniform(0.05, 0.3, p.shape) * rng.choice([-1, 1], p.shape)
    return vae


def reference_loss(vae: npvae.VAE, x: np.ndarray, eps: np.ndarray) -> tuple[float, float]:
    """Negative ELBO computed from scratch with plain NumPy (no npvae kernels or layers)."""
    P = vae.params
    h = x
    for i in range(len(vae.hidden_dims)):
        h = R.activate(h @ P[f"encoder.{i}.W"] + P[f"encoder.{i}.b"], vae.activation)
    ml = h @ P["encoder.head.W"] + P["encoder.head.b"]
    k = vae.latent_dim
    mu, logvar = ml[:, :k], ml[:, k:]
    sigma = np.sqrt(np.exp(logvar))  # variance = exp(logvar): written differently from the code on purpose
    z = mu[None] + sigma[None] * eps  # (L, B, K)
    h = z.reshape(-1, k)
    for i in range(len(vae.hidden_dims)):
        h = R.activate(h @ P[f"decoder.{i}.W"] + P[f"decoder.{i}.b"], vae.activation)
    out = (h @ P["decoder.out.W"] + P["decoder.out.b"]).reshape(eps.shape[0], x.shape[0], -1)
    if vae.likelihood == "bernoulli":
        prob = 1 / (1 + np.exp(-out))
        logp = np.sum(x * np.log(prob) + (1 - x) * np.log(1 - prob), axis=-1)
    else:
        s = vae.sigma_dec
        logp = np.sum(-0.5 * ((x - out) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi), axis=-1)
    # KL(N(mu, sigma^2) || N(0, 1)) per dimension, from the textbook formula
    kl = np.sum(np.log(1 / sigma) + (sigma**2 + mu**2) / 2 - 0.5, axis=1)
    return float(-logp.mean()), float(kl.mean())


def check_every_param(vae: npvae.VAE, x: np.ndarray, eps: np.ndarray, rng: np.random.Generator) -> float:
    loss, grads = vae.loss_and_grads(x, eps)
    assert grads.keys() == vae.params.keys()
    worst = 0.0
    for key, p in vae.params.items():
        assert grads[key].shape == p.shape
        orig = p.copy()

        def f(v, p=p, orig=orig):
            p[...] = v
            value = vae.loss_and_grads(x, eps)[0]
            p[...] = orig
            return value

        res = npvae.gradcheck(f, orig.copy(), grads[key], rng=rng, n_directions=3)
        assert res.ok, f"{key}: {res}"
        worst = max(worst, res.max_rel_error)
    return worst


CASES = [
    ("bernoulli", "relu", 1.0, 1), ("bernoulli", "tanh", 0.5, 3), ("bernoulli", "softplus", 2.0, 2),
    ("bernoulli", "leaky_relu", 1.0, 1), ("bernoulli", "sigmoid", 1.0, 1), ("bernoulli", "identity", 1.0, 1),
    ("gaussian", "relu", 1.0, 1), ("gaussian", "tanh", 0.25, 2), ("gaussian", "leaky_relu", 4.0, 3),
]


@pytest.mark.parametrize("likelihood,activation,beta,n_samples", CASES)
def test_full_loss_gradient_every_parameter(likelihood, activation, beta, n_samples):
    vae = make(likelihood, activation, beta=beta, n_samples=n_samples, sigma_dec=0.7)
    rng = np.random.default_rng(5)
    x = rng.random((5, 8))
    eps = rng.standard_normal((n_samples, 5, 3))
    assert check_every_param(vae, x, eps, rng) < RTOL


#: How far every relu pre-activation must be from 0 for a gradient check: the checks move the parameters
#: by up to 2h = 2e-5 along directions with entries of a few units, which moves a pre-activation by up to
#: a few 1e-4; crossing the kink would make the finite difference meaningless, not the gradient wrong.
KINK_MARGIN = 1e-3


def relu_pre_activations(vae: npvae.VAE, x: np.ndarray, eps: np.ndarray) -> list[np.ndarray]:
    """Every hidden layer's pre-activation, encoder and decoder, for fixed ``eps`` (plain NumPy, relu)."""
    P, k, pres = vae.params, vae.latent_dim, []
    h = x
    for i in range(len(vae.hidden_dims)):
        pres.append(h @ P[f"encoder.{i}.W"] + P[f"encoder.{i}.b"])
        h = np.maximum(pres[-1], 0)
    ml = h @ P["encoder.head.W"] + P["encoder.head.b"]
    h = (ml[None, :, :k] + np.exp(ml[None, :, k:] / 2) * eps).reshape(-1, k)
    for i in range(len(vae.hidden_dims)):
        pres.append(h @ P[f"decoder.{i}.W"] + P[f"decoder.{i}.b"])
        h = np.maximum(pres[-1], 0)
    return pres


@given(hidden=st.lists(st.integers(1, 7), min_size=0, max_size=3), input_dim=st.integers(1, 10),
       latent=st.integers(1, 4), batch=st.integers(1, 6), n_samples=st.integers(1, 3),
       beta=st.floats(0.0, 3.0), likelihood=st.sampled_from(["bernoulli", "gaussian"]),
       activation=st.sampled_from(["relu", "tanh", "softplus"]), seed=st.integers(0, 10_000))
@example(hidden=[3, 2, 6], input_dim=6, latent=2, batch=1, n_samples=1, beta=2.25, likelihood="bernoulli",
         activation="tanh", seed=1490)  # failed plain central differences: curvature, not the gradient
@example(hidden=[6], input_dim=5, latent=2, batch=1, n_samples=3, beta=0.0, likelihood="bernoulli",
         activation="relu", seed=4104)  # a decoder pre-activation within 2h of relu's kink: must be skipped
def test_full_loss_gradient_over_shapes(hidden, input_dim, latent, batch, n_samples, beta, likelihood,
                                        activation, seed):
    vae = make(likelihood, activation, hidden=tuple(hidden), input_dim=input_dim, latent=latent, beta=beta,
               n_samples=n_samples, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.random((batch, input_dim))
    eps = rng.standard_normal((n_samples, batch, latent))
    if activation == "relu":  # skip draws with a pre-activation, encoder's or decoder's, near relu's kink
        assume(min((float(np.min(np.abs(pre))) for pre in relu_pre_activations(vae, x, eps)), default=np.inf)
               > KINK_MARGIN)
    check_every_param(vae, x, eps, rng)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("n_samples", [1, 3])
def test_loss_value_matches_independent_numpy(likelihood, n_samples):
    vae = make(likelihood, "tanh", beta=1.7, n_samples=n_samples, sigma_dec=0.6)
    rng = np.random.default_rng(3)
    x = rng.random((6, 8))
    eps = rng.standard_normal((n_samples, 6, 3))
    rec, kl = reference_loss(vae, x, eps)
    loss, _ = vae.loss_and_grads(x, eps)
    assert vae.loss_terms(x, eps) == pytest.approx((rec, kl), rel=1e-12)
    assert loss == pytest.approx(rec + 1.7 * kl, rel=1e-12)


def test_logvar_means_log_variance():
    """sigma = exp(logvar / 2): the sampled z must give back eps as (z - mu) / exp(logvar / 2).

    A model that used exp(logvar) as the standard deviation would pass every
    gradient check (its backward would match its own forward); this pins the
    meaning instead.
    """
    vae = make("bernoulli", "relu")
    x = np.random.default_rng(0).random((4, 8))
    eps = np.random.default_rng(1).standard_normal((1, 4, 3))
    vae.loss_and_grads(x, eps)
    mu, logvar = vae.encode(x)
    z = vae._noise.get(4)["z"][0]  # the one sample of each of the 4 examples
    np.testing.assert_allclose((z - mu) / np.exp(logvar / 2), eps[0], rtol=1e-12)
    # and the KL term is the textbook one for that variance
    rec, kl = vae.loss_terms(x, eps)
    var = np.exp(logvar)
    assert kl == pytest.approx(np.mean(np.sum(0.5 * (mu**2 + var - 1 - np.log(var)), axis=1)), rel=1e-12)


def test_eps_accepts_2d_and_checks_shape():
    vae = make("bernoulli", "relu", n_samples=1)
    x = np.random.default_rng(0).random((4, 8))
    eps = np.random.default_rng(1).standard_normal((4, 3))
    assert vae.loss_and_grads(x, eps)[0] == vae.loss_and_grads(x, eps[None])[0]
    with pytest.raises(ValueError, match=r"eps must have shape"):
        vae.loss_and_grads(x, eps[:3])
    vae2 = make("bernoulli", "relu", n_samples=2)
    with pytest.raises(ValueError, match=r"\(2, 4, 3\)"):
        vae2.loss_and_grads(x, eps)


def test_returned_grads_are_copies():
    vae = make("bernoulli", "relu")
    rng = np.random.default_rng(0)
    x = rng.random((4, 8))
    _, g1 = vae.loss_and_grads(x, rng.standard_normal((4, 3)))
    kept = {k: v.copy() for k, v in g1.items()}
    vae.loss_and_grads(x, rng.standard_normal((4, 3)))
    for k in kept:
        np.testing.assert_array_equal(g1[k], kept[k])


def test_float32_agrees_with_float64():
    v64 = make("bernoulli", "relu", hidden=(30,), input_dim=50, latent=5)
    v32 = npvae.VAE(50, (30,), 5, dtype=np.float32)
    for k in v32.params:
        v32.params[k][...] = v64.params[k]
    rng = np.random.default_rng(0)
    x = rng.random((16, 50))
    eps = rng.standard_normal((16, 5))
    l64, g64 = v64.loss_and_grads(x, eps)
    l32, g32 = v32.loss_and_grads(x.astype(np.float32), eps.astype(np.float32))
    assert l32 == pytest.approx(l64, rel=1e-5)
    for k in g64:
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-3, atol=1e-5 * np.abs(g64[k]).max())


def test_evaluate_terms_add_up_to_evaluate():
    vae = make("bernoulli", "relu", beta=1.7)
    x = np.random.default_rng(0).random((2500, 8))
    rec, kl = vae.evaluate_terms(x, batch_size=1000)
    assert vae.evaluate(x, batch_size=1000) == pytest.approx(rec + 1.7 * kl, rel=1e-12)
    assert rec > 0 and kl > 0
