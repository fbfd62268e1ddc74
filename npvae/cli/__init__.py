"""The ``npvae`` command (also ``python -m npvae``): train, evaluate, draw and check a VAE.

Each subcommand lives in its own module and parses its own arguments, so
``npvae --help`` and a mistyped command answer at once, without importing
Numba or matplotlib. :func:`main` returns the exit status: 0 success, 1 a
failure the input cannot fix here (data missing, a gradient check failed),
2 a usage error (one line, never a traceback), 130 Ctrl-C.
"""

from __future__ import annotations

import difflib
import importlib
import sys
import textwrap
from collections.abc import Callable, Sequence

__all__ = ["COMMANDS", "main"]

#: name -> (module in npvae.cli, its entry point, one line of help).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("training_cmd", "main", "train a VAE on MNIST or Fashion-MNIST; writes the model, history, "
                                      "checkpoint and figures"),
    "evaluate": ("evaluate_cmd", "main", "negative ELBO, log-likelihood estimate and latent diagnostics of a model"),
    "sample": ("pictures", "sample_main", "draw samples from the prior (PNG, and .npy with --npy)"),
    "reconstruct": ("pictures", "reconstruct_main", "held-out images above their reconstructions (PNG)"),
    "interpolate": ("pictures", "interpolate_main", "decode the straight line between two images' codes (PNG)"),
    "manifold": ("pictures", "manifold_main", "decode a grid over a 2-D latent space (PNG)"),
    "traverse": ("pictures", "traverse_main", "move one latent dimension at a time across the prior (PNG)"),
    "gradcheck": ("gradcheck_cmd", "main", "check every hand-written gradient against finite differences"),
}

USAGE = "usage: npvae [-h] [--version] COMMAND [ARGS...]"


def _help() -> str:
    width = max(map(len, COMMANDS))
    lines = "\n".join(textwrap.fill(text, 79, initial_indent=f"  {name:<{width}}  ",
                                     subsequent_indent=" " * (width + 4))
                       for name, (_, _, text) in COMMANDS.items())
    return f"""{USAGE}

A Variational Autoencoder written from scratch in NumPy: train it, evaluate it,
look at what it learned, and check its gradients.

commands:
{lines}

options:
  -h, --help  show this help and exit (`npvae COMMAND --help` explains a
              command's flags, with their defaults and examples)
  --version   print npvae's version and exit

examples:
  npvae train --epochs 20 --out runs/mnist
  npvae evaluate runs/mnist/model.npz --k 1000 --json eval.json
  npvae sample runs/mnist/model.npz -n 64 --out samples.png
  npvae traverse runs/mnist/model.npz --out traverse.png
  npvae gradcheck --likelihood gaussian --activation tanh

Exit status: 0 success, 1 a failure (data not found, a gradient check failed),
2 a usage error, 130 interrupted (Ctrl-C).
"""


def _entry(name: str) -> Callable[..., int]:
    module, function, _ = COMMANDS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``npvae`` with the arguments ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if not args or args[0] in ("-h", "--help"):
            print(_help(), end="")
            return 0 if args else 2
        if args[0] == "--version":
            from npvae import __version__
            print(f"npvae {__version__}")
            return 0
        name = args[0]
        if name not in COMMANDS:
            close = difflib.get_close_matches(name, list(COMMANDS), n=1) if not name.startswith("-") else []
            hint = f"; did you mean {close[0]}?" if close else ""
            print(f"npvae: error: unknown command {name!r}{hint} (commands: {', '.join(COMMANDS)}; see --help)",
                  file=sys.stderr)
            return 2
        try:
            return int(_entry(name)(args[1:], prog=f"npvae {name}"))
        except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
            code = exc.code
            return code if isinstance(code, int) else (0 if code is None else 2)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `npvae ... | head`: the reader left; say nothing more
        return 1
