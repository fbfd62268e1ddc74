"""Exception types that npvae raises on bad files.

All derive from :class:`ValueError`, so ``except ValueError`` catches every
input problem npvae reports, while callers who care can tell a damaged data
file from a missing one or from a damaged checkpoint.
"""

from __future__ import annotations

from pathlib import Path


class DataFileError(ValueError):
    """A dataset file is missing, truncated, corrupt or of the wrong kind.

    The message names the file and what is wrong with it.
    """


class ChecksumError(DataFileError):
    """A dataset file's bytes do not match its published checksum, or cannot be checked against one."""


class DataNotFoundError(DataFileError):
    """A dataset split's files are neither on disk nor downloaded.

    ``str(error)`` is :attr:`summary` (what happened) followed by advice in
    terms of the library's arguments (``download=``, ``root=``). A
    command-line program can print :attr:`summary` and its own flags
    instead, using the attributes below.

    Attributes
    ----------
    dataset : str
        ``"mnist"`` or ``"fashion-mnist"``.
    title : str
        Its display name, ``"MNIST"`` or ``"Fashion-MNIST"``.
    split : str
        ``"train"`` or ``"test"``.
    missing : tuple of str
        The files not found, as published (``"t10k-images-idx3-ubyte.gz"``).
    searched : tuple of pathlib.Path
        The folders searched, in order.
    skipped : tuple of (pathlib.Path, str)
        Files found under a right name but set aside because they belong to
        the other dataset, each with the reason.
    download_tried : bool
        Whether a download was attempted (``False`` when the caller passed
        ``download=False``).
    download_error : str or None
        Why the download failed (every mirror's failure, or no writable
        folder); ``None`` when none was tried.
    download_dir : pathlib.Path
        Where a download goes (or went) with the same arguments.
    mirrors_env : str
        The environment variable that names other mirrors.
    summary : str
        The message without the advice.
    """

    def __init__(
        self,
        summary: str,
        advice: str,
        *,
        dataset: str,
        title: str,
        split: str,
        missing: tuple[str, ...],
        searched: tuple[Path, ...],
        skipped: tuple[tuple[Path, str], ...],
        download_tried: bool,
        download_error: str | None,
        download_dir: Path,
        mirrors_env: str,
    ) -> None:
        super().__init__(f"{summary}\n{advice}" if advice else summary)
        self.summary = summary
        self.dataset = dataset
        self.title = title
        self.split = split
        self.missing = missing
        self.searched = searched
        self.skipped = skipped
        self.download_tried = download_tried
        self.download_error = download_error
        self.download_dir = download_dir
        self.mirrors_env = mirrors_env


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded: truncated, not an ``.npz``, another
    architecture, or an incompatible format version."""
