"""A small dependency-free progress bar for downloads and training epochs.

On a terminal the bar redraws in place (at most ``1 / min_interval`` times a
second), fitted to the terminal's width so that it never wraps (a wrapped
line cannot be redrawn in place and leaves a stale copy per redraw). Anywhere else (CI logs, pipes, files) it stays silent until
:meth:`ProgressBar.close`, which writes one summary line, so logs stay short.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
    """Show ``count/total``, percentage, rate and elapsed/remaining time.

    Parameters
    ----------
    total
        Expected number of steps, or ``None`` (or 0) if unknown.
    desc
        Text in front of the bar.
    unit
        Unit of a step; ``"B"`` shows byte counts as KiB/MiB/GiB.
    file
        Where to write; ``None`` means :data:`sys.stderr` at construction.
    width
        Width of the bar in characters, at most: on a terminal, the bar
        narrows (then the line is cut) to fit the terminal's width.
    min_interval
        Minimum seconds between two redraws on a terminal.
    """

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        unit: str = "",
        file: TextIO | None = None,
        width: int = 30,
        min_interval: float = 0.1,
    ) -> None:
        self.total = total or None
        self.desc, self.unit, self.width, self.min_interval = desc, unit, width, min_interval
        self.file = sys.stderr if file is None else file
        self.count, self.postfix, self.closed, self._drawn = 0, "", False, 0
        isatty = getattr(self.file, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.start = self._last_draw = time.monotonic()

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` steps, redrawing if on a terminal and due."""
        self.count += n
        now = time.monotonic()
        if self.tty and now - self._last_draw >= self.min_interval:
            self._last_draw = now
            self._draw(self.render(now))

    def _draw(self, line: str) -> None:
        # Pad with spaces so a shorter line fully covers the previous one (but never past the terminal's edge).
        self.file.write("\r" + line.ljust(min(self._drawn, self._columns())))
        self._drawn = len(line)
        self.file.flush()

    def set_postfix(self, text: str) -> None:
        """Show ``text`` after the statistics (e.g. the current loss)."""
        self.postfix = text

    def _amount(self, n: float) -> str:
        if self.unit != "B":
            return str(int(n))
        i = 0
        while n >= 1024 and i < 3:
            n, i = n / 1024, i + 1
        return f"{n:.0f} B" if i == 0 else f"{n:.1f} {('KiB', 'MiB', 'GiB')[i - 1]}"

    #: Narrowest bar kept before the line itself is cut to the terminal's width.
    MIN_BAR = 5

    def render(self, now: float | None = None) -> str:
        """Return the current status line (without ``\\r`` or newline).

        On a terminal, the line fits in its width (:func:`shutil.get_terminal_size`,
        which honours ``$COLUMNS``) minus one column, so that it never wraps.
        """
        if not self.tty:
            return self._render(now, self.width)
        limit = self._columns()
        line = self._render(now, self.width)
        if len(line) > limit and self.total:
            line = self._render(now, max(self.MIN_BAR, self.width - (len(line) - limit)))
        return line[:limit]

    @staticmethod
    def _columns() -> int:
        """Characters a line may take on the terminal: its width less one (the cursor's column)."""
        return max(1, shutil.get_terminal_size((80, 24)).columns - 1)

    def _render(self, now: float | None, bar_width: int) -> str:
        elapsed = (time.monotonic() if now is None else now) - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        rate_text = f"{self._amount(rate)}/s" if self.unit == "B" else f"{rate:.1f} {self.unit or 'it'}/s"
        parts = [self.desc] if self.desc else []
        if self.total:
            frac = min(self.count / self.total, 1.0)
            filled = int(frac * bar_width)
            eta = max(self.total - self.count, 0) / rate if rate > 0 else 0.0
            bar = "#" * filled + "-" * (bar_width - filled)
            parts.append(f"|{bar}| {self._amount(self.count)}/{self._amount(self.total)} {frac:4.0%}")
            times = f"{_fmt_time(elapsed)}<{_fmt_time(eta)}"
        else:
            parts.append(self._amount(self.count) + (f" {self.unit}" if self.unit not in ("", "B") else ""))
            times = _fmt_time(elapsed)
        parts.append(f"[{times}, {rate_text}]")
        if self.postfix:
            parts.append(self.postfix)
        return " ".join(parts)

    def close(self) -> None:
        """Write the final state and end the line; later calls do nothing."""
        if self.closed:
            return
        self.closed = True
        if self.tty:
            self._draw(self.render())
        self.file.write(("" if self.tty else self.render()) + "\n")
        self.file.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
