"""The Variational Autoencoder: encoder, reparameterization, decoder, negative ELBO.

The computational graph (docs/derivation.md, Eq. (E1)) for a batch of B
examples, L Monte Carlo samples each, latent size K and P pixels::

    x (B, P) -> Dense+f ... -> head Dense -> [mu | logvar] (B, 2K)
             -> z = mu + exp(logvar / 2) * eps   (L*B, K), row l*B + i
             -> Dense+f ... -> out Dense -> logits or mean (L*B, P)
             -> -log p(x | z), and beta * KL(q(z|x) || N(0, I)) from mu, logvar

and back again in reverse order, each step through its own hand-written
backward.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import kernels
from ._validate import check_choice, check_data, check_dtype, check_float, check_int, check_rng
from .layers import ArrayDict, Dense, GatedDense, Workspaces

LIKELIHOODS = ("bernoulli", "gaussian")
LAYERS = ("dense", "gated")
OBJECTIVES = ("elbo", "iwae")
_EVAL_CHUNK = 1024


def _check_logvar_bounds(bounds: object) -> tuple[float, float] | None:
    """``None``, or ``(lo, hi)`` as floats: two finite numbers, ``lo < hi <= LOGVAR_MAX``."""
    if bounds is None:
        return None
    if isinstance(bounds, np.ndarray) and bounds.ndim == 1:
        bounds = bounds.tolist()
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise TypeError(f"logvar_bounds must be None or a pair (lo, hi) of numbers, got {bounds!r}")
    lo = check_float("logvar_bounds[0]", bounds[0], minimum=-math.inf)
    hi = check_float("logvar_bounds[1]", bounds[1], minimum=-math.inf)
    if not lo < hi:
        raise ValueError(f"logvar_bounds must have lo < hi, got ({lo:g}, {hi:g})")
    if hi > kernels.LOGVAR_MAX:
        raise ValueError(f"logvar_bounds[1] must be <= {kernels.LOGVAR_MAX:g} (npvae.kernels.LOGVAR_MAX, the clamp "
                         f"that keeps float32 finite), got {hi:g}")
    return lo, hi


class VAE:
    """A Variational Autoencoder with a diagonal Gaussian encoder.

    Parameters
    ----------
    input_dim
        Features per example (784 for MNIST).
    hidden_dims
        Hidden layer sizes of the encoder; the decoder mirrors them.
    latent_dim
        K, the size of z.
    likelihood
        ``"bernoulli"`` (logits, inputs in [0, 1]) or ``"gaussian"`` (mean,
        fixed standard deviation ``sigma_dec``).
    activation
        Activation of every hidden layer of ``layer="dense"`` (see
        :data:`npvae.kernels.ACTIVATIONS`; default ``"relu"``). Gated layers
        have no other activation: with ``layer="gated"`` leave it unset (or
        pass ``"identity"``, which is what :meth:`config` records); any other
        value is a ``ValueError``.
    beta
        Weight of the KL term (1 gives the ELBO). Must be 1 with
        ``objective="iwae"``, which has no separate KL term to weight.
    n_samples
        L, the Monte Carlo samples of z per example; k, the importance
        samples per example, for ``objective="iwae"``.
    seed
        Seeds the Generator used for the initial weights and for the noise
        when ``eps`` is not given.
    dtype
        ``np.float32`` (fast) or ``np.float64`` (for gradient checks).
    sigma_dec
        Standard deviation of the Gaussian decoder.
    alpha
        Negative slope of ``leaky_relu``.
    layer
        ``"dense"``: every hidden layer of encoder and decoder is
        ``f(x W + b)`` (:class:`npvae.Dense`). ``"gated"``: every hidden layer
        is ``(x W + b) * sigmoid(x V + c)`` (:class:`npvae.layers.GatedDense`,
        docs/derivation.md, Eq. (H1)), with parameters ``W``, ``b``, ``V``,
        ``c``. The head and the output layer are affine either way.
    logvar_bounds
        ``None``, or ``(lo, hi)``: the head's logvar goes through a hardtanh,
        ``logvar = min(max(raw, lo), hi)``, everywhere it is used (the loss,
        the samples of z, :meth:`encode`), with gradient 1 for ``lo < raw <
        hi`` and 0 otherwise, at the bounds included (Eq. (V1)). Finite,
        ``lo < hi <= 30`` (the built-in clamp, :data:`npvae.kernels.LOGVAR_MAX`).
    objective
        ``"elbo"``: the negative ELBO (Eq. (E1)). ``"iwae"``: the negative
        importance-weighted bound of Burda et al. with k = ``n_samples``,
        ``-mean_i log (1/k) sum_l w_il`` with ``w = p(x|z) p(z) / q(z|x)``
        (Eqs. (IW1), (IW2)); then :meth:`loss_terms`, :meth:`evaluate_terms`
        return ``(that loss, 0.0)`` (the bound does not split into a
        reconstruction and a KL) and :meth:`evaluate` returns that loss.

    Attributes
    ----------
    params : Mapping[str, np.ndarray]
        Every trainable array, by name (``encoder.0.W``, ..., ``encoder.head.b``,
        ``decoder.0.W``, ..., ``decoder.out.b``). The head's weight has 2K
        columns: the first K give ``mu``, the last K give ``logvar``. The
        arrays are the layers' own: write into them in place
        (``vae.params[name][...] = value``). Rebinding an entry
        (``vae.params[name] = value``) raises a ``TypeError``: the layers, the
        optimizer and :meth:`save` would no longer agree on the parameters.
    grads : Mapping[str, np.ndarray]
        The gradients of the last training step, same keys and shapes,
        overwritten by the next one; read-only in the same way.
    beta, sigma_dec, n_samples
        May be changed after construction; each assignment is checked as the
        constructor checks it (a finite float >= 0, exactly 1 with
        ``objective="iwae"``; a finite float > 0; an integer >= 1).

    Notes
    -----
    Threads: the model reuses work buffers between calls, so its public
    methods (:meth:`encode`, :meth:`decode`, :meth:`sample`,
    :meth:`reconstruct`, :meth:`evaluate`, :meth:`evaluate_terms`,
    :meth:`loss_terms`, :meth:`loss_and_grads`, :meth:`save`) take a lock
    held by the model: calling them on one model from several threads is safe
    and gives each caller exactly the single-threaded result, but the calls run
    one at a time (NumPy's BLAS still uses every core inside each). For
    parallel inference, give each thread its own model (``VAE.load`` of one
    file). Training one model from two threads at once, or calling it while
    :func:`npvae.train` trains it, is not safe: the parameters change under
    the other caller, and the fused training step does not take the lock.
    The model's own Generator (used when no ``rng`` or ``eps`` is given) is
    shared, so concurrent callers that rely on it draw in an unspecified order.
    """

    def __init__(self, input_dim: int, hidden_dims: Sequence[int] = (400,), latent_dim: int = 20,
                 likelihood: str = "bernoulli", activation: str | None = None, beta: float = 1.0,
                 n_samples: int = 1, seed: int | None = 0, dtype: np.dtype | type = np.float32,
                 sigma_dec: float = 1.0, alpha: float = 0.01, layer: str = "dense",
                 logvar_bounds: Sequence[float] | None = None, objective: str = "elbo") -> None:
        self.input_dim = check_int("input_dim", input_dim)
        if isinstance(hidden_dims, (int, np.integer)):
            hidden_dims = (int(hidden_dims),)
        self.hidden_dims = tuple(check_int("hidden_dims[]", h) for h in hidden_dims)
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
        self.layer = check_choice("layer", layer, LAYERS)
        if self.layer == "gated":
            if activation not in (None, "identity"):
                raise ValueError(f"activation must be left unset with layer='gated' (its hidden layers compute "
                                 f"(x W + b) * sigmoid(x V + c), with no other activation); got {activation!r}")
            activation = "identity"
        elif activation is None:
            activation = "relu"
        self.activation = check_choice("activation", activation, kernels.ACTIVATIONS)
        self.objective = check_choice("objective", objective, OBJECTIVES)
        self._lock = threading.RLock()
        self.beta = beta
        self.dtype = check_dtype("dtype", dtype)
        self.sigma_dec = sigma_dec
        self.alpha = check_float("alpha", alpha, minimum=0.0)
        if seed is not None:
            seed = check_int("seed", seed, minimum=0)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.logvar_bounds = _check_logvar_bounds(logvar_bounds)
        # The hardtanh's bounds as the kernels take them: (-inf, LOGVAR_MAX) is the built-in clamp, whose
        # gradient passes at 30 itself (hi_grad just above it); given bounds stop it at the bounds.
        lo, hi = self.logvar_bounds if self.logvar_bounds is not None else (-math.inf, kernels.LOGVAR_MAX)
        self._lv_lo, self._lv_hi = self.dtype.type(lo), self.dtype.type(hi)
        self._lv_hi_grad = (self._lv_hi if self.logvar_bounds is not None
                            else np.nextafter(self._lv_hi, self.dtype.type(np.inf)))

        dims = (self.input_dim, *self.hidden_dims)
        mk = lambda i, o, act: Dense(i, o, act, self.rng, self.dtype, self.alpha)  # noqa: E731
        if self.layer == "gated":
            hid: Any = lambda i, o: GatedDense(i, o, self.rng, self.dtype)  # noqa: E731
        else:
            hid = lambda i, o: mk(i, o, activation)  # noqa: E731
        self.encoder = [hid(dims[i], dims[i + 1]) for i in range(len(self.hidden_dims))]
        self.head = mk(dims[-1], 2 * self.latent_dim, "identity")
        rdims = (self.latent_dim, *self.hidden_dims[::-1])
        self.decoder = [hid(rdims[i], rdims[i + 1]) for i in range(len(self.hidden_dims))]
        self.out = mk(rdims[-1], self.input_dim, "identity")

        params: dict[str, np.ndarray] = {}
        grads: dict[str, np.ndarray] = {}  # owned by the layers, overwritten by each step
        for name, lay in self._named_layers():  # (not "layer": that is the argument, a str)
            for k in lay.params:  # W, b; and V, c for a gated layer
                params[f"{name}.{k}"] = lay.params[k]
                grads[f"{name}.{k}"] = lay.grads[k]
        self._params = ArrayDict(params, "vae.params")
        self._grads = ArrayDict(grads, "vae.grads")
        self.n_samples = n_samples  # makes the noise workspaces
        self._row_tmp = np.empty(self.input_dim, self.dtype)

    # ------------------------------------------------------------------ checked attributes
    @property
    def params(self) -> ArrayDict:
        """Every trainable array by name; write in place, never rebind (see the class docstring)."""
        return self._params

    @params.setter
    def params(self, value: object) -> None:
        raise AttributeError("vae.params cannot be replaced: the layers hold the arrays. Write into each "
                             "array in place (vae.params[name][...] = value), or load a saved model")

    @property
    def grads(self) -> ArrayDict:
        """The gradients of the last step by name, the layers' own arrays (read-only mapping)."""
        return self._grads

    @grads.setter
    def grads(self, value: object) -> None:
        raise AttributeError("vae.grads cannot be replaced: the layers write into these arrays")

    @property
    def beta(self) -> float:
        """Weight of the KL term; assigning checks it (a finite number >= 0)."""
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        beta = check_float("beta", value, minimum=0.0, inclusive=True)
        if self.objective == "iwae" and beta != 1.0:
            raise ValueError(f"beta must be 1 with objective='iwae' (the importance-weighted bound has no separate "
                             f"KL term to weight), got {beta:g}")
        self._beta = beta

    @property
    def sigma_dec(self) -> float:
        """Standard deviation of the Gaussian decoder; assigning checks it (a finite number > 0)."""
        return self._sigma_dec

    @sigma_dec.setter
    def sigma_dec(self, value: float) -> None:
        self._sigma_dec = check_float("sigma_dec", value, minimum=0.0)

    @property
    def n_samples(self) -> int:
        """L, the Monte Carlo samples of z per example; assigning checks it (an integer >= 1)
        and resizes the noise workspaces."""
        return self._n_samples

    @n_samples.setter
    def n_samples(self, value: int) -> None:
        n = check_int("n_samples", value)
        with self._lock:
            k = self.latent_dim
            self._n_samples = n
            # per batch size: the noise, z (row l*B + i once reshaped to (L*B, K)), and sigma for backward
            self._noise = Workspaces({"eps": (n, -1, k), "z": (n, -1, k), "sigma": (-1, k)}, self.dtype)
            # objective="iwae", per n_samples * batch rows (float64): log p(z) - log q(z|x), the rows'
            # negative log-likelihoods (or squared errors), then the normalized weights
            self._iw = Workspaces({"logr": (-1,), "nll": (-1,), "wt": (-1,)}, np.dtype(np.float64))

    def __getstate__(self) -> dict[str, Any]:
        """For copy.deepcopy: everything but the lock, which is not copyable."""
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def _rebind_param(self, name: str, param: np.ndarray, grad: np.ndarray) -> None:
        """Give parameter ``name`` and its gradient new arrays, in the layer and in both mappings.

        Internal (for code that lays the parameters out in memory itself, as
        the prototype benchmarks/shared_pool.py did, last in commit eb4e49b); the arrays must have the old shape and
        dtype and be C-contiguous. An optimizer already bound to the old arrays
        will refuse the new ones: reset it.
        """
        with self._lock:
            layer_name, k = name.rsplit(".", 1)
            layer = dict(self._named_layers())[layer_name]
            old = self._params[name]
            for what, a in (("param", param), ("grad", grad)):
                if (not isinstance(a, np.ndarray) or a.shape != old.shape or a.dtype != old.dtype
                        or not a.flags.c_contiguous):
                    raise ValueError(f"{what} for {name!r} must be a C-contiguous array of shape {old.shape} and "
                                     f"dtype {old.dtype}, got {getattr(a, 'shape', type(a).__name__)}")
            layer.params._rebind(k, param)
            layer.grads._rebind(k, grad)
            self._params._rebind(name, param)
            self._grads._rebind(name, grad)

    # ------------------------------------------------------------------ structure
    def _named_layers(self) -> list[tuple[str, Dense | GatedDense]]:
        return ([(f"encoder.{i}", layer) for i, layer in enumerate(self.encoder)] + [("encoder.head", self.head)]
                + [(f"decoder.{i}", layer) for i, layer in enumerate(self.decoder)] + [("decoder.out", self.out)])

    def config(self) -> dict:
        """The constructor arguments, enough to rebuild the architecture."""
        return {"input_dim": self.input_dim, "hidden_dims": list(self.hidden_dims),
                "latent_dim": self.latent_dim, "likelihood": self.likelihood,
                "activation": self.activation, "beta": self.beta, "n_samples": self.n_samples,
                "seed": self.seed, "dtype": self.dtype.name, "sigma_dec": self.sigma_dec,
                "alpha": self.alpha, "layer": self.layer,
                "logvar_bounds": None if self.logvar_bounds is None else list(self.logvar_bounds),
                "objective": self.objective}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"VAE({args})"

    @property
    def n_params(self) -> int:
        """Number of trainable scalars."""
        return sum(p.size for p in self.params.values())

    # ------------------------------------------------------------------ checks
    def _check_x(self, x: object, name: str = "x") -> np.ndarray:
        return check_data(name, x, width=self.input_dim, unit_range=self.likelihood == "bernoulli",
                          dtype=self.dtype)

    def _check_eps(self, eps: object, batch: int) -> np.ndarray:
        if not isinstance(eps, np.ndarray):
            raise TypeError(f"eps must be a NumPy array, got {type(eps).__name__}")
        shape3 = (self.n_samples, batch, self.latent_dim)
        if eps.shape == shape3[1:] and self.n_samples == 1:
            eps = eps[None]
        if eps.shape != shape3:
            accepted = f"{shape3[1:]} or {shape3}" if self.n_samples == 1 else f"{shape3}"
            raise ValueError(f"eps must have shape {accepted} (n_samples, batch, latent_dim), got {eps.shape}")
        if not np.all(np.isfinite(eps)):
            raise ValueError("eps contains NaN or infinite values")
        return np.ascontiguousarray(eps, dtype=self.dtype)

    # ------------------------------------------------------------------ the step
    def _encode_raw(self, x: np.ndarray) -> np.ndarray:
        h = x
        for layer in self.encoder:
            h = layer._forward(h)
        return self.head._forward(h)

    def _decode_raw(self, z: np.ndarray) -> np.ndarray:
        h = z
        for layer in self.decoder:
            h = layer._forward(h)
        return self.out._forward(h)

    def _loss_terms(self, x: np.ndarray, eps: np.ndarray | None, rng: np.random.Generator,
                    backward: bool) -> tuple[float, float]:
        """Forward (and backward) pass on a checked batch; returns (mean NLL, mean KL).

        Fills ``self.grads`` when ``backward``. Allocates nothing once the
        workspaces for this batch size exist. For ``objective="iwae"``,
        returns ``(negative importance-weighted bound, 0.0)`` instead
        (:meth:`_iwae_terms`).
        """
        if self.objective == "iwae":
            return self._iwae_terms(x, eps, rng, backward)
        b, l_ = x.shape[0], self.n_samples
        nb = self._noise.get(b)
        if eps is None:
            rng.standard_normal(out=nb["eps"], dtype=self.dtype)
            eps = nb["eps"]
        z = nb["z"].reshape(l_ * b, self.latent_dim)
        ml = self._encode_raw(x)
        if self.logvar_bounds is None:
            kl_sum = kernels.reparam_kl_forward(ml, eps, z, nb["sigma"])
        else:
            kl_sum = kernels.reparam_kl_forward_bounded(ml, eps, z, nb["sigma"], self._lv_lo, self._lv_hi)
        out = self._decode_raw(z)
        dout = self.out.pre_activation_grad_buffer(out.shape[0])
        scale = self.dtype.type(self._likelihood_scale(b * l_))
        if self.likelihood == "bernoulli":
            nll_sum = kernels.bernoulli_nll(out, x, dout, scale, self.out.grads["b"], self._row_tmp)
        else:
            nll_sum = self._nll_sum(kernels.gaussian_sq_err(out, x, dout, scale, self.out.grads["b"]), out.size)
        if backward:
            d = self.out.backward_affine(dout)
            for layer in reversed(self.decoder):
                assert d is not None  # every decoder layer returns dx
                d = layer._backward(d)
            assert d is not None
            dml = self.head.pre_activation_grad_buffer(b)
            if self.logvar_bounds is None:
                kernels.reparam_kl_backward(d, eps, ml, nb["sigma"], dml, self.head.grads["b"],
                                            self.dtype.type(self.beta / b))
            else:
                kernels.reparam_kl_backward_bounded(d, eps, ml, nb["sigma"], dml, self.head.grads["b"],
                                                    self.dtype.type(self.beta / b), self._lv_lo, self._lv_hi)
            d = self.head.backward_affine(dml, need_dx=bool(self.encoder))
            for i in range(len(self.encoder) - 1, -1, -1):
                assert d is not None  # None only from the first layer, which is last here
                d = self.encoder[i]._backward(d, need_dx=i > 0)
        return nll_sum / (b * l_), kl_sum / b

    def _iwae_terms(self, x: np.ndarray, eps: np.ndarray | None, rng: np.random.Generator,
                    backward: bool) -> tuple[float, float]:
        """The negative importance-weighted bound on a checked batch, and ``0.0`` (Eqs. (IW1), (IW2)).

        Forward: z and ``log p(z) - log q(z|x)`` per sample, the decoder, the
        rows' negative log-likelihoods with their unscaled gradients, then the
        normalized weights and the log-mean-exp in float64. Backward: each
        output row's gradient scaled by its weight / B, the decoder, then
        ``[mu | logvar]`` through z and through log q's own logvar, the
        head, the encoder. Allocates nothing once the workspaces exist.
        """
        b, k_ = x.shape[0], self.n_samples
        nb = self._noise.get(b)
        iw = self._iw.get(k_ * b)
        if eps is None:
            rng.standard_normal(out=nb["eps"], dtype=self.dtype)
            eps = nb["eps"]
        z = nb["z"].reshape(k_ * b, self.latent_dim)
        ml = self._encode_raw(x)
        kernels.iwae_latent_forward(ml, eps, z, nb["sigma"], iw["logr"], self._lv_lo, self._lv_hi)
        out = self._decode_raw(z)
        dout = self.out.pre_activation_grad_buffer(out.shape[0])
        if self.likelihood == "bernoulli":
            kernels.bernoulli_nll_rows(out, x, dout, iw["nll"], self._row_tmp)
            nll_scale, nll_const, grad_scale = 1.0, 0.0, 1.0 / b
        else:
            kernels.gaussian_sq_err_rows(out, x, dout, iw["nll"])
            s2 = self.sigma_dec**2
            nll_scale = 1.0 / (2 * s2)
            nll_const = self.input_dim * (math.log(self.sigma_dec) + 0.5 * math.log(2 * math.pi))
            grad_scale = 1.0 / (s2 * b)
        total = kernels.iwae_weights(iw["logr"], iw["nll"], nll_scale, nll_const, k_, iw["wt"])
        if backward:
            kernels.scale_rows_colsum(dout, iw["wt"], grad_scale, self.out.grads["b"])
            d = self.out.backward_affine(dout)
            for layer in reversed(self.decoder):
                assert d is not None
                d = layer._backward(d)
            assert d is not None
            dml = self.head.pre_activation_grad_buffer(b)
            kernels.iwae_latent_backward(d, eps, ml, nb["sigma"], z, iw["wt"], dml, self.head.grads["b"],
                                         self.dtype.type(1.0 / b), self._lv_lo, self._lv_hi_grad)
            d = self.head.backward_affine(dml, need_dx=bool(self.encoder))
            for i in range(len(self.encoder) - 1, -1, -1):
                assert d is not None
                d = self.encoder[i]._backward(d, need_dx=i > 0)
        return -total / b, 0.0

    def _likelihood_scale(self, rows: int) -> float:
        """The ``scale`` the likelihood kernel takes for ``rows`` output rows: the gradient of the mean over rows."""
        if self.likelihood == "bernoulli":
            return 1.0 / rows
        return 1.0 / (self.sigma_dec**2 * rows)

    def _nll_sum(self, kernel_sum: float, size: int) -> float:
        """The summed negative log-likelihood of ``size`` outputs from what the likelihood kernel returned.

        The Bernoulli kernel returns it as is; the Gaussian one returns the
        squared error, to which Eq. (G1)'s scaling and constant are applied.
        """
        if self.likelihood == "bernoulli":
            return kernel_sum
        s2 = self.sigma_dec**2
        return kernel_sum / (2 * s2) + size * (math.log(self.sigma_dec) + 0.5 * math.log(2 * math.pi))

    def _step(self, x: np.ndarray, eps: np.ndarray | None = None, rng: np.random.Generator | None = None) -> float:
        """Loss and gradients into ``self.grads`` for a checked batch, without copies (training's path)."""
        with self._lock:
            nll, kl = self._loss_terms(x, eps, rng if rng is not None else self.rng, backward=True)
            return nll + self.beta * kl

    # ------------------------------------------------------------------ public API
    def loss_and_grads(self, x: np.ndarray, eps: np.ndarray | None = None) -> tuple[float, dict[str, np.ndarray]]:
        """Mean negative ELBO over the batch and its gradient for every parameter.

        Parameters
        ----------
        x : (B, input_dim) float array
            In [0, 1] for the Bernoulli likelihood.
        eps : optional (B, latent_dim), or (n_samples, B, latent_dim)
            Fixed standard-normal noise for the reparameterization; drawn from
            the model's Generator when omitted. Fixing it makes the loss a
            deterministic function of the parameters (for gradient checks).

        Returns
        -------
        loss : float
            Mean negative ELBO in nats per example (docs/derivation.md, Eq. (E1));
            for ``objective="iwae"``, the negative importance-weighted bound
            with k = ``n_samples`` (Eq. (IW1)).
        grads : dict[str, np.ndarray]
            Same keys and shapes as :attr:`params`; fresh copies the caller owns.
        """
        x = self._check_x(x)
        with self._lock:
            if eps is not None:
                eps = self._check_eps(eps, x.shape[0])
            loss = self._step(x, eps)
            return loss, {k: g.copy() for k, g in self.grads.items()}

    def loss_terms(self, x: np.ndarray, eps: np.ndarray | None = None) -> tuple[float, float]:
        """``(reconstruction, kl)``: mean negative log-likelihood and mean KL per example.

        The loss is ``reconstruction + beta * kl``. No gradients are computed.
        For ``objective="iwae"``: ``(negative importance-weighted bound, 0.0)``,
        so that the loss is still the first plus beta (1) times the second.
        """
        x = self._check_x(x)
        with self._lock:
            if eps is not None:
                eps = self._check_eps(eps, x.shape[0])
            return self._loss_terms(x, eps, self.rng, backward=False)

    def evaluate(self, x: np.ndarray, rng: np.random.Generator | int | None = None,
                 batch_size: int = _EVAL_CHUNK) -> float:
        """Mean negative ELBO over ``x`` (float), computed in chunks (for ``objective="iwae"``, the
        mean negative importance-weighted bound with k = ``n_samples``).

        The Monte Carlo noise comes from ``rng`` (a Generator, or an int seed)
        or, by default, from a fresh Generator seeded with 0, so that the same
        model on the same data gives the same number and evaluating never
        disturbs the training noise.
        """
        with self._lock:  # beta read under the same lock as the terms
            rec, kl = self.evaluate_terms(x, rng, batch_size)
            return rec + self.beta * kl

    def evaluate_terms(self, x: np.ndarray, rng: np.random.Generator | int | None = None,
                       batch_size: int = _EVAL_CHUNK) -> tuple[float, float]:
        """``(reconstruction, kl)`` means over ``x``, with the same chunks and noise as :meth:`evaluate`,
        so that ``evaluate(x) == reconstruction + beta * kl``."""
        x = self._check_x(x)
        rng = check_rng("rng", rng, 0)
        batch_size = check_int("batch_size", batch_size)
        rec = kl = 0.0
        with self._lock:
            for start in range(0, x.shape[0], batch_size):
                xb = x[start:start + batch_size]
                r, k = self._loss_terms(xb, None, rng, backward=False)
                rec += r * xb.shape[0]
                kl += k * xb.shape[0]
        return rec / x.shape[0], kl / x.shape[0]

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, logvar)`` of q(z | x), each of shape (n, latent_dim).

        With ``logvar_bounds``, ``logvar`` is the bounded one the model samples
        with (Eq. (V1)).
        """
        x = self._check_x(x)
        k = self.latent_dim
        mus, logvars = [], []
        with self._lock:
            for start in range(0, x.shape[0], _EVAL_CHUNK):
                ml = self._encode_raw(x[start:start + _EVAL_CHUNK])
                mus.append(ml[:, :k].copy())
                if self.logvar_bounds is None:
                    logvars.append(ml[:, k:].copy())
                else:
                    logvars.append(np.clip(ml[:, k:], self._lv_lo, self._lv_hi))
        return np.concatenate(mus), np.concatenate(logvars)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Mean of p(x | z) for ``z`` of shape (n, latent_dim): probabilities
        (sigmoid of the logits) for Bernoulli, the mean for Gaussian.

        Integer codes (a grid of points, say) are converted to the model's dtype.
        """
        if isinstance(z, np.ndarray) and np.issubdtype(z.dtype, np.integer):
            z = z.astype(self.dtype)
        z = check_data("z", z, width=self.latent_dim, dtype=self.dtype, what=" of latent codes",
                       integer_hint="")
        parts = []
        with self._lock:
            for start in range(0, z.shape[0], _EVAL_CHUNK):
                out = self._decode_raw(z[start:start + _EVAL_CHUNK])
                if self.likelihood == "bernoulli":
                    e = np.exp(-np.abs(out))
                    out = np.where(out >= 0, 1 / (1 + e), e / (1 + e))
                parts.append(np.array(out, dtype=self.dtype))
        return np.concatenate(parts)

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Decode ``n`` draws of z from the prior N(0, I); returns (n, input_dim) means.

        The draws come from ``rng`` (a Generator, or an int seed), by default
        from the model's own Generator.
        """
        n = check_int("n", n)
        with self._lock:
            rng = check_rng("rng", rng, self.rng)
            return self.decode(rng.standard_normal((n, self.latent_dim)).astype(self.dtype))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decode the posterior mean ``mu`` of each example: a deterministic reconstruction."""
        with self._lock:
            mu, _ = self.encode(x)
            return self.decode(mu)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the architecture and parameters to an ``.npz`` file, atomically."""
        from .checkpoint import save_model
        with self._lock:
            save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VAE:
        """Rebuild a model saved by :meth:`save` (never unpickles anything)."""
        from .checkpoint import load_model
        return load_model(path)
