"""``python -m npvae``: the ``npvae`` command (see :mod:`npvae.cli`)."""

from __future__ import annotations

import sys

from npvae.cli import main

if __name__ == "__main__":
    sys.exit(main())
