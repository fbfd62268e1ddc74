"""Bad input at the public boundary gets a clear error that names the argument.

CASES is also the source of the README's table of bad inputs:
``python tests/test_validation.py`` prints it as Markdown.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import npvae

rng = np.random.default_rng(0)
X = rng.random((16, 12)).astype(np.float32)


def vae(**kw) -> npvae.VAE:
    args = dict(input_dim=12, hidden_dims=(8,), latent_dim=2, seed=0)
    args.update(kw)
    return npvae.VAE(**args)


def with_nan() -> np.ndarray:
    x = X.copy()
    x[3, 4] = np.nan
    return x


CASES: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("pixels as integers 0..255", lambda: vae().loss_and_grads((X * 255).astype(np.uint8)), TypeError,
     "x must be a floating-point array, got dtype uint8 (scale integer pixels to [0, 1] first"),
    ("pixels 0..255 as floats (Bernoulli)", lambda: vae().loss_and_grads(X * 255), ValueError,
     "x must lie in [0, 1] for the Bernoulli likelihood"),
    ("a NaN in the data", lambda: vae().evaluate(with_nan()), ValueError, "x contains 1 NaN or infinite value(s)"),
    ("images not flattened (n, 28, 28)", lambda: vae().loss_and_grads(X.reshape(16, 3, 4)), ValueError,
     "x must have shape (n, 12), got shape (16, 3, 4)"),
    ("wrong width", lambda: vae().loss_and_grads(X[:, :10]), ValueError,
     "x must have 12 columns (shape (n, 12)), got shape (16, 10)"),
    ("a single image, 1-D", lambda: vae().encode(X[0]), ValueError, "x must have shape (n, 12), got shape (12,)"),
    ("empty array", lambda: vae().evaluate(X[:0]), ValueError, "x is empty"),
    ("a list instead of an array", lambda: vae().loss_and_grads(X.tolist()), TypeError, "x must be a NumPy array, got list"),
    ("latent_dim=0", lambda: vae(latent_dim=0), ValueError, "latent_dim must be >= 1, got 0"),
    ("hidden size 0", lambda: vae(hidden_dims=(8, 0)), ValueError, "hidden_dims[] must be >= 1, got 0"),
    ("unknown likelihood", lambda: vae(likelihood="poisson"), ValueError,
     "likelihood must be one of 'bernoulli', 'gaussian'; got 'poisson'"),
    ("unknown activation", lambda: vae(activation="gelu"), ValueError, "activation must be one of"),
    ("negative beta", lambda: vae(beta=-1), ValueError, "beta must be >= 0, got -1"),
    ("integer dtype", lambda: vae(dtype=np.int32), TypeError, "dtype must be np.float32 or np.float64, got int32"),
    ("n_samples=0", lambda: vae(n_samples=0), ValueError, "n_samples must be >= 1, got 0"),
    ("sigma_dec=0", lambda: vae(likelihood="gaussian", sigma_dec=0.0), ValueError, "sigma_dec must be > 0, got 0"),
    ("eps of the wrong shape", lambda: vae().loss_and_grads(X, eps=np.zeros((16, 3))), ValueError,
     "eps must have shape (16, 2)"),
    ("negative learning rate", lambda: npvae.Adam(lr=-1e-3), ValueError, "lr must be > 0, got -0.001"),
    ("momentum of 1 or more", lambda: npvae.SGD(lr=0.1, momentum=1.0), ValueError, "momentum must be < 1, got 1"),
    ("batch size larger than the data", lambda: npvae.train(vae(), X, epochs=1, batch_size=64), ValueError,
     "batch_size (64) is larger than the training set (16 examples)"),
    ("batch_size=0", lambda: npvae.train(vae(), X, epochs=1, batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
    ("epochs as a float", lambda: npvae.train(vae(), X, epochs=2.5), TypeError, "epochs must be an integer, got float 2.5"),
    ("validation set of another width", lambda: npvae.train(vae(), X, epochs=1, batch_size=4, x_val=X[:, :5]),
     ValueError, "x_val must have 12 columns"),
    ("not a model", lambda: npvae.train("vae", X), TypeError, "vae must be an npvae.VAE, got str"),
    ("clip_norm=0", lambda: npvae.train(vae(), X, epochs=1, batch_size=4, clip_norm=0), ValueError,
     "clip_norm must be > 0, got 0"),
    ("sample(0)", lambda: vae().sample(0), ValueError, "n must be >= 1, got 0"),
    ("decode with the wrong latent size", lambda: vae().decode(np.zeros((3, 5), np.float32)), ValueError,
     "z must have 2 columns"),
]


@pytest.mark.parametrize("what,call,exc,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(what, call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert type(info.value) is exc
    assert fragment in str(info.value), str(info.value)


def test_float64_data_into_a_float32_model_is_converted_not_rejected():
    v = vae()
    loss64 = v.evaluate(X.astype(np.float64))
    assert loss64 == v.evaluate(X)


def test_gaussian_model_accepts_values_outside_unit_range():
    v = vae(likelihood="gaussian")
    assert np.isfinite(v.evaluate(X * 10 - 5))


def markdown_table() -> str:
    rows = ["| bad input | error |", "| --- | --- |"]
    for what, call, exc, _ in CASES:
        try:
            call()
        except exc as e:  # noqa: PERF203
            rows.append(f"| {what} | `{type(e).__name__}: {e}` |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
