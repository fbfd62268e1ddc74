"""Atomic file writes: a reader sees the old file or the new one, never half.

Every file npvae writes (models, checkpoints, downloads, figures, histories)
goes through :func:`atomic_writer`: the data is written to a temporary file
in the same directory as the target, flushed and fsynced, then renamed over
the target with :func:`os.replace`, which is atomic on POSIX and Windows, and
the directory is fsynced so the rename itself survives a power cut. If
anything fails (or the process is interrupted) before the rename, the
temporary file is removed and the target is untouched.

Replacing a file must not lose anything the user had, so before it writes,
:func:`atomic_writer`

* follows a symbolic link and replaces the file it points to (the link is
  kept, and the temporary goes next to the real file, on its filesystem);
* refuses, with :class:`PermissionError`, to replace a file the user
  protected: one whose mode has no write bit for its owner (``chmod 444``),
  or, for a user other than root, one :func:`os.access` says they cannot
  write. Root can write anything, so for root only the mode bits decide;
* gives the new file the old one's permission bits (and, where allowed, its
  owner and group), and a new file the permissions the umask gives;
* refuses a directory (:class:`IsADirectoryError`), a path ending in ``/``,
  and anything else that is not a regular file (a device, a FIFO), before
  creating any temporary;
* keeps the temporary's name within the filesystem's limit on name length
  (255 bytes on most), by shortening the prefix it takes from the target's
  name, and refuses a target whose own name is too long.

A temporary of ``model.npz`` is named ``.model.npz.XXXXXXXX.tmp``, where
``XXXXXXXX`` is the 8-character token :func:`tempfile.mkstemp` draws from
``[a-z0-9_]``; :func:`remove_stale_temporaries` removes exactly the names of
that form and no other file's.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_SUFFIX = ".tmp"
#: The random part of a :func:`tempfile.mkstemp` name: 8 characters of ``tempfile._RandomNameSequence``.
_TOKEN_LEN = 8
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
#: Name length limit when the filesystem does not say (``os.pathconf`` missing or failing): ext4, tmpfs, NTFS...
_DEFAULT_NAME_MAX = 255
#: Hex digits of the target name's SHA-256 kept in a shortened prefix.
_DIGEST_LEN = 16


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` only when the block succeeds.

    Parameters
    ----------
    path
        The final file name. Its directory must exist. A symbolic link is
        followed: the file it points to is replaced and the link kept.
    mode
        ``"wb"`` (default) or ``"w"`` for UTF-8 text.

    Yields
    ------
    file
        An open file object; write to it inside the ``with`` block.

    Raises
    ------
    IsADirectoryError
        ``path`` is a directory or ends with a path separator.
    PermissionError
        ``path`` exists and is protected: read-only by its mode bits (no
        write bit for the owner), or not writable by this (non-root) user.
    FileNotFoundError
        The directory of ``path`` does not exist.
    OSError
        ``path`` is not a regular file (a device, a FIFO...), its name is
        longer than the filesystem allows, or it is a symbolic-link loop.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    target, existing = _prepare(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(target), suffix=_SUFFIX, dir=target.parent)
    except OSError as exc:  # say what the user asked for, not the name of our temporary
        via = f" (a link to {target})" if os.fspath(target) != os.fspath(path) else ""
        raise type(exc)(exc.errno, f"cannot write {os.fspath(path)}{via}: cannot create a file in "
                        f"{target.parent} ({exc.strerror})") from exc
    try:
        with (os.fdopen(fd, mode, encoding="utf-8") if mode == "w" else os.fdopen(fd, mode)) as fh:
            _copy_permissions(tmp_name, existing)
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(target.parent)


def _prepare(path: str | os.PathLike[str]) -> tuple[Path, os.stat_result | None]:
    """The file to replace (``path`` with symbolic links followed) and its status if it exists,
    after every check that must pass before a temporary is made."""
    raw = os.fspath(path)
    if not raw:
        raise ValueError("path is empty; give a file name")
    if raw.endswith(tuple(s for s in (os.sep, os.altsep) if s)):
        raise IsADirectoryError(errno.EISDIR, f"cannot write {raw}: it is a directory name (it ends with "
                                f"{raw[-1]!r}), not a file name; name a file inside it")
    given = Path(raw)
    _check_name_length(given, given)  # before anything asks the filesystem about the path
    target = _follow_links(given)
    via = f" (a link to {target})" if target != given else ""
    directory = target.parent
    if not directory.is_dir():
        why = "is not a directory" if directory.exists() else "does not exist"
        raise FileNotFoundError(errno.ENOENT, f"cannot write {given}{via}: directory {directory} {why}")
    _check_name_length(given, target)
    try:
        existing = os.stat(target)
    except FileNotFoundError:
        return target, None
    if stat.S_ISDIR(existing.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"cannot write {given}{via}: it is a directory; name a file "
                                "inside it")
    if not stat.S_ISREG(existing.st_mode):
        raise OSError(errno.EINVAL, f"cannot write {given}{via}: it is not a regular file "
                      f"({_kind(existing.st_mode)}), and npvae writes by replacing the file")
    why = _protected(target, existing)
    if why:
        raise PermissionError(errno.EACCES, f"refusing to replace {given}{via}: {why}; make it writable "
                              f"(chmod u+w {target}) if it should be overwritten, or write elsewhere")
    return target, existing


def _check_name_length(given: Path, target: Path) -> None:
    name_max = _name_max(target.parent)
    n = len(os.fsencode(target.name))
    if n > name_max:
        via = f" (a link to {target})" if target != given else ""
        raise OSError(errno.ENAMETOOLONG, f"cannot write {given}{via}: its name is {n} bytes long, longer "
                      f"than the {name_max} bytes the filesystem allows")


def _follow_links(path: Path) -> Path:
    """``path`` itself unless it is a symbolic link; then the file the links end at (which may not exist)."""
    if not path.is_symlink():
        return path
    try:
        return Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:  # a dangling link: write the file it names, as open() would
        return Path(os.path.realpath(path))
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: cannot follow the symbolic link ({exc.strerror})") from exc


def _protected(target: Path, st: os.stat_result) -> str:
    """Why ``target`` must not be replaced, or ``""``.

    Decided from the mode bits (no write bit for the owner), because root,
    for whom :func:`os.access` always says yes, must still leave a read-only
    file alone; for other users, also from :func:`os.access`.
    """
    if not st.st_mode & stat.S_IWUSR:
        return f"it is read-only (mode {stat.S_IMODE(st.st_mode):#o})"
    if hasattr(os, "geteuid") and os.geteuid() != 0 and not os.access(target, os.W_OK):
        return (f"it is not writable by this user (mode {stat.S_IMODE(st.st_mode):#o}, "
                f"owner uid {st.st_uid})")
    return ""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return f"file type {stat.S_IFMT(mode):#o}"


def _copy_permissions(tmp_name: str, existing: os.stat_result | None) -> None:
    """Give the temporary the replaced file's permissions (and owner and group where allowed), or for a
    new file the umask's (``mkstemp`` makes 0o600)."""
    if existing is None:
        os.chmod(tmp_name, 0o666 & ~_umask())
        return
    mode = stat.S_IMODE(existing.st_mode)
    if hasattr(os, "chown"):
        mine = os.stat(tmp_name)
        if (mine.st_uid, mine.st_gid) != (existing.st_uid, existing.st_gid):
            try:
                os.chown(tmp_name, existing.st_uid, existing.st_gid)
            except PermissionError:  # only root may give a file away: keep ours, without set-id bits
                mode &= ~(stat.S_ISUID | stat.S_ISGID)
    os.chmod(tmp_name, mode)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _name_max(directory: Path) -> int:
    """The longest file name, in bytes, the filesystem holding ``directory`` allows."""
    try:
        limit = os.pathconf(directory, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        return _DEFAULT_NAME_MAX
    return limit if limit > 0 else _DEFAULT_NAME_MAX


def _tmp_prefix(target: Path) -> str:
    """``.{name}.``, with ``name`` shortened and a hash of it appended when the temporary's name
    (prefix, mkstemp's 8-character token, ``.tmp``) would exceed the filesystem's limit.

    The shortened form is ``.{start of name}~{16 hex digits of SHA-256(name)}.``: still readable, and
    two long names that share their start still get different prefixes.
    """
    name_max = _name_max(target.parent)
    prefix = f".{target.name}."
    room = name_max - _TOKEN_LEN - len(_SUFFIX)
    if len(os.fsencode(prefix)) <= room:
        return prefix
    digest = hashlib.sha256(os.fsencode(target.name)).hexdigest()[:_DIGEST_LEN]
    keep = target.name
    budget = room - len(f".~{digest}.")
    while len(os.fsencode(keep)) > budget:  # by characters, so a multi-byte character is never split
        keep = keep[:-1]
    return f".{keep}~{digest}."


def _is_temporary_of(name: str, prefix: str) -> bool:
    """Whether ``name`` is exactly ``prefix`` + an mkstemp token + ``.tmp``."""
    if not (name.startswith(prefix) and name.endswith(_SUFFIX)):
        return False
    token = name[len(prefix):len(name) - len(_SUFFIX)]
    return len(token) == _TOKEN_LEN and set(token) <= _TOKEN_CHARS


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files that an earlier, killed writer of ``path`` left behind.

    Only names of the exact form :func:`atomic_writer` gives ``path``'s
    temporaries are removed (``.run.npz.XXXXXXXX.tmp`` for ``run.npz``, next
    to the file a symbolic link ``path`` points to); the name is matched
    literally, so ``run[12].npz`` removes nothing of ``run1.npz``'s, and
    ``ckpt`` nothing of ``ckpt.npz``'s. Call this only where no other process
    is writing ``path`` at the same time (a training run owns its
    checkpoint). Returns what was removed.
    """
    target = Path(path)
    if os.fspath(path).endswith(tuple(s for s in (os.sep, os.altsep) if s)) or not target.name:
        return []
    try:
        target = _follow_links(target)
    except OSError:
        return []
    prefix = _tmp_prefix(target)
    removed = []
    for stale in target.parent.glob(glob.escape(prefix) + "?" * _TOKEN_LEN + glob.escape(_SUFFIX)):
        if not _is_temporary_of(stale.name, prefix) or stale.is_symlink() or not stale.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed.append(stale)
    return removed
