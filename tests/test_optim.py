"""Optimizers against steps worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

import npvae


def test_adam_two_steps_by_hand():
    # p = 1, lr = 0.1, betas (0.9, 0.999), eps 1e-8
    # step 1, g = 0.5: m = 0.05, v = 0.00025; m_hat = 0.05 / 0.1 = 0.5; v_hat = 0.00025 / 0.001 = 0.25
    #   p = 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.900000002
    # step 2, g = -1: m = 0.045 - 0.1 = -0.055; v = 0.00024975 + 0.001 = 0.00124975
    #   m_hat = -0.055 / 0.19 = -0.289473684...; v_hat = 0.00124975 / 0.001999 = 0.625187593...
    #   p = 0.900000002 + 0.1 * 0.289473684 / (0.790688...) = 0.936610354...
    p = {"w": np.array([1.0])}
    opt = npvae.Adam(lr=0.1)
    opt.step(p, {"w": np.array([0.5])})
    assert p["w"][0] == pytest.approx(0.900000002, abs=1e-12)
    assert opt.state["w"]["m"][0] == pytest.approx(0.05) and opt.state["w"]["v"][0] == pytest.approx(0.00025)
    opt.step(p, {"w": np.array([-1.0])})
    assert p["w"][0] == pytest.approx(0.9366103542405653, abs=1e-12)
    assert opt.t == 2


def test_adam_first_step_is_lr_times_sign():
    g = np.array([1e-3, -5.0, 20.0, -1e-2])
    p = {"w": np.zeros(4, np.float32)}
    npvae.Adam(lr=1e-3).step(p, {"w": g.astype(np.float32)})
    np.testing.assert_allclose(p["w"], -1e-3 * np.sign(g), rtol=1e-4)


def test_adam_updates_in_place_and_returns_grad_norm():
    w = np.ones((2, 3))
    params = {"w": w}
    sq = npvae.Adam().step(params, {"w": np.full((2, 3), 2.0)})
    assert params["w"] is w and np.all(w < 1)
    assert sq == pytest.approx(24.0)


def test_sgd_momentum_by_hand():
    # buf = 0.9 buf + g; p -= lr buf. g = 1 then 1: buf 1 then 1.9; p = 0 - 0.1 - 0.19 = -0.29
    p = {"w": np.array([0.0])}
    opt = npvae.SGD(lr=0.1, momentum=0.9)
    opt.step(p, {"w": np.array([1.0])})
    opt.step(p, {"w": np.array([1.0])})
    assert p["w"][0] == pytest.approx(-0.29, abs=1e-15)


def test_plain_sgd():
    p = {"w": np.array([1.0, 2.0])}
    npvae.SGD(lr=0.5).step(p, {"w": np.array([2.0, -2.0])})
    np.testing.assert_array_equal(p["w"], [0.0, 3.0])


@pytest.mark.parametrize("bad", [dict(lr=-1e-3), dict(lr=0.0), dict(lr=float("nan")), dict(betas=(1.0, 0.9)),
                                 dict(eps=-1.0)])
def test_adam_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        npvae.Adam(**bad)


def test_step_checks_keys_and_shapes():
    opt = npvae.Adam()
    with pytest.raises(ValueError, match="same keys"):
        opt.step({"a": np.zeros(2)}, {"b": np.zeros(2)})
    with pytest.raises(ValueError, match="shape"):
        opt.step({"a": np.zeros(2)}, {"a": np.zeros(3)})


def test_optimizer_follows_changes_to_the_dicts_it_is_given():
    """Flat views are cached between steps; new keys and new gradient arrays must still be seen."""
    from npvae import reference as R

    opt = npvae.Adam(lr=0.1)
    params, grads = {"a": np.ones(3)}, {"a": np.ones(3)}
    ref_a, ma, va = np.ones(3), np.zeros(3), np.zeros(3)
    opt.step(params, grads)
    ref_a, ma, va = R.adam_update(ref_a, np.ones(3), ma, va, 1, 0.1)

    params["b"], grads["b"] = np.ones(2), np.ones(2)  # same dicts, a new key: first seen at step t = 2
    opt.step(params, grads)
    ref_a, ma, va = R.adam_update(ref_a, np.ones(3), ma, va, 2, 0.1)
    ref_b, mb, vb = R.adam_update(np.ones(2), np.ones(2), np.zeros(2), np.zeros(2), 2, 0.1)
    np.testing.assert_allclose(params["b"], ref_b, rtol=1e-12)

    grads["a"] = np.full(3, -1.0)  # a new gradient array under an old key
    opt.step(params, grads)
    ref_a, ma, va = R.adam_update(ref_a, np.full(3, -1.0), ma, va, 3, 0.1)
    np.testing.assert_allclose(params["a"], ref_a, rtol=1e-12)
    with pytest.raises(ValueError, match="same keys"):
        opt.step(params, {"a": grads["a"]})
