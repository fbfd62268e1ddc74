"""Training: the loop (:mod:`.loop`) that :func:`npvae.train` and :func:`npvae.resume` run.

The package is called ``training``, not ``train``, so that importing it never
binds a module over the function ``npvae.train`` (a submodule's import sets
its name on the parent package).
"""

from __future__ import annotations

from .interrupt import TrainingInterrupted
from .loop import resume, train
from .stopping import TrainingDivergedError

__all__ = ["TrainingDivergedError", "TrainingInterrupted", "resume", "train"]
