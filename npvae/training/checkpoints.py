"""The run's checkpoint file: checked before training, written atomically, named only when it is ours."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import remove_stale_temporaries
from ..checkpoint import save_checkpoint
from ..vae import VAE


class Checkpointer:
    """Writes a run's training checkpoints to one path.

    The path is checked when the run starts, not after its first epoch: its
    folder must exist and the path must not be a folder. Temporaries left by
    an earlier, killed save of the same path are removed then.

    Parameters
    ----------
    path
        Where the checkpoint goes.
    every
        Also save every ``every`` batches inside an epoch (0: only at the end
        of each epoch and on Ctrl-C).
    resumed
        The run continues from the checkpoint at ``path``, which therefore
        belongs to this run's lineage from the start.
    """

    def __init__(self, path: str | os.PathLike[str], every: int = 0, resumed: bool = False) -> None:
        self.path = Path(path)
        self.every = every
        folder = self.path.parent
        if self.path.is_dir() or os.fspath(path).endswith(os.sep):
            raise IsADirectoryError(f"checkpoint_path {self.path} is a folder; give a file name such as "
                                    f"{self.path / 'checkpoint.npz'}")
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise FileNotFoundError(f"checkpoint_path {self.path}: the folder {folder} {what}")
        self._ours = resumed
        remove_stale_temporaries(self.path)

    @property
    def last_good(self) -> Path | None:
        """The checkpoint this run wrote (or resumed from), or ``None``: never an unrelated file at the path."""
        return self.path if self._ours and self.path.exists() else None

    def due(self, batch: int, n_batches: int) -> bool:
        """Whether to save after ``batch`` (1-based) of ``n_batches``: every ``every`` batches, but not
        after the epoch's last batch, where the end-of-epoch save follows."""
        return bool(self.every) and batch % self.every == 0 and batch < n_batches

    def save(self, vae: VAE, optimizer: Any, progress: dict, extra: dict[str, np.ndarray] | None = None) -> None:
        """Write the checkpoint atomically: a reader sees the previous one or this one, never half."""
        save_checkpoint(self.path, vae, optimizer, progress, extra)
        self._ours = True
