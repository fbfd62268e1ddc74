"""logvar_bounds=(lo, hi): logvar through a hardtanh wherever it is used (docs/derivation.md, Eq. (V1)).

The bounded kernels against their twins (values at, inside and beyond the
bounds), the gradient at the bounds against torch's hardtanh, the whole loss
checked entry by entry with some logvars clipped, the meaning pinned (encode
returns the bounded logvar, z is drawn with it, the KL uses it), float32
finiteness at extreme values, and the argument's checks.
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
LO, HI = -6.0, 2.0


def raw_with_bounds_hit(rng, b, k, dtype):
    """ml (b, 2k) whose logvar half holds values inside, beyond, and exactly at both bounds."""
    ml = rng.standard_normal((b, 2 * k)) * 2
    ml[:, k:] = rng.uniform(-9, 5, (b, k))
    flat = ml[:, k:].reshape(-1)
    flat[: min(2, flat.size)] = [LO, HI][: min(2, flat.size)]
    return ml.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@given(b=st.integers(1, 12), k=st.integers(1, 6), n_samples=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_bounded_kernels_match_reference(dtype, b, k, n_samples, seed):
    rng = np.random.default_rng(seed)
    ml = raw_with_bounds_hit(rng, b, k, dtype)
    eps = rng.standard_normal((n_samples, b, k)).astype(dtype)
    z, sigma = np.empty((n_samples * b, k), dtype), np.empty((b, k), dtype)
    kl = K.reparam_kl_forward_bounded(ml, eps, z, sigma, dtype(LO), dtype(HI))
    rkl, rz, rsigma = R.reparam_kl_forward_bounded(ml, eps, LO, HI)
    assert kl == pytest.approx(rkl, rel=TOL[dtype]["rtol"], abs=1e-9)
    np.testing.assert_allclose(z, rz, **TOL[dtype])
    np.testing.assert_allclose(sigma, rsigma, **TOL[dtype])
    dz = rng.standard_normal((n_samples * b, k)).astype(dtype)
    dml, db = np.empty_like(ml), np.empty(2 * k, dtype)
    K.reparam_kl_backward_bounded(dz, eps, ml, sigma, dml, db, dtype(0.3), dtype(LO), dtype(HI))
    rdml, rdb = R.reparam_kl_backward_bounded(dz, eps, ml, sigma, 0.3, LO, HI)
    np.testing.assert_allclose(dml, rdml, **TOL[dtype])
    np.testing.assert_allclose(db, rdb, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * b * 10)
    raw = ml[:, k:]
    assert np.all(dml[:, k:][(raw <= LO) | (raw >= HI)] == 0)  # zero at the bounds and beyond


def test_gradient_at_and_beyond_the_bounds_is_torch_hardtanh():
    """At exactly lo or hi the gradient is 0, as torch.nn.functional.hardtanh's (strict inequalities)."""
    torch = pytest.importorskip("torch")
    raw = np.array([LO, LO - 1, LO + 1e-9, 0.0, HI - 1e-9, HI, HI + 1])
    t = torch.tensor(raw, requires_grad=True)
    torch.nn.functional.hardtanh(t, LO, HI).sum().backward()
    k = raw.size
    ml = np.concatenate([np.zeros(k), raw])[None]
    eps = np.zeros((1, 1, k))
    z, sigma = np.empty((1, k)), np.empty((1, k))
    K.reparam_kl_forward_bounded(ml, eps, z, sigma, LO, HI)
    np.testing.assert_allclose(np.log(sigma[0]) * 2, torch.nn.functional.hardtanh(t, LO, HI).detach().numpy(),
                               rtol=1e-14, atol=1e-14)
    # with dz = 0 the logvar gradient is the KL's (sigma^2 - 1) / 2 times the hardtanh's derivative
    dml, db = np.empty_like(ml), np.empty(2 * k)
    K.reparam_kl_backward_bounded(np.zeros((1, k)), eps, ml, sigma, dml, db, 1.0, LO, HI)
    np.testing.assert_allclose(dml[0, k:], 0.5 * (sigma[0] ** 2 - 1) * t.grad.numpy(), rtol=1e-14)
    assert t.grad.numpy().tolist() == [0, 0, 1, 1, 1, 0, 0]


def bounded_model(likelihood="bernoulli", *, layer="dense", objective="elbo", n_samples=2, beta=0.7, seed=0):
    """A 5-(4, 3)-3 float64 model whose logvars for a batch of 4 are spread over [-9, 5], bounds (-6, 2)."""
    kw = {} if layer == "gated" else {"activation": "tanh"}
    if objective == "iwae":
        beta = 1.0
    vae = npvae.VAE(5, (4, 3), 3, likelihood=likelihood, beta=beta, n_samples=n_samples, seed=seed,
                    dtype=np.float64, sigma_dec=0.8, layer=layer, logvar_bounds=(LO, HI), objective=objective, **kw)
    rng = np.random.default_rng(seed + 1)
    for k, p in vae.params.items():
        if k.endswith(".b") or k.endswith(".c"):
            p[...] = rng.uniform(0.05, 0.3, p.shape) * rng.choice([-1, 1], p.shape)
    # the head's logvar columns: large weights and biases, so the raw logvars straddle both bounds
    vae.params["encoder.head.W"][:, 3:] *= 4
    x = rng.random((4, 5))
    vae.params["encoder.head.b"][3:] += np.array([LO - 1.5, -2.0, HI + 1.5]) - raw_logvar(vae, x).mean(axis=0)
    return vae, x, rng.standard_normal((n_samples, 4, 3))


def raw_logvar(vae, x):
    h = x
    for layer in vae.encoder:
        h = layer.forward(h)
    return vae.head.forward(h)[:, vae.latent_dim:].copy()


@pytest.mark.parametrize("likelihood,layer,objective", [("bernoulli", "dense", "elbo"), ("gaussian", "gated", "elbo"),
                                                        ("bernoulli", "gated", "iwae"), ("gaussian", "dense", "iwae")])
def test_bounded_full_loss_gradient_every_entry(likelihood, layer, objective):
    """With some logvars clipped at each bound: every entry to 1e-6, and no logvar crosses a bound while
    the entries are moved (the loss is smooth there, so a mismatch can only be the gradient's fault)."""
    vae, x, eps = bounded_model(likelihood, layer=layer, objective=objective, n_samples=3)
    raw = raw_logvar(vae, x)
    side = np.sign(raw - LO) + np.sign(raw - HI)  # -2 below, 0 inside, 2 above
    assert (side == -2).sum() >= 2 and (side == 2).sum() >= 2 and (side == 0).sum() >= 2, raw

    def same_side(key, i, step):
        now = raw_logvar(vae, x)
        assert np.array_equal(np.sign(now - LO) + np.sign(now - HI), side), \
            f"{key}{list(i)} moved a logvar across a bound"

    worst, n = entry_gradcheck(vae, x, eps, at_each_point=same_side, min_resolved=0.6)
    assert n == vae.n_params and worst <= RTOL


def test_clipped_logvars_get_no_gradient_and_the_meaning_is_pinned():
    vae, x, eps = bounded_model(n_samples=1)
    raw = raw_logvar(vae, x)
    mu, logvar = vae.encode(x)
    np.testing.assert_array_equal(logvar, np.clip(raw, LO, HI))  # encode returns the bounded logvar
    vae.loss_and_grads(x, eps)
    z = vae._noise.get(4)["z"][0]
    np.testing.assert_allclose((z - mu) / np.exp(logvar / 2), eps[0], rtol=1e-12)  # z drawn with it
    rec, kl = vae.loss_terms(x, eps)
    var = np.exp(logvar)
    assert kl == pytest.approx(np.mean(np.sum(0.5 * (mu**2 + var - 1 - np.log(var)), axis=1)), rel=1e-12)
    # no gradient reaches a logvar at or beyond a bound: make the first logvar its bias alone and set it
    b = vae.params["encoder.head.b"]
    vae.params["encoder.head.W"][:, 3:] = 0  # every example's logvar = its bias now
    for value in (LO - 1.0, HI + 1.0, LO, HI):  # beyond and exactly at each bound: gradient 0
        b[3] = value
        _, grads = vae.loss_and_grads(x, eps)
        assert grads["encoder.head.b"][3] == 0.0 and not grads["encoder.head.W"][:, 3].any(), value
        assert vae.encode(x)[1][:, 0].tolist() == [min(max(value, LO), HI)] * 4
    b[3] = 0.5 * (LO + HI)
    assert vae.loss_and_grads(x, eps)[1]["encoder.head.b"][3] != 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_extreme_raw_logvars_stay_finite(dtype, objective):
    vae = npvae.VAE(6, (5,), 2, dtype=dtype, seed=0, logvar_bounds=(LO, HI), objective=objective, n_samples=2)
    vae.params["encoder.head.W"][...] = 0
    vae.params["encoder.head.b"][...] = [0.0, 0.0, -1e4, 1e4]
    x = np.random.default_rng(0).random((3, 6)).astype(dtype)
    loss, grads = vae.loss_and_grads(x)
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
    assert not grads["encoder.head.b"][2:].any()
    assert vae.encode(x)[1].tolist() == [[LO, HI]] * 3


def test_bounds_round_trip_and_are_checked(tmp_path):
    vae = npvae.VAE(6, (5,), 2, logvar_bounds=(-6, 2), seed=0)
    assert vae.logvar_bounds == (-6.0, 2.0) and vae.config()["logvar_bounds"] == [-6.0, 2.0]
    vae.save(tmp_path / "m.npz")
    back = npvae.VAE.load(tmp_path / "m.npz")
    assert back.config() == vae.config() and back.logvar_bounds == (-6.0, 2.0)
    assert npvae.VAE(6, (5,), 2, logvar_bounds=np.array([-1.0, 1.0])).logvar_bounds == (-1.0, 1.0)
    assert npvae.VAE(6, (5,), 2).config()["logvar_bounds"] is None
    bad = [((2, -6), ValueError, r"logvar_bounds must have lo < hi, got \(2, -6\)"),
           ((1, 1), ValueError, r"lo < hi, got \(1, 1\)"),
           ((-6, float("nan")), ValueError, r"logvar_bounds\[1\] must be finite, got nan"),
           ((-float("inf"), 2), ValueError, r"logvar_bounds\[0\] must be finite, got -inf"),
           ((-6, 31), ValueError, r"logvar_bounds\[1\] must be <= 30 \(npvae.kernels.LOGVAR_MAX"),
           ((-6,), TypeError, r"logvar_bounds must be None or a pair \(lo, hi\) of numbers, got \(-6,\)"),
           ((-6, 0, 2), TypeError, "a pair"),
           ("-6,2", TypeError, "a pair"),
           (5.0, TypeError, "a pair"),
           (("a", 2), TypeError, r"logvar_bounds\[0\] must be a number, got str 'a'"),
           ((True, 2), TypeError, r"logvar_bounds\[0\] must be a number")]
    for bounds, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            npvae.VAE(6, (5,), 2, logvar_bounds=bounds)


def test_bounded_training_uses_the_layer_path_and_fused_true_says_why():
    rng = np.random.default_rng(0)
    x = (rng.random((128, 12)) < 0.3).astype(np.float32)
    vae = npvae.VAE(12, (8,), 2, logvar_bounds=(LO, HI), seed=0)
    history = npvae.train(vae, x, epochs=2, batch_size=32, seed=0)
    assert np.isfinite(history[-1]["train_loss"])
    with pytest.raises(ValueError, match=r"fused=True.*does not bound logvar \(logvar_bounds=\(-6.0, 2.0\)\)"):
        npvae.train(vae, x, epochs=1, batch_size=32, fused=True)
