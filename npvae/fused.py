r"""A whole training step compiled as one function and split over the cores: npvae's fast path.

:func:`npvae.train` runs each step layer by layer: NumPy's ``matmul`` (on
OpenBLAS's threads) for the products, npvae's kernels around them on one
core, then :meth:`npvae.Adam.step`. About a third of that step is the work
around the products, done on one core while the other has nothing to do
(benchmarks/README.md, "Where a step's time goes"). Here the same step
is one compiled function over the same kernels, and each core takes a share
of *all* of it, calling the products one core at a time through the ``gemm``
NumPy itself uses (:mod:`npvae._blas`):

1. **By examples.** Each core gathers its rows of the minibatch and runs
   them through the whole forward pass, the loss and the KL. Every row's
   work is independent of the others'.
2. **By columns, then by examples again.** Each core computes its share of
   the columns of the output layer's input gradient, the widest one, for
   the whole batch (with the activation's derivative and those columns'
   bias sums); then each core takes its rows down the rest of the backward
   pass to every layer's pre-activation gradient ``dpre``.
3. **By weight rows.** Each core computes its share of the rows of every
   weight gradient, ``dW[c0:c1] = x[:, c0:c1]^T dpre`` over the whole batch
   (so nothing is computed twice or summed), and applies Adam to those rows
   at once, while they are in its cache. The bias gradients (each core's
   column sums from steps 1 and 2, added up) and their update follow, serially:
   they are 0.3% of the parameters.

The arithmetic is the layer path's (the same kernels, and the same
products split into row and column blocks; docs/derivation.md, Eq. (E2) says why the
split is exact), so a step agrees with ``VAE._step`` followed by
``Adam.step`` to roundoff: the tests hold the two paths to 1e-12 in float64
over several steps. The noise is drawn from the
same Generator in the same way, so a training run takes the same path
either way.

What it covers: :class:`npvae.VAE` with any hidden layers and activation,
the Bernoulli or Gaussian likelihood, one sample of z, any beta, trained by
:class:`npvae.Adam` without gradient clipping, in float32 or float64, with
NumPy on an OpenBLAS (pthreads) that :mod:`npvae._blas` finds, and at least
two cores (Numba's thread count and OpenBLAS's both at least 2).
:func:`npvae.train` uses it by itself in that case; :func:`unsupported` says
why not otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
from numba import prange, types
from numba.core.extending import intrinsic

from . import _blas, kernels
from ._jit import jit, jit_disabled
from .optim import Adam, adam_kernel_args

IDENTITY = kernels.ACTIVATIONS["identity"]
_BERNOULLI, _GAUSSIAN = 0, 1
_FINITE = 1.0e300  # ``abs(v) <= _FINITE`` is False for inf and NaN, and survives fast-math

#: Pieces of a training step that ``ints[7]`` of :func:`fused_step` leaves out (bits, any combination), so
#: that ``benchmarks/fused_pieces.py`` can time each piece by its absence, inside the step, with the caches
#: as the rest of the step leaves them. A step with a piece left out is no training step; npvae passes 0.
SKIP_INPUT_GRADIENTS = 1  #: the products ``dY[li] W[li]^T`` of the backward pass
SKIP_BACKWARD_KERNELS = 2  #: activation backward, and the reparameterization and KL backward
SKIP_WEIGHT_GRADIENTS = 4  #: the products ``dW = x^T dY``
SKIP_WEIGHT_UPDATE = 8  #: Adam's update of the weight matrices (the biases' stays)
SKIP_SECOND_PHASE = 16  #: everything after the backward pass: weight gradients and every update


@intrinsic
def call_gemm(typingctx: Any, addr: Any, order: Any, ta: Any, tb: Any, m: Any, n: Any, k: Any, alpha: Any,
              a: Any, lda: Any, b: Any, ldb: Any, beta: Any, c: Any, ldc: Any) -> Any:
    """Call ``cblas_?gemm`` at address ``addr`` (compiled code only).

    The sizes and strides are passed as the integer type of ``m`` (int32 or
    int64, as the library expects), ``alpha`` and ``beta`` as the real type of
    ``alpha``, the matrices as addresses.
    """
    size, real = m, alpha
    i64 = types.int64
    sig = types.void(i64, types.int32, types.int32, types.int32, size, size, size, real, i64, size, i64, size,
                     real, i64, size)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        from llvmlite import ir

        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        st, rt = context.get_value_type(size), context.get_value_type(real)
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, st, st, st, rt, i8p, st, i8p, st, rt, i8p, st])
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        call = list(args[1:])
        for j in (7, 9, 12):  # a, b, c
            call[j] = builder.inttoptr(call[j], i8p)
        builder.call(fn, call)
        return context.get_dummy_value()

    return sig, codegen


#: :func:`call_gemm` as compiled code calls it: without ``typingctx``, which Numba supplies (numba's type
#: annotations keep it in the intrinsic's call signature).
_call_gemm = cast("Callable[..., None]", call_gemm)


def _gemm(addr: int, wide: bool, ta: bool, tb: bool, m: int, n: int, k: int, a: int, lda: int, b: int, ldb: int,
          c: int, ldc: int, one: float, zero: float) -> None:
    """Row-major ``C[m, n] = op(A) @ op(B)``, each matrix given by its address and row stride."""
    order = np.int32(_blas.ROW_MAJOR)
    op_a = np.int32(_blas.TRANS if ta else _blas.NO_TRANS)
    op_b = np.int32(_blas.TRANS if tb else _blas.NO_TRANS)
    pa, pb, pc = np.int64(a), np.int64(b), np.int64(c)
    if wide:
        _call_gemm(addr, order, op_a, op_b, np.int64(m), np.int64(n), np.int64(k), one, pa, np.int64(lda), pb,
                  np.int64(ldb), zero, pc, np.int64(ldc))
    else:
        _call_gemm(addr, order, op_a, op_b, np.int32(m), np.int32(n), np.int32(k), one, pa, np.int32(lda), pb,
                  np.int32(ldb), zero, pc, np.int32(ldc))


_gemm = jit(_gemm)


def _flat_rows(a: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of a C-contiguous 2-D array, as one flat view."""
    return a.reshape(-1)[r0 * a.shape[1]:r1 * a.shape[1]]


_flat_rows = jit(_flat_rows)


def fused_step(gemm: int, src: np.ndarray, idx: np.ndarray, gather_scale: float, eps: np.ndarray,
               Ws: Any, bs: Any, dWs: Any, dbs: Any, mW: Any, vW: Any, mb: Any, vb: Any,
               Y: Any, dY: Any, xb: np.ndarray, z: np.ndarray, sigma: np.ndarray, dz: np.ndarray,
               dbpart: np.ndarray, tmp: np.ndarray, parts_out: np.ndarray, sums: np.ndarray, ints: np.ndarray,
               reals: np.ndarray, adam: np.ndarray) -> None:
    r"""One training step of a VAE, split over ``parts`` cores (docs/derivation.md, Eq. (E2)).

    Part ``i`` takes rows ``[i B / parts, (i + 1) B / parts)`` of the batch
    through Eqs. (D1), (R1), (K1), (B1) or (G1); then (with hidden layers)
    columns ``[i d / parts, (i + 1) d / parts)`` of the output layer's
    input gradient (``d`` that layer's input width) for the whole batch,
    and its rows again back to every layer's ``dpre``; then rows ``[i d /
    parts, (i + 1) d / parts)`` of every weight gradient (``d`` its input
    width), :math:`dW = x^\top \mathrm{dpre}`, and their Adam update
    (O1). Each phase starts when every part has finished the one before.

    Layers ``0 .. n-1`` run from the input to the output: ``n_hidden``
    encoder layers, the head (``[mu | logvar]``, index ``n_hidden``), the
    decoder's ``n_hidden`` layers (the first takes ``z``) and the output
    layer. ``Ws[li]`` (in, out) and ``bs[li]`` are the parameters, ``dWs``,
    ``dbs`` their gradients, ``mW, vW, mb, vb`` Adam's flat moments; ``Y[li]``
    (B, out) each layer's output, ``dY[li]`` the gradient at its
    pre-activation (``dpre`` of Eq. (D1)); ``dz`` (B, K) the gradient at z.
    ``dbpart[i, li]`` holds part ``i``'s column sums of ``dY[li]``; ``tmp[i]``
    is its row buffer for the loss kernel; ``parts_out`` (3, parts), float64,
    takes each part's likelihood sum, KL sum and ``sum(g**2)``. ``eps`` is
    (1, B, K). Nothing is allocated here.

    ``gemm`` is the address of ``cblas_?gemm`` for the dtype. ``ints``:
    n_hidden, activation kind, likelihood (0 Bernoulli, 1 Gaussian), parts,
    bytes per element, 1 if the BLAS takes 64-bit sizes, 1 for a training
    step (0: the forward pass and the loss only, for evaluation: ``sums``
    gets the likelihood and KL sums, nothing else is written but the
    workspaces, and only ``dY[n - 1]`` of ``dY`` is used), and the pieces
    to leave out (the ``SKIP_*`` bits; 0 but for timing). ``reals``: alpha,
    the loss kernel's scale, the KL scale (beta / B). ``adam``:
    :func:`npvae.optim.adam_kernel_args` for this step. On return ``sums``
    holds the likelihood kernel's sum over the batch, the summed KL,
    ``sum(g**2)`` over every gradient, and 1 if the update was applied: it is
    not when the loss is NaN or infinite, so parameters and moments keep their
    last values.
    """
    n_hidden, kind, likelihood, parts, f, wide = ints[0], ints[1], ints[2], ints[3], ints[4], ints[5] != 0
    train, skip = ints[6] != 0, ints[7]
    alpha, loss_scale, kl_scale = reals[0], reals[1], reals[2]
    n = len(Ws)
    head, first_dec = n_hidden, n_hidden + 1
    b, p = xb.shape
    one, zero = xb.dtype.type(1), xb.dtype.type(0)
    part_lik, part_kl, part_sq = parts_out[0], parts_out[1], parts_out[2]
    for i in prange(parts):
        r0, r1 = i * b // parts, (i + 1) * b // parts
        m = r1 - r0
        kernels.gather_rows(src, idx[r0:r1], gather_scale, xb[r0:r1])
        for li in range(n):
            inp = xb if li == 0 else (z if li == first_dec else Y[li - 1])
            d_in, d_out = Ws[li].shape
            _gemm(gemm, wide, False, False, m, d_out, d_in, inp.ctypes.data + r0 * d_in * f, d_in, Ws[li].ctypes.data,
                  d_out, Y[li].ctypes.data + r0 * d_out * f, d_out, one, zero)
            act = IDENTITY if li == head or li == n - 1 else kind
            kernels.bias_act_forward(Y[li][r0:r1], bs[li], act, alpha)
            if li == head:
                part_kl[i] = kernels.reparam_kl_forward(Y[head][r0:r1], eps[:, r0:r1], z[r0:r1], sigma[r0:r1])
        out, dout = Y[n - 1][r0:r1], dY[n - 1][r0:r1]
        if likelihood == _BERNOULLI:
            part_lik[i] = kernels.bernoulli_nll(out, xb[r0:r1], dout, loss_scale, dbpart[i, n - 1, :p], tmp[i])
        else:
            part_lik[i] = kernels.gaussian_sq_err(out, xb[r0:r1], dout, loss_scale, dbpart[i, n - 1, :p])
    lik, kl = 0.0, 0.0
    for i in range(parts):
        lik += part_lik[i]
        kl += part_kl[i]
    sums[0], sums[1], sums[2], sums[3] = lik, kl, 0.0, 0.0
    if not train or not abs(lik + kl) <= _FINITE:
        return
    top = n - 1  # the highest layer whose input gradient is split by rows
    if n_hidden > 0:  # the output layer's, the widest, by columns (its rows are all done now): one core each
        top = n - 2
        li = n - 1
        d_in, d_out = Ws[li].shape
        below = dY[li - 1]
        for i in prange(parts):
            c0, c1 = i * d_in // parts, (i + 1) * d_in // parts
            if not skip & SKIP_INPUT_GRADIENTS and c1 > c0:
                _gemm(gemm, wide, False, True, b, c1 - c0, d_out, dY[li].ctypes.data, d_out,
                      Ws[li].ctypes.data + c0 * d_out * f, d_out, below.ctypes.data + c0 * f, d_in, one, zero)
            colsum = dbpart[i, li - 1]
            colsum[:c0] = zero  # this part's columns' sums, zero elsewhere: the parts' rows add up
            colsum[c1:d_in] = zero
            if not skip & SKIP_BACKWARD_KERNELS:
                kernels.act_backward_cols(below, Y[li - 1], below, colsum, kind, alpha, c0, c1)
    for i in prange(parts):
        r0, r1 = i * b // parts, (i + 1) * b // parts
        m = r1 - r0
        for li in range(top, 0, -1):
            d_in, d_out = Ws[li].shape
            below = dz if li == first_dec else dY[li - 1]
            if not skip & SKIP_INPUT_GRADIENTS:
                _gemm(gemm, wide, False, True, m, d_in, d_out, dY[li].ctypes.data + r0 * d_out * f, d_out,
                      Ws[li].ctypes.data, d_out, below.ctypes.data + r0 * d_in * f, d_in, one, zero)
            if skip & SKIP_BACKWARD_KERNELS:
                continue
            if li == first_dec:
                kernels.reparam_kl_backward(dz[r0:r1], eps[:, r0:r1], Y[head][r0:r1], sigma[r0:r1],
                                            dY[head][r0:r1], dbpart[i, head, :2 * d_in], kl_scale)
            else:
                kernels.act_backward(dY[li - 1][r0:r1], Y[li - 1][r0:r1], dY[li - 1][r0:r1],
                                     dbpart[i, li - 1, :d_in], kind, alpha)
    if skip & SKIP_SECOND_PHASE:
        return
    for i in prange(parts):
        sq = 0.0
        for li in range(n - 1, -1, -1):  # the last layer first: the next forward pass starts at the first
            inp = xb if li == 0 else (z if li == first_dec else Y[li - 1])
            d_in, d_out = Ws[li].shape
            c0, c1 = i * d_in // parts, (i + 1) * d_in // parts
            if not skip & SKIP_WEIGHT_GRADIENTS:
                _gemm(gemm, wide, True, False, c1 - c0, d_out, b, inp.ctypes.data + c0 * f, d_in, dY[li].ctypes.data,
                      d_out, dWs[li].ctypes.data + c0 * d_out * f, d_out, one, zero)
            if skip & SKIP_WEIGHT_UPDATE:
                continue
            sq += kernels.adam_update(_flat_rows(Ws[li], c0, c1), _flat_rows(dWs[li], c0, c1),
                                      mW[li][c0 * d_out:c1 * d_out], vW[li][c0 * d_out:c1 * d_out],
                                      adam[0], adam[1], adam[2], adam[3], adam[4], adam[5], adam[6])
        part_sq[i] = sq
    sq = 0.0
    for i in range(parts):
        sq += part_sq[i]
    for li in range(n):
        db = dbs[li]
        for j in range(db.shape[0]):
            acc = zero
            for i in range(parts):
                acc += dbpart[i, li, j]
            db[j] = acc
        sq += kernels.adam_update(bs[li], db, mb[li], vb[li], adam[0], adam[1], adam[2], adam[3], adam[4],
                                  adam[5], adam[6])
    sums[2], sums[3] = sq, 1.0


fused_step = jit(fused_step, parallel=True)


def _likelihood_code(vae: Any) -> int:
    if vae.likelihood == "bernoulli":
        return _BERNOULLI
    if vae.likelihood == "gaussian":
        return _GAUSSIAN
    raise ValueError(f"the fused training step has no likelihood {vae.likelihood!r}")


def unsupported(vae: Any, optimizer: Any, clip_norm: float | None, *, threads: bool = True) -> str | None:
    """Why :class:`FusedStep` cannot train this model with this optimizer here, or ``None`` if it can.

    ``threads=False`` leaves out the two-core condition (for a step told its number of parts).
    """
    import numba

    if getattr(vae, "layer", "dense") != "dense":
        return f"it has dense hidden layers only, not layer={vae.layer!r}"
    if getattr(vae, "objective", "elbo") != "elbo":
        return f"it minimizes the negative ELBO only, not objective={vae.objective!r}"
    if getattr(vae, "logvar_bounds", None) is not None:
        return f"it does not bound logvar (logvar_bounds={tuple(vae.logvar_bounds)!r})"
    if type(optimizer) is not Adam:
        return f"it trains with npvae.Adam only, not {type(optimizer).__name__}"
    if clip_norm is not None:
        return "it does not clip gradients (clip_norm)"
    if vae.n_samples != 1:
        return f"it draws one sample of z per example, not n_samples={vae.n_samples}"
    hidden = vae.encoder + vae.decoder
    if len({(lay._kind, float(lay._alpha)) for lay in hidden}) > 1:
        return "its hidden layers do not all have the same activation"
    blas = _blas.numpy_blas()
    if blas is None:
        return "NumPy's BLAS is not an OpenBLAS (pthreads) whose cblas gemm npvae can find"
    if jit_disabled():
        return "NUMBA_DISABLE_JIT is set"
    if threads and min(numba.get_num_threads(), blas.get_num_threads()) < 2:
        return "it needs two cores, and Numba or the BLAS is limited to one thread"
    return None


class FusedStep:
    """:func:`fused_step` bound to one model and one Adam: workspaces per batch size, made once.

    Calling it does what ``vae._step(xb, rng=rng)`` then ``optimizer.step(vae.params,
    vae.grads)`` do, for the rows ``src[idx]`` (times ``gather_scale``):
    it returns the loss and ``sum(g**2)``. When the loss is not finite it
    returns it with ``sum(g**2)`` 0 and changes nothing (neither the
    parameters nor the optimizer), as :func:`npvae.train` expects. Call it
    inside :meth:`one_blas_thread`, and from one thread at a time: its
    workspaces are its own.

    What the layer path reads at every step is read at every call here too,
    so a change between steps (a KL schedule setting ``vae.beta`` from
    ``on_epoch``, say) takes effect at the next step on either path:
    ``vae.beta``, ``vae.sigma_dec`` and ``vae.likelihood``, the optimizer's
    ``lr``, ``betas``, ``eps`` and ``t``, and its moment arrays (new ones
    after ``load_state_arrays``). The activation and ``alpha`` come from the
    layers, which the layer path uses too (they keep what they were made
    with). A ``vae.n_samples`` other than 1 makes the call raise.
    """

    def __init__(self, vae: Any, optimizer: Adam, parts: int | None = None) -> None:
        import numba
        from numba.typed import List

        why = unsupported(vae, optimizer, None, threads=parts is None)
        if why is not None:
            raise ValueError(f"the fused training step cannot be used: {why}")
        blas = _blas.numpy_blas()
        assert blas is not None

        self.vae, self.opt, self.blas = vae, optimizer, blas
        self.parts = parts if parts is not None else min(numba.get_num_threads(), blas.get_num_threads())
        if self.parts < 1:
            raise ValueError(f"parts must be at least 1, got {self.parts}")
        self.gemm = blas.gemm[vae.dtype]
        layers = [layer for _, layer in vae._named_layers()]
        names = [name for name, _ in vae._named_layers()]
        self._names = names
        self.Ws = List([lay.params["W"] for lay in layers])
        self.bs = List([lay.params["b"] for lay in layers])
        self.dWs = List([lay.grads["W"] for lay in layers])
        self.dbs = List([lay.grads["b"] for lay in layers])
        self._bind_moments()  # creates Adam's state, as its first step would
        self.widths = [lay.out_dim for lay in layers]
        # the activation as the layer path applies it: the hidden layers' own (vae.activation and vae.alpha
        # are only what they were made with); a model without hidden layers has none to apply
        hidden = vae.encoder + vae.decoder
        kind = hidden[0]._kind if hidden else IDENTITY
        alpha = hidden[0]._alpha if hidden else 0.0
        self.ints = np.array([len(vae.hidden_dims), kind, _likelihood_code(vae), self.parts, vae.dtype.itemsize,
                              blas.wide, 1, 0], np.int64)
        self.eval_ints = self.ints.copy()  # the same, for the loss alone (evaluate_terms)
        self.eval_ints[6] = 0
        # alpha, then the loss kernel's scale and the KL's (beta / B), written at every call
        self.reals = np.array([alpha, 0.0, 0.0], vae.dtype)
        self.dbpart = np.zeros((self.parts, len(layers), max(self.widths)), vae.dtype)
        self.tmp = np.zeros((self.parts, vae.input_dim), vae.dtype)
        self.parts_out = np.zeros((3, self.parts))
        self.sums = np.zeros(4)
        self.adam = np.zeros(7, vae.dtype)  # this step's adam_kernel_args
        self._ws: dict[int, tuple] = {}
        self._eval_ws: dict[int, tuple] = {}

    def _bind_moments(self) -> None:
        """Adam's moment arrays, as its :meth:`~npvae.Adam._flat_views` gives them now (new ones after
        ``load_state_arrays``); ``self._views`` is the cache they came from, to notice when it changes."""
        from numba.typed import List

        opt, vae = self.opt, self.vae
        views = opt._flat_views(vae.params, vae.grads)
        for key, (_, _, m, v) in views.items():
            if m.dtype != vae.dtype or v.dtype != vae.dtype:
                raise ValueError(f"the optimizer's state for {key} is {m.dtype}/{v.dtype}, not the model's "
                                 f"{vae.dtype}")
        names = self._names
        self.mW = List([views[f"{k}.W"][2] for k in names])
        self.vW = List([views[f"{k}.W"][3] for k in names])
        self.mb = List([views[f"{k}.b"][2] for k in names])
        self.vb = List([views[f"{k}.b"][3] for k in names])
        self._views = getattr(opt, "_views", None)

    def _workspaces(self, b: int) -> tuple:
        from numba.typed import List

        ws = self._ws.get(b)
        if ws is None:
            vae = self.vae
            dt, k = vae.dtype, vae.latent_dim
            ws = (List([np.zeros((b, w), dt) for w in self.widths]), List([np.zeros((b, w), dt) for w in self.widths]),
                  np.zeros((b, vae.input_dim), dt), np.zeros((b, k), dt))
            self._ws[b] = ws
        return ws

    def _eval_workspaces(self, b: int) -> tuple:
        """Chunk-sized buffers for :meth:`evaluate_terms`: the outputs, the last layer's gradient (the loss
        kernel writes it), the rows, the noise, z and sigma, and the row indices ``0 .. b-1``."""
        from numba.typed import List

        ws = self._eval_ws.get(b)
        if ws is None:
            vae = self.vae
            dt, k, w = vae.dtype, vae.latent_dim, self.widths
            ws = (List([np.zeros((b, x), dt) for x in w]),
                  List([np.zeros((b if li == len(w) - 1 else 0, x), dt) for li, x in enumerate(w)]),
                  np.zeros((b, vae.input_dim), dt), np.zeros((b, k), dt), np.zeros((1, b, k), dt),
                  np.zeros((b, k), dt), np.zeros((b, k), dt), np.arange(b, dtype=np.int64))
            self._eval_ws[b] = ws
        return ws

    def evaluate_terms(self, x: np.ndarray, scale: Any = None, chunk: int = 1024) -> tuple[float, float]:
        """``vae.evaluate_terms(x)``: the mean reconstruction term and KL over ``x``, split over the cores.

        The same chunks of ``chunk`` rows and the same noise (a Generator
        seeded with 0, one draw per chunk) as :meth:`npvae.VAE.evaluate_terms`,
        so the same numbers to roundoff; ``x`` may be ``uint8`` pixels,
        multiplied by ``scale`` as they are gathered (:func:`npvae.train`'s
        ``pixel_scale``). The products run one per core, like the training
        step's, with NumPy's BLAS held to one thread meanwhile (and given
        back its threads after), so that no BLAS thread is left spinning
        after validation to take a core from the next fused epoch.
        Parameters, gradients and the optimizer are not touched.
        """
        vae = self.vae
        gather_scale = vae.dtype.type(1 if scale is None else scale)
        rng = np.random.default_rng(0)
        n, p = x.shape
        rec = kl = 0.0
        with self.one_blas_thread():
            for start in range(0, n, chunk):
                part = x[start:start + chunk]
                b = part.shape[0]
                self._read_model(b, train=False)
                Y, dY, xb, dz, eps, z, sigma, idx = self._eval_workspaces(b)
                rng.standard_normal(out=eps, dtype=vae.dtype)  # as VAE._loss_terms draws it
                fused_step(self.gemm, part, idx, gather_scale, eps, self.Ws, self.bs, self.dWs, self.dbs,
                           self.mW, self.vW, self.mb, self.vb, Y, dY, xb, z, sigma, dz,
                           self.dbpart, self.tmp, self.parts_out, self.sums, self.eval_ints, self.reals, self.adam)
                rec += vae._nll_sum(self.sums[0], b * p) / b * b
                kl += self.sums[1] / b * b
        return rec / n, kl / n

    def _read_model(self, b: int, train: bool = True) -> None:
        """What the layer path reads at every step, into ``ints`` and ``reals`` (no allocation)."""
        vae = self.vae
        if vae.n_samples != 1:
            raise ValueError(f"the fused training step draws one sample of z per example, but vae.n_samples is now "
                             f"{vae.n_samples}; train with fused=False for several samples")
        (self.ints if train else self.eval_ints)[2] = _likelihood_code(vae)
        reals = self.reals
        reals[1] = vae._likelihood_scale(b)  # rounded to the dtype as the layer path rounds it
        reals[2] = vae.beta / b
        if train and getattr(self.opt, "_views", None) is not self._views:
            self._bind_moments()

    @contextlib.contextmanager
    def one_blas_thread(self) -> Iterator[None]:
        """Keep NumPy's BLAS on one thread in the body (restored after), as the steps need.

        The step's products run one per core from Numba's threads; a BLAS free
        to start threads of its own would fight them for the cores. Set once
        around a run of steps, not per step: OpenBLAS may stop and restart its
        threads when the count changes.
        """
        with self.blas.one_thread():
            yield

    def __call__(self, src: np.ndarray, idx: np.ndarray, gather_scale: Any, rng: np.random.Generator
                 ) -> tuple[float, float]:
        vae, opt = self.vae, self.opt
        b = idx.shape[0]
        self._read_model(b)
        Y, dY, xb, dz = self._workspaces(b)
        nb = vae._noise.get(b)
        rng.standard_normal(out=nb["eps"], dtype=vae.dtype)  # as VAE._loss_terms draws it
        adam = self.adam
        adam[:] = adam_kernel_args(opt.lr, opt.betas, opt.eps, opt.t + 1, vae.dtype)
        fused_step(self.gemm, src, idx, gather_scale, nb["eps"], self.Ws, self.bs, self.dWs, self.dbs,
                   self.mW, self.vW, self.mb, self.vb, Y, dY, xb, nb["z"].reshape(b, -1), nb["sigma"], dz,
                   self.dbpart, self.tmp, self.parts_out, self.sums, self.ints, self.reals, adam)
        lik, kl, sq, applied = self.sums.tolist()
        if applied:
            opt.t += 1
        return vae._nll_sum(lik, b * vae.input_dim) / b + vae.beta * kl / b, sq
