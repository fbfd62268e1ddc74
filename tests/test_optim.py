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


@pytest.mark.parametrize("make", [lambda: npvae.Adam(), lambda: npvae.SGD(lr=0.1, momentum=0.9)])
def test_an_optimizer_refuses_the_arrays_of_another_model_with_equal_shapes(make):
    """Moments and the step count belong to the arrays of the first step; another model's are refused."""
    a = {"w": np.ones((2, 3)), "b": np.zeros(3)}
    b = {"w": np.ones((2, 3)), "b": np.zeros(3)}
    g = {"w": np.full((2, 3), 0.5), "b": np.full(3, 0.5)}
    opt = make()
    opt.step(a, g)
    before = {k: v.copy() for k, v in b.items()}
    with pytest.raises(ValueError, match=r"params\['w'\].*another model.*fresh.*reset\(\)"):
        opt.step(b, g)
    for k in b:  # refused before any kernel ran
        np.testing.assert_array_equal(b[k], before[k])
    with pytest.raises(ValueError, match="another model"):
        opt.step({"w": b["w"], "b": a["b"]}, g)  # one rebound entry is enough
    opt.step(dict(a), g)  # a new dict of the same arrays is the same model
    assert opt.t == 2


@pytest.mark.parametrize("make", [lambda: npvae.Adam(lr=0.1), lambda: npvae.SGD(lr=0.1, momentum=0.9)])
def test_reset_forgets_the_state_so_the_optimizer_can_serve_another_model(make):
    small = {"w": np.ones(2)}
    big = {"w": np.ones((4, 5)), "v": np.ones(7)}
    opt = make()
    opt.step(small, {"w": np.ones(2)})
    opt.reset()
    assert opt.t == 0 and opt.state == {}
    opt.step(big, {"w": np.ones((4, 5)), "v": np.ones(7)})
    ref = {"w": np.ones((4, 5)), "v": np.ones(7)}
    make().step(ref, {"w": np.ones((4, 5)), "v": np.ones(7)})  # as a fresh optimizer's first step
    for k in ref:
        np.testing.assert_array_equal(big[k], ref[k])


def test_step_checks_types_dtypes_and_layout_before_any_update():
    opt = npvae.Adam()
    p = {"a": np.zeros(2), "b": np.zeros(3)}
    with pytest.raises(TypeError, match=r"grads\['a'\] must be a NumPy array, got list"):
        opt.step(p, {"a": [0.0, 0.0], "b": np.zeros(3)})
    with pytest.raises(ValueError,
                       match=r"grads\['b'\] must have shape \(3,\) and dtype float64, got \(3,\) and float32"):
        opt.step(p, {"a": np.zeros(2), "b": np.zeros(3, np.float32)})
    with pytest.raises(TypeError, match=r"params\['a'\] must be a float32 or float64 array, got dtype int64"):
        opt.step({"a": np.zeros(2, np.int64)}, {"a": np.zeros(2, np.int64)})
    with pytest.raises(ValueError, match=r"params\['w'\] must be C-contiguous"):
        opt.step({"w": np.zeros((3, 4)).T}, {"w": np.zeros((4, 3))})
    with pytest.raises(TypeError, match="params must be a mapping"):
        opt.step([np.zeros(2)], [np.zeros(2)])
    assert opt.t == 0 and opt.state == {}  # nothing was counted or created by the refused steps


def test_state_loaded_from_a_checkpoint_binds_to_the_model_it_steps_first():
    """load_state_arrays then step on the loaded model's arrays (what resume does) continues the run exactly."""
    p1 = {"w": np.linspace(-1, 1, 6).reshape(2, 3)}
    g = {"w": np.full((2, 3), 0.25)}
    straight = npvae.Adam(lr=0.1)
    straight.step(p1, g)
    saved_p, saved_state = p1["w"].copy(), {k: a.copy() for k, a in straight.state_arrays().items()}
    straight.step(p1, g)
    resumed, p2 = npvae.Adam(lr=0.1), {"w": saved_p}
    resumed.load_state_arrays(saved_state)
    resumed.step(p2, g)
    np.testing.assert_array_equal(p2["w"], p1["w"])
    with pytest.raises(ValueError, match="another model"):
        resumed.step(p1, g)  # now bound to p2's arrays


def test_passing_the_class_instead_of_an_instance_is_a_clear_error():
    from npvae.optim import check_optimizer

    for cls in (npvae.Adam, npvae.SGD):
        with pytest.raises(TypeError, match=rf"optimizer must be an instance such as npvae.{cls.__name__}\(\), "
                                            rf"got the class npvae.{cls.__name__} itself"):
            check_optimizer("optimizer", cls)
    with pytest.raises(TypeError, match="optimizer must be npvae.Adam or npvae.SGD, got str"):
        check_optimizer("optimizer", "adam")
    opt = npvae.SGD(0.1)
    assert check_optimizer("optimizer", opt) is opt
