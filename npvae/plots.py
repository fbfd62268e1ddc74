"""Figures of a trained VAE: prior samples, reconstructions, losses, latent space.

Needs matplotlib (``pip install npvae[plot]``); ``import npvae`` does not
import this module or matplotlib, import it as ``npvae.plots``.

Every ``*_figure`` function returns a :class:`matplotlib.figure.Figure`
built without :mod:`matplotlib.pyplot`: no global figure registry, no GUI
backend, nothing to close, safe in scripts, servers and notebooks alike
(a notebook shows a returned Figure as usual). :func:`save_figure` writes a
PNG atomically at :data:`DPI`; each figure has a fixed size, so a PNG's
pixel dimensions are ``FIGSIZE[name] * DPI`` (see :data:`FIGSIZE`).
:func:`save_all` draws and saves every figure for a model.

Images are drawn with the ``gray`` colormap from 0 (black) to 1 (white),
as the pixel intensities are stored: white digits on black. Thin white
lines separate the tiles of a grid.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from ._atomic import atomic_writer

if TYPE_CHECKING:
    from .vae import VAE

#: Resolution of saved PNGs (pixels per inch).
DPI = 100
#: Size in inches of each figure (width, height); PNGs are ``DPI`` times this in pixels.
FIGSIZE: dict[str, tuple[float, float]] = {
    "samples": (7.0, 7.5),
    "reconstructions": (10.0, 4.3),
    "loss": (8.0, 5.0),
    "latent": (9.0, 7.0),
    "manifold": (9.0, 9.5),
    "interpolation": (11.0, 4.1),
}
#: File name of each figure written by :func:`save_all`.
FILENAMES: dict[str, str] = {name: f"{name}.png" for name in FIGSIZE}

_SEPARATOR = "white"  # colour of the lines between tiles: the figure's background
_CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # matplotlib's tab10


# ---------------------------------------------------------------------- helpers
def image_shape(input_dim: int) -> tuple[int, int]:
    """``(h, w)`` of a square image with ``input_dim`` pixels (28x28 for 784)."""
    side = math.isqrt(input_dim)
    if side * side != input_dim:
        raise ValueError(f"cannot draw {input_dim}-pixel inputs as square images; pass shape=(h, w)")
    return side, side


def tile(images: np.ndarray, shape: tuple[int, int] | None = None, pad: int = 1,
         row_gaps: Sequence[int] | None = None, col_gaps: Sequence[int] | None = None) -> np.ndarray:
    """Arrange images into one 2-D array, separated by NaN (drawn as lines).

    Parameters
    ----------
    images : (rows, cols, pixels) or (rows, cols, h, w) array
        Row-major images (a 784-vector is a 28x28 image read row by row).
    shape
        ``(h, w)`` of one image; inferred as a square if omitted.
    pad
        Width in pixels of the separators, including the outer border.
    row_gaps, col_gaps
        Separator width after each row / column but the last (default ``pad``).
    """
    images = np.asarray(images, dtype=np.float64)
    rows, cols = images.shape[:2]
    if images.ndim == 3:
        shape = shape or image_shape(images.shape[2])
        images = images.reshape(rows, cols, *shape)
    h, w = images.shape[2:]
    rg = [pad, *(row_gaps if row_gaps is not None else [pad] * (rows - 1)), pad]
    cg = [pad, *(col_gaps if col_gaps is not None else [pad] * (cols - 1)), pad]
    if len(rg) != rows + 1 or len(cg) != cols + 1:
        raise ValueError("row_gaps / col_gaps need one entry per gap between rows / columns")
    ys, xs = np.cumsum(rg[:-1]) + h * np.arange(rows), np.cumsum(cg[:-1]) + w * np.arange(cols)
    out = np.full((sum(rg) + h * rows, sum(cg) + w * cols), np.nan)
    for i in range(rows):
        for j in range(cols):
            out[ys[i]:ys[i] + h, xs[j]:xs[j] + w] = images[i, j]
    return out


def _tile_centers(n: int, size: int, pad: int, gaps: Sequence[int] | None = None) -> np.ndarray:
    g = [pad, *(gaps if gaps is not None else [pad] * (n - 1))]
    return np.cumsum(g) + size * np.arange(n) + (size - 1) / 2


def _show(ax, grid: np.ndarray) -> None:
    import matplotlib

    cmap = matplotlib.colormaps["gray"].with_extremes(bad=_SEPARATOR)
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _figure(name: str) -> Figure:
    return Figure(figsize=FIGSIZE[name], dpi=DPI, layout="constrained")


def prior_quantiles(n: int = 20, lo: float = 0.05, hi: float = 0.95) -> np.ndarray:
    """``n`` points of N(0, 1) at evenly spaced probabilities from ``lo`` to ``hi``.

    The inverse normal CDF of ``linspace(lo, hi, n)``, computed with
    :class:`statistics.NormalDist` (no SciPy needed): a grid that covers the
    prior evenly in probability, as in Kingma and Welling's Figure 4.
    """
    if not 0.0 < lo < hi < 1.0:
        raise ValueError(f"need 0 < lo < hi < 1, got lo={lo}, hi={hi}")
    inv = NormalDist().inv_cdf
    return np.array([inv(p) for p in np.linspace(lo, hi, n)])


def _class_name(label: int, class_names: Sequence[str] | None) -> str:
    return class_names[label] if class_names is not None else str(label)


def _count(n: int, noun: str) -> str:
    """``"1 sample"``, ``"64 samples"``, ``"1,000 held-out examples"``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


# ---------------------------------------------------------------------- figures
def samples_figure(vae: VAE, rows: int = 8, cols: int = 8, seed: int = 0,
                   shape: tuple[int, int] | None = None) -> Figure:
    """A grid of decoder means for z drawn from the prior N(0, I)."""
    images = vae.sample(rows * cols, rng=np.random.default_rng(seed))
    fig = _figure("samples")
    ax = fig.add_subplot()
    _show(ax, tile(images.reshape(rows, cols, -1), shape))
    what = "probabilities" if vae.likelihood == "bernoulli" else "means"
    ax.set_title(f"{_count(rows * cols, 'sample')} from the prior: decoder {what} for z ~ N(0, I)\n"
                 f"(latent dimension {vae.latent_dim})")
    return fig


def _pick_per_class(labels: np.ndarray, n: int, blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n * blocks`` distinct examples (at most ``labels.size``), block by block: block ``k``
    holds the ``k``-th example of each class in turn, random other examples where a class has too few."""
    used = np.zeros(labels.size, dtype=bool)
    classes = np.unique(labels)
    out: list[np.ndarray] = []
    for k in range(blocks):
        picks: list[int] = []
        for c in classes[:n]:
            where = np.flatnonzero(labels == c)
            if where.size > k and not used[where[k]]:
                picks.append(int(where[k]))
        used[picks] = True
        rest = np.flatnonzero(~used)
        extra = rng.choice(rest, size=min(n - len(picks), rest.size), replace=False)
        used[extra] = True
        out += [np.array(picks, dtype=np.int64), extra.astype(np.int64)]
    return np.concatenate(out)


def reconstructions_figure(vae: VAE, x: np.ndarray, labels: np.ndarray | None = None, n: int = 10,
                           blocks: int = 2, seed: int = 0, shape: tuple[int, int] | None = None) -> Figure:
    """Originals (upper row of each pair) above their reconstructions (lower row).

    Reconstructions decode the posterior mean (:meth:`VAE.reconstruct`).
    With ``labels``, block ``k`` shows the ``k``-th example of each class.
    Each example is shown once: with fewer than ``n * blocks`` examples, there
    are fewer blocks (and with fewer than ``n``, one block of them all).
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (n, pixels) with n >= 1, got shape {x.shape}")
    n = min(n, x.shape[0])
    blocks = max(1, min(blocks, x.shape[0] // n))
    if labels is not None:
        idx = _pick_per_class(np.asarray(labels), n, blocks, rng)
    else:
        idx = rng.choice(x.shape[0], size=n * blocks, replace=False)
    orig = x[idx]
    rec = vae.reconstruct(orig)
    pairs = np.stack([orig.reshape(blocks, n, -1), rec.reshape(blocks, n, -1)], axis=1).reshape(2 * blocks, n, -1)
    pad, block_gap = 1, 8
    row_gaps = [pad if r % 2 == 0 else block_gap for r in range(2 * blocks - 1)]
    grid = tile(pairs, shape, pad=pad, row_gaps=row_gaps)
    fig = _figure("reconstructions")
    ax = fig.add_subplot()
    _show(ax, grid)
    h = (shape or image_shape(x.shape[1]))[0]
    ax.set_yticks(_tile_centers(2 * blocks, h, pad, row_gaps), ["original", "reconstruction"] * blocks)
    ax.tick_params(axis="y", length=0, labelsize=11)
    rows = "rows" if blocks > 1 else "row"
    theirs = "their reconstructions" if idx.size > 1 else "its reconstruction"
    ax.set_title(f"{_count(idx.size, 'held-out example')} (upper {rows}) and {theirs} (lower {rows}):\n"
                 "decoder output for the posterior mean of z")
    return fig


def loss_figure(history: Sequence[dict], val_name: str = "validation", bound: str = "negative ELBO") -> Figure:
    """Training and validation losses (nats per example) per epoch.

    With ``beta`` 1 in every record (or no ``beta`` key) the loss is the
    negative ELBO, drawn as such. Otherwise the curves are labelled as the
    loss minimized (reconstruction + beta * KL), and the validation negative
    ELBO (``val_nelbo``, reconstruction + KL) is drawn beside them. The axis
    is logarithmic, unless a value is zero or negative (a Gaussian
    likelihood's losses can be): then it is linear, so no point is dropped.
    ``val_name`` names the held-out set in the legend (e.g. ``"test"``), and
    ``bound`` what the losses are when beta is 1: a model of ``objective="iwae"``
    trains ``"negative IWAE bound (k samples)"`` (:func:`save_all` says so).
    """
    if len(history) == 0:
        raise ValueError("history is empty: the loss figure needs at least one epoch's record")
    epochs = np.array([r["epoch"] for r in history])

    def column(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else r[key] for r in history], dtype=float)

    train, val, nelbo = column("train_loss"), column("val_loss"), column("val_nelbo")
    betas = sorted({float(r.get("beta", 1.0)) for r in history})
    weighted = betas != [1.0]
    fig = _figure("loss")
    ax = fig.add_subplot()
    marker = "o" if len(history) <= 30 else None
    what = "loss" if weighted else bound
    ax.plot(epochs, train, marker=marker, ms=4, lw=2, color=_CLASS_COLORS[0],
            label=f"training {what} (mean over the epoch's minibatches); last {train[-1]:.1f}")
    curves = [train]
    if np.isfinite(val).any():
        best = int(np.nanargmin(val))
        ax.plot(epochs, val, marker=marker, ms=4, lw=2, color=_CLASS_COLORS[1],
                label=f"{val_name} {what} (after the epoch); last {val[-1]:.1f}, best {val[best]:.1f} "
                      f"(epoch {epochs[best]})")
        curves.append(val)
    if weighted and np.isfinite(nelbo).any():
        best = int(np.nanargmin(nelbo))
        ax.plot(epochs, nelbo, marker=marker, ms=4, lw=2, ls="--", color=_CLASS_COLORS[2],
                label=f"{val_name} negative ELBO (reconstruction + KL); last {nelbo[-1]:.1f}, "
                      f"best {nelbo[best]:.1f} (epoch {epochs[best]})")
        curves.append(nelbo)
    both = np.concatenate(curves)
    both = both[np.isfinite(both)]
    lo, hi = (float(both.min()), float(both.max())) if both.size else (1.0, 1.0)
    log = lo > 0
    if log:
        ax.set_yscale("log")  # the first epochs would squash the rest on a linear axis
        # Evenly spaced round numbers as the ticks, printed plainly (not as powers of ten).
        ticks = np.asarray(MaxNLocator(nbins=10).tick_values(lo, hi))  # they cover [lo, hi], one step beyond at most
        ticks = ticks[ticks > 0]
        if ticks.size >= 2:
            ax.set_yticks(ticks)
            ax.set_ylim(min(lo, ticks[0]) / 1.01, max(hi, ticks[-1]) * 1.01)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    if len(epochs) == 1:  # one tick at the epoch, not 0.5 to 1.5 in quarters
        ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
        ax.set_xticks(epochs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    scale = "log scale" if log else "linear scale"
    if weighted:
        b = ", ".join(f"{v:g}" for v in betas)
        ax.set_ylabel(f"nats per example ({scale})")
        ax.set_title(f"Loss curves: the loss minimized, reconstruction + \u03b2 KL (\u03b2 = {b}),\n"
                     "and the negative ELBO, reconstruction + KL (lower is better)")
    else:
        long = bound != "negative ELBO"  # a longer name is in the title: beside the axis it would be cut off
        ax.set_ylabel(f"nats per example ({scale})" if long else f"{bound} (nats per example, {scale})")
        ax.set_title(f"Loss curves: {bound} per epoch (lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="outside lower center", fontsize=9)  # below the axes: it never hides a point
    return fig


def _pca2(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project rows of ``z`` on their first two principal axes; returns (points, explained variance ratios)."""
    zc = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(zc, full_matrices=False)
    var = s**2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    pts = zc @ vt[:2].T
    if pts.shape[1] < 2:  # one point: fewer axes than 2; the missing ones explain nothing
        pts = np.pad(pts, ((0, 0), (0, 2 - pts.shape[1])))
        ratio = np.pad(ratio, (0, 2 - ratio.size))
    return pts, ratio


def latent_figure(vae: VAE, x: np.ndarray, labels: np.ndarray | None = None,
                  class_names: Sequence[str] | None = None, max_points: int = 10_000, seed: int = 0) -> Figure:
    """Posterior means of ``x`` coloured by label (in one colour with ``labels=None``).

    A 2-D latent is drawn as is; a larger one is projected on the first two
    principal components of the means (PCA by SVD); a 1-D latent is drawn
    against the label (against random jitter without labels).
    """
    x = np.asarray(x)
    rng = np.random.default_rng(seed)
    order = rng.permutation(x.shape[0])[:max_points]  # random draw order: no class hides the others
    mu, _ = vae.encode(x[order])
    lab = np.asarray(labels).astype(np.int64)[order] if labels is not None else np.zeros(order.size, np.int64)
    k = vae.latent_dim
    fig = _figure("latent")
    ax = fig.add_subplot()
    colors = np.array(_CLASS_COLORS)[lab % len(_CLASS_COLORS)]
    size = 6 if len(order) > 2000 else 14
    if k == 1:
        ax.scatter(mu[:, 0], lab + rng.uniform(-0.3, 0.3, lab.size), c=colors, s=size, alpha=0.6, linewidths=0)
        ax.set_xlabel("z (posterior mean)")
        if labels is not None:
            ax.set_ylabel("class")
            classes = np.unique(lab)
            ax.set_yticks(classes, [_class_name(int(c), class_names) for c in classes])
            what = "1-D latent means, against the class"
        else:
            ax.set_yticks([])
            what = "1-D latent means (spread vertically at random)"
    elif k == 2:
        ax.scatter(mu[:, 0], mu[:, 1], c=colors, s=size, alpha=0.6, linewidths=0)
        ax.set_xlabel("$z_1$ (posterior mean)")
        ax.set_ylabel("$z_2$ (posterior mean)")
        ax.set_aspect("equal", adjustable="datalim")
        what = "2-D latent means"
    else:
        pts, ratio = _pca2(mu.astype(np.float64))
        ax.scatter(pts[:, 0], pts[:, 1], c=colors, s=size, alpha=0.6, linewidths=0)
        ax.set_xlabel(f"principal component 1 ({ratio[0]:.0%} of the variance)")
        ax.set_ylabel(f"principal component 2 ({ratio[1]:.0%} of the variance)")
        ax.set_aspect("equal", adjustable="datalim")
        what = f"{k}-D latent means projected on their first 2 principal components (PCA)"
    ax.grid(True, alpha=0.3)
    coloured = ", coloured by class" if labels is not None else ""
    ax.set_title(f"Latent space: {what}\nof {_count(len(order), 'held-out example')}{coloured}")
    if labels is not None:
        handles = [Line2D([], [], ls="", marker="o", ms=8, color=_CLASS_COLORS[int(c) % len(_CLASS_COLORS)],
                          label=_class_name(int(c), class_names)) for c in np.unique(lab)]
        fig.legend(handles=handles, loc="outside right center", title="class", fontsize=10, title_fontsize=10)
    return fig


def manifold_figure(vae: VAE, n: int = 20, lo: float = 0.05, hi: float = 0.95,
                    shape: tuple[int, int] | None = None) -> Figure:
    """Decoded images over an ``n`` x ``n`` grid of the 2-D prior's quantiles.

    Column ``j`` has ``z_1 = q_j`` and row ``i`` has ``z_2 = q_{n-1-i}``
    (``z_2`` grows upwards, as on a plot's y-axis), where ``q`` are the
    :func:`prior_quantiles`.
    """
    if vae.latent_dim != 2:
        raise ValueError(f"the manifold figure needs a 2-D latent space, this model has {vae.latent_dim}")
    q = prior_quantiles(n, lo, hi)
    z1, z2 = np.meshgrid(q, q[::-1])  # row 0 is the top: the largest z_2
    z = np.stack([z1.ravel(), z2.ravel()], axis=1).astype(vae.dtype)
    images = vae.decode(z).reshape(n, n, -1)
    h, w = shape or image_shape(images.shape[2])
    pad = 1
    fig = _figure("manifold")
    ax = fig.add_subplot()
    _show(ax, tile(images, (h, w), pad=pad))
    ticks = sorted(set(np.linspace(0, n - 1, min(n, 7)).round().astype(int).tolist()))
    cx, cy = _tile_centers(n, w, pad), _tile_centers(n, h, pad)
    ax.set_xticks(cx[ticks], [f"{q[j]:.2f}" for j in ticks])
    ax.set_yticks(cy[ticks], [f"{q[::-1][i]:.2f}" for i in ticks])
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(f"Learned manifold: decoded z over a {n}x{n} grid of the prior's quantiles\n"
                 f"(probabilities {lo:g} to {hi:g} of N(0, 1) on each axis)")
    return fig


def interpolation_figure(vae: VAE, x: np.ndarray, labels: np.ndarray, pairs: int = 4, steps: int = 10,
                         class_names: Sequence[str] | None = None, seed: int = 0,
                         shape: tuple[int, int] | None = None) -> Figure:
    """Rows of decoded points on the straight line between two examples' posterior means.

    Each row: example A, then ``steps`` decodings of ``(1 - t) mu_A + t mu_B``
    for t from 0 to 1, then example B. A and B are held-out examples of
    different classes (pairs of classes drawn at random with ``seed``, no
    pair twice: with few classes there are fewer than ``pairs`` rows), each
    the typical one of its class: its posterior mean is the nearest to the
    class's average posterior mean (no odd-looking digit under a class name).
    """
    labels = np.asarray(labels).astype(np.int64)
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    if classes.size < 2:
        raise ValueError("the interpolation figure needs examples of at least two classes")
    x = np.asarray(x)
    mu, _ = vae.encode(x)

    def typical(c: int) -> int:
        members = np.flatnonzero(labels == c)
        d = ((mu[members] - mu[members].mean(axis=0)) ** 2).sum(axis=1)
        return int(members[np.argmin(d)])

    # Disjoint pairs of the shuffled classes first, then the other pairs: each pair of classes once.
    order = [(int(classes[2 * r]), int(classes[2 * r + 1])) for r in range(classes.size // 2)]
    order += [(int(a), int(b)) for a, b in itertools.combinations(classes.tolist(), 2)
              if (a, b) not in order and (b, a) not in order]
    pairs = min(pairs, len(order))
    idx_a, idx_b, names = [], [], []
    for ca, cb in order[:pairs]:
        idx_a.append(typical(ca))
        idx_b.append(typical(cb))
        names.append(f"{_class_name(int(ca), class_names)} \u2192 {_class_name(int(cb), class_names)}")
    mu_a, mu_b = mu[idx_a], mu[idx_b]
    t = np.linspace(0.0, 1.0, steps)
    z = ((1 - t)[None, :, None] * mu_a[:, None, :] + t[None, :, None] * mu_b[:, None, :]).reshape(-1, vae.latent_dim)
    dec = vae.decode(z.astype(vae.dtype)).reshape(pairs, steps, -1)
    images = np.concatenate([x[idx_a][:, None], dec, x[idx_b][:, None]], axis=1)
    h, w = shape or image_shape(x.shape[1])
    pad, gap = 1, 8
    col_gaps = [gap] + [pad] * (steps - 1) + [gap]
    fig = _figure("interpolation")
    ax = fig.add_subplot()
    _show(ax, tile(images, (h, w), pad=pad, col_gaps=col_gaps))
    cx = _tile_centers(steps + 2, w, pad, col_gaps)
    ax.set_xticks(cx, ["A", *(f"t={v:.2f}" for v in t), "B"], fontsize=9)
    ax.xaxis.tick_top()
    ax.set_yticks(_tile_centers(pairs, h, pad), names, fontsize=11)
    ax.tick_params(length=0)
    ax.set_title("Interpolation in latent space between held-out examples A and B of different classes:\n"
                 "decoded $(1-t)\\,\\mu_A + t\\,\\mu_B$ between the originals", pad=8)
    return fig


# ---------------------------------------------------------------------- saving
def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG at :data:`DPI`, atomically; returns the path."""
    with atomic_writer(os.fspath(path), "wb") as fh:  # the writer sees a trailing "/" that Path would drop
        fig.savefig(fh, format="png", dpi=DPI)
    return Path(path)


def save_all(vae: VAE, history: Sequence[dict], x: np.ndarray, labels: np.ndarray,
             out_dir: str | os.PathLike[str], class_names: Sequence[str] | None = None,
             seed: int = 0, val_name: str = "validation") -> dict[str, Path]:
    """Draw every figure that applies to ``vae`` and save them in ``out_dir``.

    ``x`` and ``labels`` are held-out examples (reconstructions, latent space,
    interpolation), ``val_name`` what to call them in the loss curves. The
    manifold is drawn only for a 2-D latent space.
    Returns ``{name: path}`` in the order of :data:`FILENAMES`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    makers = {
        "samples": lambda: samples_figure(vae, seed=seed),
        "reconstructions": lambda: reconstructions_figure(vae, x, labels, seed=seed),
        "loss": lambda: loss_figure(history, val_name, bound=(f"negative IWAE bound ({_count(vae.n_samples, 'sample')})"
                                                             if vae.objective == "iwae" else "negative ELBO")),
        "latent": lambda: latent_figure(vae, x, labels, class_names, seed=seed),
        "manifold": (lambda: manifold_figure(vae)) if vae.latent_dim == 2 else None,
        "interpolation": lambda: interpolation_figure(vae, x, labels, class_names=class_names, seed=seed),
    }
    paths = {}
    for name, make in makers.items():
        if make is None:
            continue
        fig = make()
        paths[name] = save_figure(fig, out / FILENAMES[name])
        fig.clear()  # free the artists now rather than at the next garbage collection
    return paths
