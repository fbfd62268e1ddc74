# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Backprop through a VAE by hand: the worked example as a notebook
#
# The walkthrough of [docs/worked_example.md](../docs/worked_example.md), to run cell by cell and change.
# It is a plain Python file ("percent" format): `python examples/worked_example.py` runs it, and
#
# ```bash
# jupytext --to notebook examples/worked_example.py
# ```
#
# turns it into `examples/worked_example.ipynb` (`pip install jupytext`; Jupyter with jupytext installed
# also opens the `.py` file as a notebook directly). The equation labels, such as (D1), are those of
# [docs/derivation.md](../docs/derivation.md).

# %%
import numpy as np

import npvae
from npvae import reference

# %% [markdown]
# ## The model
#
# 3 inputs, one tanh hidden layer of 2, a latent of K = 1, a Bernoulli decoder, in float64. The
# parameters are short decimals, written **in place** into `vae.params` (the layers hold these arrays).

# %%
vae = npvae.VAE(3, (2,), 1, likelihood="bernoulli", activation="tanh", dtype=np.float64)
params = {
    "encoder.0.W": [[0.5, -0.3], [0.2, 0.4], [-0.1, 0.6]], "encoder.0.b": [0.1, -0.2],
    "encoder.head.W": [[0.7, 0.3], [-0.4, 0.5]], "encoder.head.b": [0.05, -0.5],  # columns: mu, logvar
    "decoder.0.W": [[0.8, -0.6]], "decoder.0.b": [0.1, 0.2],
    "decoder.out.W": [[0.9, -0.5, 0.3], [0.4, 0.7, -0.8]], "decoder.out.b": [0.0, 0.1, -0.1],
}
for name, value in params.items():
    vae.params[name][...] = value

x = np.array([[1.0, 0.0, 1.0]])  # a batch of one example
eps = np.array([[[0.5]]])        # the noise, (L, B, K): given, so the loss is a deterministic function

# %% [markdown]
# ## Forward and backward
#
# `vae.loss_and_grads` is the fast path (Numba kernels). `npvae.reference.loss_and_grads` computes the
# same in plain NumPy, one equation per line; its `trace` holds every intermediate value and gradient.

# %%
loss, grads = vae.loss_and_grads(x, eps)
trace = {}
ref_loss, ref_grads = reference.loss_and_grads(vae, x, eps, trace=trace)
print(f"loss {loss:.6f} (the reference: {ref_loss:.6f})")
for name in ("h_enc", "mu", "logvar", "sigma", "z", "h_dec", "out"):  # h1, ..., h2, logits on the page
    print(f"{name:8s} {np.round(trace[name], 6).tolist()}")

# %% [markdown]
# The backward pass in reverse order. mu and logvar are **forks**: each feeds z and the KL, so each
# gradient is a sum of two parts. eps is an input, like x: it gets no gradient.

# %%
for name in ("dlogits", "dz", "dmu_rec", "dmu_kl", "dmu", "dlogvar_rec", "dlogvar_kl", "dlogvar"):
    print(f"{name:12s} {np.round(trace[name], 6).tolist()}")
print("d decoder.out.b", np.round(grads["decoder.out.b"], 6).tolist())

# %% [markdown]
# ## Check it by hand, then by finite differences
#
# dlogits = (sigmoid(logits) − x) / (B L) (B1): with B = L = 1 it is the decoder's mean minus the data.

# %%
x_hat = 1 / (1 + np.exp(-trace["out"]))
print("x_hat - x  ", np.round(x_hat - x, 6).tolist())
print("dlogits    ", np.round(trace["dlogits"], 6).tolist())


# %%
def loss_at(name, index, value):
    """The loss with one parameter entry set to ``value``, the noise unchanged."""
    p = vae.params[name]
    old = p[index]
    p[index] = value
    try:
        return vae.loss_and_grads(x, eps)[0]
    finally:
        p[index] = old


h = 1e-5
worst = 0.0
for name, p in vae.params.items():
    for index in np.ndindex(*p.shape):
        v = p[index]
        numeric = (loss_at(name, index, v + h) - loss_at(name, index, v - h)) / (2 * h)
        analytic = grads[name][index]
        worst = max(worst, abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-12))
print(f"largest relative error over all {vae.n_params} parameters: {worst:.1e}")

# %% [markdown]
# ## What a gradient check cannot see
#
# The variance of z over many draws of eps must be exp(logvar): sigma is exp(logvar / 2).

# %%
mu, logvar = vae.encode(x)
draws = np.random.default_rng(0).standard_normal(200_000)
z = mu[0, 0] + np.exp(logvar[0, 0] / 2) * draws
print(f"variance of z {z.var():.4f}, exp(logvar) {np.exp(logvar[0, 0]):.4f}")

# %% [markdown]
# ## One step of Adam
#
# On step 1 the update is -lr * g / (|g| + 1e-8), about -lr * sign(g).

# %%
before = {k: v.copy() for k, v in vae.params.items()}
opt = npvae.Adam(lr=0.01)
opt.step(vae.params, grads)
print("update / lr of decoder.out.b:", np.round((vae.params["decoder.out.b"] - before["decoder.out.b"]) / 0.01, 6))
print("sign of its gradient:        ", np.sign(grads["decoder.out.b"]))
print(f"loss before {loss:.6f}, after {vae.loss_and_grads(x, eps)[0]:.6f}")
