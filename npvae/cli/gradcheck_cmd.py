"""``npvae gradcheck``: every hand-written gradient of a small model against finite differences."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

import numpy as np

from ._common import ACTIVATIONS, Parser, bounds, glue_negative_pairs, number, one_line

DESCRIPTION = """\
Check the hand-written gradients: build a small float64 VAE, fix a batch of
random inputs and the reparameterization noise (so the loss is a deterministic
function of the parameters), and for every parameter array compare the
analytic derivative along random directions u, <grad, u>, with the finite
difference (f(p + h u) - f(p - h u)) / 2h, extrapolated once (error O(h^4)).
One line per parameter shows its worst direction (dir. 2/5: the second of
five); --verbose shows them all.
Exit status 0 when every check agrees, 1 when any does not."""

EPILOG = """\
reading the table:
  analytic   <grad, u>, from the backward pass being checked
  numeric    the same derivative from the loss alone, by differences
  rel. error |analytic - numeric| / max(|analytic|, |numeric|); in float64 a
             right gradient gives about 1e-8 or less, a wrong one 1e-3 or more
  status     ok (within --rtol), noise (within the rounding noise of the
             differences), or FAILED

examples:
  {prog}
  {prog} --likelihood gaussian --activation tanh --beta 2
  {prog} --objective iwae --samples 5 --hidden 16 16 --verbose
"""

PLANT = None  # tests may set a function here that corrupts the gradients; never set in normal use


class _Bounds(argparse.Action):
    usage = "LO HI"

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        try:
            setattr(namespace, self.dest, bounds(list(values)))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None


def build_parser(prog: str = "npvae gradcheck") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=DESCRIPTION, epilog=EPILOG.format(prog=prog))
    m = p.add_argument_group("model (small, float64)")
    m.add_argument("--input", metavar="P", type=number(int, 1), default=12, help="input size (default: 12)")
    m.add_argument("--hidden", metavar="N", type=number(int, 1), nargs="+", default=[8],
                   help="hidden layer sizes (default: 8)")
    m.add_argument("--latent", metavar="K", type=number(int, 1), default=3, help="latent dimension (default: 3)")
    m.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli",
                   help="decoder distribution (default: bernoulli)")
    m.add_argument("--sigma-dec", metavar="S", type=number(float, 0, inclusive=False), default=None,
                   help="standard deviation of the gaussian decoder (default: the library's, 1)")
    m.add_argument("--activation", metavar="NAME", choices=ACTIVATIONS, default=None,
                   help=f"hidden activation: {', '.join(ACTIVATIONS)} (default: relu; none with --layer gated)")
    m.add_argument("--layer", choices=("dense", "gated"), default=None,
                   help="hidden layer kind (default: the library's, dense)")
    m.add_argument("--logvar-bounds", metavar=("LO", "HI"), nargs="+", action=_Bounds, default=None,
                   help="bounds on the encoder's log-variance, e.g. -6 4 (default: the library's)")
    m.add_argument("--beta", type=number(float, 0), default=1.0, help="weight of the KL term (default: 1)")
    m.add_argument("--objective", choices=("elbo", "iwae"), default=None,
                   help="the loss whose gradient is checked (default: elbo)")
    m.add_argument("--samples", metavar="L", type=number(int, 1), default=1,
                   help="samples of z per example (default: 1)")
    c = p.add_argument_group("check")
    c.add_argument("--batch", metavar="B", type=number(int, 1), default=4, help="examples in the batch (default: 4)")
    c.add_argument("--directions", metavar="D", type=number(int, 1), default=5,
                   help="random directions per parameter (default: 5)")
    c.add_argument("--h", metavar="H", type=number(float, 0, inclusive=False), default=1e-5,
                   help="finite-difference step (default: 1e-05)")
    c.add_argument("--rtol", metavar="R", type=number(float, 0, inclusive=False), default=1e-6,
                   help="relative tolerance of each direction (default: 1e-06)")
    c.add_argument("--seed", type=number(int, 0), default=0,
                   help="seeds the weights, the inputs, the noise and the directions (default: 0)")
    c.add_argument("--verbose", "-v", action="store_true", help="one line per direction, not per parameter")
    return p


def _model(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    import npvae

    extra: dict[str, Any] = {}
    for flag, kw in (("layer", "layer"), ("logvar_bounds", "logvar_bounds"), ("objective", "objective"),
                     ("sigma_dec", "sigma_dec"), ("activation", "activation")):
        if getattr(args, flag) is not None:
            extra[kw] = getattr(args, flag)
    try:
        return npvae.VAE(args.input, tuple(args.hidden), args.latent, likelihood=args.likelihood, beta=args.beta,
                         n_samples=args.samples, seed=args.seed, dtype=np.float64, **extra)
    except TypeError as exc:
        message = one_line(exc)
        for flag, kw in (("layer", "layer"), ("logvar-bounds", "logvar_bounds"), ("objective", "objective")):
            if f"'{kw}'" in message:
                parser.error(f"argument --{flag}: this npvae's VAE does not take {kw}= yet")
        parser.error(message)
    except ValueError as exc:
        parser.error(one_line(exc))


def main(argv: list[str] | None = None, prog: str = "npvae gradcheck") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(glue_negative_pairs(list(sys.argv[1:] if argv is None else argv), "--logvar-bounds"))
    import npvae

    vae = _model(args, parser)
    rng = np.random.default_rng(args.seed)
    x = rng.uniform(size=(args.batch, args.input))
    eps = rng.standard_normal((args.samples, args.batch, args.latent))
    loss, grads = vae.loss_and_grads(x, eps)
    grads = {name: g.copy() for name, g in grads.items()}
    if PLANT is not None:
        PLANT(grads)

    arch = "-".join(str(v) for v in (args.input, *args.hidden, args.latent))
    cfg = vae.config()
    what = [f"{cfg['likelihood']} decoder", cfg["activation"], f"beta {args.beta:g}",
            f"{args.samples} sample{'s' if args.samples > 1 else ''} of z"]
    what += [f"{k} {cfg[k]}" for k in ("layer", "objective", "logvar_bounds") if cfg.get(k) is not None]
    intro = (f"gradcheck: a {arch} VAE in float64 ({', '.join(what)}), on {args.batch} random inputs with the "
             f"noise fixed: loss {loss:.6f}. Each parameter's gradient g is checked along {args.directions} "
             f"random directions u: <g, u> against the extrapolated difference (h = {args.h:g}, "
             f"rtol {args.rtol:g}).")
    print(textwrap.fill(intro, 79))
    print()
    print(f"{'parameter':<15} {'shape':>7}  {'dir.':>5}  {'analytic':>13} {'numeric':>13} {'rel.err':>8}  status")
    failed: list[tuple[str, str]] = []
    worst = 0.0
    status_word = {"agree": "ok", "within noise": "noise", "unresolved": "unresolved", "disagree": "FAILED"}
    for name, p in vae.params.items():
        def f(v: np.ndarray, p: np.ndarray = p) -> float:
            old = p.copy()
            p[...] = v
            try:
                return vae.loss_and_grads(x, eps)[0]
            finally:
                p[...] = old

        res = npvae.gradcheck(f, p.copy(), grads[name], rng=np.random.default_rng([args.seed, len(failed)]),
                              n_directions=args.directions, h=args.h, rtol=args.rtol)
        errors, outcomes = res.rel_errors, res.outcomes
        rows = range(len(errors)) if args.verbose else [int(np.argmax(errors))]
        shape = "x".join(map(str, p.shape))
        for i in rows:
            label = f"{i + 1}/{len(errors)}"
            print(f"{name:<15} {shape:>7}  {label:>5}  {res.analytic[i]:13.6e} {res.numeric[i]:13.6e} "
                  f"{errors[i]:8.1e}  {status_word[outcomes[i]]}")
        worst = max(worst, res.max_rel_error)
        if not res.ok:
            failed.append((name, res.status))
    print()
    n = len(vae.params)
    if failed:
        names = ", ".join(f"{name} ({status})" for name, status in failed)
        print(textwrap.fill(f"FAILED: {len(failed)} of {n} parameter arrays: {names}. Their backward pass "
                            "does not compute the derivative of the loss.", 79))
        return 1
    print(f"ok: all {n} parameter arrays agree (largest relative error {worst:.1e})")
    return 0
