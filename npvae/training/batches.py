"""Minibatches: each epoch's order and the buffers the rows are gathered into.

Epoch ``e`` of a run with seed ``s`` visits the examples in the order of
``np.random.default_rng([s, e]).permutation(n)``, so an epoch's batches do
not depend on what happened before it (a resumed run sees the same ones).
The rows of a batch are gathered (and, for ``uint8`` pixels, scaled) into a
buffer made once per batch size, so nothing is allocated per minibatch.
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
        Whether to make gather buffers: the fused step gathers by itself.
    """

    def __init__(self, x: np.ndarray, batch_size: int, seed: int, dtype: np.dtype, scale: np.floating,
                 gather: bool = True) -> None:
        self.x, self.batch_size, self.seed, self.scale = x, batch_size, seed, scale
        self.n = x.shape[0]
        self.n_batches = -(-self.n // batch_size)
        sizes = {batch_size, self.n - (self.n_batches - 1) * batch_size}
        self._buffers = {m: np.empty((m, x.shape[1]), dtype) for m in sizes} if gather else {}

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of the examples that epoch ``epoch`` (1-based) visits them in."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def indices(self, order: np.ndarray, batch: int) -> np.ndarray:
        """The example indices of batch ``batch`` (0-based) of an epoch with this ``order`` (a view)."""
        return order[batch * self.batch_size:(batch + 1) * self.batch_size]

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """The rows ``x[idx] * scale`` in the buffer for this batch size (overwritten by the next call).

        ``idx`` must come from :meth:`indices`: the kernel does not check bounds.
        """
        xb = self._buffers[idx.shape[0]]
        kernels.gather_rows(self.x, idx, self.scale, xb)
        return xb
