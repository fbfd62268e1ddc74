"""When a run must stop: a loss or gradient that is not finite, a loss that has exploded, or a
validation loss that has stopped improving (early stopping)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


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


class EarlyStopping:
    """Stop when the validation negative ELBO has not improved for ``patience`` epochs, keeping the best.

    The best parameters are copied into arrays made once, so each
    improvement costs one copy and nothing is allocated per epoch. The
    negative ELBO (beta = 1) is compared, not the loss minimized, so that KL
    warm-up's rising beta cannot make a later epoch look worse.

    Parameters
    ----------
    patience
        Epochs without improvement after which the run stops.
    params
        The model's parameters (the arrays to copy from and restore into).
    """

    def __init__(self, patience: int, params: Mapping[str, np.ndarray]) -> None:
        self.patience = patience
        self.best = math.inf
        self.best_epoch = 0
        self.best_params = {k: np.empty_like(p) for k, p in params.items()}

    def update(self, epoch: int, value: float, params: Mapping[str, np.ndarray]) -> bool:
        """Record epoch ``epoch``'s validation negative ELBO; returns whether the run should stop now."""
        if value < self.best:
            self.best, self.best_epoch = value, epoch
            for k, p in params.items():
                np.copyto(self.best_params[k], p)
        return epoch - self.best_epoch >= self.patience

    def restore(self, params: Mapping[str, np.ndarray]) -> None:
        """Write the best epoch's parameters back into the model's arrays."""
        for k, p in params.items():
            np.copyto(p, self.best_params[k])

    def state(self) -> dict:
        """What a checkpoint needs besides :attr:`best_params` (JSON)."""
        return {"patience": self.patience, "best": self.best if math.isfinite(self.best) else None,
                "best_epoch": self.best_epoch}

    def load_state(self, state: dict, best_params: dict[str, np.ndarray]) -> None:
        """Continue from :meth:`state` and the saved best parameters."""
        self.best = math.inf if state.get("best") is None else float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        for k, a in best_params.items():
            np.copyto(self.best_params[k], a)
