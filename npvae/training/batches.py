"""Minibatches: each epoch's order and the buffers the rows are gathered into.

Epoch ``e`` of a run with seed ``s`` visits the examples in the order of
``np.random.default_rng([s, e]).permutation(n)``, so an epoch's batches do
not depend on what happened before it (a resumed run sees the same ones).
The rows of a batch are gathered (and, for ``uint8`` pixels, scaled) into a
buffer made once per batch size, so nothing is allocated per minibatch.

Dynamic binarization (docs/derivation.md, Eq. (DB1)) replaces each gathered
grey level ``x`` by a fresh draw from Bernoulli(``x``) every time the example
is used, from a Generator of the run's own whose state goes into every
checkpoint, so a resumed run draws the same pixels as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np

from .. import kernels


class Batches:
    """The minibatches of one training run.

    Parameters
    ----------
    x
        The checked training data, ``(n, input_dim)``, float in the model's
        dtype or ``uint8``.
    batch_size
        Examples per step; the last batch of an epoch holds the remainder.
    seed
        The run's seed; epoch ``e`` is shuffled by ``default_rng([seed, e])``.
    dtype
        The model's dtype, for the gather buffers.
    scale
        Factor each gathered row is multiplied by (``pixel_scale``, or 1).
    gather
        Whether to make gather buffers: the fused step gathers by itself,
        except when binarizing.
    binarize_rng
        With a Generator, each gathered batch is binarized dynamically with
        draws from it; ``None``: the grey levels are used as they are.
    """

    def __init__(self, x: np.ndarray, batch_size: int, seed: int, dtype: np.dtype, scale: np.floating,
                 gather: bool = True, binarize_rng: np.random.Generator | None = None) -> None:
        self.x, self.batch_size, self.seed, self.scale = x, batch_size, seed, scale
        self.binarize_rng = binarize_rng
        self.n = x.shape[0]
        self.n_batches = -(-self.n // batch_size)
        sizes = {batch_size, self.n - (self.n_batches - 1) * batch_size}
        gather = gather or binarize_rng is not None
        self._buffers = {m: np.empty((m, x.shape[1]), dtype) for m in sizes} if gather else {}
        self._uniform = {m: np.empty((m, x.shape[1]), dtype) for m in sizes} if binarize_rng is not None else {}
        self._below = {m: np.empty((m, x.shape[1]), np.bool_) for m in sizes} if binarize_rng is not None else {}
        self.rows = {m: np.arange(m) for m in sizes}  # the fused step's indices into a gathered batch

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of the examples that epoch ``epoch`` (1-based) visits them in."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def indices(self, order: np.ndarray, batch: int) -> np.ndarray:
        """The example indices of batch ``batch`` (0-based) of an epoch with this ``order`` (a view)."""
        return order[batch * self.batch_size:(batch + 1) * self.batch_size]

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """The rows ``x[idx] * scale`` (binarized, if asked) in the buffer for this batch size
        (overwritten by the next call).

        ``idx`` must come from :meth:`indices`: the kernel does not check bounds.
        """
        m = idx.shape[0]
        xb = self._buffers[m]
        kernels.gather_rows(self.x, idx, self.scale, xb)
        if self.binarize_rng is not None:  # Eq. (DB1): pixel j is 1 with probability x_j, afresh each time
            u, below = self._uniform[m], self._below[m]
            self.binarize_rng.random(out=u, dtype=u.dtype.type)
            np.less(u, xb, out=below)
            np.copyto(xb, below)
        return xb
