#!/usr/bin/env python3
"""Generate docs/worked_example.md and docs/figures/worked_example_graph.png from npvae's own code.

    python docs/make_worked_example.py           # write both files
    python docs/make_worked_example.py --check   # exit 1 if the page differs from what the code gives now

Every number on the page comes from this run: the model is an ``npvae.VAE`` whose parameters are written
in place (``vae.params[k][...] = ...``), the loss and the parameter gradients come from
``vae.loss_and_grads(x, eps)`` (the fast path: the Numba kernels), the intermediate gradients from
``npvae.reference.loss_and_grads(..., trace=...)`` (checked against the fast path here), the samples of z
from ``npvae.kernels.reparam_kl_forward`` and the step from ``npvae.Adam``. The finite differences move one
entry at a time: a parameter through ``vae.loss_and_grads``, an intermediate node through a small NumPy
forward pass (below) that adds a shift to that node, whose loss is checked against the model's.
tests/test_worked_example.py regenerates the page in memory and compares it with the file.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing (an npvae on the path comes first)
    sys.path.append(str(ROOT))

import npvae  # noqa: E402  (after the sys.path line above, so a checkout runs without installing)
from npvae import kernels  # noqa: E402
from npvae import reference as R  # noqa: E402

PAGE = ROOT / "docs" / "worked_example.md"
FIGURE = ROOT / "docs" / "figures" / "worked_example_graph.png"

#: The model: 3 inputs, one tanh hidden layer of 2, a latent of 1, Bernoulli decoder. Short decimals.
PARAMS = {
    "encoder.0.W": [[0.5, -0.3], [0.2, 0.4], [-0.1, 0.6]],
    "encoder.0.b": [0.1, -0.2],
    "encoder.head.W": [[0.7, 0.3], [-0.4, 0.5]],  # column 0 gives mu, column 1 gives logvar
    "encoder.head.b": [0.05, -0.5],
    "decoder.0.W": [[0.8, -0.6]],
    "decoder.0.b": [0.1, 0.2],
    "decoder.out.W": [[0.9, -0.5, 0.3], [0.4, 0.7, -0.8]],
    "decoder.out.b": [0.0, 0.1, -0.1],
}
X1 = [[1.0, 0.0, 1.0]]
EPS1 = [[[0.5]]]  # (L, B, K) = (1, 1, 1)
X2 = [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]
EPS2 = [[[0.5], [-1.2]]]  # (1, 2, 1): example 1 keeps its noise
LR = 0.01
N_DRAWS = 200_000
H = 1e-5  # finite-difference step; differences are extrapolated once, (4 D(h) - D(2h)) / 3, as in (C1)


def build_model(beta: float = 1.0) -> npvae.VAE:
    vae = npvae.VAE(3, (2,), 1, likelihood="bernoulli", activation="tanh", beta=beta, dtype=np.float64, seed=0)
    for k, v in PARAMS.items():
        vae.params[k][...] = v
    return vae


# ---------------------------------------------------------------------------- finite differences

NODES = ("pre1", "h1", "ml", "z", "pre2", "h2", "logits")


def shifted_terms(vae: npvae.VAE, x: np.ndarray, eps: np.ndarray, node: str | None = None,
                  delta: np.ndarray | float = 0.0) -> tuple[float, float]:
    """``(reconstruction, beta * KL)`` of the tiny model, with ``delta`` added to ``node`` as it is computed."""
    P = vae.params
    shift = {n: (delta if n == node else 0.0) for n in NODES}
    pre1 = x @ P["encoder.0.W"] + P["encoder.0.b"] + shift["pre1"]
    h1 = np.tanh(pre1) + shift["h1"]
    ml = h1 @ P["encoder.head.W"] + P["encoder.head.b"] + shift["ml"]
    mu, logvar = ml[:, :1], ml[:, 1:]
    z = (mu + np.exp(logvar / 2) * eps[0]) + shift["z"]
    pre2 = z @ P["decoder.0.W"] + P["decoder.0.b"] + shift["pre2"]
    h2 = np.tanh(pre2) + shift["h2"]
    logits = h2 @ P["decoder.out.W"] + P["decoder.out.b"] + shift["logits"]
    b = x.shape[0]
    rec = np.sum(np.logaddexp(0, logits) - x * logits) / b
    kl = 0.5 * np.sum(mu**2 + np.exp(logvar) - 1 - logvar) / b
    return float(rec), float(vae.beta * kl)


def _diff(f, shape: tuple[int, ...]) -> np.ndarray:
    """Central differences of the scalar ``f(delta)`` at 0, one entry of ``delta`` at a time, extrapolated."""
    out = np.zeros(shape)
    for idx in np.ndindex(*shape):
        def d(h: float, idx=idx) -> float:
            e = np.zeros(shape)
            e[idx] = h
            return (f(e) - f(-e)) / (2 * h)
        out[idx] = (4 * d(H) - d(2 * H)) / 3
    return out


def fd_node(vae, x, eps, node: str, shape, part: str = "both") -> np.ndarray:
    pick = {"both": lambda t: t[0] + t[1], "rec": lambda t: t[0], "kl": lambda t: t[1]}[part]
    return _diff(lambda e: pick(shifted_terms(vae, x, eps, node, e)), shape)


def fd_param(vae, x, eps, name: str) -> np.ndarray:
    p = vae.params[name]
    orig = p.copy()

    def f(e):
        p[...] = orig + e
        try:
            return vae.loss_and_grads(x, eps)[0]
        finally:
            p[...] = orig
    return _diff(f, p.shape)


# ---------------------------------------------------------------------------- the run

def run_batch(vae: npvae.VAE, x, eps) -> dict:
    """Forward values, gradients (analytic and by differences) for one batch."""
    x, eps = np.array(x), np.array(eps)
    loss, grads = vae.loss_and_grads(x, eps)  # the fast path: Numba kernels
    t: dict = {}
    ref_loss, ref_grads = R.loss_and_grads(vae, x, eps, trace=t)  # its intermediates: see check()
    rec, bkl = shifted_terms(vae, x, eps)
    rec_t, kl_t = vae.loss_terms(x, eps)
    P = {k: np.array(v) for k, v in vae.params.items()}
    b = x.shape[0]
    pre1 = x @ P["encoder.0.W"] + P["encoder.0.b"]
    pre2 = t["z"] @ P["decoder.0.W"] + P["decoder.0.b"]
    fwd = {"x": x, "eps": eps, "pre1": pre1, "h1": t["enc_caches"][0][1], "ml": t["ml"], "mu": t["mu"],
           "logvar": t["logvar"], "sigma": t["sigma"], "z": t["z"], "pre2": pre2, "h2": t["dec_caches"][0][1],
           "logits": t["out"], "xhat": R.sigmoid(t["out"]), "rec": rec_t, "kl": kl_t, "loss": loss}
    dh2 = t["dlogits"] @ P["decoder.out.W"].T
    dpre2 = dh2 * (1 - fwd["h2"] ** 2)
    dh1 = t["dml"] @ P["encoder.head.W"].T
    dpre1 = dh1 * (1 - fwd["h1"] ** 2)
    dz = t["dz"].reshape(-1, 1)
    assert np.allclose(dpre2 @ P["decoder.0.W"].T, dz, rtol=1e-12, atol=0)
    def node(n, shape, part="both"):
        return fd_node(vae, x, eps, n, shape, part)

    ml_shape = (b, 2)
    fd_ml_rec, fd_ml_kl = node("ml", ml_shape, "rec"), node("ml", ml_shape, "kl")
    rows = [  # (label, symbol, analytic, by differences)
        ("(B1)", "dlogits = (x̂ − x) / (B L)", t["dlogits"], node("logits", (b, 3))),
        ("(D1)", "d decoder.out.W = h2ᵀ dlogits", grads["decoder.out.W"], fd_param(vae, x, eps, "decoder.out.W")),
        ("(D1)", "d decoder.out.b = Σ_rows dlogits", grads["decoder.out.b"], fd_param(vae, x, eps, "decoder.out.b")),
        ("(D1)", "dh2 = dlogits Woᵀ", dh2, node("h2", (b, 2))),
        ("(A3)", "dpre2 = dh2 ⊙ (1 − h2²)", dpre2, node("pre2", (b, 2))),
        ("(D1)", "d decoder.0.W = zᵀ dpre2", grads["decoder.0.W"], fd_param(vae, x, eps, "decoder.0.W")),
        ("(D1)", "d decoder.0.b = Σ_rows dpre2", grads["decoder.0.b"], fd_param(vae, x, eps, "decoder.0.b")),
        ("(D1)", "dz = dpre2 W2ᵀ", dz, node("z", (b, 1))),
        ("(R1)", "dmu_rec = Σ_l dz", t["dmu_rec"], fd_ml_rec[:, :1]),
        ("(K1)", "dmu_kl = (β/B) mu", t["dmu_kl"], fd_ml_kl[:, :1]),
        ("fork", "dmu = dmu_rec + dmu_kl", t["dmu"], fd_ml_rec[:, :1] + fd_ml_kl[:, :1]),
        ("(R1)", "dlogvar_rec = (sigma/2) Σ_l dz ⊙ eps", t["dlogvar_rec"], fd_ml_rec[:, 1:]),
        ("(K1)", "dlogvar_kl = (β/B) ½(exp(logvar) − 1)", t["dlogvar_kl"], fd_ml_kl[:, 1:]),
        ("fork", "dlogvar = dlogvar_rec + dlogvar_kl", t["dlogvar"], fd_ml_rec[:, 1:] + fd_ml_kl[:, 1:]),
        ("(D1)", "d encoder.head.W = h1ᵀ [dmu \\| dlogvar]", grads["encoder.head.W"],
         fd_param(vae, x, eps, "encoder.head.W")),
        ("(D1)", "d encoder.head.b = Σ_rows [dmu \\| dlogvar]", grads["encoder.head.b"],
         fd_param(vae, x, eps, "encoder.head.b")),
        ("(D1)", "dh1 = [dmu \\| dlogvar] Whᵀ", dh1, node("h1", (b, 2))),
        ("(A3)", "dpre1 = dh1 ⊙ (1 − h1²)", dpre1, node("pre1", (b, 2))),
        ("(D1)", "d encoder.0.W = xᵀ dpre1", grads["encoder.0.W"], fd_param(vae, x, eps, "encoder.0.W")),
        ("(D1)", "d encoder.0.b = Σ_rows dpre1", grads["encoder.0.b"], fd_param(vae, x, eps, "encoder.0.b")),
    ]
    return {"fwd": fwd, "rows": rows, "grads": grads, "loss": loss, "trace": t, "ref_loss": ref_loss,
            "ref_grads": ref_grads, "shifted_loss": rec + bkl}


def check(r: dict) -> list[str]:
    """What is inconsistent in a run: the reference (whose intermediates the page shows) against the fast
    path, and the differencing forward pass against the model's loss. Empty when all agree to 1e-12."""
    problems = []
    for batch in ("one", "two"):
        b = r[batch]
        for what, value in (("reference loss", b["ref_loss"]), ("differencing forward", b["shifted_loss"])):
            if abs(value - b["loss"]) > 1e-12 * abs(b["loss"]):
                problems.append(f"batch of {batch}: the {what} {value!r} is not the model's {b['loss']!r}")
        for k, g in b["grads"].items():
            if not np.allclose(b["ref_grads"][k], g, rtol=1e-12, atol=1e-15):
                problems.append(f"batch of {batch}: {k}: npvae.reference and VAE.loss_and_grads differ")
    return problems


def run() -> dict:
    vae = build_model()
    one = run_batch(vae, X1, EPS1)
    two = run_batch(vae, X2, EPS2)
    x2, eps2 = np.array(X2), np.array(EPS2)
    alone = [vae.loss_and_grads(x2[i:i + 1], eps2[:, i:i + 1])[1] for i in range(2)]
    # the two checks a gradient check cannot do, on the batch of one, with the model's own kernel
    mu, logvar = vae.encode(np.array(X1))
    ml = np.concatenate([mu, logvar], axis=1)
    draws = np.random.default_rng(0).standard_normal((N_DRAWS, 1, 1))
    z, sigma = np.empty((N_DRAWS, 1)), np.empty((1, 1))
    kl_closed = kernels.reparam_kl_forward(ml, draws, z, sigma)
    log_q = -0.5 * np.log(2 * np.pi) - 0.5 * logvar[0, 0] - (z[:, 0] - mu[0, 0]) ** 2 / (2 * np.exp(logvar[0, 0]))
    log_p = -0.5 * np.log(2 * np.pi) - 0.5 * z[:, 0] ** 2
    mc = {"mu": mu[0, 0], "logvar": logvar[0, 0], "var_closed": np.exp(logvar[0, 0]), "var_mc": z[:, 0].var(ddof=1),
          "var_se": z[:, 0].var(ddof=1) * np.sqrt(2 / (N_DRAWS - 1)), "mean_mc": z[:, 0].mean(),
          "mean_se": z[:, 0].std(ddof=1) / np.sqrt(N_DRAWS),
          "kl_closed": kl_closed, "kl_mc": np.mean(log_q - log_p),
          "kl_se": np.std(log_q - log_p, ddof=1) / np.sqrt(N_DRAWS)}
    # one Adam step on the batch of one
    x1, eps1 = np.array(X1), np.array(EPS1)
    before = {k: v.copy() for k, v in vae.params.items()}
    loss0, g = vae.loss_and_grads(x1, eps1)
    opt = npvae.Adam(lr=LR)
    opt.step(vae.params, g)
    update = {k: vae.params[k] - before[k] for k in before}
    loss1 = vae.loss_and_grads(x1, eps1)[0]
    sum_abs_g = sum(float(np.abs(v).sum()) for v in g.values())
    # exercise: beta = 2
    beta2 = run_beta2()
    return {"one": one, "two": two, "alone": alone, "mc": mc, "adam": {
        "g": g, "update": update, "loss0": loss0, "loss1": loss1, "sum_abs_g": sum_abs_g}, "beta2": beta2}


def run_beta2() -> dict:
    vae = build_model(beta=2.0)
    t: dict = {}
    _, grads = vae.loss_and_grads(np.array(X1), np.array(EPS1))
    R.loss_and_grads(vae, np.array(X1), np.array(EPS1), trace=t)
    return {"grads": grads, "dmu_kl": t["dmu_kl"], "dlogvar_kl": t["dlogvar_kl"], "dmu": t["dmu"]}


# ---------------------------------------------------------------------------- formatting

def num(v: float, d: int = 6) -> str:
    s = f"{v:.{d}f}"
    return "0." + "0" * d if s == "-0." + "0" * d else s


def term(v: float) -> str:
    """A number as a term of a sum: negative ones in parentheses."""
    return num(v) if v >= 0 else f"({num(v)})"


def arr(a, d: int = 6) -> str:
    a = np.asarray(a, dtype=float)
    if a.ndim == 0:
        return num(float(a), d)
    return "[" + ", ".join(arr(v, d) for v in a) + "]"


def relerr(a, n) -> float:
    a, n = np.asarray(a, float), np.asarray(n, float)
    den = np.maximum(np.maximum(np.abs(a), np.abs(n)), 1e-300)
    return float(np.max(np.abs(a - n) / den))


def rel(e: float) -> str:
    """A relative error to one significant digit; a bucket boundary keeps the page stable across machines."""
    return "< 1e-9" if e < 1e-9 else f"{e:.0e}"


def shape(a) -> str:
    s = np.shape(a)
    return "()" if s == () else "(" + ", ".join(map(str, s)) + (",)" if len(s) == 1 else ")")


def forward_table(f: dict) -> str:
    rows = [
        ("input", "x", f["x"], "the data, one example per row"),
        ("input", "eps", f["eps"], "the noise, (L, B, K); given, not drawn"),
        ("(D1)", "pre1 = x W1 + b1", f["pre1"], "`encoder.0`"),
        ("(A3)", "h1 = tanh(pre1)", f["h1"], ""),
        ("(D1)", "[mu \\| logvar] = h1 Wh + bh", f["ml"], "`encoder.head`, identity (A6)"),
        ("(R1)", "sigma = exp(logvar / 2)", f["sigma"], "a standard deviation"),
        ("(R1)", "z = mu + sigma eps", f["z"], "(L·B, K), row l·B + i"),
        ("(D1)", "pre2 = z W2 + b2", f["pre2"], "`decoder.0`"),
        ("(A3)", "h2 = tanh(pre2)", f["h2"], ""),
        ("(D1)", "logits = h2 Wo + bo", f["logits"], "`decoder.out`, identity (A6)"),
        ("(B1)", "x̂ = sigmoid(logits)", f["xhat"], "the mean of p(x \\| z), for reading only"),
        ("(B1)", "rec = (1/B) Σ softplus(logits) − x·logits", f["rec"], "nats per example"),
        ("(K1)", "KL = (1/B) Σ ½(mu² + exp(logvar) − 1 − logvar)", f["kl"], "nats per example"),
        ("(E1)", "loss = rec + β KL", f["loss"], "β = 1"),
    ]
    out = ["| eq. | symbol | shape | value | note |", "| --- | --- | --- | --- | --- |"]
    out += [f"| {lab} | {sym} | {shape(v)} | `{arr(v)}` | {note} |" for lab, sym, v, note in rows]
    return "\n".join(out)


def backward_table(rows, b: int) -> str:
    out = ["| eq. | symbol | shape | value | finite differences | rel. error |",
           "| --- | --- | --- | --- | --- | --- |"]
    for lab, sym, a, n in rows:
        out.append(f"| {lab} | {sym} | {shape(a)} | `{arr(a)}` | `{arr(n)}` | {rel(relerr(a, n))} |")
        if sym.startswith("dlogvar = dlogvar_rec"):
            out.append(f"| — | eps | (1, {b}, 1) | no gradient: an input, like x | — | — |")
    out.append(f"| — | x | ({b}, 3) | no gradient: the data (not needed, not computed) | — | — |")
    return "\n".join(out)


def worst_relerr(rows) -> float:
    return max(relerr(a, n) for _, _, a, n in rows)


def render(r: dict) -> str:
    one, two, mc, ad = r["one"], r["two"], r["mc"], r["adam"]
    f1, f2 = one["fwd"], two["fwd"]
    t1 = one["trace"]
    g1 = one["grads"]
    xh = f1["xhat"][0]
    dl = t1["dlogits"][0]
    h2 = f1["h2"][0]
    dh2 = one["rows"][3][2][0]
    dp2 = one["rows"][4][2][0]
    b2 = r["beta2"]
    alone = r["alone"]
    params_md = "\n".join(f"| `{k}` | {shape(v)} | `{arr(v, 2)}` |" for k, v in PARAMS.items())
    adam_rows = "\n".join(
        f"| `{k}` | `{arr(ad['g'][k])}` | `{arr(ad['update'][k] / LR)}` |" for k in PARAMS)
    sign_ok = all(np.all(np.sign(ad["update"][k]) == -np.sign(ad["g"][k])) for k in PARAMS)
    max_dev = max(float(np.max(np.abs(np.abs(ad["update"][k][ad["g"][k] != 0]) / LR - 1))) for k in PARAMS)
    zero_g = [k for k in PARAMS if np.any(ad["g"][k] == 0)]
    assert all(np.all(ad["update"][k][ad["g"][k] == 0] == 0) for k in PARAMS)
    mean_b = (alone[0]["decoder.out.b"] + alone[1]["decoder.out.b"]) / 2
    assert sign_ok
    mc_worst_se = max(abs(mc['mean_mc'] - mc['mu']) / mc['mean_se'],  # standard errors from the closed form
                      abs(mc['var_mc'] - mc['var_closed']) / mc['var_se'],
                      abs(mc['kl_mc'] - mc['kl_closed']) / mc['kl_se'])
    mc_wrong_se = abs(mc['var_mc'] - np.exp(2 * mc['logvar'])) / mc['var_se']  # ... from sigma = exp(logvar)
    graph_alt = "The computational graph of the batch of one, each node with its value and its gradient"
    return f"""<!-- Generated by docs/make_worked_example.py from npvae's own code; do not edit by hand.
     python docs/make_worked_example.py regenerates it; tests/test_worked_example.py fails when it is stale. -->

# A worked example: backprop through a VAE by hand

This page follows one VAE small enough to check with a pencil through its forward pass, its backward
pass and one step of Adam. Every number is printed by `docs/make_worked_example.py`, which runs npvae's
own code: an `npvae.VAE` whose parameters are written in place, `vae.loss_and_grads(x, eps)` for the
loss and the gradients, `npvae.Adam` for the step. A test regenerates the page and fails if any number
here differs from what the code gives now. The equations cited, such as (D1), are those of
[derivation.md](derivation.md); the plain NumPy version of the whole computation, one equation per
line, is `npvae.reference.loss_and_grads`, worth reading beside this page. A notebook version is
[examples/worked_example.py](../examples/worked_example.py).

## The model

3 inputs, one hidden layer of 2 units with tanh, a latent of K = 1, a Bernoulli decoder, β = 1, L = 1
sample of z per example, in float64:

| parameter | shape | value |
| --- | --- | --- |
{params_md}

The head `encoder.head` has 2K = 2 columns: the first gives mu, the second logvar. In code:

```python
import numpy as np
import npvae

vae = npvae.VAE(3, (2,), 1, likelihood="bernoulli", activation="tanh", dtype=np.float64)
params = {{
    "encoder.0.W": [[0.5, -0.3], [0.2, 0.4], [-0.1, 0.6]], "encoder.0.b": [0.1, -0.2],
    "encoder.head.W": [[0.7, 0.3], [-0.4, 0.5]], "encoder.head.b": [0.05, -0.5],
    "decoder.0.W": [[0.8, -0.6]], "decoder.0.b": [0.1, 0.2],
    "decoder.out.W": [[0.9, -0.5, 0.3], [0.4, 0.7, -0.8]], "decoder.out.b": [0.0, 0.1, -0.1],
}}
for name, value in params.items():
    vae.params[name][...] = value          # in place: the layers hold these arrays

x = np.array([[1.0, 0.0, 1.0]])            # one example, B = 1
eps = np.array([[[0.5]]])                  # the noise, shape (L, B, K) = (1, 1, 1): given, not drawn
loss, grads = vae.loss_and_grads(x, eps)
print(f"{{loss:.6f}}")                      # {num(one['loss'])}
print(grads["decoder.out.b"].round(6))     # {arr(g1['decoder.out.b'])}
```

Fixing eps makes the loss an ordinary, deterministic function of the 27 parameters, which is what
finite differences need (R1).

## Forward, batch of one

x = {arr(X1[0], 1)}, eps = {num(EPS1[0][0][0], 1)}. Read top to bottom:

{forward_table(f1)}

## Backward, batch of one

The same graph in reverse order. "finite differences" moves one entry at a time by ±h and ±2h
(h = 1e-5) and extrapolates, `(4 D(h) − D(2h)) / 3` (C1): for a parameter through
`vae.loss_and_grads`, for an intermediate node (dlogits, dh2, dz...) by adding the shift to that node in
a forward pass written out in NumPy. The relative error is the largest over the entries.

{backward_table(one['rows'], 1)}

Largest relative error in the table: {rel(worst_relerr(one['rows']))}.

**The forks.** mu feeds two things: z (through the decoder, the reconstruction) and the KL. Its
gradient is the sum of the two paths, `dmu = dmu_rec + dmu_kl` = {num(t1['dmu_rec'][0, 0])} +
{term(t1['dmu_kl'][0, 0])} = {num(t1['dmu'][0, 0])}; the finite differences of the reconstruction term
alone and of the KL term alone give each part separately. The same holds for logvar, which feeds sigma
(hence z) and the KL: {num(t1['dlogvar_rec'][0, 0])} + {term(t1['dlogvar_kl'][0, 0])} =
{num(t1['dlogvar'][0, 0])}. Forgetting one path is the classic bug: the gradient check of the whole loss
catches it, a check of the KL alone does not.

**eps gets no gradient.** eps enters z = mu + sigma·eps like x enters the encoder: it is data for this
evaluation, not a parameter, so nothing is computed for it and nothing updates it. (The loss does depend
on it: dL/deps = dz·sigma, a number no one needs.)

**One row by hand.** dpre2 = dh2 ⊙ (1 − h2²) (A3). From the forward table h2 = `{arr(h2)}`, so
1 − h2² = `{arr(1 - h2**2)}`; with dh2 = `{arr(dh2)}` from the row above, the products are
{num(dh2[0])} × {num(1 - h2[0]**2)} = {num(dh2[0] * (1 - h2[0]**2))} and
{num(dh2[1])} × {num(1 - h2[1]**2)} = {num(dh2[1] * (1 - h2[1]**2))}: the row `{arr(dp2)}`. Or the first
row: dlogits = (sigmoid(logits) − x) / (B L) (B1), with x̂ = `{arr(xh)}` and x = `{arr(X1[0], 1)}`:
{num(xh[0])} − 1 = {num(xh[0] - 1)}, {num(xh[1])} − 0 = {num(xh[1])}, {num(xh[2])} − 1 = {num(xh[2] - 1)},
which is `{arr(dl)}`.

![{graph_alt}](figures/worked_example_graph.png)

*The graph of the batch of one, drawn by the script from the tables above: each node shows its value
(v) and the gradient of the loss with respect to it (g). Arrows point forward; the gradients flow
against them. mu and logvar each have two outgoing arrows, so their gradient is a sum; eps has none.*

## Forward and backward, batch of two

Now B = 2: a second example x = {arr(X2[1], 1)} with eps = {num(EPS2[0][1][0], 1)}; the first keeps its
values. Every node gains a row; the parameters do not.

{forward_table(f2)}

The loss is the mean over the batch (E1): rec and KL are divided by B = 2.

{backward_table(two['rows'], 2)}

Largest relative error in the table: {rel(worst_relerr(two['rows']))}.

**Where the 1/B goes, and where the sums over rows come from.** The 1/B of the mean enters once, at the
top: dlogits = (x̂ − x)/(B L) (B1), and dmu_kl = (β/B) mu, dlogvar_kl = (β/B)·½(exp(logvar) − 1)
(K1). Every row of a node's gradient belongs to one example. A parameter is shared by the rows, so its
gradient sums them: db = Σ_rows dpre and dW = xᵀ dpre (D1), which is why the layers must not divide by B
again. Hence the gradient of the batch is the mean of the gradients of its examples taken alone:

| | `d decoder.out.b` |
| --- | --- |
| example 1 alone (B = 1) | `{arr(alone[0]['decoder.out.b'])}` |
| example 2 alone (B = 1) | `{arr(alone[1]['decoder.out.b'])}` |
| their mean | `{arr(mean_b)}` |
| the batch of two | `{arr(two['grads']['decoder.out.b'])}` |

## Two checks a gradient check cannot do

A gradient check proves that the backward pass is the derivative of the forward pass. It cannot tell
whether the forward pass is the intended model: a sampler that used exp(logvar) as the standard
deviation, with a backward pass derived from it, would pass (R1). Two checks of meaning, on the batch of
one, with {N_DRAWS:,} draws of eps through the model's own kernel `npvae.kernels.reparam_kl_forward`
(mu = {num(mc['mu'])}, logvar = {num(mc['logvar'])}, from `vae.encode(x)`):

| check | closed form | Monte Carlo ± standard error |
| --- | --- | --- |
| the mean of z is mu | {num(mc['mu'])} | {num(mc['mean_mc'])} ± {num(mc['mean_se'])} |
| the variance of z is exp(logvar) | {num(mc['var_closed'])} | {num(mc['var_mc'])} ± {num(mc['var_se'])} |
| KL(q ‖ p) of (K1) = E_q[log q(z) − log p(z)] | {num(mc['kl_closed'])} | {num(mc['kl_mc'])} ± {num(mc['kl_se'])} |

Each Monte Carlo value lies within {mc_worst_se:.1f} standard errors of
the closed form. With sigma = exp(logvar) the variance would be exp(2·logvar) =
{num(np.exp(2 * mc['logvar']))}, {mc_wrong_se:.0f} standard errors away from the sample variance.

## One step of Adam

`npvae.Adam(lr={LR})` and one `opt.step(vae.params, grads)` on the gradients of the batch of one (O1).
On step 1 the moments are m = (1 − β1) g and v = (1 − β2) g², the bias corrections divide them by
exactly (1 − β1) and (1 − β2), so m̂ = g, v̂ = g², and the update is −lr · g / (|g| + ε) ≈ −lr · sign(g):
every parameter moves by lr, against the sign of its gradient, whatever the gradient's size.

| parameter | g | update / lr (= −sign(g)) |
| --- | --- | --- |
{adam_rows}

Every update is −sign(g) · lr to within {max_dev:.0e} relative (the ε = 1e-8 of Adam next to |g|),
except where g is exactly 0: the row of {", ".join(f"`{k}`" for k in zero_g)} that multiplies x₂ = 0, whose
gradient x₂ · dpre1 vanishes (D1), does not move.
With the same x and eps, the loss goes from {num(ad['loss0'])} to {num(ad['loss1'])}. To first order
it falls by lr · Σ|g| = {LR} × {num(ad['sum_abs_g'])} = {num(LR * ad['sum_abs_g'])}; it fell by
{num(ad['loss0'] - ad['loss1'])}.

## Exercises

1. Check the row dh2 = dlogits W_oᵀ (D1) by hand from the tables.
   <details><summary>Answer</summary>

   dlogits = `{arr(dl)}` and W_o = `{arr(PARAMS['decoder.out.W'], 1)}`, so
   dh2₁ = {term(dl[0])}·0.9 + {term(dl[1])}·(−0.5) + {term(dl[2])}·0.3 = {num(dh2[0])} and
   dh2₂ = {term(dl[0])}·0.4 + {term(dl[1])}·0.7 + {term(dl[2])}·(−0.8) = {num(dh2[1])}.
   </details>

2. With β = 2 instead of 1, which rows of the backward table change?
   <details><summary>Answer</summary>

   Only the KL parts and what lies below them: dmu_kl becomes {num(b2['dmu_kl'][0, 0])} (twice
   {num(t1['dmu_kl'][0, 0])}), dlogvar_kl {num(b2['dlogvar_kl'][0, 0])}, so dmu = {num(b2['dmu'][0, 0])}, and the
   encoder's gradients change with them (`d encoder.head.b` = `{arr(b2['grads']['encoder.head.b'])}`). The
   decoder's rows and dz do not change: the KL does not depend on the decoder.
   </details>

3. What would dlogvar_rec be if eps were 0, and what would then train logvar?
   <details><summary>Answer</summary>

   0: dlogvar_rec = (sigma/2) Σ_l dz·eps (R1), and with eps = 0, z = mu does not depend on logvar.
   Only the KL would train logvar, pulling it to 0, the prior's. The reconstruction would not feel the
   noise at all: the model would be a plain autoencoder plus a penalty.
   </details>

4. In the batch of two, why is dmu_kl of example 1 half of what it was in the batch of one?
   <details><summary>Answer</summary>

   dmu_kl = (β/B) mu (K1): mu of example 1 is the same ({num(f2['mu'][0, 0])}), B went from 1 to 2. The
   loss is a mean over the batch, so each example weighs 1/B in it and in every gradient.
   </details>

5. On Adam's first step, what update does a gradient entry of 1e-9 get (lr = {LR})?
   <details><summary>Answer</summary>

   −lr · g / (|g| + ε) = −0.01 × 1e-9 / (1e-9 + 1e-8) = −0.01 / 11 ≈ −0.000909: not lr, because ε is
   no longer negligible next to |g|. Entries whose gradient is exactly 0 do not move.
   </details>
"""


# ---------------------------------------------------------------------------- the figure

def draw(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    one = r["one"]
    f, t, rows = one["fwd"], one["trace"], {sym.split(" =")[0]: a for _, sym, a, _ in one["rows"]}
    def v(a):
        return arr(np.ravel(a), 3)

    def fork(rec, kl, tot):
        return f"{num(rec.item(), 3)} (rec) + {num(kl.item(), 3)} (KL)\n    = {num(tot.item(), 3)}"

    nodes = {  # name: (x, y, title, value, gradient, kind)
        "x": (0.9, 3.5, "x  (input)", v(f["x"]), "none: data", "input"),
        "pre1": (3.1, 3.5, "pre1 = x W1 + b1  (D1)", v(f["pre1"]), v(rows["dpre1"]), ""),
        "h1": (5.3, 3.5, "h1 = tanh(pre1)  (A3)", v(f["h1"]), v(rows["dh1"]), ""),
        "mu": (7.6, 5.1, "mu  (D1)", v(f["mu"]), fork(t["dmu_rec"], t["dmu_kl"], t["dmu"]), "fork"),
        "logvar": (7.6, 1.9, "logvar  (D1)", v(f["logvar"]),
                   fork(t["dlogvar_rec"], t["dlogvar_kl"], t["dlogvar"]), "fork"),
        "eps": (9.9, 0.5, "eps  (input)", v(f["eps"]), "none: an input", "input"),
        "z": (9.9, 3.5, "z = mu + sigma eps  (R1)", v(f["z"]), v(rows["dz"]), ""),
        "kl": (9.9, 6.4, "KL  (K1)", v(f["kl"]), "beta (= 1)", ""),
        "h2": (12.35, 3.5, "h2 = tanh(z W2 + b2)  (D1, A3)", v(f["h2"]), v(rows["dh2"]), ""),
        "logits": (14.85, 3.5, "logits = h2 Wo + bo  (D1)", v(f["logits"]), v(rows["dlogits"]), ""),
        "rec": (14.85, 6.4, "rec  (B1)", v(f["rec"]), "1", ""),
        "loss": (12.35, 6.4, "loss = rec + KL  (E1)", v(f["loss"]), "1", ""),
    }
    edges = [("x", "pre1"), ("pre1", "h1"), ("h1", "mu"), ("h1", "logvar"), ("mu", "z"), ("logvar", "z"),
             ("eps", "z"), ("mu", "kl"), ("logvar", "kl"), ("z", "h2"), ("h2", "logits"), ("logits", "rec"),
             ("rec", "loss"), ("kl", "loss")]
    colours = {"fork": "#fde2c8", "input": "#e6e6e6", "": "#dbe9f6"}
    fig, ax = plt.subplots(figsize=(16, 7))
    ax.set_xlim(-0.3, 16.3)
    ax.set_ylim(-0.4, 7.4)
    ax.axis("off")
    boxes = {}
    for name, (cx, cy, title, val, grad, kind) in nodes.items():
        txt = ax.text(cx, cy, f"{title}\nv = {val}\ng = {grad}", ha="center", va="center", fontsize=8.5,
                      family="monospace", linespacing=1.5,
                      bbox=dict(boxstyle="round,pad=0.5", fc=colours[kind], ec="#333333", lw=1))
        boxes[name] = txt
    fig.canvas.draw()  # sizes the boxes, so that the arrows can be clipped to them
    for a, b in edges:
        ax.annotate("", xy=nodes[b][:2], xytext=nodes[a][:2],
                    arrowprops=dict(arrowstyle="-|>", color="#333333", lw=1.2, shrinkA=2, shrinkB=2,
                                    patchA=boxes[a].get_bbox_patch(), patchB=boxes[b].get_bbox_patch()))
    ax.text(-0.2, 7.2, "Batch of one: x = [1, 0, 1], eps = 0.5.   v: the node's value.   g: the gradient of the "
            "loss with respect to it.   Orange: a fork (two outgoing arrows), its g the sum of both paths' "
            "(reconstruction + KL).", fontsize=9.5)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with docs/worked_example.md; write nothing")
    args = ap.parse_args(argv)
    r = run()
    problems = check(r)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    text = render(r)
    if args.check:
        same = PAGE.exists() and normalise(PAGE.read_text()) == normalise(text)
        print("docs/worked_example.md is up to date" if same else "docs/worked_example.md differs: regenerate it")
        return 0 if same else 1
    PAGE.write_text(text)
    draw(r, FIGURE)
    print(f"wrote {PAGE.relative_to(ROOT)} and {FIGURE.relative_to(ROOT)}")
    return 0


def normalise(text: str) -> str:
    """The page with each relative error cell replaced by a mark of whether it is below 1e-7."""
    def cell(m: re.Match) -> str:
        s = m.group(1)
        ok = s.startswith("<") or float(s) < 1e-7
        return "| rel-ok |" if ok else "| REL-TOO-LARGE |"
    return re.sub(r"\| (< 1e-9|\d(?:\.\d+)?e-\d+) \|$", cell, text, flags=re.MULTILINE)


if __name__ == "__main__":
    sys.exit(main())
