"""Loss and gradients stay finite at extreme logvar and logits, in float32 and float64."""

from __future__ import annotations

import numpy as np
import pytest

import npvae
from npvae import kernels as K

DTYPES = [np.float32, np.float64]


def model(likelihood: str, dtype) -> npvae.VAE:
    return npvae.VAE(20, (16,), 4, likelihood=likelihood, dtype=dtype, seed=0, n_samples=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("logvar", [-100.0, -30.0, 0.0, 30.0, 60.0, 100.0])
def test_finite_for_extreme_logvar(dtype, likelihood, logvar):
    vae = model(likelihood, dtype)
    vae.params["encoder.head.W"][:, 4:] = 0
    vae.params["encoder.head.b"][4:] = logvar
    x = np.random.default_rng(0).random((8, 20)).astype(dtype)
    loss, grads = vae.loss_and_grads(x)
    assert np.isfinite(loss)
    for k, g in grads.items():
        assert np.all(np.isfinite(g)), k


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("logit", [-1e4, -100.0, 100.0, 1e4])
def test_finite_for_extreme_logits(dtype, likelihood, logit):
    vae = model(likelihood, dtype)
    vae.params["decoder.out.W"][:] = 0
    vae.params["decoder.out.b"][:] = logit
    x = np.random.default_rng(0).random((8, 20)).astype(dtype)
    loss, grads = vae.loss_and_grads(x)
    assert np.isfinite(loss) and loss > 0
    for k, g in grads.items():
        assert np.all(np.isfinite(g)), k


def test_bernoulli_loss_at_huge_logits_is_exact():
    """With logit l = 1e4 on every pixel, -log p(x|z) = sum (1 - x) l exactly (softplus(l) = l)."""
    vae = model("bernoulli", np.float64)
    vae.params["decoder.out.W"][:] = 0
    vae.params["decoder.out.b"][:] = 1e4
    x = np.random.default_rng(0).random((8, 20))
    rec, _ = vae.loss_terms(x)
    assert rec == pytest.approx(np.mean(np.sum((1 - x) * 1e4, axis=1)), rel=1e-12)


def test_logvar_clamp_is_flat_above_the_maximum():
    ml = np.array([[0.3, K.LOGVAR_MAX + 5.0]])
    eps = np.array([[[0.7]]])
    z, sigma = np.empty((1, 1)), np.empty((1, 1))
    kl_hi = K.reparam_kl_forward(ml, eps, z, sigma)
    kl_at = K.reparam_kl_forward(np.array([[0.3, K.LOGVAR_MAX]]), eps, z.copy(), sigma.copy())
    # exp's claimed accuracy (3e-15, test_kernels.py), not approx's default rel=1e-6
    assert kl_hi == kl_at and sigma[0, 0] == pytest.approx(np.exp(K.LOGVAR_MAX / 2), rel=1e-14)
    dml, db = np.empty_like(ml), np.empty(2)
    K.reparam_kl_backward(np.ones((1, 1)), eps, ml, sigma, dml, db, 1.0)
    assert dml[0, 1] == 0.0 and dml[0, 0] == pytest.approx(1.0 + 0.3, rel=1e-15)  # dz + kl_scale * mu
