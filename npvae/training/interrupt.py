"""Ctrl-C during training: finish the batch, save, then stop."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`npvae.train`; ``checkpoint`` is the file saved at the last finished batch."""

    def __init__(self, checkpoint: Path | None, epoch: int, batch: int) -> None:
        super().__init__(f"interrupted in epoch {epoch} after batch {batch}")
        self.checkpoint, self.epoch, self.batch = checkpoint, epoch, batch


class DeferredInterrupt:
    """Turn the first Ctrl-C into a flag the loop checks after each finished batch.

    A batch is never left half-applied (parameters updated but not the
    optimizer state), so the checkpoint written on Ctrl-C is consistent. A
    second Ctrl-C interrupts at once. Outside the main thread, where signal
    handlers cannot be set, Ctrl-C behaves as usual; where SIGINT is ignored
    (a process a shell started in the background, ``nohup``), it stays
    ignored, so a Ctrl-C meant for the foreground does not stop training.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> DeferredInterrupt:
        self._old = None
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return self
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:
            self._old = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
