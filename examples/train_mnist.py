#!/usr/bin/env python
"""Train a Variational Autoencoder on MNIST (or Fashion-MNIST) and draw what it learned.

    python examples/train_mnist.py                      # about a minute on two CPU cores
    python examples/train_mnist.py --latent 2           # adds the 2-D manifold figure
    python examples/train_mnist.py --dataset fashion-mnist --out runs/fashion

This script is ``npvae train`` under another name: the code is in
npvae/cli/training_cmd.py, shared with the ``npvae`` command, so the two take
the same flags and write the same files. The run ends with, in --out (default
runs/<dataset>): model.npz (load it with npvae.VAE.load), history.json (losses
per epoch, settings, data used), checkpoint.npz (resume or extend training
with --resume) and PNG figures: samples.png, reconstructions.png, loss.png,
latent.png, interpolation.png and, for --latent 2, manifold.png.

Press Ctrl-C to stop: the current minibatch finishes, a checkpoint is saved and
the command that resumes the run is printed (exit status 130).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:  # Ctrl-C while the libraries load (a second or two): exit quietly, as later
    try:
        import npvae.cli.training_cmd as _impl
    except ImportError:  # run from a source checkout without installing: use the package beside examples/
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        import npvae.cli.training_cmd as _impl
except KeyboardInterrupt:
    print("\ninterrupted", file=sys.stderr)
    sys.exit(130)

# The implementation's names, for code (and tests) that used the example as a module.
from npvae.cli.training_cmd import (  # noqa: E402
    EPOCH_BUDGET,
    HOLDOUT_FRACTION,
    MAX_AUTO_EPOCHS,
    PROBE_TIMEOUT,
    Console,
    Data,
    auto_epochs,
    load_data,
)

__all__ = ["EPOCH_BUDGET", "HOLDOUT_FRACTION", "MAX_AUTO_EPOCHS", "PROBE_TIMEOUT", "Console", "Data",
           "auto_epochs", "build_parser", "load_data", "main"]

PROG = "train_mnist.py"


def build_parser(defaults: bool = True):  # noqa: ANN201 (argparse.ArgumentParser, without importing it here)
    """The example's command line: ``npvae train``'s, under this script's name."""
    return _impl.build_parser(defaults, prog=PROG)


def _command() -> list[str]:
    """How to run this script again: ``python examples/train_mnist.py`` as it was started."""
    me = Path(__file__).resolve()
    script = sys.argv[0] if sys.argv and sys.argv[0] and Path(sys.argv[0]).resolve() == me else str(me)
    return [_impl.python_command(), script]


def main(argv: list[str] | None = None) -> int:
    """Run the example with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    try:
        return _impl.main(argv, prog=PROG, command=_command())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
