"""Exception types that npvae raises on bad files.

Both derive from :class:`ValueError`, so ``except ValueError`` catches every
input problem npvae reports, while callers who care can tell a damaged data
file from a damaged checkpoint.
"""


class DataFileError(ValueError):
    """A dataset file is missing, truncated, corrupt or of the wrong kind.

    The message names the file and what is wrong with it.
    """


class ChecksumError(DataFileError):
    """A dataset file's bytes do not match its published checksum."""


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded: truncated, not an ``.npz``, another
    architecture, or an incompatible format version."""
