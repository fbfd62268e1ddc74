"""Layers with hand-written backward passes.

The contract, for every layer:

* ``params``: mapping of trainable arrays; ``grads``: mapping with the same
  keys and shapes, filled by ``backward``. Both are :class:`ArrayDict`: the
  arrays can be written in place (``layer.params["W"][...] = w``) but not
  rebound, because a model and its optimizer hold the arrays themselves.
* ``forward(x)`` returns the output and caches exactly what ``backward``
  needs (the input for the weight gradient, the output for the activation's
  derivative, and the workspace backward writes into), nothing recomputed
  later.
* ``backward(dy)`` returns ``dx`` (the gradient with respect to the input)
  and fills ``grads``. It does not modify ``dy``, which must have the shape
  of the last forward output.

``forward`` and ``backward`` check their arguments (a NumPy float array,
2-D, of the right width, finite; ``dy`` of the forward output's shape) and
raise a ``TypeError`` or ``ValueError`` naming the problem before any kernel
runs: the kernels do no bounds checks. :class:`npvae.VAE` calls the unchecked
``_forward`` and ``_backward`` on arrays it has already checked (or made),
so its minibatch path pays nothing for the checks.

Outputs live in workspaces owned by the layer, one set per number of rows,
so a training loop allocates nothing per minibatch. The array that
``forward`` or ``backward`` returns is valid until the next call with the
same number of rows: copy it to keep it. A layer is therefore not safe to
call from two threads at once (:class:`npvae.VAE` serializes its own calls).
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView

import numpy as np

from . import kernels
from ._validate import check_choice, check_data, check_dtype, check_float, check_int, check_rng

_MAX_WORKSPACES = 6


class ArrayDict(Mapping[str, np.ndarray]):
    """A read-only mapping of names to arrays: the arrays are writable in place, the names cannot be rebound.

    ``d[name][...] = value`` changes the array everyone holds (the layer, the
    model, the optimizer, a saved file). ``d[name] = value`` would silently
    give the mapping a new array that the others never see, so it raises a
    ``TypeError`` saying to write in place; so does ``del d[name]``.
    Iteration, indexing, ``len``, ``in``, ``keys``, ``values`` and ``items``
    behave as for a ``dict``, in insertion order.

    ``label`` names the mapping in messages (``"vae.params"``).
    """

    __slots__ = ("_d", "_label")

    def __init__(self, arrays: dict[str, np.ndarray], label: str) -> None:
        self._d = arrays
        self._label = label

    def __getitem__(self, key: str) -> np.ndarray:
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def keys(self) -> KeysView[str]:  # the dict's own views: as fast as a dict's, and read-only already
        return self._d.keys()

    def values(self) -> ValuesView[np.ndarray]:
        return self._d.values()

    def items(self) -> ItemsView[str, np.ndarray]:
        return self._d.items()

    def __setitem__(self, key: str, value: object) -> None:
        raise TypeError(
            f"{self._label}[{key!r}] cannot be rebound: the layers and the optimizer hold the array itself, so "
            f"a new array would be used by some of them and not others. Write into it in place instead: "
            f"{self._label}[{key!r}][...] = value")

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"{self._label}[{key!r}] cannot be removed: the layer needs every one of its arrays")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._d!r})"

    def _rebind(self, key: str, value: np.ndarray) -> None:
        """Replace the array under an existing ``key`` (internal: the caller keeps every holder in step)."""
        if key not in self._d:
            raise KeyError(key)
        self._d[key] = value


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


def _check_dy(dy: object, y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``dy`` as a C-contiguous array of ``dtype`` with the shape of the forward output ``y``, finite."""
    if isinstance(dy, np.ndarray) and dy.shape != y.shape:
        raise ValueError(f"dy must have the shape of the last forward output, {y.shape}, got {dy.shape}")
    return check_data("dy", dy, width=y.shape[1], dtype=dtype)


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
        Generator for the initial weights, or an int seed (default: a fresh
        unseeded Generator, never NumPy's global state).
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
                 rng: np.random.Generator | int | None = None, dtype: np.dtype | type = np.float64,
                 alpha: float = 0.01) -> None:
        self.in_dim = check_int("in_dim", in_dim)
        self.out_dim = check_int("out_dim", out_dim)
        self.activation = check_choice("activation", activation, kernels.ACTIVATIONS)
        self.dtype = check_dtype("dtype", dtype)
        self.alpha = check_float("alpha", alpha, minimum=0.0)
        rng = check_rng("rng", rng, None)
        relu_like = activation in ("relu", "leaky_relu")
        limit = np.sqrt(6.0 / in_dim) if relu_like else np.sqrt(6.0 / (in_dim + out_dim))
        params = {"W": rng.uniform(-limit, limit, size=(in_dim, out_dim)).astype(self.dtype),
                  "b": np.zeros(out_dim, self.dtype)}
        self.params = ArrayDict(params, "params")
        self.grads = ArrayDict({k: np.zeros_like(v) for k, v in params.items()}, "grads")
        self._kind = kernels.ACTIVATIONS[activation]
        self._alpha = self.dtype.type(alpha)
        self._ws = Workspaces({"y": (-1, out_dim), "dpre": (-1, out_dim), "dx": (-1, in_dim)}, self.dtype)
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None
        self._cur: dict[str, np.ndarray] | None = None  # the workspace of the last forward, for backward

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``y = f(x W + b)`` for ``x`` of shape (n, in_dim); caches ``x`` and ``y``.

        ``x`` must be a finite float array (converted to the layer's dtype,
        a copy only if it differs); the result is the layer's workspace, valid
        until the next call with as many rows.
        """
        return self._forward(check_data("x", x, width=self.in_dim, dtype=self.dtype))

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        r"""Gradients of the loss through the activation and the affine map.

        .. math::
            \mathrm{dpre} = \mathrm{dy} \odot f'(\cdot), \quad
            \mathrm{dW} = x^\top \mathrm{dpre}, \quad
            \mathrm{db} = \textstyle\sum_{rows} \mathrm{dpre}, \quad
            \mathrm{dx} = \mathrm{dpre}\, W^\top

        (docs/derivation.md, Eqs. (D1) and (A1)-(A6)), with ``f'`` taken from
        the cached output. Shapes: dy, dpre (n, out_dim), the shape of the
        last forward output; dW (in_dim, out_dim); db (out_dim,); dx (n,
        in_dim). Returns ``dx``, or ``None`` when ``need_dx`` is false (the
        first layer skips that product).

        Raises ``RuntimeError`` before any forward, ``TypeError`` or
        ``ValueError`` for a ``dy`` that is not a finite float array of that shape.
        """
        if self._y is None:
            raise RuntimeError("Dense.backward called before forward")
        return self._backward(_check_dy(dy, self._y, self.dtype), bool(need_dx))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """:meth:`forward` without the checks: ``x`` is a C-contiguous (n, in_dim) array of the layer's dtype."""
        ws = self._ws.get(x.shape[0])
        y = ws["y"]
        np.matmul(x, self.params["W"], out=y)
        kernels.bias_act_forward(y, self.params["b"], self._kind, self._alpha)
        self._x, self._y, self._cur = x, y, ws
        return y

    def _backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """:meth:`backward` without the checks: ``dy`` has the last forward output's shape and dtype."""
        y, ws = self._y, self._cur
        assert y is not None and ws is not None
        dpre = ws["dpre"]
        kernels.act_backward(dy, y, dpre, self.grads["b"], self._kind, self._alpha)
        return self.backward_affine(dpre, need_dx)

    def pre_activation_grad_buffer(self, rows: int) -> np.ndarray:
        """The workspace that :meth:`backward_affine` expects ``dpre`` in (for fused losses).

        Call it after :meth:`forward` on ``rows`` rows: it is that forward's workspace.
        """
        assert self._cur is not None and self._cur["dpre"].shape[0] == rows
        return self._cur["dpre"]

    def backward_affine(self, dpre: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """The affine part of :meth:`backward`, for a caller that already computed
        ``dpre`` and ``grads["b"]`` in a fused kernel (the loss or the KL):
        ``dW = x^T dpre`` and ``dx = dpre W^T`` (docs/derivation.md, Eq. (D1)).

        Internal to :class:`npvae.VAE`: ``dpre`` must be the (n, out_dim)
        array of the last forward's rows. It runs only NumPy products, which
        check their own shapes.
        """
        x = self._x
        if self._cur is None or x is None:
            raise RuntimeError("Dense.backward_affine called before forward")
        np.matmul(x.T, dpre, out=self.grads["W"])
        if not need_dx:
            return None
        dx = self._cur["dx"]
        np.matmul(dpre, self.params["W"].T, out=dx)
        return dx


class GatedDense:
    r"""Gated fully connected layer: ``h = (x W + b) * sigmoid(x V + c)``.

    A linear part gated elementwise by a learned sigmoid, as the ``GatedDense``
    of Tomczak & Welling's VampPrior code (and the Exemplar VAE built on it)
    with its default ``activation=None``: the linear part has no activation of
    its own (docs/derivation.md, Eq. (H1)).

    Parameters
    ----------
    in_dim, out_dim
        Sizes of the input and output features.
    rng
        Generator for the initial weights, or an int seed (default: a fresh
        unseeded Generator).
    dtype
        float32 or float64.

    Notes
    -----
    ``params`` and ``grads`` hold ``W``, ``b`` (the linear part) and ``V``,
    ``c`` (the gate), with W and V of shape (in_dim, out_dim). W is drawn
    first, then V, each uniformly in :math:`\pm\sqrt{6 / (\text{fan}_{in} +
    \text{fan}_{out})}` (Glorot, as :class:`Dense` does for activations that
    are not ReLU-like); biases start at zero, so every gate starts near 1/2.
    ``forward`` caches ``x``, the linear part ``a = x W + b`` and the gate
    ``g``, which is all ``backward`` needs. The same checks and workspaces as
    :class:`Dense`.
    """

    def __init__(self, in_dim: int, out_dim: int, rng: np.random.Generator | int | None = None,
                 dtype: np.dtype | type = np.float64) -> None:
        self.in_dim = check_int("in_dim", in_dim)
        self.out_dim = check_int("out_dim", out_dim)
        self.dtype = check_dtype("dtype", dtype)
        rng = check_rng("rng", rng, None)
        limit = np.sqrt(6.0 / (in_dim + out_dim))
        w = rng.uniform(-limit, limit, size=(in_dim, out_dim)).astype(self.dtype)
        v = rng.uniform(-limit, limit, size=(in_dim, out_dim)).astype(self.dtype)
        params = {"W": w, "b": np.zeros(out_dim, self.dtype), "V": v, "c": np.zeros(out_dim, self.dtype)}
        self.params = ArrayDict(params, "params")
        self.grads = ArrayDict({k: np.zeros_like(p) for k, p in params.items()}, "grads")
        self._ws = Workspaces({"a": (-1, out_dim), "g": (-1, out_dim), "h": (-1, out_dim), "da": (-1, out_dim),
                               "ds": (-1, out_dim), "dx": (-1, in_dim), "dx2": (-1, in_dim)}, self.dtype)
        self._x: np.ndarray | None = None
        self._cur: dict[str, np.ndarray] | None = None  # the workspace of the last forward, for backward

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``h = (x W + b) * sigmoid(x V + c)`` for ``x`` of shape (n, in_dim); caches ``x``, ``a`` and ``g``.

        ``x`` must be a finite float array (converted to the layer's dtype);
        the result is the layer's workspace, valid until the next call with as
        many rows.
        """
        return self._forward(check_data("x", x, width=self.in_dim, dtype=self.dtype))

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        r"""Gradients of the loss through the gate and both affine maps.

        With ``a = x W + b`` and ``g = sigmoid(x V + c)`` from the forward,

        .. math::
            \mathrm{da} = \mathrm{dh} \odot g, \quad
            \mathrm{ds} = \mathrm{dh} \odot a \odot g \odot (1 - g), \quad
            \mathrm{dW} = x^\top \mathrm{da}, \quad \mathrm{db} = \textstyle\sum_{rows} \mathrm{da}, \quad
            \mathrm{dV} = x^\top \mathrm{ds}, \quad \mathrm{dc} = \textstyle\sum_{rows} \mathrm{ds}, \quad
            \mathrm{dx} = \mathrm{da}\, W^\top + \mathrm{ds}\, V^\top

        (docs/derivation.md, Eq. (H1)). Shapes: dh (= ``dy``), da, ds (n,
        out_dim), the shape of the last forward output; dW, dV (in_dim,
        out_dim); db, dc (out_dim,); dx (n, in_dim). Returns ``dx``, or
        ``None`` when ``need_dx`` is false.

        Raises ``RuntimeError`` before any forward, ``TypeError`` or
        ``ValueError`` for a ``dy`` that is not a finite float array of that shape.
        """
        if self._cur is None:
            raise RuntimeError("GatedDense.backward called before forward")
        return self._backward(_check_dy(dy, self._cur["h"], self.dtype), bool(need_dx))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """:meth:`forward` without the checks: ``x`` is a C-contiguous (n, in_dim) array of the layer's dtype."""
        ws = self._ws.get(x.shape[0])
        np.matmul(x, self.params["W"], out=ws["a"])
        np.matmul(x, self.params["V"], out=ws["g"])
        kernels.gated_forward(ws["a"], ws["g"], ws["h"], self.params["b"], self.params["c"])
        self._x, self._cur = x, ws
        return ws["h"]

    def _backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """:meth:`backward` without the checks: ``dy`` has the last forward output's shape and dtype."""
        x, ws = self._x, self._cur
        assert x is not None and ws is not None
        da, ds = ws["da"], ws["ds"]
        kernels.gated_backward(dy, ws["a"], ws["g"], da, ds, self.grads["b"], self.grads["c"])
        np.matmul(x.T, da, out=self.grads["W"])
        np.matmul(x.T, ds, out=self.grads["V"])
        if not need_dx:
            return None
        dx = ws["dx"]
        np.matmul(da, self.params["W"].T, out=dx)
        np.matmul(ds, self.params["V"].T, out=ws["dx2"])
        np.add(dx, ws["dx2"], out=dx)
        return dx


class Activation:
    """A stand-alone activation layer, ``y = f(x)``, with no parameters.

    :class:`Dense` fuses its activation; this layer exists for composing by
    hand and for testing each activation on its own. ``forward`` takes any
    width; ``backward`` takes ``dy`` of the last forward output's shape. The
    same checks and workspaces as :class:`Dense`.
    """

    def __init__(self, name: str, dtype: np.dtype | type = np.float64, alpha: float = 0.01) -> None:
        self.name = check_choice("name", name, kernels.ACTIVATIONS)
        self.dtype = check_dtype("dtype", dtype)
        self.params = ArrayDict({}, "params")
        self.grads = ArrayDict({}, "grads")
        self._kind = kernels.ACTIVATIONS[name]
        self._alpha = self.dtype.type(check_float("alpha", alpha, minimum=0.0))
        self._ws: Workspaces | None = None
        self._y: np.ndarray | None = None
        self._cur: dict[str, np.ndarray] | None = None

    def _workspace(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self._ws is None or self._ws._shapes["y"][1] != x.shape[1]:
            d = x.shape[1]
            self._ws = Workspaces({"y": (-1, d), "dx": (-1, d), "zero": (d,), "db": (d,)}, self.dtype)
        ws = self._ws.get(x.shape[0])
        ws["zero"][:] = 0
        return ws

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``y = f(x)`` for a finite float ``x`` of shape (n, d); caches ``y``."""
        return self._forward(check_data("x", x, dtype=self.dtype))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        r"""``dx = dy * f'(x)``, with ``f'`` written through the cached output
        (docs/derivation.md, Eqs. (A1)-(A6)). Shapes: dy, dx (n, d), the
        shape of the last forward output."""
        if self._y is None:
            raise RuntimeError("Activation.backward called before forward")
        return self._backward(_check_dy(dy, self._y, self.dtype))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """:meth:`forward` without the checks: ``x`` is a C-contiguous (n, d) array of the layer's dtype."""
        ws = self._workspace(x)
        np.copyto(ws["y"], x)
        kernels.bias_act_forward(ws["y"], ws["zero"], self._kind, self._alpha)
        self._y, self._cur = ws["y"], ws
        return self._y

    def _backward(self, dy: np.ndarray) -> np.ndarray:
        """:meth:`backward` without the checks: ``dy`` has the last forward output's shape and dtype."""
        y, ws = self._y, self._cur
        assert y is not None and ws is not None
        kernels.act_backward(dy, y, ws["dx"], ws["db"], self._kind, self._alpha)
        return ws["dx"]
