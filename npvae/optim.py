"""Optimizers that update parameter arrays in place, one fused pass each.

``step(params, grads)`` takes two dicts with the same keys (``vae.params``
and the gradients) and changes the parameter arrays themselves, so every
layer holding them sees the update. State (moments, velocity) is kept per
key and created on the first step. ``step`` returns the squared global norm
of the gradients, computed in the same pass, so a training loop can detect a
non-finite gradient for free.

The arrays are updated in the reverse of their order in ``params``. A
model lists its parameters from input to output, and the next forward
pass reads the first layer's weights first: updated last, they are still
in cache (measured 3-5% faster per training step than the forward order).
"""

from __future__ import annotations

import numpy as np

from . import kernels
from ._validate import check_float


def _flat(a: np.ndarray) -> np.ndarray:
    if not a.flags.c_contiguous:
        raise ValueError("optimizers need C-contiguous parameter and gradient arrays")
    return a.reshape(-1)


def _check_pair(params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
    if params.keys() != grads.keys():
        raise ValueError(f"params and grads must have the same keys; differ in "
                         f"{sorted(set(params) ^ set(grads))}")
    for k, p in params.items():
        if grads[k].shape != p.shape or grads[k].dtype != p.dtype:
            raise ValueError(f"grads[{k!r}] must have shape {p.shape} and dtype {p.dtype}, "
                             f"got {grads[k].shape} and {grads[k].dtype}")


def adam_kernel_args(lr: float, betas: tuple[float, float], eps: float, t: int, dtype: np.dtype) -> tuple:
    """The scalars :func:`npvae.kernels.adam_update` takes after ``p, g, m, v`` for step ``t``, in ``dtype``."""
    f = np.dtype(dtype).type
    b1, b2 = betas
    return f(lr / (1 - b1**t)), f(b1), f(1 - b1), f(b2), f(1 - b2), f(1 / (1 - b2**t)), f(eps)


class Adam:
    r"""Adam with bias correction (Kingma & Ba, 2015; docs/derivation.md, Eq. (O1)).

    Parameters
    ----------
    lr
        Step size :math:`\eta`.
    betas
        Decay rates :math:`(\beta_1, \beta_2)` of the first and second moments.
    eps
        :math:`\epsilon`, added to :math:`\sqrt{\hat v}`.
    """

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr = check_float("lr", lr)
        b1, b2 = betas
        self.betas = (check_float("betas[0]", b1, inclusive=True, maximum=1.0),
                      check_float("betas[1]", b2, inclusive=True, maximum=1.0))
        self.eps = check_float("eps", eps)
        self.t = 0
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> float:
        """Apply one update to every array in ``params``; returns ``sum(g**2)`` over all."""
        self.t += 1
        scalars: dict[np.dtype, tuple] = {}
        sq = 0.0
        for p, g, m, v in reversed(self._flat_views(params, grads).values()):
            args = scalars.get(p.dtype)
            if args is None:
                args = scalars[p.dtype] = adam_kernel_args(self.lr, self.betas, self.eps, self.t, p.dtype)
            sq += kernels.adam_update(p, g, m, v, *args)
        return sq

    def _new_state(self, p: np.ndarray) -> dict[str, np.ndarray]:
        return {"m": np.zeros_like(p), "v": np.zeros_like(p)}

    def _flat_views(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> dict[str, tuple]:
        """Flat views of each parameter, its gradient and its state, kept while the
        same arrays come back (a training loop passes the same dicts every step)."""
        cache = getattr(self, "_views", None)
        if (cache is not None and cache[0] is params and cache[1] is grads and params.keys() == cache[2].keys()
                and all(cache[2][k][0] is p and cache[2][k][1] is grads.get(k) for k, p in params.items())):
            return cache[3]
        _check_pair(params, grads)
        views = {}
        for key, p in params.items():
            st = self.state.get(key)
            if st is None:
                st = self.state[key] = self._new_state(p)
            views[key] = tuple(_flat(a) for a in (p, grads[key], *st.values()))
        self._views = (params, grads, {k: (p, grads[k]) for k, p in params.items()}, views)
        return views

    def state_arrays(self) -> dict[str, np.ndarray]:
        """State as flat name -> array, for checkpoints."""
        out = {f"{k}.{s}": a for k, st in self.state.items() for s, a in st.items()}
        out["t"] = np.array(self.t)
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_arrays` returned."""
        self.t = int(arrays["t"])
        self.state = {}
        self._views = None
        for name, a in arrays.items():
            if name != "t":
                key, s = name.rsplit(".", 1)
                self.state.setdefault(key, {})[s] = np.array(a)

    def config(self) -> dict:
        return {"name": "Adam", "lr": self.lr, "betas": list(self.betas), "eps": self.eps}


class SGD:
    r"""Stochastic gradient descent with optional momentum (docs/derivation.md, Eq. (O2)).

    ``buf = momentum * buf + g; p -= lr * buf`` (PyTorch's convention);
    ``momentum=0`` is plain SGD.
    """

    def __init__(self, lr: float = 1e-2, momentum: float = 0.0) -> None:
        self.lr = check_float("lr", lr)
        self.momentum = check_float("momentum", momentum, inclusive=True, maximum=1.0)
        self.t = 0
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> float:
        """Apply one update to every array in ``params``; returns ``sum(g**2)`` over all."""
        self.t += 1
        sq = 0.0
        for p, g, buf in reversed(self._flat_views(params, grads).values()):
            f = p.dtype.type
            sq += kernels.sgd_momentum_update(p, g, buf, f(self.lr), f(self.momentum))
        return sq

    def _new_state(self, p: np.ndarray) -> dict[str, np.ndarray]:
        return {"buf": np.zeros_like(p)}

    _flat_views = Adam._flat_views
    state_arrays = Adam.state_arrays
    load_state_arrays = Adam.load_state_arrays

    def config(self) -> dict:
        return {"name": "SGD", "lr": self.lr, "momentum": self.momentum}
