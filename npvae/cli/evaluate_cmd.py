"""``npvae evaluate MODEL``: how good a trained model is, and how it uses its latent space."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

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
    one_line,
    user_path,
)

DESCRIPTION = """\
Evaluate a trained model on a dataset: the negative ELBO (reconstruction + KL),
an importance-sampled estimate of the log-likelihood log p(x) (Burda et al.'s
bound with --k samples per image, reported as the mean over the images and its
standard error), and diagnostics of the latent space: the KL of each latent
dimension, the active units (dimensions whose posterior mean varies with the
input by more than --threshold), the rate (the KL) and the distortion (the
reconstruction term)."""

EPILOG = """\
binarization:
  A Bernoulli decoder's log p(x) is a log-likelihood only on 0/1 pixels, so for
  a Bernoulli model the grey levels are binarized once, each pixel 1 with its
  grey level as probability (npvae.datasets.binarize, --binarize-seed, default
  0), and every number is computed on those binary images. --grey keeps the grey
  levels: the negative ELBO and the diagnostics are then the cross-entropy the
  model trained on, and the log-likelihood is left out.

cost:
  The log-likelihood takes --k decoder passes per image: with the default
  k = 5000, a 784-400-20 model took about 25 s per 1,000 images on two cores
  (3 to 4 minutes for the 10,000 test images). --k 100 and --limit 1000 give
  a quick look (the estimate rises with k).

examples:
  {prog} runs/mnist/model.npz
  {prog} runs/mnist/model.npz --k 1000 --limit 2000
  {prog} runs/mnist/model.npz --json runs/mnist/evaluation.json
  {prog} runs/fashion/model.npz --dataset fashion-mnist --grey
"""


def build_parser(prog: str = "npvae evaluate") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=DESCRIPTION, epilog=EPILOG.format(prog=prog))
    p.add_argument("model", metavar="MODEL", type=existing_file,
                   help="a model file (model.npz) or a training checkpoint")
    add_data_arguments(p, binarize=True)
    p.add_argument_group("data").add_argument(
        "--grey", action="store_true",
        help="keep a Bernoulli model's data as grey levels (no log-likelihood; see below)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--k", metavar="K", type=number(int, 1), default=5000,
                   help="importance samples per image for the log-likelihood (default: 5000)")
    e.add_argument("--no-log-likelihood", action="store_true", help="skip the log-likelihood (the slow part)")
    e.add_argument("--threshold", metavar="T", type=number(float, 0), default=0.01,
                   help="activity above which a latent dimension is active (default: 0.01, Burda et al.'s)")
    e.add_argument("--seed", type=number(int, 0), default=0, help="seeds the noise of every estimate (default: 0)")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", type=user_path, default=None,
                   help="also write every number to FILE as JSON (written atomically)")
    o.add_argument("--quiet", action="store_true", help="print only the summary lines, not the table per dimension")
    return p


def _library(name: str) -> Any:
    """``npvae.<name>``, or a one-line error saying this npvae does not have it."""
    import npvae

    try:
        return getattr(npvae, name)
    except (AttributeError, ImportError):
        raise CommandError(f"this npvae has no npvae.{name} yet (upgrade npvae, or pass --no-log-likelihood)") \
            from None


def _log_likelihood(vae: Any, x: np.ndarray, k: int, seed: int, quiet: bool) -> np.ndarray:
    """``npvae.log_likelihood`` in chunks of images under a progress bar (terminals only): the same numbers
    as one call, since the noise is drawn image by image from one Generator."""
    log_likelihood = _library("log_likelihood")
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    chunk = max(1, min(n, 200_000 // k))
    out = np.empty(n, np.float64)
    from tqdm.auto import tqdm

    with tqdm(total=n, desc=f"log-likelihood, k={k}", unit="image", leave=False, dynamic_ncols=True,
              disable=True if quiet else None, file=sys.stderr) as bar:
        for start in range(0, n, chunk):
            part = x[start:start + chunk]
            out[start:start + part.shape[0]] = log_likelihood(vae, part, k=k, rng=rng)
            bar.update(part.shape[0])
    return out


def _elbo_model(vae: Any) -> Any:
    """The model itself, or for one trained on the importance-weighted bound (whose own terms are
    ``(-L_k, 0)``) a copy with the same parameters that evaluates the ELBO, reconstruction and KL."""
    if vae.objective != "iwae":
        return vae
    from npvae import VAE

    twin = VAE(**{**vae.config(), "objective": "elbo"})
    for name, array in twin.params.items():
        array[...] = vae.params[name]
    return twin


def _bar(value: float, top: float, width: int = 24) -> str:
    return "#" * (round(width * value / top) if top > 0 and math.isfinite(value) else 0)


def main(argv: list[str] | None = None, prog: str = "npvae evaluate") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.json is not None:
        check_file_path("--json", args.json, parser)
    vae = load_model(args.model, parser)
    bernoulli = vae.likelihood == "bernoulli"
    if args.grey and args.binarize_seed is not None:
        parser.error("argument --grey: not with --binarize-seed (one keeps the grey levels, the other binarizes)")
    if bernoulli and not args.grey and args.binarize_seed is None:
        args.binarize_seed = 0
    try:
        ex = load_examples(args, vae, quiet=args.quiet)
    except UsageError as exc:
        parser.error(str(exc))
    except CommandError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    x, n = ex.x, ex.x.shape[0]
    print(f"model: {args.model} ({describe_model(vae)})")
    print(f"data: {ex.description}")

    rec, kl = _elbo_model(vae).evaluate_terms(x, rng=args.seed)
    print(f"negative ELBO: {rec + kl:.2f} nats per image (reconstruction {rec:.2f} + KL {kl:.2f})")
    bound = None
    if vae.objective == "iwae":
        bound = {"mean": vae.evaluate(x, rng=args.seed), "samples": vae.n_samples}
        print(f"negative IWAE bound, the objective it trained ({bound['samples']:,} samples): "
              f"{bound['mean']:.2f} nats per image")

    doc: dict[str, Any] = {
        "model": str(args.model), "config": vae.config(),
        "data": {"dataset": args.dataset, "split": args.split, "n": n, "description": ex.description,
                 "binarize_seed": args.binarize_seed, "folder": None if args.data is None else str(args.data)},
        "seed": args.seed, "units": "nats per image",
        "negative_elbo": {"mean": rec + kl, "reconstruction": rec, "kl": kl},
    }
    if bound is not None:
        doc["negative_iwae_bound"] = bound
    ll_skip = ("skipped (--no-log-likelihood)" if args.no_log_likelihood else
               "left out: a Bernoulli decoder has a log-likelihood only on 0/1 pixels (drop --grey)"
               if bernoulli and args.grey else None)
    if ll_skip is None:
        try:
            ll = _log_likelihood(vae, x, args.k, args.seed, args.quiet)
        except CommandError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 1
        except (TypeError, ValueError) as exc:
            parser.error(one_line(exc))
        mean = float(ll.mean())
        se = float(ll.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        se_text = f" \u00b1 {se:.2f}" if math.isfinite(se) else " (one image: no standard error)"
        print(f"log-likelihood: {mean:.2f}{se_text} nats per image (importance sampling, k = {args.k:,}; "
              f"\u00b1 one standard error over {n:,} images)")
        doc["log_likelihood"] = {"mean": mean, "standard_error": se if math.isfinite(se) else None,
                                 "k": args.k, "n": n}
    else:
        print(f"log-likelihood: {ll_skip}")
        doc["log_likelihood"] = None
        doc["log_likelihood_note"] = ll_skip

    try:
        diagnostics = _library("diagnostics")
    except CommandError as exc:
        print(f"{prog}: error: {str(exc).replace('pass --no-log-likelihood', 'use an older report')}",
              file=sys.stderr)
        return 1
    try:
        d = diagnostics(vae, x, threshold=args.threshold, rng=args.seed)
    except (TypeError, ValueError) as exc:
        parser.error(one_line(exc))
    kl_dim, activity = np.asarray(d["kl_per_dim"], float), np.asarray(d["activity"], float)
    active = int(d["active_units"])
    print(f"active units: {active} of {vae.latent_dim} (activity, the variance of the posterior mean over the "
          f"images, above {args.threshold:g})")
    print(f"rate (KL): {float(d['rate']):.2f} nats; distortion (reconstruction): {float(d['distortion']):.2f} nats")
    if not args.quiet:
        order = np.argsort(-kl_dim, kind="stable")
        print("  dim      KL  activity  ")
        top = float(kl_dim.max()) if kl_dim.size else 0.0
        for k in order:
            mark = "active" if activity[k] > args.threshold else "      "
            print(f"  z{k + 1:<3d} {kl_dim[k]:7.3f}  {activity[k]:8.4f}  {mark}  {_bar(kl_dim[k], top)}")
    doc["diagnostics"] = {"kl_per_dim": kl_dim.tolist(), "rate": float(d["rate"]),
                          "distortion": float(d["distortion"]), "activity": activity.tolist(),
                          "active_units": active, "threshold": args.threshold}
    if args.json is not None:
        from npvae._atomic import atomic_writer

        with atomic_writer(args.json, "w") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        print(f"wrote {args.json}")
    return 0

