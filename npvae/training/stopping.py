"""When a run must stop: a loss or gradient that is not finite, or a loss that has exploded."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class TrainingDivergedError(RuntimeError):
    """The loss or a gradient became NaN or infinite, or the loss exploded; the message says where and what to try."""


EXPLOSION = 1e4
"""A loss above ``first + EXPLOSION * max(|first|, 1)``, with ``first`` the run's first batch loss, has exploded."""


class DivergenceGuard:
    """Raises :class:`TrainingDivergedError` when a step's numbers show the run has diverged.

    A finite loss that grows by four orders of magnitude above the run's
    first batch loss counts as diverged too: the run would otherwise end
    "successfully" at 1e14 nats. Training only ever lowers the loss from
    where it starts, so no healthy run comes near that bound.

    Parameters
    ----------
    first_loss
        The first batch loss of the run (carried in checkpoints, so a resumed
        run uses the same bound), or ``None`` to take the next loss seen.
    """

    def __init__(self, first_loss: float | None = None) -> None:
        self.first_loss = first_loss

    def check_loss(self, loss: float, where: tuple[int, int, int], optimizer: Any, last_good: Path | None) -> None:
        """Check a step's loss. ``where`` is ``(epoch, batch, n_batches)`` with ``batch`` 0-based."""
        if not math.isfinite(loss):
            self._stop(f"the loss became {loss}", where, optimizer, last_good)
        if self.first_loss is None:
            self.first_loss = loss
        elif loss > self.first_loss + EXPLOSION * max(abs(self.first_loss), 1.0):
            self._stop(f"the loss exploded to {loss:.6g} (the run's first batch: {self.first_loss:.6g})",
                       where, optimizer, last_good)

    def check_gradient(self, finite: bool, where: tuple[int, int, int], optimizer: Any,
                       last_good: Path | None) -> None:
        """Check that a step's gradient (its norm or its sum of squares) was finite."""
        if not finite:
            self._stop("the gradient became non-finite", where, optimizer, last_good)

    @staticmethod
    def _stop(what: str, where: tuple[int, int, int], optimizer: Any, last_good: Path | None) -> None:
        epoch, batch, n_batches = where
        kept = f" The last good checkpoint is {last_good}." if last_good is not None else ""
        raise TrainingDivergedError(
            f"{what} in epoch {epoch}, batch {batch + 1} of {n_batches}. Try a smaller learning rate "
            f"(now {getattr(optimizer, 'lr', '?')}), gradient clipping (clip_norm=1000), or "
            f"dtype=np.float64.{kept}")
