"""The peers ``bench_epoch.py`` times beside npvae: PyTorch (eager, and compiled) and JAX.

Each peer trains the model npvae trains, from npvae's own initial parameters
(copied in, so its loss at the first step is npvae's), on the same batches
in the same order (npvae's shuffling scheme: epoch ``e`` of run ``seed`` is
``np.random.default_rng([seed, e]).permutation(n)``), one sample of z per
example, with its own noise:

* the architecture of an :class:`npvae.VAE` with ``likelihood="bernoulli"``:
  ``layer="dense"`` (``f(x W + b)``, ReLU here) or ``layer="gated"``
  (``(x W + b) * sigmoid(x V + c)``), the head giving ``[mu | logvar]``,
  ``logvar`` clipped to ``logvar_bounds`` when the model has them,
  ``z = mu + exp(logvar / 2) * eps``, the output layer's logits;
* loss = mean over the batch of (BCE-with-logits summed over the pixels +
  beta * analytic KL): the mean negative ELBO, as npvae minimizes it;
* Adam, lr 1e-3, betas (0.9, 0.999), eps 1e-8.

``TorchPeer`` is PyTorch eager with ``torch.optim.Adam`` (``compiled=False``),
or ``torch.compile`` of the loss (forward and, through AOTAutograd, backward)
with ``torch.optim.Adam(fused=True)`` (``compiled=True``). ``JaxPeer`` is the
whole step (loss, ``jax.value_and_grad``, textbook Adam written in
``jax.numpy``) under one ``jax.jit``, fed NumPy batches (gathered with
``np.take(out=)``, noise from a seeded NumPy Generator), float32 or float64.

Neither framework is imported here at module level: :func:`try_import_jax`
and ``_common.try_import_torch`` return ``None`` when one is missing (or
hidden with ``NPVAE_BENCH_NO_JAX=1`` / ``NPVAE_BENCH_NO_TORCH=1``).
"""

from __future__ import annotations

import os
import time
import types
from typing import Any

import numpy as np

JAX_MISSING_NOTE = ("JAX is not installed: the jax rows are skipped. "
                    "Install the CPU build with `pip install jax` (its jaxlib wheel is CPU-only).")


def try_import_jax() -> Any | None:
    """The ``jax`` module, configured for this benchmark, or ``None`` (missing, or ``NPVAE_BENCH_NO_JAX=1``).

    float64 is enabled (``jax_enable_x64``) so the float64 configurations are
    float64 in JAX too; float32 arrays stay float32.
    """
    if os.environ.get("NPVAE_BENCH_NO_JAX") == "1":
        return None
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    return jax


def architecture(vae: Any) -> dict[str, Any]:
    """What a peer needs to know of an npvae model, and a check that it is one the peers implement."""
    cfg = vae.config()
    if cfg["likelihood"] != "bernoulli" or cfg["n_samples"] != 1 or cfg.get("objective", "elbo") != "elbo":
        raise ValueError("the peers implement the Bernoulli likelihood, one sample of z and the ELBO only")
    layer = cfg.get("layer", "dense")
    if layer == "dense" and cfg["activation"] != "relu":
        raise ValueError("the peers' dense layers are ReLU")
    bounds = cfg.get("logvar_bounds")
    return {"hidden": len(cfg["hidden_dims"]), "latent": cfg["latent_dim"], "layer": layer,
            "bounds": None if bounds is None else (float(bounds[0]), float(bounds[1])), "beta": float(cfg["beta"]),
            "dtype": np.dtype(cfg["dtype"])}


def layer_names(n_hidden: int) -> list[str]:
    """npvae's layer names, input to output."""
    return ([f"encoder.{i}" for i in range(n_hidden)] + ["encoder.head"]
            + [f"decoder.{i}" for i in range(n_hidden)] + ["decoder.out"])


class _Batches:
    """npvae's epoch order and NumPy-gathered batches into preallocated buffers (shared by the peers)."""

    def __init__(self, x: np.ndarray, batch_size: int, seed: int) -> None:
        self.x, self.batch_size, self.seed, self.epoch = x, batch_size, seed, 0
        self.buffers: dict[int, np.ndarray] = {}

    def perm(self) -> np.ndarray:
        self.epoch += 1
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.x.shape[0])

    def gather(self, idx: np.ndarray) -> np.ndarray:
        b = idx.shape[0]
        buf = self.buffers.get(b)
        if buf is None:
            buf = self.buffers[b] = np.empty((b, self.x.shape[1]), self.x.dtype)
        return np.take(self.x, idx, axis=0, out=buf)


# ---------------------------------------------------------------------------- JAX
class JaxPeer:
    """The model trained by one ``jax.jit``-compiled step: loss, gradients and Adam, in ``jax.numpy``."""

    def __init__(self, jax: Any, vae: Any, x: np.ndarray, batch_size: int, lr: float = 1e-3, seed: int = 0) -> None:
        self.jax, self.arch = jax, architecture(vae)
        jnp = jax.numpy
        arch = self.arch
        self.dtype = arch["dtype"]
        self.x = np.ascontiguousarray(x, dtype=self.dtype)
        self.batches = _Batches(self.x, batch_size, seed)
        self.noise = np.random.default_rng(seed)
        self.lr = lr
        names = layer_names(arch["hidden"])
        keys = ("W", "b", "V", "c")
        self.params = [{k: jnp.asarray(vae.params[f"{n}.{k}"]) for k in keys if f"{n}.{k}" in vae.params}
                       for n in names]
        zeros = lambda t: jax.tree_util.tree_map(jnp.zeros_like, t)  # noqa: E731
        self.m, self.v = zeros(self.params), zeros(self.params)
        self.t = jnp.zeros((), self.dtype)
        self.loss = jax.jit(self._loss_fn)
        # params, m, v and t are donated: the step updates them in place where XLA can
        self.step = jax.jit(self._step_fn, donate_argnums=(0, 1, 2, 3))

    def _loss_fn(self, params: list, x: Any, eps: Any) -> Any:
        jax, arch = self.jax, self.arch
        jnp = jax.numpy
        n_hidden, k, gated = arch["hidden"], arch["latent"], arch["layer"] == "gated"

        def hidden(p: dict, h: Any) -> Any:
            if gated:
                return (h @ p["W"] + p["b"]) * jax.nn.sigmoid(h @ p["V"] + p["c"])
            return jax.nn.relu(h @ p["W"] + p["b"])

        h = x
        for p in params[:n_hidden]:
            h = hidden(p, h)
        ml = h @ params[n_hidden]["W"] + params[n_hidden]["b"]
        mu, logvar = ml[:, :k], ml[:, k:]
        if arch["bounds"] is not None:
            logvar = jnp.clip(logvar, *arch["bounds"])
        z = mu + jnp.exp(0.5 * logvar) * eps
        h = z
        for p in params[n_hidden + 1:-1]:
            h = hidden(p, h)
        logits = h @ params[-1]["W"] + params[-1]["b"]
        # BCE with logits: softplus(l) - x l, written stably
        nll = jnp.sum(jnp.maximum(logits, 0) - logits * x + jnp.log1p(jnp.exp(-jnp.abs(logits))))
        kl = 0.5 * jnp.sum(mu * mu + jnp.exp(logvar) - 1.0 - logvar)
        return (nll + arch["beta"] * kl) / x.shape[0]

    def _step_fn(self, params: list, m: list, v: list, t: Any, x: Any, eps: Any) -> tuple:
        jax = self.jax
        jnp, tm = jax.numpy, jax.tree_util.tree_map
        b1, b2, adam_eps = 0.9, 0.999, 1e-8
        loss, g = jax.value_and_grad(self._loss_fn)(params, x, eps)
        t = t + 1
        m = tm(lambda m_, g_: b1 * m_ + (1 - b1) * g_, m, g)
        v = tm(lambda v_, g_: b2 * v_ + (1 - b2) * g_ * g_, v, g)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        params = tm(lambda p, m_, v_: p - self.lr * (m_ / c1) / (jnp.sqrt(v_ / c2) + adam_eps), params, m, v)
        return params, m, v, t, loss

    def loss_at(self, x: np.ndarray, eps: np.ndarray) -> float:
        """The loss of the current parameters on a batch with given noise ``(B, K)``."""
        return float(self.loss(self.params, np.asarray(x, self.dtype), np.asarray(eps, self.dtype)))

    def train_step(self, xb: np.ndarray, eps: np.ndarray | None = None) -> float:
        """One step on a NumPy batch (noise drawn here unless given); the loss before the update."""
        if eps is None:
            eps = self.noise.standard_normal((xb.shape[0], self.arch["latent"]), dtype=self.dtype)
        self.params, self.m, self.v, self.t, loss = self.step(self.params, self.m, self.v, self.t, xb, eps)
        return float(loss)

    def train_epoch(self, perm: np.ndarray | None = None) -> tuple[float, float]:
        """One pass (or over the rows ``perm`` lists); ``(seconds, mean train loss)``, the permutation untimed."""
        perm = self.batches.perm() if perm is None else perm
        n, bs = perm.shape[0], self.batches.batch_size
        total = 0.0
        t0 = time.perf_counter()
        for start in range(0, n, bs):
            idx = perm[start:start + bs]
            total += self.train_step(self.batches.gather(idx)) * idx.shape[0]  # float(): waits for the step
        return time.perf_counter() - t0, total / n


# ---------------------------------------------------------------------------- PyTorch
def _torch_model(torch: Any, vae: Any) -> Any:
    """A ``torch.nn.Module`` holding npvae's parameters (weights kept as npvae lays them out, (in, out))."""
    arch = architecture(vae)
    names = layer_names(arch["hidden"])
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList()
    for n in names:
        layer = torch.nn.Module()
        for k in ("W", "b", "V", "c"):
            if f"{n}.{k}" in vae.params:
                setattr(layer, k, torch.nn.Parameter(torch.from_numpy(vae.params[f"{n}.{k}"].copy())))
        model.layers.append(layer)
    return model


def torch_loss(torch: Any, model: Any, arch: dict, x: Any, eps: Any) -> Any:
    """The mean negative ELBO of the batch (see the module docstring), as a tensor."""
    F = torch.nn.functional
    n_hidden, k, gated = arch["hidden"], arch["latent"], arch["layer"] == "gated"
    layers = list(model.layers)

    def hidden(p: Any, h: Any) -> Any:
        if gated:
            return torch.addmm(p.b, h, p.W) * torch.sigmoid(torch.addmm(p.c, h, p.V))
        return torch.relu(torch.addmm(p.b, h, p.W))

    h = x
    for p in layers[:n_hidden]:
        h = hidden(p, h)
    ml = torch.addmm(layers[n_hidden].b, h, layers[n_hidden].W)
    mu, logvar = ml[:, :k], ml[:, k:]
    if arch["bounds"] is not None:
        logvar = torch.clamp(logvar, *arch["bounds"])
    z = mu + torch.exp(0.5 * logvar) * eps
    h = z
    for p in layers[n_hidden + 1:-1]:
        h = hidden(p, h)
    logits = torch.addmm(layers[-1].b, h, layers[-1].W)
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = 0.5 * (mu * mu + torch.exp(logvar) - 1.0 - logvar).sum()
    return (nll + arch["beta"] * kl) / x.shape[0]


class TorchPeer:
    """The model in PyTorch: eager with ``torch.optim.Adam``, or ``torch.compile`` with ``Adam(fused=True)``."""

    def __init__(self, torch: Any, vae: Any, x: np.ndarray, batch_size: int, lr: float = 1e-3, seed: int = 0,
                 compiled: bool = False) -> None:
        self.torch, self.arch, self.compiled = torch, architecture(vae), compiled
        self.model = _torch_model(torch, vae)
        self.x = np.ascontiguousarray(x, dtype=self.arch["dtype"])
        self.batches = _Batches(self.x, batch_size, seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, **({"fused": True} if compiled else {}))
        arch, model = self.arch, self.model

        def loss(xb: Any, eps: Any) -> Any:
            return torch_loss(torch, model, arch, xb, eps)

        if compiled:
            # Dynamo keeps its compiled graphs on the function's code object, at most 8 by default
            # (torch._dynamo.config.recompile_limit), past which it silently runs the function eagerly.
            # Every peer's `loss` shares one code object, so each peer gets a copy of its own: two
            # graphs each (the full batch and the short last one), both compiled in the warm-up.
            own = types.FunctionType(loss.__code__.replace(), loss.__globals__, f"loss_{id(self):x}", None,
                                     loss.__closure__)
            self.loss = torch.compile(own, dynamic=False)
        else:
            self.loss = loss

    def train_step(self, xb: np.ndarray) -> float:
        torch = self.torch
        xt = torch.from_numpy(xb)
        eps = torch.randn((xb.shape[0], self.arch["latent"]), generator=self.gen, dtype=xt.dtype)
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(xt, eps)
        loss.backward()
        self.opt.step()
        return float(loss.item())

    def train_epoch(self, perm: np.ndarray | None = None) -> tuple[float, float]:
        perm = self.batches.perm() if perm is None else perm
        n, bs = perm.shape[0], self.batches.batch_size
        total = 0.0
        t0 = time.perf_counter()
        for start in range(0, n, bs):
            idx = perm[start:start + bs]
            total += self.train_step(self.batches.gather(idx)) * idx.shape[0]
        return time.perf_counter() - t0, total / n
