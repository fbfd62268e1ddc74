"""Atomic file writes: a reader sees the old file or the new one, never half.

Every file npvae writes (checkpoints, downloads, histories) goes through
:func:`atomic_writer`: the data is written to a temporary file in the same
directory, flushed and fsynced, then renamed over the target with
:func:`os.replace`, which is atomic on POSIX and Windows. If anything fails
(or the process is interrupted) before the rename, the temporary file is
removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` only when the block succeeds.

    Parameters
    ----------
    path
        The final file name. Its directory must exist.
    mode
        ``"wb"`` (default) or ``"w"`` for text.

    Yields
    ------
    file
        An open file object; write to it inside the ``with`` block.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot write {target}: directory {directory} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(target), suffix=".tmp", dir=directory)
    try:
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; a normal file follows the umask
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}."


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files that an earlier, killed writer of ``path`` left behind.

    Call this only where no other process is writing ``path`` at the same
    time (a training run owns its checkpoint). Returns what was removed.
    """
    target = Path(path)
    removed = []
    for stale in target.parent.glob(f"{_tmp_prefix(target)}*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed.append(stale)
    return removed
