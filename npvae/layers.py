"""Layers with hand-written backward passes.

The contract, for every layer:

* ``params``: dict of trainable arrays; ``grads``: dict with the same keys
  and shapes, filled by ``backward``.
* ``forward(x)`` returns the output and caches exactly what ``backward``
  needs (the input for the weight gradient, the output for the activation's
  derivative), nothing recomputed later.
* ``backward(dy)`` returns ``dx`` (the gradient with respect to the input)
  and fills ``grads``. It does not modify ``dy``.

Outputs live in workspaces owned by the layer, one set per number of rows,
so a training loop allocates nothing per minibatch. The array that
``forward`` or ``backward`` returns is valid until the next call with the
same number of rows: copy it to keep it.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from ._validate import check_choice, check_dtype, check_float, check_int

_MAX_WORKSPACES = 6


class Workspaces:
    """Arrays sized once per row count and reused; past a few row counts the oldest set is dropped."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], dtype: np.dtype) -> None:
        self._shapes = shapes  # -1 in a shape stands for the row count
        self._dtype = dtype
        self._by_rows: dict[int, dict[str, np.ndarray]] = {}

    def get(self, rows: int) -> dict[str, np.ndarray]:
        ws = self._by_rows.get(rows)
        if ws is None:
            if len(self._by_rows) >= _MAX_WORKSPACES:
                self._by_rows.pop(next(iter(self._by_rows)))
            ws = {k: np.empty(tuple(rows if s == -1 else s for s in shape), self._dtype)
                  for k, shape in self._shapes.items()}
            self._by_rows[rows] = ws
        return ws


class Dense:
    r"""Fully connected layer with a fused activation: ``y = f(x W + b)``.

    Parameters
    ----------
    in_dim, out_dim
        Sizes of the input and output features.
    activation
        One of ``relu``, ``leaky_relu``, ``tanh``, ``sigmoid``, ``softplus``,
        ``identity`` (default: a plain affine layer).
    rng
        Generator for the initial weights.
    dtype
        float32 or float64.
    alpha
        Negative slope of ``leaky_relu``.

    Notes
    -----
    Weights are drawn uniformly in :math:`\pm\sqrt{6 / \text{fan}_{in}}` (He
    initialisation) before ReLU-like activations, which keeps the variance of
    the activations constant through depth, and in
    :math:`\pm\sqrt{6 / (\text{fan}_{in} + \text{fan}_{out})}` (Glorot)
    otherwise. Biases start at zero. PyTorch's default ``nn.Linear`` draws in
    :math:`\pm 1/\sqrt{\text{fan}_{in}}`, which for ReLU layers shrinks the
    signal by about :math:`\sqrt 6` per layer.
    """

    def __init__(self, in_dim: int, out_dim: int, activation: str = "identity",
                 rng: np.random.Generator | None = None, dtype: np.dtype | type = np.float64,
                 alpha: float = 0.01) -> None:
        self.in_dim = check_int("in_dim", in_dim)
        self.out_dim = check_int("out_dim", out_dim)
        self.activation = check_choice("activation", activation, kernels.ACTIVATIONS)
        self.dtype = check_dtype("dtype", dtype)
        self.alpha = check_float("alpha", alpha, minimum=0.0)
        rng = rng if rng is not None else np.random.default_rng()
        relu_like = activation in ("relu", "leaky_relu")
        limit = np.sqrt(6.0 / in_dim) if relu_like else np.sqrt(6.0 / (in_dim + out_dim))
        self.params: dict[str, np.ndarray] = {
            "W": rng.uniform(-limit, limit, size=(in_dim, out_dim)).astype(self.dtype),
            "b": np.zeros(out_dim, self.dtype),
        }
        self.grads: dict[str, np.ndarray] = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._kind = kernels.ACTIVATIONS[activation]
        self._alpha = self.dtype.type(alpha)
        self._ws = Workspaces({"y": (-1, out_dim), "dpre": (-1, out_dim), "dx": (-1, in_dim)}, self.dtype)
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``y = f(x W + b)`` for ``x`` of shape (n, in_dim); caches ``x`` and ``y``."""
        ws = self._ws.get(x.shape[0])
        y = ws["y"]
        np.matmul(x, self.params["W"], out=y)
        kernels.bias_act_forward(y, self.params["b"], self._kind, self._alpha)
        self._x, self._y = x, y
        return y

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        r"""Gradients of the loss through the activation and the affine map.

        .. math::
            \mathrm{dpre} = \mathrm{dy} \odot f'(\cdot), \quad
            \mathrm{dW} = x^\top \mathrm{dpre}, \quad
            \mathrm{db} = \textstyle\sum_{rows} \mathrm{dpre}, \quad
            \mathrm{dx} = \mathrm{dpre}\, W^\top

        (docs/derivation.md, Eqs. (D1) and (A1)-(A6)), with ``f'`` taken from
        the cached output. Shapes: dy, dpre (n, out_dim); dW (in_dim, out_dim);
        db (out_dim,); dx (n, in_dim). Returns ``dx``, or ``None`` when
        ``need_dx`` is false (the first layer skips that product).
        """
        if self._y is None:
            raise RuntimeError("Dense.backward called before forward")
        dpre = self._ws.get(dy.shape[0])["dpre"]
        kernels.act_backward(dy, self._y, dpre, self.grads["b"], self._kind, self._alpha)
        return self.backward_affine(dpre, need_dx)

    def pre_activation_grad_buffer(self, rows: int) -> np.ndarray:
        """The workspace that :meth:`backward_affine` expects ``dpre`` in (for fused losses)."""
        return self._ws.get(rows)["dpre"]

    def backward_affine(self, dpre: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """The affine part of :meth:`backward`, for a caller that already computed
        ``dpre`` and ``grads["b"]`` in a fused kernel (the loss or the KL)."""
        assert self._x is not None
        np.matmul(self._x.T, dpre, out=self.grads["W"])
        if not need_dx:
            return None
        dx = self._ws.get(dpre.shape[0])["dx"]
        np.matmul(dpre, self.params["W"].T, out=dx)
        return dx


class Activation:
    """A stand-alone activation layer, ``y = f(x)``, with no parameters.

    :class:`Dense` fuses its activation; this layer exists for composing by
    hand and for testing each activation on its own.
    """

    def __init__(self, name: str, dtype: np.dtype | type = np.float64, alpha: float = 0.01) -> None:
        self.name = check_choice("name", name, kernels.ACTIVATIONS)
        self.dtype = check_dtype("dtype", dtype)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._kind = kernels.ACTIVATIONS[name]
        self._alpha = self.dtype.type(check_float("alpha", alpha, minimum=0.0))
        self._ws: Workspaces | None = None
        self._y: np.ndarray | None = None

    def _workspace(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self._ws is None or self._ws._shapes["y"][1] != x.shape[1]:
            d = x.shape[1]
            self._ws = Workspaces({"y": (-1, d), "dx": (-1, d), "zero": (d,), "db": (d,)}, self.dtype)
        ws = self._ws.get(x.shape[0])
        ws["zero"][:] = 0
        return ws

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``y = f(x)`` for ``x`` of shape (n, d); caches ``y``."""
        ws = self._workspace(x)
        np.copyto(ws["y"], x)
        kernels.bias_act_forward(ws["y"], ws["zero"], self._kind, self._alpha)
        self._y = ws["y"]
        return self._y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        r"""``dx = dy * f'(x)``, with ``f'`` written through the cached output
        (docs/derivation.md, Eqs. (A1)-(A6)). Shapes: dy, dx (n, d)."""
        if self._y is None:
            raise RuntimeError("Activation.backward called before forward")
        ws = self._ws.get(dy.shape[0])  # type: ignore[union-attr]
        kernels.act_backward(dy, self._y, ws["dx"], ws["db"], self._kind, self._alpha)
        return ws["dx"]
