"""The picture commands: ``npvae sample``, ``reconstruct``, ``interpolate``, ``manifold``, ``traverse``.

Each loads a model, draws one figure (those of :mod:`npvae.plots` where it
has them; the traversal is drawn here) and writes it as a PNG, atomically.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._common import (
    CommandError,
    Parser,
    UsageError,
    add_data_arguments,
    check_file_path,
    describe_model,
    existing_file,
    load_examples,
    load_model,
    number,
    probability,
    save_npy,
    user_path,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from npvae.vae import VAE


def _plots() -> Any:
    """npvae.plots, with matplotlib drawing to files only; a ``CommandError`` without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import npvae.plots as plots
    except ImportError:
        raise CommandError("the picture commands need matplotlib: pip install matplotlib (or npvae[plot])") \
            from None
    return plots


def _parser(prog: str, description: str, examples: list[str], default_out: str, data: bool = False) -> Parser:
    epilog = "examples:\n" + "\n".join(f"  {prog} {e}" for e in examples) + "\n"
    p = Parser(prog=prog, description=textwrap.fill(description, 79), epilog=epilog)
    p.add_argument("model", metavar="MODEL", type=existing_file,
                   help="a model file (model.npz) or a training checkpoint")
    if data:
        add_data_arguments(p)
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="FILE", type=user_path, default=Path(default_out),
                   help=f"the PNG to write (default: {default_out} in the current folder)")
    o.add_argument("--seed", type=number(int, 0), default=0, help="seeds every random choice (default: 0)")
    return p


Draw = Callable[[argparse.Namespace, "VAE", Any], "tuple[Figure, str]"]


def _run(parser: argparse.ArgumentParser, draw: Draw, argv: list[str] | None) -> int:
    """Parse, check the output path, load the model, draw, save; the exit status."""
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    check_file_path("--out", args.out, parser)
    if getattr(args, "npy", None) is not None:
        check_file_path("--npy", args.npy, parser)
    vae = load_model(args.model, parser)
    try:
        plots = _plots()
        fig, what = draw(args, vae, plots)
    except UsageError as exc:
        parser.error(str(exc))
    except CommandError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    plots.save_figure(fig, args.out)
    fig.clear()
    print(f"wrote {args.out}: {what} ({describe_model(vae)})")
    return 0


def _data(args: argparse.Namespace, vae: VAE) -> Any:
    ex = load_examples(args, vae, quiet=True)
    if ex.x.shape[0] == 0:
        raise UsageError("argument --limit: no examples left")
    return ex


# ---------------------------------------------------------------------- sample
def _sample(prog: str) -> tuple[Parser, Draw]:
    p = _parser(prog, "Decode draws of z from the prior N(0, I): the decoder's pixel probabilities (or means) "
                      "for -n codes, in a grid.",
                ["runs/mnist/model.npz", "runs/mnist/model.npz -n 100 --out hundred.png --npy hundred.npy"],
                "samples.png")
    p.add_argument("-n", metavar="N", type=number(int, 1), default=64,
                   help="how many samples (default: 64, an 8x8 grid; the grid is the most nearly square "
                        "rows x columns = N)")
    p.add_argument("--npy", metavar="FILE", type=user_path, default=None,
                   help="also save the samples as an (N, pixels) float array (np.load it)")

    def draw(args: argparse.Namespace, vae: VAE, plots: Any) -> tuple[Figure, str]:
        rows = math.isqrt(args.n)
        while args.n % rows:
            rows -= 1
        cols = args.n // rows
        _square(vae)
        fig = plots.samples_figure(vae, rows=rows, cols=cols, seed=args.seed)
        if args.npy is not None:
            save_npy(args.npy, vae.sample(args.n, rng=np.random.default_rng(args.seed)))
            print(f"wrote {args.npy}: {args.n} samples, shape ({args.n}, {vae.input_dim})")
        return fig, f"{args.n} samples from the prior, {rows}x{cols}"

    return p, draw


def _square(vae: VAE) -> None:
    if math.isqrt(vae.input_dim) ** 2 != vae.input_dim:
        raise UsageError(f"argument MODEL: its {vae.input_dim}-value inputs are not square images, "
                         "so they cannot be drawn")


# ---------------------------------------------------------------------- reconstruct
def _reconstruct(prog: str) -> tuple[Parser, Draw]:
    p = _parser(prog, "Held-out images above their reconstructions: the decoder's output for the posterior "
                      "mean of z. With labels, each row shows one image of each class.",
                ["runs/mnist/model.npz", "runs/mnist/model.npz --data ../shared/data -n 8 --rows 3"],
                "reconstructions.png", data=True)
    p.add_argument("-n", metavar="N", type=number(int, 1), default=10, help="images per row (default: 10)")
    p.add_argument("--rows", metavar="R", type=number(int, 1), default=2,
                   help="pairs of rows, originals above reconstructions (default: 2)")

    def draw(args: argparse.Namespace, vae: VAE, plots: Any) -> tuple[Figure, str]:
        _square(vae)
        ex = _data(args, vae)
        fig = plots.reconstructions_figure(vae, ex.x, ex.y, n=args.n, blocks=args.rows, seed=args.seed)
        return fig, f"reconstructions of {ex.description}"

    return p, draw


# ---------------------------------------------------------------------- interpolate
def _interpolate(prog: str) -> tuple[Parser, Draw]:
    p = _parser(prog, "Decode points on the straight line between the posterior means of two images of "
                      "different classes, one pair per row.",
                ["runs/mnist/model.npz", "runs/mnist/model.npz --pairs 6 --steps 12 --seed 3"],
                "interpolation.png", data=True)
    p.add_argument("--pairs", metavar="P", type=number(int, 1), default=4,
                   help="pairs of images, one per row (default: 4)")
    p.add_argument("--steps", metavar="S", type=number(int, 2), default=10,
                   help="decoded points per row, both ends included (default: 10)")

    def draw(args: argparse.Namespace, vae: VAE, plots: Any) -> tuple[Figure, str]:
        _square(vae)
        ex = _data(args, vae)
        if np.unique(ex.y).size < 2:
            raise UsageError("the examples chosen hold one class only; interpolation needs two (raise --limit)")
        fig = plots.interpolation_figure(vae, ex.x, ex.y, pairs=args.pairs, steps=args.steps,
                                         class_names=ex.class_names, seed=args.seed)
        return fig, f"interpolations between images of {ex.description}"

    return p, draw


# ---------------------------------------------------------------------- manifold
def _manifold(prog: str) -> tuple[Parser, Draw]:
    p = _parser(prog, "Decode a grid over a 2-D latent space, at evenly spaced quantiles of the prior on "
                      "each axis (the model must have --latent 2; for a larger one, see npvae traverse).",
                ["runs/latent2/model.npz", "runs/latent2/model.npz --grid 30 --lo 0.01 --hi 0.99"],
                "manifold.png")
    p.add_argument("--grid", metavar="G", type=number(int, 2), default=20, help="G x G images (default: 20)")
    p.add_argument("--lo", metavar="P", type=probability, default=0.05,
                   help="the lowest quantile on each axis (default: 0.05)")
    p.add_argument("--hi", metavar="P", type=probability, default=0.95,
                   help="the highest quantile on each axis (default: 0.95)")

    def draw(args: argparse.Namespace, vae: VAE, plots: Any) -> tuple[Figure, str]:
        if vae.latent_dim != 2:
            raise UsageError(f"argument MODEL: the manifold needs a 2-D latent space, this model has "
                             f"{vae.latent_dim} dimensions (train with --latent 2, or use npvae traverse)")
        if not args.lo < args.hi:
            raise UsageError(f"argument --lo: must be below --hi, got {args.lo:g} and {args.hi:g}")
        _square(vae)
        fig = plots.manifold_figure(vae, n=args.grid, lo=args.lo, hi=args.hi)
        return fig, f"the decoder over a {args.grid}x{args.grid} grid of the prior's quantiles"

    return p, draw


# ---------------------------------------------------------------------- traverse
def traverse_figure(vae: VAE, plots: Any, dims: list[int], steps: int = 11, lo: float = 0.05, hi: float = 0.95,
                    code: np.ndarray | None = None, code_name: str = "the prior's mean, 0",
                    kl: np.ndarray | None = None) -> Figure:
    """Row ``r``: the decoder at ``code`` with dimension ``dims[r]`` replaced by each of ``steps`` quantiles
    of N(0, 1) from ``lo`` to ``hi`` (the same quantiles in every row). ``kl``: each dimension's KL, shown
    beside its row (a dimension of KL near 0 is unused: its row does not change)."""
    from matplotlib.figure import Figure

    q = plots.prior_quantiles(steps, lo, hi)
    base = np.zeros(vae.latent_dim) if code is None else np.asarray(code, np.float64)
    z = np.repeat(base[None, None, :], len(dims), axis=0).repeat(steps, axis=1)
    for r, k in enumerate(dims):
        z[r, :, k] = q
    images = vae.decode(z.reshape(-1, vae.latent_dim).astype(vae.dtype)).reshape(len(dims), steps, -1)
    h, w = plots.image_shape(vae.input_dim)
    pad = 1
    cell = 0.42  # inches per image: 42 pixels for 28, sharp with nearest-neighbour drawing
    fig = Figure(figsize=(1.9 + cell * steps, 1.35 + cell * len(dims)), dpi=plots.DPI, layout="constrained")
    ax = fig.add_subplot()
    import matplotlib

    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    grid = plots.tile(images, (h, w), pad=pad)
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    for spine in ax.spines.values():
        spine.set_visible(False)
    cx = pad + np.arange(steps) * (w + pad) + (w - 1) / 2
    cy = pad + np.arange(len(dims)) * (h + pad) + (h - 1) / 2
    ticks = sorted(set(np.linspace(0, steps - 1, min(steps, 6)).round().astype(int).tolist()))
    ax.set_xticks(cx[ticks], [f"{q[j]:+.2f}" for j in ticks], fontsize=9)
    labels = [f"$z_{{{k + 1}}}$" + (f"  KL {kl[k]:.2f}" if kl is not None else "") for k in dims]
    ax.set_yticks(cy, labels, fontsize=9)
    ax.tick_params(length=0)
    ax.set_xlabel(f"value of the moving dimension: quantiles {lo:g} to {hi:g} of N(0, 1)", fontsize=9)
    ax.set_title(f"Latent traversal: each row moves one dimension,\nthe others fixed at {code_name}",
                 fontsize=10)
    return fig


def _traverse(prog: str) -> tuple[Parser, Draw]:
    p = _parser(prog, "Decode a grid in which each row moves one latent dimension across the prior's "
                      "quantiles while the others stay at a code: the prior's mean 0, or the posterior mean "
                      "of a held-out image (--example). Rows of unused dimensions do not change; with "
                      "--example, each row is labelled with its dimension's KL on the examples.",
                ["runs/mnist/model.npz", "runs/mnist/model.npz --example 0 --dims 1 2 3 4",
                 "runs/mnist/model.npz --example 7 --data ../shared/data --sort"],
                "traverse.png", data=True)
    t = p.add_argument_group("traversal")
    t.add_argument("--dims", metavar="D", type=number(int, 1), nargs="+", default=None,
                   help="the dimensions to move, counted from 1 (default: all, at most 32)")
    t.add_argument("--steps", metavar="S", type=number(int, 2), default=11,
                   help="values per row (default: 11)")
    t.add_argument("--lo", metavar="P", type=probability, default=0.05,
                   help="the lowest quantile of N(0, 1) (default: 0.05)")
    t.add_argument("--hi", metavar="P", type=probability, default=0.95,
                   help="the highest quantile (default: 0.95)")
    t.add_argument("--example", metavar="I", type=number(int, 0), default=None,
                   help="start from the posterior mean of example I of the data (default: from 0, the "
                        "prior's mean, and no data is read)")
    t.add_argument("--sort", action="store_true",
                   help="order the rows by their dimension's KL on the data, largest first (needs the data)")

    def draw(args: argparse.Namespace, vae: VAE, plots: Any) -> tuple[Figure, str]:
        _square(vae)
        if not args.lo < args.hi:
            raise UsageError(f"argument --lo: must be below --hi, got {args.lo:g} and {args.hi:g}")
        dims = list(range(1, min(vae.latent_dim, 32) + 1)) if args.dims is None else args.dims
        bad = [d for d in dims if d > vae.latent_dim]
        if bad:
            raise UsageError(f"argument --dims: the model has {vae.latent_dim} latent dimensions, got {bad[0]}")
        dims = [d - 1 for d in dims]
        code, code_name, kl = None, "the prior's mean, 0", None
        if args.example is not None or args.sort:
            ex = _data(args, vae)
            mu, logvar = vae.encode(ex.x[: min(ex.x.shape[0], 10_000)])
            mu64, lv64 = mu.astype(np.float64), logvar.astype(np.float64)
            kl = np.mean(0.5 * (mu64 ** 2 + np.exp(lv64) - 1.0 - lv64), axis=0)
            if args.sort:
                dims = sorted(dims, key=lambda k: -kl[k])
            if args.example is not None:
                if args.example >= ex.x.shape[0]:
                    raise UsageError(f"argument --example: the data has {ex.x.shape[0]:,} examples, "
                                     f"got index {args.example}")
                code = vae.encode(ex.x[args.example:args.example + 1])[0][0]
                label = ex.class_names[ex.y[args.example]] if ex.class_names else str(ex.y[args.example])
                code_name = f"the posterior mean of example {args.example} (class {label})"
        fig = traverse_figure(vae, plots, dims, args.steps, args.lo, args.hi, code, code_name, kl)
        return fig, f"a traversal of {len(dims)} latent dimensions, {args.steps} values each"

    return p, draw


# ---------------------------------------------------------------------- entry points
_BUILDERS: dict[str, Callable[[str], tuple[Parser, Draw]]] = {
    "sample": _sample, "reconstruct": _reconstruct, "interpolate": _interpolate, "manifold": _manifold,
    "traverse": _traverse}


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The parser of the picture command that ``prog`` names (``npvae sample``...)."""
    return _BUILDERS[prog.split()[-1]](prog)[0]


def sample_main(argv: list[str] | None = None, prog: str = "npvae sample") -> int:
    return _run(*_sample(prog), argv)


def reconstruct_main(argv: list[str] | None = None, prog: str = "npvae reconstruct") -> int:
    return _run(*_reconstruct(prog), argv)


def interpolate_main(argv: list[str] | None = None, prog: str = "npvae interpolate") -> int:
    return _run(*_interpolate(prog), argv)


def manifold_main(argv: list[str] | None = None, prog: str = "npvae manifold") -> int:
    return _run(*_manifold(prog), argv)


def traverse_main(argv: list[str] | None = None, prog: str = "npvae traverse") -> int:
    return _run(*_traverse(prog), argv)
