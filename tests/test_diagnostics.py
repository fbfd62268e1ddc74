"""npvae.diagnostics: KL per latent dimension, rate, distortion, activity and active units."""

from __future__ import annotations

import math

import numpy as np
import pytest

import npvae
from npvae.evaluation import reference as R

X4 = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64)


def hand_model(likelihood: str = "bernoulli") -> npvae.VAE:
    """No hidden layer, so [mu | logvar] = x W + b is set by hand:
    mu1 = 2 x1, mu2 = 0.1 x2, logvar1 = 0, logvar2 = -2 x2; the decoder ignores z (logits 0 and ln 3)."""
    vae = npvae.VAE(2, (), 2, likelihood=likelihood, dtype=np.float64, seed=0)
    W = vae.params["encoder.head.W"]
    W[...] = 0.0
    W[0, 0], W[1, 1], W[1, 3] = 2.0, 0.1, -2.0
    vae.params["encoder.head.b"][...] = 0.0
    vae.params["decoder.out.W"][...] = 0.0
    vae.params["decoder.out.b"][...] = [0.0, math.log(3.0)]
    return vae


def test_hand_computed_values():
    d = npvae.diagnostics(hand_model(), X4)
    assert set(d) == {"kl_per_dim", "rate", "distortion", "activity", "active_units"}
    # dim 1: mu in {0, 2, 2, 0}, logvar 0: KL = mu^2 / 2, mean (0 + 2 + 2 + 0) / 4 = 1
    # dim 2: two examples with mu = 0, logvar = 0 (KL 0), two with mu = 0.1, logvar = -2:
    #        KL = (0.01 + e^-2 - 1 + 2) / 2, so the mean is half of that
    kl2 = 0.5 * (0.01 + math.exp(-2) + 1) / 2
    np.testing.assert_allclose(d["kl_per_dim"], [1.0, kl2], rtol=1e-14)
    assert d["rate"] == pytest.approx(1.0 + kl2, rel=1e-14)
    # activity: population variances of {0, 2, 2, 0} and {0, 0, 0.1, 0.1}
    np.testing.assert_allclose(d["activity"], [1.0, 0.0025], rtol=1e-12)
    assert d["active_units"] == 1 and isinstance(d["active_units"], int)
    assert npvae.diagnostics(hand_model(), X4, threshold=0.001)["active_units"] == 2
    assert npvae.diagnostics(hand_model(), X4, threshold=1.0)["active_units"] == 0  # strictly above
    # distortion: -log p(x|z) = softplus(0) + softplus(ln 3) - x . (0, ln 3) = 3 ln 2 - x2 ln 3, mean over X4
    assert d["distortion"] == pytest.approx(3 * math.log(2) - math.log(3) / 2, rel=1e-14)
    for key in ("rate", "distortion"):
        assert isinstance(d[key], float)
    assert d["kl_per_dim"].shape == d["activity"].shape == (2,)


def test_hand_computed_gaussian_distortion():
    vae = hand_model("gaussian")
    vae.sigma_dec = 0.5
    d = npvae.diagnostics(vae, X4)
    mean = np.array([0.0, math.log(3.0)])
    sq = ((X4 - mean) ** 2).sum(axis=1)
    expect = np.mean(sq / (2 * 0.25) + 2 * (math.log(0.5) + 0.5 * math.log(2 * math.pi)))
    assert d["distortion"] == pytest.approx(expect, rel=1e-14)


def random_model(likelihood: str = "bernoulli", dtype=np.float64) -> npvae.VAE:
    vae = npvae.VAE(30, (16,), 4, likelihood=likelihood, activation="tanh", dtype=dtype, seed=3)
    rng = np.random.default_rng(0)
    for name, arr in vae.params.items():
        if name.endswith(".b"):
            arr[...] = 0.5 * rng.standard_normal(arr.shape)
    return vae


def test_an_ignored_dimension_is_inactive_with_kl_zero():
    vae = random_model()
    x = np.random.default_rng(1).random((200, 30))
    k = vae.latent_dim
    j = 2
    head_W, head_b = vae.params["encoder.head.W"], vae.params["encoder.head.b"]
    before = npvae.diagnostics(vae, x)
    assert before["kl_per_dim"][j] > 0.01 and before["activity"][j] > 0.01
    head_W[:, j] = 0.0       # mu_j = 0 for every x
    head_W[:, k + j] = 0.0   # logvar_j = 0 for every x: q's coordinate j is the prior
    head_b[j] = head_b[k + j] = 0.0
    d = npvae.diagnostics(vae, x)
    assert d["kl_per_dim"][j] == 0.0 and d["activity"][j] == 0.0
    others = [i for i in range(k) if i != j]
    np.testing.assert_allclose(d["kl_per_dim"][others], before["kl_per_dim"][others], rtol=1e-14)
    assert np.all(d["activity"][others] > 0.01)
    assert d["active_units"] == k - 1 == before["active_units"] - 1


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_distortion_is_one_posterior_sample_per_example(likelihood):
    """Against the NumPy twin with the documented noise: rng.standard_normal((n, K)), one z per example."""
    vae = random_model(likelihood)
    n = 1500  # more than one decoder chunk of 1024 rows
    x = np.random.default_rng(2).random((n, 30))
    mu, logvar = vae.encode(x)
    eps = np.random.default_rng(9).standard_normal((n, vae.latent_dim))
    z = mu + np.exp(0.5 * logvar) * eps
    expect = -np.mean(R.log_px(R.decoder_forward(vae, z), x, likelihood, vae.sigma_dec))
    d = npvae.diagnostics(vae, x, rng=9)
    assert d["distortion"] == pytest.approx(expect, rel=1e-12)
    assert npvae.diagnostics(vae, x, rng=np.random.default_rng(9))["distortion"] == d["distortion"]
    assert npvae.diagnostics(vae, x)["distortion"] == npvae.diagnostics(vae, x, rng=0)["distortion"]
    # distortion + rate estimates the model's own negative ELBO
    rec, kl = vae.evaluate_terms(x, rng=0)
    assert d["rate"] == pytest.approx(kl, rel=1e-12)
    assert d["distortion"] == pytest.approx(rec, rel=0.02)


def test_float32_model_and_grey_levels_are_fine():
    vae = random_model(dtype=np.float32)
    x = np.random.default_rng(1).random((50, 30)).astype(np.float32)  # grey levels: a cross-entropy here
    d = npvae.diagnostics(vae, x)
    assert d["kl_per_dim"].dtype == np.float64 and np.isfinite(d["distortion"])


def test_logvar_bounds_are_applied():
    vae = hand_model()
    vae.params["encoder.head.b"][3] = 5.0  # logvar2 in {5, 5, 3, 3}
    vae.logvar_bounds = (-1.0, 4.0)         # -> {4, 4, 3, 3}
    d = npvae.diagnostics(vae, X4)
    mu2, lv2 = np.array([0, 0, 0.1, 0.1]), np.array([4.0, 4.0, 3.0, 3.0])
    assert d["kl_per_dim"][1] == pytest.approx(np.mean(0.5 * (mu2**2 + np.exp(lv2) - 1 - lv2)), rel=1e-14)


def test_bad_input_is_named():
    vae = hand_model()
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        npvae.diagnostics(vae, X4, threshold=-0.1)
    with pytest.raises(TypeError, match="threshold must be a number"):
        npvae.diagnostics(vae, X4, threshold="0.01")
    with pytest.raises(ValueError, match=r"x must have 2 columns"):
        npvae.diagnostics(vae, np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"\[0, 1\] for the Bernoulli likelihood.*divide by 255"):
        npvae.diagnostics(vae, X4 * 255)
    with pytest.raises(ValueError, match="1 NaN"):
        npvae.diagnostics(vae, np.array([[np.nan, 0.0]]))
    with pytest.raises(TypeError, match="vae must be an npvae.VAE"):
        npvae.diagnostics("model", X4)
    with pytest.raises(TypeError, match="rng must be a np.random.Generator or an int seed"):
        npvae.diagnostics(vae, X4, rng=0.5)
