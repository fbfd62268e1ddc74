"""Progress bars for training and downloads, drawn by tqdm.

:class:`TrainingProgress` is what ``npvae.train(..., progress=True)`` and the
``npvae train`` command show: one bar per epoch (batches done, rate, time
left, the running loss), erased at the end of the epoch and replaced by one
line with the epoch's losses, so a terminal, a log and a notebook all keep
exactly one line per epoch. The bar comes from :mod:`tqdm.auto`: a widget in
a Jupyter notebook, a text bar redrawn in place on a terminal (fitted to its
width, following resizes), and nothing at all when stderr is not a terminal
(a pipe, a file, CI), where only the epoch lines are written.

:class:`ProgressBar` is a thin wrapper kept for the downloads
(:mod:`npvae.datasets.download`) and for code that used it: same constructor, same
methods, now drawn by tqdm (so, unlike the hand-written bar it replaces, it
writes nothing when its output is not a terminal).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["ProgressBar", "TrainingProgress", "format_record"]

#: Seconds between two redraws of a bar (tqdm's ``mininterval``).
MIN_INTERVAL = 0.1


def _tqdm() -> Any:
    """tqdm.auto's class: imported on first use, so ``import npvae`` stays light."""
    from tqdm.auto import tqdm

    return tqdm


def _width() -> dict[str, Any]:
    """tqdm's width options: ``$COLUMNS`` less one when it is set (tqdm itself asks only the terminal),
    else follow the terminal's width as it changes."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    return {"ncols": columns - 1, "dynamic_ncols": False} if columns > 1 else {"dynamic_ncols": True}


def _notebook(cls: Any) -> bool:
    """Whether tqdm.auto chose its notebook widget (which draws whatever stderr is)."""
    return cls.__module__.startswith("tqdm.notebook")


def format_record(record: dict, epochs: int, val_name: str = "validation", extra: str = "") -> str:
    """One epoch's line: ``epoch  3/10  train 102.40  validation 111.80 nats  0.25 s``.

    With a ``beta`` other than 1 in the record, the losses are labelled as the
    loss minimized (reconstruction + beta * KL) and the validation negative
    ELBO (``val_nelbo``, reconstruction + KL) is shown beside them. ``extra``
    is appended (e.g. examples per second).
    """
    width = len(str(epochs))
    val = f"  {val_name} {record['val_loss']:6.2f}" if record.get("val_loss") is not None else ""
    if record.get("beta", 1.0) == 1:
        losses = f"train {record['train_loss']:6.2f}{val} nats"
    else:
        nelbo = f"  negative ELBO {record['val_nelbo']:6.2f}" if record.get("val_nelbo") is not None else ""
        losses = f"loss: train {record['train_loss']:6.2f}{val}{nelbo}"
    line = f"epoch {record['epoch']:{width}d}/{epochs}  {losses}  {record['seconds']:4.2f} s"
    return f"{line}  {extra}" if extra else line


class TrainingProgress:
    """A bar per epoch while it runs, then one line with the epoch's losses.

    Parameters
    ----------
    epochs
        The epochs of the run in all (for ``epoch 3/10``).
    n_batches
        Minibatches per epoch (the bar's total).
    enabled
        ``False``: nothing is drawn or written, and every method returns at once.
    file
        Where the epoch lines go (default :data:`sys.stdout` at construction).
        The bar goes to :data:`sys.stderr`, and only when that is a terminal
        (or in a notebook).
    val_name
        What the held-out set is called in the lines (``"test"``, ``"validation"``).
    line
        ``line(record) -> str`` makes an epoch's line instead of :func:`format_record`;
        returning ``""`` writes none.

    Call :meth:`start_epoch` before an epoch's first batch, :meth:`update`
    after each batch, :meth:`end_epoch` with the epoch's history record, and
    :meth:`close` at the end (also on an error: it erases a bar left open).
    :meth:`update` allocates nothing but a float for the clock: the loss
    shown is formatted only when the bar is redrawn (at most ten times a second).
    """

    def __init__(self, epochs: int, n_batches: int, enabled: bool = True, *, file: TextIO | None = None,
                 val_name: str = "validation", line: Callable[[dict], str] | None = None) -> None:
        self.epochs, self.n_batches, self.enabled = int(epochs), int(n_batches), bool(enabled)
        self.file = sys.stdout if file is None else file
        self.val_name = val_name
        self._line = line
        self._bar: Any = None
        self._count = 0  # batches done in this epoch (the bar's own count lags by up to MIN_INTERVAL)
        self._loss = float("nan")
        self._last = 0.0
        self._cls: Any = _tqdm() if self.enabled else None

    @property
    def drawing(self) -> bool:
        """Whether a bar is on screen now."""
        return self._bar is not None

    def start_epoch(self, epoch: int, done: int = 0) -> None:
        """Open the bar of epoch ``epoch`` (1-based); ``done``: its batches already run (a resumed epoch)."""
        if not self.enabled:
            return
        self._erase()
        width = len(str(self.epochs))
        bar = self._cls(total=self.n_batches, initial=done, desc=f"epoch {epoch:{width}d}/{self.epochs}",
                        unit="batch", leave=False, mininterval=MIN_INTERVAL, **_width(),
                        disable=False if _notebook(self._cls) else None, file=sys.stderr)
        if bar.disable:  # stderr is not a terminal: no bar, the epoch lines only
            bar.close()
            return
        self._bar, self._count, self._last = bar, done, time.monotonic()

    def update(self, loss: float) -> None:
        """One more batch done, whose loss was ``loss`` (shown on the bar)."""
        bar = self._bar
        if bar is None:
            return
        self._count += 1
        self._loss = loss
        now = time.monotonic()
        if now - self._last >= MIN_INTERVAL or self._count == self.n_batches:
            self._last = now
            bar.set_postfix_str(f"loss {loss:.2f}", refresh=False)
            bar.update(self._count - bar.n)

    def write(self, text: str, file: TextIO | None = None) -> None:
        """Write a line without breaking the bar (it is redrawn below it)."""
        if not self.enabled:
            return
        out = self.file if file is None else file
        if self._bar is not None:
            self._cls.write(text, file=out)
        else:
            print(text, file=out, flush=True)

    def end_epoch(self, record: dict) -> None:
        """Erase the epoch's bar and write its line (``record``: the history record of the epoch)."""
        if not self.enabled:
            return
        self._erase()
        text = self._line(record) if self._line is not None else format_record(record, self.epochs, self.val_name)
        if text:
            print(text, file=self.file, flush=True)

    def _erase(self) -> None:
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.close()  # leave=False: the line is cleared, the cursor back at its start

    def close(self) -> None:
        """Erase any bar still drawn; later calls do nothing."""
        self._erase()

    def __enter__(self) -> TrainingProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ProgressBar:
    """``count/total``, percentage, rate and elapsed/remaining time, drawn by tqdm (see the module docstring).

    Parameters
    ----------
    total
        Expected number of steps, or ``None`` (or 0) if unknown.
    desc
        Text in front of the bar.
    unit
        Unit of a step; ``"B"`` shows byte counts as KiB/MiB/GiB.
    file
        Where to draw; ``None`` means :data:`sys.stderr`. Nothing is drawn
        unless it is a terminal (or in a notebook).
    width
        Ignored (tqdm fits the bar to the terminal's width); kept for callers.
    min_interval
        Minimum seconds between two redraws.
    """

    def __init__(self, total: int | None, desc: str = "", unit: str = "", file: TextIO | None = None,
                 width: int = 30, min_interval: float = MIN_INTERVAL) -> None:
        cls = _tqdm()
        byte = unit == "B"
        self._bar = cls(total=total or None, desc=desc or None, unit=unit or "it", unit_scale=byte,
                        unit_divisor=1024 if byte else 1000, file=sys.stderr if file is None else file,
                        mininterval=min_interval, **_width(),
                        disable=False if _notebook(cls) else None)
        self.closed = False
        self.count = 0

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` steps (redrawn when due)."""
        self.count += n
        self._bar.update(n)

    def set_postfix(self, text: str) -> None:
        """Show ``text`` after the statistics (e.g. the current loss) at the next redraw."""
        self._bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        """Draw the final state and end the line; later calls do nothing."""
        if not self.closed:
            self.closed = True
            self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
