"""npvae.progress: TrainingProgress (a tqdm bar per epoch, then one line) and the ProgressBar wrapper."""

from __future__ import annotations

import io
import sys
import tracemalloc

import pytest

from npvae.progress import ProgressBar, TrainingProgress, format_record

RECORD = {"epoch": 1, "seconds": 0.25, "train_loss": 102.4, "val_loss": 111.8, "val_nelbo": 111.8, "beta": 1.0}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(progress: TrainingProgress, epochs: int = 2, batches: int = 36) -> None:
    for epoch in range(1, epochs + 1):
        progress.start_epoch(epoch)
        for _ in range(batches):
            progress.update(105.0)
        progress.end_epoch(RECORD | {"epoch": epoch})
    progress.close()


def test_disabled_writes_nothing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "stderr", Terminal())
    _run(TrainingProgress(2, 36, enabled=False))
    assert sys.stderr.getvalue() == ""
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("columns", [80, 40])
def test_terminal_bar_fits_and_is_erased(columns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal: a bar that never wraps, erased at the end of the epoch; one line per epoch."""
    monkeypatch.setenv("COLUMNS", str(columns))
    term, out = Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr("npvae.progress.MIN_INTERVAL", 0.0)
    _run(TrainingProgress(2, 36, file=out))
    drawn = [d for d in term.getvalue().replace("\x1b[A", "").split("\r") if d.strip()]
    assert any("epoch 1/2" in d and "36/36" in d and ("loss 105.00" in d or columns < 80) for d in drawn), drawn
    assert all(len(d) <= columns for d in drawn)
    assert term.getvalue().rstrip(" ").endswith("\r")  # erased: the cursor back at the start of an empty line
    assert out.getvalue().splitlines() == [format_record(RECORD | {"epoch": e}, 2) for e in (1, 2)]


def test_not_a_terminal_no_bar_only_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    log, out = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    progress = TrainingProgress(2, 36, file=out)
    _run(progress)
    assert log.getvalue() == "" and not progress.drawing
    assert len(out.getvalue().splitlines()) == 2


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "log"])
def test_update_allocates_nothing_that_stays(terminal: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", Terminal() if terminal else io.StringIO())
    progress = TrainingProgress(1, 100_000, file=io.StringIO())
    progress.start_epoch(1)
    for _ in range(100):
        progress.update(1.0)  # warm up
    tracemalloc.start()
    try:
        for _ in range(20_000):
            progress.update(1.0)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        progress.close()
    assert current < 2_000 and peak < 20_000, (current, peak)


def test_resumed_epoch_starts_at_its_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr("npvae.progress.MIN_INTERVAL", 0.0)
    progress = TrainingProgress(3, 10, file=io.StringIO())
    progress.start_epoch(2, done=7)
    progress.update(3.0)
    assert "8/10" in term.getvalue()
    progress.close()


def test_format_record_with_beta() -> None:
    line = format_record(RECORD | {"beta": 2.0, "val_nelbo": 100.0}, 10, "test", "4,000 examples/s")
    assert line == "epoch  1/10  loss: train 102.40  test 111.80  negative ELBO 100.00  0.25 s  4,000 examples/s"
    assert format_record(RECORD, 1) == "epoch 1/1  train 102.40  validation 111.80 nats  0.25 s"


def test_progress_bar_wrapper(monkeypatch: pytest.MonkeyPatch) -> None:
    """The downloads' bar: bytes in KiB/MiB on a terminal, nothing in a log."""
    term = Terminal()
    with ProgressBar(3 * 2**20, desc="train-images-idx3-ubyte.gz", unit="B", file=term, min_interval=0.0) as bar:
        bar.update(2**20)
        bar.update(2 * 2**20)
    assert "3.00M/3.00M" in term.getvalue() and "train-images" in term.getvalue()
    log = io.StringIO()
    with ProgressBar(10, file=log) as bar:
        bar.update(10)
    assert log.getvalue() == "" and bar.count == 10
