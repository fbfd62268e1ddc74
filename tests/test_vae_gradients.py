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


def check_every_param(vae: npvae.VAE, x: np.ndarray, eps: np.ndarray, rng: np.random.Generator, *,
                      h: float = 1e-5, at_each_point=None, resolved_only: bool = False) -> float:
    """gradcheck every parameter array along 3 random directions; returns the worst relative error.

    With ``resolved_only``, the worst relative error is taken over the directions whose derivative the
    differences resolve to RTOL, ``|numeric| > noise / RTOL`` (gradcheck's rounding noise of the
    difference), and in every other direction the error must be within that noise,
    ``|analytic - numeric| <= noise``: no finite difference can check a smaller derivative to RTOL.
    ``at_each_point()``, if given, is called at every point differenced, with the parameters moved there.
    """
    loss, grads = vae.loss_and_grads(x, eps)
    assert grads.keys() == vae.params.keys()
    worst = 0.0
    for key, p in vae.params.items():
        assert grads[key].shape == p.shape
        orig = p.copy()

        def f(v, p=p, orig=orig):
            p[...] = v
            try:
                value = vae.loss_and_grads(x, eps)[0]
                if at_each_point is not None:
                    at_each_point()
            finally:
                p[...] = orig
            return value

        res = npvae.gradcheck(f, orig.copy(), grads[key], rng=rng, n_directions=3, h=h)
        # with resolved_only, an inconclusive check (every direction within the noise: a gradient of 1e-17
        # from a dead relu and beta = 2e-16) is bounded below, not refused
        assert res.ok or (resolved_only and res.inconclusive), f"{key}: {res}"
        if not resolved_only:
            worst = max(worst, res.max_rel_error)
            continue
        for a, n, z, e in zip(res.analytic, res.numeric, res.noise, res.rel_errors, strict=True):
            if abs(n) > z / RTOL:
                worst = max(worst, e)
            else:
                assert abs(a - n) <= z, f"{key}: {res}"
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


# ---------------------------------------------------------------------------- every entry, without torch
#: The step of the per-entry differences. The Richardson-extrapolated central difference has truncation
#: error O(h^4) and rounding error about 1.5 eps_machine |f| / h; on these models, h = 1e-3 measured the
#: smallest worst-case error over h in {1e-4, 3e-4, 1e-3, 3e-3, 1e-2} (about 1e-9 relative, against 1e-8 at
#: 1e-4 and 3e-6 at 1e-2), a thousand times inside RTOL.
ENTRY_H = 1e-3
#: Rounding noise of the extrapolated difference, in units of eps_machine max|f| / h: 1.5, times a safety
#: factor of 8 (as npvae.fdcheck's _NOISE).
ENTRY_NOISE = 12.0

#: (likelihood, activation, beta, n_samples, sigma_dec, seed): every activation, both likelihoods, beta != 1
#: everywhere, L > 1 in most cases, sigma_dec != 1 for every Gaussian case. The relu cases use seed 1:
#: with seed 0 and a batch of 3, dead units leave only 38-42 of the 105 entries nonzero (87 with seed 1).
ENTRY_CASES = [
    ("bernoulli", "relu", 0.5, 2, 1.0, 1), ("bernoulli", "leaky_relu", 2.0, 3, 1.0, 0),
    ("bernoulli", "tanh", 0.25, 3, 1.0, 0), ("bernoulli", "sigmoid", 3.0, 2, 1.0, 0),
    ("bernoulli", "softplus", 1.5, 1, 1.0, 0), ("bernoulli", "identity", 0.7, 2, 1.0, 0),
    ("gaussian", "relu", 2.5, 3, 0.6, 1), ("gaussian", "leaky_relu", 0.4, 2, 1.7, 0),
    ("gaussian", "tanh", 1.8, 2, 0.45, 0), ("gaussian", "softplus", 0.6, 3, 2.3, 0),
    ("gaussian", "sigmoid", 0.3, 1, 0.8, 0),
]


def entry_model(likelihood: str, activation: str, beta: float, n_samples: int, sigma_dec: float,
                seed: int = 0) -> tuple[npvae.VAE, np.ndarray, np.ndarray]:
    """A 5-(4, 3)-2 float64 model with nonzero biases, a batch of 3 and fixed noise (L, 3, 2).

    ``alpha = 0.2`` so that a leaky_relu slope dropped or confused with relu's changes the gradient by
    far more than the tolerance.
    """
    vae = npvae.VAE(5, (4, 3), 2, likelihood=likelihood, activation=activation, beta=beta, n_samples=n_samples,
                    seed=seed, dtype=np.float64, sigma_dec=sigma_dec, alpha=0.2)
    rng = np.random.default_rng(seed + 1)
    for k, p in vae.params.items():
        if k.endswith(".b"):
            p[...] = rng.uniform(0.05, 0.3, p.shape) * rng.choice([-1, 1], p.shape)
    return vae, rng.random((3, 5)), rng.standard_normal((n_samples, 3, 2))


def hidden_pre_activations(vae: npvae.VAE, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Every hidden pre-activation, encoder's and decoder's, concatenated (plain NumPy forward)."""
    P, k, pres = vae.params, vae.latent_dim, []
    h = x
    for i in range(len(vae.hidden_dims)):
        pres.append(h @ P[f"encoder.{i}.W"] + P[f"encoder.{i}.b"])
        h = R.activate(pres[-1], vae.activation, vae.alpha)
    ml = h @ P["encoder.head.W"] + P["encoder.head.b"]
    h = (ml[None, :, :k] + np.exp(ml[None, :, k:] / 2) * eps).reshape(-1, k)
    for i in range(len(vae.hidden_dims)):
        pres.append(h @ P[f"decoder.{i}.W"] + P[f"decoder.{i}.b"])
        h = R.activate(pres[-1], vae.activation, vae.alpha)
    return np.concatenate([p.ravel() for p in pres])


@pytest.mark.parametrize("likelihood,activation,beta,n_samples,sigma_dec,seed", ENTRY_CASES)
def test_full_loss_gradient_every_entry(likelihood, activation, beta, n_samples, sigma_dec, seed):
    """Every entry of every gradient array of loss_and_grads against its own central difference (no torch).

    Directional checks bound an entry's error only relative to its whole array; here each of the 105
    entries is moved by itself, by +-h and +-2h, and the Richardson-extrapolated difference must match
    the analytic entry: ``|analytic - numeric| <= RTOL * max(|numeric|, scale)`` where ``scale`` is the
    derivative the differences cannot resolve to RTOL, ``ENTRY_NOISE * eps_machine * max|f| / h / RTOL``
    (about 1.5e-5 here, so the absolute bound for a tiny entry is the rounding noise of its difference,
    about 1.5e-11). Every entry larger than that (all but dead-relu zeros, which both sides give as 0 to
    within the noise) is held to RTOL relative, and those must be most entries, so the scale cannot
    quietly stand in for a relative check.

    For relu and leaky_relu, no hidden pre-activation may change sign between the points differenced
    (the loss is then smooth there, and a mismatch can only be the gradient's fault).
    """
    vae, x, eps = entry_model(likelihood, activation, beta, n_samples, sigma_dec, seed)
    loss, grads = vae.loss_and_grads(x, eps)
    assert grads.keys() == vae.params.keys()
    kinked = activation in ("relu", "leaky_relu")
    signs = np.sign(hidden_pre_activations(vae, x, eps)) if kinked else None
    h, f_max, n_entries = ENTRY_H, abs(loss), 0
    analytic, numeric = [], []
    for key, p in vae.params.items():
        assert grads[key].shape == p.shape and np.all(np.isfinite(grads[key])), key
        for i in np.ndindex(p.shape):
            orig = p[i]
            vals = []
            for step in (h, -h, 2 * h, -2 * h):
                p[i] = orig + step
                vals.append(vae.loss_and_grads(x, eps)[0])
                if kinked:
                    assert np.array_equal(np.sign(hidden_pre_activations(vae, x, eps)), signs), \
                        f"{key}{list(i)}: a pre-activation crossed the kink at {step:+g}; pick another seed"
            p[i] = orig
            f_max = max(f_max, *map(abs, vals))
            d_h, d_2h = (vals[0] - vals[1]) / (2 * h), (vals[2] - vals[3]) / (4 * h)
            analytic.append((key, i, float(grads[key][i])))
            numeric.append((4 * d_h - d_2h) / 3)
            n_entries += 1
    assert n_entries == vae.n_params == 105
    scale = ENTRY_NOISE * np.finfo(np.float64).eps * f_max / h / RTOL
    bad, resolved, worst = [], 0, 0.0
    for (key, i, a), n in zip(analytic, numeric, strict=True):
        if not abs(a - n) <= RTOL * max(abs(n), scale):
            bad.append(f"{key}{list(i)}: analytic {a:.12e}, numeric {n:.12e}")
        if abs(n) > scale:  # the relative bound, entry by entry
            resolved += 1
            worst = max(worst, abs(a - n) / abs(n))
    assert not bad, f"{len(bad)} of {n_entries} entries off by more than {RTOL:g} (scale {scale:.2e}):\n" + \
        "\n".join(bad[:20])
    assert worst <= RTOL
    assert resolved >= 0.75 * n_entries, f"only {resolved} of {n_entries} entries above the scale {scale:.2e}"


#: The step of the hypothesis test's differences. The claim checked there is a relative error <= RTOL in
#: every direction whose derivative the differences resolve to RTOL (``|numeric| > noise / RTOL``, the
#: noise about 12 eps_machine |f| / h); a smaller derivative cannot be checked to RTOL by any finite
#: difference, and over random shapes some are tiny (hidden [1, 1, 1], input 1, beta 0, tanh, seed 291:
#: 5.7e-4 relative at h = 1e-4, within its noise; hidden [6, 1], input 1, beta 0, relu, seed 0: 2e-5 at
#: h = 1e-5), so the plain maximum relative error over all directions is not bounded by RTOL there.
#: h = 1e-4 resolves ten times smaller derivatives than gradcheck's default 1e-5; over 400 random draws
#: (11,340 directions) the worst resolved direction was 2.1e-7 relative at 1e-4 and 7.5e-8 at 1e-5, and
#: at 1e-3 the O(h^4) truncation gives 2.3e-6 for the curvature example below.
SHAPES_H = 1e-4


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
         activation="relu", seed=4104)  # a decoder pre-activation near relu's kink: must be skipped
@example(hidden=[6, 1], input_dim=1, latent=1, batch=3, n_samples=1, beta=0.0, likelihood="bernoulli",
         activation="relu", seed=0)  # a derivative of 4.5e-7 along a direction: 2e-5 relative at h = 1e-5
@example(hidden=[1, 1, 1], input_dim=1, latent=1, batch=1, n_samples=1, beta=0.0, likelihood="bernoulli",
         activation="tanh", seed=291)  # unresolved derivatives: 5.7e-4 relative, within the noise
@example(hidden=[1, 1], input_dim=1, latent=1, batch=1, n_samples=1, beta=2.220446049250313e-16,
         likelihood="bernoulli", activation="relu", seed=0)  # inconclusive: every gradient of the encoder ~1e-17
def test_full_loss_gradient_over_shapes(hidden, input_dim, latent, batch, n_samples, beta, likelihood,
                                        activation, seed):
    vae = make(likelihood, activation, hidden=tuple(hidden), input_dim=input_dim, latent=latent, beta=beta,
               n_samples=n_samples, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.random((batch, input_dim))
    eps = rng.standard_normal((n_samples, batch, latent))
    at_each_point = None
    if activation == "relu":  # skip draws where a difference crosses relu's kink, encoder's or decoder's
        signs = [np.sign(pre) for pre in relu_pre_activations(vae, x, eps)]

        def at_each_point():
            assume(all(np.array_equal(np.sign(pre), s)
                       for pre, s in zip(relu_pre_activations(vae, x, eps), signs, strict=True)))
    # the claim is the relative error, not gradcheck's "ok" alone (which accepts a disagreement within noise)
    assert check_every_param(vae, x, eps, rng, h=SHAPES_H, at_each_point=at_each_point, resolved_only=True) <= RTOL


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
