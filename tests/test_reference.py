"""The one-file reference VAE (npvae.reference.loss_and_grads) equals the fast path, VAE.loss_and_grads.

In float64, to 1e-12 relative per array (the largest difference over the array's largest entry), for every
configuration: depth, activation, likelihood, beta, L, gated layers, logvar bounds (with entries beyond them),
the clamp at 30, and the importance-weighted bound. The reference shares no code with the fast path except
the constant LOGVAR_MAX, so agreement means two independent implementations compute the same function.
"""

from __future__ import annotations

import numpy as np
import pytest

import npvae
from npvae import reference as R

ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "softplus", "identity"]

CONFIGS = (
    [dict(activation=a) for a in ACTIVATIONS]
    + [dict(activation=a, likelihood="gaussian", sigma_dec=0.7) for a in ("relu", "tanh")]
    + [dict(hidden=()), dict(hidden=(7,)), dict(hidden=(6, 5, 4), activation="tanh")]
    + [dict(beta=0.3), dict(beta=2.5, likelihood="gaussian"), dict(n_samples=3), dict(n_samples=4, beta=1.7)]
    + [dict(layer="gated"), dict(layer="gated", likelihood="gaussian", n_samples=2, hidden=(5, 4))]
    + [dict(logvar_bounds=(-0.6, 0.4)), dict(logvar_bounds=(-0.6, 0.4), layer="gated", n_samples=2)]
    + [dict(objective="iwae", n_samples=5), dict(objective="iwae", n_samples=1),
       dict(objective="iwae", n_samples=4, likelihood="gaussian", sigma_dec=0.5),
       dict(objective="iwae", n_samples=3, layer="gated", logvar_bounds=(-0.6, 0.4))]
)


def _id(cfg: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in cfg.items())


def make(cfg: dict, seed: int = 0) -> npvae.VAE:
    cfg = dict(cfg)
    hidden = cfg.pop("hidden", (6, 5))
    vae = npvae.VAE(9, hidden, 3, dtype=np.float64, seed=seed, **cfg)
    rng = np.random.default_rng(seed + 1)
    for p in vae.params.values():
        p[...] = rng.normal(0, 0.6, p.shape)
    return vae


def assert_same(vae: npvae.VAE, x: np.ndarray, eps: np.ndarray) -> dict:
    trace: dict = {}
    loss, grads = R.loss_and_grads(vae, x, eps, trace=trace)
    fast_loss, fast_grads = vae.loss_and_grads(x, eps)
    assert loss == pytest.approx(fast_loss, rel=1e-12, abs=0)
    assert grads.keys() == fast_grads.keys()
    for k, g in fast_grads.items():
        scale = np.abs(g).max()
        err = np.abs(grads[k] - g).max() / scale if scale > 0 else np.abs(grads[k]).max()
        assert err <= 1e-12, f"{k}: relative difference {err:.3g}"
    return trace


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
@pytest.mark.parametrize("batch", [1, 5])
def test_reference_equals_fast_path(cfg, batch):
    vae = make(cfg)
    rng = np.random.default_rng(batch)
    x = rng.random((batch, 9))
    if cfg.get("likelihood") != "gaussian":
        x[:, ::2] = np.round(x[:, ::2])  # binary and grey pixels
    eps = rng.standard_normal((vae.n_samples, batch, 3))
    trace = assert_same(vae, x, eps)
    if "logvar_bounds" in cfg and batch == 5:  # the bounds are exercised: some raw logvars lie beyond them
        lo, hi = cfg["logvar_bounds"]
        raw = trace["raw"]
        assert np.any(raw < lo) and np.any(raw > hi) and np.any((raw > lo) & (raw < hi))
        assert np.all(trace["dlogvar"][(raw < lo) | (raw > hi)] == 0)


def test_reference_equals_fast_path_above_the_clamp():
    """A raw logvar above 30 is clamped: its gradient is 0 in both."""
    vae = make(dict(activation="tanh"))
    vae.params["encoder.head.b"][3] = 34.0  # the first logvar column
    x = np.random.default_rng(0).random((4, 9))
    eps = np.random.default_rng(1).standard_normal((1, 4, 3))
    trace = assert_same(vae, x, eps)
    assert np.all(trace["raw"][:, 0] > 30) and np.all(trace["dlogvar"][:, 0] == 0)


def test_reference_accepts_2d_eps_and_fills_the_trace():
    vae = make({})
    x = np.random.default_rng(0).random((2, 9))
    eps = np.random.default_rng(1).standard_normal((2, 3))
    trace: dict = {}
    loss, _ = R.loss_and_grads(vae, x, eps, trace=trace)
    assert loss == pytest.approx(vae.loss_and_grads(x, eps)[0], rel=1e-12)
    # the fork: dmu and dlogvar are their reconstruction part plus their KL part
    np.testing.assert_array_equal(trace["dmu"], trace["dmu_rec"] + trace["dmu_kl"])
    np.testing.assert_allclose(trace["dmu_kl"], trace["mu"] / 2)  # beta / B * mu with B = 2
    assert trace["z"].shape == (2, 3) and trace["dlogits"].shape == (2, 9)


def test_reference_is_about_a_hundred_lines():
    """The learner reads it first: it must stay one short function."""
    import inspect

    lines = inspect.getsource(R.loss_and_grads).splitlines()
    assert len(lines) <= 110, len(lines)
