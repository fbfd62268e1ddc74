"""npvae.ProgressBar on a terminal: it fits the terminal's width, so a redraw in place never wraps."""

from __future__ import annotations

import io

import pytest

from npvae.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("columns", [80, 60, 40, 20])
def test_bar_fits_the_terminal(columns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    term = Terminal()
    bar = ProgressBar(36, desc="epoch 133/133", unit="batch", file=term, min_interval=0.0)
    bar.set_postfix("loss  102.40")
    for _ in range(36):
        bar.update()
    bar.close()
    drawn = term.getvalue().rstrip("\n").split("\r")[1:]
    assert drawn and all(len(line) <= columns - 1 for line in drawn)
    assert "|" in drawn[-1] and "36/36" in drawn[-1] or columns < 60  # the bar narrows before anything is cut


def test_bar_keeps_its_width_on_a_wide_terminal_and_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    bar = ProgressBar(10, file=Terminal(), width=30)
    assert "|" + "-" * 30 + "|" in bar.render()
    monkeypatch.setenv("COLUMNS", "20")
    log = io.StringIO()
    with ProgressBar(10, desc="download", file=log, width=30) as bar:
        bar.update(10)
    assert "|" + "#" * 30 + "|" in log.getvalue()  # a log file is not cut to a terminal's width
