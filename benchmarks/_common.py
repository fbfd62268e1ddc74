"""Shared pieces of the benchmark scripts: paths, data, thread control, the PyTorch twin of npvae's VAE.

PyTorch is optional: :func:`try_import_torch` returns ``None`` when it is not
installed, and nothing else here imports it at module level. Every function
that needs it takes the ``torch`` module (or a model built from it) as an
argument, so ``import _common`` never pulls torch in.

The PyTorch model (:func:`make_torch_vae`, :func:`torch_loss_terms`) computes
exactly what :meth:`npvae.VAE.loss_and_grads` computes:

* encoder ``Linear + f`` per hidden layer, then a head ``Linear`` to
  ``[mu | logvar]`` (first K columns mu, last K logvar), ``sigma = exp(logvar/2)``;
* ``z = mu + sigma * eps`` for ``eps`` of shape ``(L, B, K)``, rows sample-major
  (row ``l*B + i``);
* decoder ``Linear + f`` per hidden layer, then an output ``Linear`` giving the
  Bernoulli logits (or the Gaussian mean);
* loss = mean over the batch of ``(1/L) sum_l NLL + beta * KL``, with the
  Bernoulli NLL as BCE-with-logits summed over pixels, the Gaussian NLL as
  ``sum (x-m)^2 / (2 s^2) + log s + log(2 pi)/2``, and the analytic KL.

``torch.nn.Linear`` stores its weight as ``(out, in)`` and computes
``x @ weight.T``; npvae stores ``W`` as ``(in, out)`` and computes ``x @ W``, so
copying parameters transposes them (:func:`copy_npvae_to_torch`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

if str(PROJECT_ROOT) not in sys.path:  # run from a checkout without installing npvae
    sys.path.insert(0, str(PROJECT_ROOT))

import npvae  # noqa: E402


# ---------------------------------------------------------------------------- optional torch
def try_import_torch() -> Any | None:
    """The ``torch`` module, or ``None`` when PyTorch is not installed (or ``NPVAE_BENCH_NO_TORCH=1``)."""
    if os.environ.get("NPVAE_BENCH_NO_TORCH") == "1":
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


TORCH_MISSING_NOTE = ("PyTorch is not installed: the torch rows are skipped. "
                      "Install it with `pip install torch==2.13.0` (CPU build) to compare.")


# ---------------------------------------------------------------------------- memory
def vm_status_mb(field: str = "VmHWM") -> float | None:
    """A field of /proc/self/status (``VmHWM`` = peak RSS, ``VmRSS`` = current) in MB, or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB -> MB
    except OSError:
        pass
    return None


def ru_maxrss_mb(who: int) -> float:
    """``resource.getrusage(who).ru_maxrss`` in MB (kilobytes on Linux, bytes on macOS)."""
    import resource

    v = resource.getrusage(who).ru_maxrss
    return v / (1024.0 * 1024.0) if sys.platform == "darwin" else v / 1024.0


# ---------------------------------------------------------------------------- threads
@contextlib.contextmanager
def limit_threads(n: int, torch: Any | None = None) -> Iterator[None]:
    """Run the body with ``n`` threads everywhere that matters.

    * BLAS (OpenBLAS/MKL behind NumPy) and any OpenMP runtime: threadpoolctl's
      ``threadpool_limits(limits=n)`` (restored on exit);
    * Numba: ``numba.set_num_threads(n)`` (npvae's fused training step splits
      itself over Numba's threads, and needs two for itself and the BLAS);
    * PyTorch: ``torch.set_num_threads(n)`` when ``torch`` is given.
    """
    from threadpoolctl import threadpool_limits

    old_torch = torch.get_num_threads() if torch is not None else None
    import numba

    old_numba = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if torch is not None and old_torch is not None:
            torch.set_num_threads(old_torch)
        numba.set_num_threads(old_numba)


def blas_report(n: int) -> tuple[list[dict], bool, str]:
    """``threadpool_info()`` and whether ``threadpool_limits(n)`` really limits the BLAS libraries.

    Returns ``(info, ok, text)``: the full info outside any limit, whether every
    BLAS library reports ``n`` threads inside the limit, and a one-line summary.
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    info = threadpool_info()
    with threadpool_limits(limits=n):
        inside = threadpool_info()
    blas_in = [d for d in inside if d.get("user_api") == "blas"]
    ok = bool(blas_in) and all(d.get("num_threads") == n for d in blas_in)
    parts = []
    for before in info:
        after = next((d for d in inside if d.get("filepath") == before.get("filepath")), {})
        parts.append(f"{before.get('internal_api')} {before.get('version') or ''} "
                     f"({Path(before.get('filepath', '?')).name}): {before.get('num_threads')} -> "
                     f"{after.get('num_threads')} threads under limits={n}")
    text = "; ".join(parts) if parts else "threadpoolctl found no BLAS/OpenMP library"
    return info, ok, text


# ---------------------------------------------------------------------------- data
def load_bench_data(data_root: str | os.PathLike[str], n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """``n`` float32 rows in [0, 1]: Fashion-MNIST train from ``data_root``, else uniform random data.

    Returns ``(x, source)`` with ``source`` one of ``"fashion-mnist-train"``,
    ``"fashion-mnist-train (tiled to N)"`` or ``"random-uniform"``.
    """
    try:
        x, _ = npvae.datasets.load_fashion_mnist("train", root=data_root, download=False)
    except Exception as exc:  # noqa: BLE001 - any failure: fall back to random data, and say so
        print(f"[bench] Fashion-MNIST not available ({type(exc).__name__}); using uniform random data",
              file=sys.stderr)
        return np.random.default_rng(seed).random((n, 784), dtype=np.float32), "random-uniform"
    if n <= x.shape[0]:
        return np.ascontiguousarray(x[:n]), "fashion-mnist-train"
    reps = -(-n // x.shape[0])
    return np.ascontiguousarray(np.concatenate([x] * reps)[:n]), f"fashion-mnist-train (tiled to {n})"


# ---------------------------------------------------------------------------- npvae evaluation
def npvae_nelbo_fixed_eps(vae: Any, x: np.ndarray, eps: np.ndarray, chunk: int = 1000) -> float:
    """Mean negative ELBO of ``vae`` on ``x`` with the given noise, via ``vae.loss_terms`` in chunks.

    ``eps`` has shape ``(S, n, K)`` (``S`` independent draws of the
    single-sample estimator, for a model with ``n_samples == 1``) or
    ``(n, K)``; the result is the mean over the ``S`` draws of the mean
    negative ELBO (nats per example), the same estimator as
    :meth:`npvae.VAE.evaluate` but with noise the caller controls.
    """
    if vae.n_samples != 1:
        raise ValueError("npvae_nelbo_fixed_eps is for models with n_samples == 1")
    eps = eps[None] if eps.ndim == 2 else eps
    n = x.shape[0]
    if eps.shape[1:] != (n, vae.latent_dim):
        raise ValueError(f"eps must have shape (S, {n}, {vae.latent_dim}), got {eps.shape}")
    totals = []
    for s in range(eps.shape[0]):
        total = 0.0
        for start in range(0, n, chunk):
            xb = x[start:start + chunk]
            nll, kl = vae.loss_terms(xb, np.ascontiguousarray(eps[s, start:start + chunk]))
            total += (nll + vae.beta * kl) * xb.shape[0]
        totals.append(total / n)
    return float(np.mean(totals))


# ---------------------------------------------------------------------------- the torch twin
_NP_TO_TORCH_DTYPE = {"float32": "float32", "float64": "float64"}


def torch_dtype(torch: Any, dtype: Any) -> Any:
    return getattr(torch, _NP_TO_TORCH_DTYPE[np.dtype(dtype).name])


def make_torch_vae(torch: Any, input_dim: int = 784, hidden_dims: tuple[int, ...] = (400,), latent_dim: int = 20,
                   likelihood: str = "bernoulli", activation: str = "relu", beta: float = 1.0,
                   sigma_dec: float = 1.0, alpha: float = 0.01, dtype: Any = np.float32,
                   seed: int | None = 0) -> Any:
    """The npvae architecture as a ``torch.nn.Module`` with PyTorch's default ``nn.Linear`` init.

    Layers: ``enc`` (ModuleList), ``head``, ``dec`` (ModuleList), ``out``,
    matching npvae's ``encoder.i``, ``encoder.head``, ``decoder.i``,
    ``decoder.out``. ``seed`` seeds ``torch.manual_seed`` before the layers are
    built (None leaves the global generator alone).
    """
    nn = torch.nn
    if seed is not None:
        torch.manual_seed(seed)
    hidden_dims = (hidden_dims,) if isinstance(hidden_dims, int) else tuple(hidden_dims)
    tdt = torch_dtype(torch, dtype)

    class TorchVAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            dims = (input_dim, *hidden_dims)
            self.enc = nn.ModuleList(nn.Linear(dims[i], dims[i + 1], dtype=tdt) for i in range(len(hidden_dims)))
            self.head = nn.Linear(dims[-1], 2 * latent_dim, dtype=tdt)
            rdims = (latent_dim, *hidden_dims[::-1])
            self.dec = nn.ModuleList(nn.Linear(rdims[i], rdims[i + 1], dtype=tdt) for i in range(len(hidden_dims)))
            self.out = nn.Linear(rdims[-1], input_dim, dtype=tdt)
            self.input_dim, self.latent_dim = input_dim, latent_dim
            self.likelihood, self.activation = likelihood, activation
            self.beta, self.sigma_dec, self.alpha = float(beta), float(sigma_dec), float(alpha)

        def named_npvae_layers(self) -> list[tuple[str, Any]]:
            return ([(f"encoder.{i}", lin) for i, lin in enumerate(self.enc)] + [("encoder.head", self.head)]
                    + [(f"decoder.{i}", lin) for i, lin in enumerate(self.dec)] + [("decoder.out", self.out)])

        def act(self, v: Any) -> Any:
            F = torch.nn.functional
            a = self.activation
            if a == "relu":
                return F.relu(v)
            if a == "leaky_relu":
                return F.leaky_relu(v, self.alpha)
            if a == "tanh":
                return torch.tanh(v)
            if a == "sigmoid":
                return torch.sigmoid(v)
            if a == "softplus":
                return F.softplus(v)
            if a == "identity":
                return v
            raise ValueError(f"unknown activation {a!r}")

        def forward(self, x: Any, eps: Any) -> tuple[Any, Any]:
            return torch_loss_terms(self, x, eps)

    return TorchVAE()


def torch_loss_terms(model: Any, x: Any, eps: Any) -> tuple[Any, Any]:
    """``(mean NLL, mean KL)`` per example, as tensors (the loss is ``nll + beta * kl``).

    ``x``: (B, P) tensor; ``eps``: (L, B, K) or (B, K) tensor.
    """
    import torch

    F = torch.nn.functional
    if eps.dim() == 2:
        eps = eps.unsqueeze(0)
    n_samples, b, k = eps.shape
    h = x
    for lin in model.enc:
        h = model.act(lin(h))
    ml = model.head(h)
    mu, logvar = ml[:, :k], ml[:, k:]
    sigma = torch.exp(0.5 * logvar)
    z = (mu + sigma * eps).reshape(n_samples * b, k)  # row l*B + i
    h = z
    for lin in model.dec:
        h = model.act(lin(h))
    out = model.out(h)
    xr = x if n_samples == 1 else x.repeat(n_samples, 1)
    if model.likelihood == "bernoulli":
        nll_sum = F.binary_cross_entropy_with_logits(out, xr, reduction="sum")
    else:
        s = model.sigma_dec
        nll_sum = ((out - xr) ** 2).sum() / (2 * s * s) + out.numel() * (math.log(s) + 0.5 * math.log(2 * math.pi))
    kl_sum = 0.5 * (mu * mu + sigma * sigma - 1.0 - logvar).sum()
    return nll_sum / (b * n_samples), kl_sum / b


def copy_npvae_to_torch(vae: Any, model: Any) -> None:
    """Copy every parameter of an npvae VAE into the torch twin (weights transposed)."""
    import torch

    with torch.no_grad():
        for name, lin in model.named_npvae_layers():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(vae.params[f"{name}.W"].T)))
            lin.bias.copy_(torch.from_numpy(vae.params[f"{name}.b"]))


def torch_grads_as_npvae(model: Any) -> dict[str, np.ndarray]:
    """The ``.grad`` of every torch parameter under npvae's names and layout."""
    out = {}
    for name, lin in model.named_npvae_layers():
        out[f"{name}.W"] = lin.weight.grad.detach().numpy().T.copy()
        out[f"{name}.b"] = lin.bias.grad.detach().numpy().copy()
    return out


def torch_loss_and_grads(model: Any, x: np.ndarray, eps: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """The twin's loss and gradients on a NumPy batch with fixed NumPy noise (npvae's names and layout)."""
    import torch

    model.zero_grad(set_to_none=True)
    nll, kl = torch_loss_terms(model, torch.from_numpy(x), torch.from_numpy(eps))
    loss = nll + model.beta * kl
    loss.backward()
    return float(loss.item()), torch_grads_as_npvae(model)


def equivalence_check(torch: Any, x: np.ndarray, eps: np.ndarray, dtype: Any = np.float32,
                      hidden_dims: tuple[int, ...] = (400,), latent_dim: int = 20, seed: int = 123,
                      **vae_kwargs: Any) -> dict[str, Any]:
    """Loss and gradients of npvae and of the torch twin (with npvae's parameters) on one batch.

    Returns ``{"npvae_loss", "torch_loss", "loss_rel_diff", "grad_rel_err"}``
    with ``grad_rel_err[name] = max|g_np - g_torch| / max|g_torch|``, plus the
    raw gradients under ``"npvae_grads"`` and ``"torch_grads"``.
    """
    x = np.ascontiguousarray(x, dtype=dtype)
    eps = np.ascontiguousarray(eps, dtype=dtype)
    vae = npvae.VAE(x.shape[1], hidden_dims, latent_dim, dtype=dtype, seed=seed, **vae_kwargs)
    model = make_torch_vae(torch, x.shape[1], hidden_dims, latent_dim, dtype=dtype, seed=seed, **{
        k: v for k, v in vae_kwargs.items() if k in ("likelihood", "activation", "beta", "sigma_dec", "alpha")})
    copy_npvae_to_torch(vae, model)
    np_loss, np_grads = vae.loss_and_grads(x, eps)
    t_loss, t_grads = torch_loss_and_grads(model, x, eps)
    rel = {k: float(np.max(np.abs(np_grads[k] - t_grads[k])) / max(float(np.max(np.abs(t_grads[k]))), 1e-300))
           for k in np_grads}
    return {"npvae_loss": float(np_loss), "torch_loss": t_loss,
            "loss_rel_diff": abs(np_loss - t_loss) / max(abs(t_loss), 1e-300),
            "grad_rel_err": rel, "npvae_grads": np_grads, "torch_grads": t_grads}


# ---------------------------------------------------------------------------- torch training
class TorchTrainer:
    """One model + ``torch.optim.Adam`` + data, trained an epoch at a time like :func:`npvae.train`.

    Shuffling uses npvae's scheme (epoch ``e`` of run ``seed`` is the
    permutation drawn by ``np.random.default_rng([seed, e])``), so both sides
    see the same batches in the same order; the reparameterization noise comes
    from a ``torch.Generator`` seeded with ``seed``. The batch is gathered into
    a preallocated buffer with ``index_select(out=)``, as npvae gathers with
    ``np.take(out=)``.
    """

    def __init__(self, torch: Any, model: Any, x: np.ndarray, batch_size: int, lr: float = 1e-3,
                 seed: int = 0) -> None:
        self.torch, self.model = torch, model
        self.x = torch.from_numpy(np.ascontiguousarray(x))  # shares memory with x
        self.batch_size, self.seed = batch_size, seed
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.gen = torch.Generator().manual_seed(seed)
        n = self.x.shape[0]
        self.buffers = {batch_size: torch.empty((batch_size, self.x.shape[1]), dtype=self.x.dtype)}
        if n % batch_size:
            self.buffers[n % batch_size] = torch.empty((n % batch_size, self.x.shape[1]), dtype=self.x.dtype)
        self.epoch = 0

    def train_epoch(self, perm: np.ndarray | None = None) -> tuple[float, float]:
        """One pass over the data (or over the rows ``perm`` lists, in that order).

        Returns ``(seconds, mean train loss)``; the timing excludes drawing the permutation.
        """
        torch = self.torch
        self.epoch += 1
        bs = self.batch_size
        if perm is None:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.x.shape[0])
        n = perm.shape[0]
        if n % bs and n % bs not in self.buffers:
            self.buffers[n % bs] = torch.empty((n % bs, self.x.shape[1]), dtype=self.x.dtype)
        perm_t = torch.from_numpy(perm.astype(np.int64, copy=False))
        k = self.model.latent_dim
        model, opt, gen = self.model, self.opt, self.gen
        beta = model.beta
        total = 0.0
        t0 = time.perf_counter()
        for start in range(0, n, bs):
            idx = perm_t[start:start + bs]
            xb = self.buffers[idx.shape[0]]
            torch.index_select(self.x, 0, idx, out=xb)
            eps = torch.randn((1, idx.shape[0], k), generator=gen, dtype=xb.dtype)
            opt.zero_grad(set_to_none=True)
            nll, kl = torch_loss_terms(model, xb, eps)
            loss = nll + beta * kl
            loss.backward()
            opt.step()
            total += loss.item() * idx.shape[0]
        seconds = time.perf_counter() - t0
        return seconds, total / n


def torch_nelbo_fixed_eps(torch: Any, model: Any, x: np.ndarray, eps: np.ndarray, chunk: int = 1000) -> float:
    """The torch twin's mean negative ELBO with given noise: the estimator of :func:`npvae_nelbo_fixed_eps`."""
    eps = eps[None] if eps.ndim == 2 else eps
    n = x.shape[0]
    xt = torch.from_numpy(np.ascontiguousarray(x))
    et = torch.from_numpy(np.ascontiguousarray(eps))
    totals = []
    with torch.no_grad():
        for s in range(et.shape[0]):
            total = 0.0
            for start in range(0, n, chunk):
                xb = xt[start:start + chunk]
                nll, kl = torch_loss_terms(model, xb, et[s, start:start + chunk])
                total += float((nll + model.beta * kl).item()) * xb.shape[0]
            totals.append(total / n)
    return float(np.mean(totals))
