"""Each layer's backward against central differences (float64, random upstream gradients)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from npvae import Activation, Dense, check_vjp
from npvae import kernels as K
from npvae import reference as R

RTOL = 1e-6
dims = st.integers(1, 9)
seeds = st.integers(0, 2**32 - 1)


def away_from_kink(x: np.ndarray, margin: float = 1e-3) -> np.ndarray:
    """Push values off 0, where relu and leaky_relu are not differentiable."""
    return np.where(np.abs(x) < margin, np.copysign(margin, x) + x, x)


@pytest.mark.parametrize("act", list(K.ACTIVATIONS))
@given(n=dims, d_in=dims, d_out=dims, seed=seeds)
def test_dense_backward_wrt_input_and_params(act, n, d_in, d_out, seed):
    rng = np.random.default_rng(seed)
    layer = Dense(d_in, d_out, act, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(d_out)
    x = rng.standard_normal((n, d_in))
    # relu and leaky_relu have a kink at 0: central differences across it are meaningless
    assume(np.min(np.abs(x @ layer.params["W"] + layer.params["b"])) > 1e-3)

    def fwd_x(v):
        return layer.forward(v)

    def vjp_x(dy):
        layer.forward(x)
        return layer.backward(dy).copy()

    assert (res := check_vjp(fwd_x, vjp_x, x, rng=rng)).ok, res
    for key in ("W", "b"):
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


@pytest.mark.parametrize("act", list(K.ACTIVATIONS))
@given(n=dims, d=dims, seed=seeds)
def test_activation_layer_backward(act, n, d, seed):
    rng = np.random.default_rng(seed)
    layer = Activation(act, dtype=np.float64)
    x = away_from_kink(rng.standard_normal((n, d)) * 3)
    res = check_vjp(layer.forward, lambda dy: (layer.forward(x), layer.backward(dy))[1].copy(), x, rng=rng)
    assert res.ok, res
    np.testing.assert_allclose(layer.forward(x), R.activate(x, act), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "softplus"])
def test_saturating_activations_are_stable_for_large_inputs(act):
    layer = Activation(act, dtype=np.float64)
    x = np.array([[-1e4, -800.0, -50.0, 50.0, 800.0, 1e4]])
    y = layer.forward(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, R.activate(x, act), rtol=1e-15)
    dx = layer.backward(np.ones_like(x))
    assert np.all(np.isfinite(dx)) and np.all(dx >= 0)


def test_dense_initialisation_scales():
    rng = np.random.default_rng(0)
    relu = Dense(1000, 500, "relu", rng=rng)
    lim = np.sqrt(6 / 1000)
    assert np.abs(relu.params["W"]).max() <= lim and np.abs(relu.params["W"]).max() > 0.99 * lim
    np.testing.assert_allclose(relu.params["W"].var(), lim**2 / 3, rtol=0.02)  # uniform(-a, a) has var a^2/3
    assert not relu.params["b"].any()
    lin = Dense(1000, 500, "identity", rng=rng)
    np.testing.assert_allclose(np.abs(lin.params["W"]).max(), np.sqrt(6 / 1500), rtol=1e-3)


def test_dense_grads_have_param_keys_and_workspaces_are_reused():
    layer = Dense(4, 3, "relu", rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((5, 4))
    y1 = layer.forward(x)
    y2 = layer.forward(x)
    assert y1 is y2  # one buffer per row count
    layer.backward(np.ones((5, 3)))
    assert layer.grads.keys() == layer.params.keys()
    assert all(layer.grads[k].shape == layer.params[k].shape for k in layer.params)


def test_dense_rejects_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        Dense(3, 2, "swish")
    with pytest.raises(ValueError, match="in_dim"):
        Dense(0, 2)
    with pytest.raises(TypeError, match="dtype"):
        Dense(3, 2, dtype=np.int32)


def test_dense_forward_checks_its_input():
    layer = Dense(5, 4, "tanh", rng=np.random.default_rng(0), dtype=np.float32)
    with pytest.raises(ValueError, match=r"^x must have shape \(n, 5\), got shape \(5,\)$"):
        layer.forward(np.ones(5))
    with pytest.raises(ValueError, match=r"^x must have 5 columns \(shape \(n, 5\)\), got shape \(3, 6\)$"):
        layer.forward(np.ones((3, 6)))
    with pytest.raises(TypeError, match="x must be a floating-point array, got dtype int64"):
        layer.forward(np.ones((3, 5), dtype=np.int64))
    with pytest.raises(TypeError, match="x must be a NumPy array, got list"):
        layer.forward([[1.0] * 5])
    x = np.ones((3, 5))
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"x contains 1 NaN or infinite value\(s\)"):
        layer.forward(x)
    with pytest.raises(ValueError, match="x is empty"):
        layer.forward(np.ones((0, 5)))
    y = layer.forward(np.ones((3, 5)))  # float64 input goes through in the layer's dtype
    assert y.shape == (3, 4) and y.dtype == np.float32


def test_dense_and_activation_backward_check_dy():
    layer = Dense(5, 4, "tanh", rng=np.random.default_rng(0))
    layer.forward(np.ones((3, 5)))
    with pytest.raises(TypeError, match="dy must be a floating-point array, got dtype int64"):
        layer.backward(np.ones((3, 4), dtype=np.int64))
    bad = np.ones((3, 4))
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"dy contains 1 NaN or infinite value\(s\)"):
        layer.backward(bad)
    with pytest.raises(ValueError, match=r"dy must have the shape of the last forward output, \(3, 4\), got \(4,\)"):
        layer.backward(np.ones(4))
    act = Activation("sigmoid")
    with pytest.raises(RuntimeError, match="Activation.backward called before forward"):
        act.backward(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"^x must have shape \(n, d\), got shape \(2, 2, 2\)$"):
        act.forward(np.ones((2, 2, 2)))
    act.forward(np.ones((2, 2)))
    with pytest.raises(TypeError, match="dy must be a NumPy array, got list"):
        act.backward([[1.0, 1.0], [1.0, 1.0]])


def test_checked_and_internal_entries_compute_the_same():
    """The public entries check and then run exactly the internal path the VAE uses."""
    rng = np.random.default_rng(4)
    a = Dense(6, 5, "softplus", rng=np.random.default_rng(1))
    b = Dense(6, 5, "softplus", rng=np.random.default_rng(1))
    x, dy = rng.standard_normal((7, 6)), rng.standard_normal((7, 5))
    np.testing.assert_array_equal(a.forward(x), b._forward(x))
    np.testing.assert_array_equal(a.backward(dy), b._backward(dy))
    for k in a.params:
        np.testing.assert_array_equal(a.grads[k], b.grads[k])
    assert a.backward(dy, need_dx=False) is None


def test_layer_params_cannot_be_rebound_only_written_in_place():
    layer = Dense(3, 2, rng=np.random.default_rng(0))
    w = layer.params["W"]
    with pytest.raises(TypeError, match=r"params\['W'\] cannot be rebound.*params\['W'\]\[\.\.\.\] = "):
        layer.params["W"] = np.zeros((3, 2))
    with pytest.raises(TypeError, match="cannot be rebound"):
        layer.grads["b"] = np.zeros(2)
    with pytest.raises(TypeError, match="cannot be removed"):
        del layer.params["b"]
    layer.params["W"][...] = 2.0
    assert layer.params["W"] is w and np.all(w == 2.0)
    assert dict(layer.params).keys() == {"W", "b"} and len(layer.params) == 2 and "W" in layer.params
