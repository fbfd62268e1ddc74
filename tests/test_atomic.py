"""The atomic writer: nothing the user had is lost, and the stale-temporary cleaner removes only its own files.

The tests run as root here, for whom every file is writable: a "protected" file is one whose mode
has no write bit for its owner, whoever runs the test.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

import npvae._atomic as atomic
from npvae._atomic import atomic_writer, remove_stale_temporaries


def write(path: Path | str, data: bytes = b"new") -> None:
    with atomic_writer(path) as fh:
        fh.write(data)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------ permissions

@pytest.mark.parametrize("perm", [0o600, 0o640, 0o700, 0o664])
def test_replacing_a_file_keeps_its_mode(tmp_path, perm):
    """It became 0o644 (the umask's) whatever it had been: a private 0o600 file turned world-readable."""
    target = tmp_path / "m.npz"
    target.write_bytes(b"old")
    os.chmod(target, perm)
    old = os.umask(0o022)
    try:
        write(target)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"new" and mode(target) == perm


@pytest.mark.parametrize("perm", [0o444, 0o400, 0o044, 0o555])
def test_a_read_only_file_is_refused_and_kept(tmp_path, perm):
    """A file with no write bit for its owner is protected, even from root (for whom os.access says yes)."""
    target = tmp_path / "m.npz"
    target.write_bytes(b"old")
    os.chmod(target, perm)
    with pytest.raises(PermissionError, match=r"refusing to replace .*m\.npz: it is read-only \(mode 0o") as info:
        write(target)
    assert info.value.errno == errno.EACCES and ".tmp" not in str(info.value)
    assert target.read_bytes() == b"old" and mode(target) == perm
    assert leftovers(tmp_path) == []


def test_a_read_only_target_of_a_link_is_refused(tmp_path):
    real = tmp_path / "real.npz"
    real.write_bytes(b"old")
    os.chmod(real, 0o444)
    (tmp_path / "link.npz").symlink_to(real)
    with pytest.raises(PermissionError, match=r"link\.npz \(a link to .*real\.npz\): it is read-only"):
        write(tmp_path / "link.npz")
    assert real.read_bytes() == b"old"


# ------------------------------------------------------------ symbolic links

def test_writing_through_a_symlink_replaces_its_target(tmp_path):
    """It replaced the link with a new file and left the file it pointed to stale."""
    store, work = tmp_path / "store", tmp_path / "work"
    store.mkdir()
    work.mkdir()
    real = store / "real.npz"
    real.write_bytes(b"old")
    os.chmod(real, 0o640)
    link = work / "model.npz"
    link.symlink_to(real)
    with atomic_writer(link) as fh:
        fh.write(b"new")
        assert [n.startswith(".real.npz.") for n in leftovers(store)] == [True]  # next to the target
        assert leftovers(work) == []
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == b"new" and mode(real) == 0o640
    assert leftovers(store) == [] and leftovers(work) == []


def test_a_dangling_symlink_gets_its_target_created(tmp_path):
    link = tmp_path / "model.npz"
    link.symlink_to("target.npz")
    write(link)
    assert link.is_symlink() and (tmp_path / "target.npz").read_bytes() == b"new"


def test_a_symlink_loop_is_a_clear_error(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OSError, match=r"cannot follow the symbolic link"):
        write(tmp_path / "a")
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------ what the target is

def test_a_directory_is_refused_before_any_temporary(tmp_path):
    """The error named the writer's internal .tmp file instead of the directory."""
    (tmp_path / "d").mkdir()
    for path in (tmp_path / "d", f"{tmp_path / 'd'}/", f"{tmp_path / 'new'}/"):
        with pytest.raises(IsADirectoryError, match="is a directory") as info:
            write(path)
        assert ".tmp" not in str(info.value) and f"cannot write {path}:" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"] and list((tmp_path / "d").iterdir()) == []


def test_a_fifo_is_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match=r"not a regular file \(a FIFO\)"):
        write(fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and leftovers(tmp_path) == []


def test_a_directory_that_refuses_new_files_is_named_not_the_temporary(tmp_path, monkeypatch):
    """As root every directory is writable, so mkstemp's refusal is simulated: its message named the
    internal .tmp file."""
    def refuse(prefix: str, suffix: str, dir: Path) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, prefix + "abcdefgh" + suffix))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError,
                       match=r"cannot write .*m\.npz: cannot create a file in .*Permission denied") as info:
        write(tmp_path / "m.npz")
    assert ".tmp" not in str(info.value)


# ------------------------------------------------------------ long names

@pytest.mark.parametrize("name", ["a" * 250 + ".npz", "é" * 125 + ".npz", "x" * 255])
def test_a_long_legal_name_is_written(tmp_path, name):
    """mkstemp failed with 'File name too long' for a legal name whose temporary (name + 13 bytes) was not."""
    assert len(os.fsencode(name)) <= 255
    target = tmp_path / name
    with atomic_writer(target) as fh:
        fh.write(b"new")
        (tmp,) = leftovers(tmp_path)
        assert len(os.fsencode(tmp)) <= 255
    assert target.read_bytes() == b"new" and leftovers(tmp_path) == []


def test_two_long_names_with_the_same_start_get_their_own_temporaries(tmp_path):
    """The shortened prefix keeps a hash of the whole name, so each file's cleaner finds only its own."""
    a, b = tmp_path / ("a" * 245 + "1.npz"), tmp_path / ("a" * 245 + "2.npz")
    with atomic_writer(a) as fa, atomic_writer(b) as fb:
        fa.write(b"A")
        fb.write(b"B")
        ta, tb = leftovers(tmp_path)
        assert atomic._is_temporary_of(ta, atomic._tmp_prefix(a)) != atomic._is_temporary_of(tb, atomic._tmp_prefix(a))
    assert a.read_bytes() == b"A" and b.read_bytes() == b"B"


def test_a_name_too_long_for_the_filesystem_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match=r"its name is 256 bytes long, longer than the 255 bytes") as info:
        write(tmp_path / ("b" * 256))
    assert info.value.errno == errno.ENAMETOOLONG and ".tmp" not in str(info.value)


# ------------------------------------------------------------ stale temporaries

def killed_write(path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Leave the temporary a writer killed mid-write leaves (its clean-up never runs); return its name."""
    with monkeypatch.context() as m:
        m.setattr(atomic.os, "unlink", lambda name: None)
        with pytest.raises(KeyboardInterrupt), atomic_writer(path) as fh:
            fh.write(b"half")
            raise KeyboardInterrupt
    real = Path(os.path.realpath(path))  # the writer writes next to the file a link points to
    names = [n for n in leftovers(real.parent) if n.startswith(atomic._tmp_prefix(real))]
    assert len(names) == 1
    return names[0]


@pytest.mark.parametrize("name", ["run.npz", "run[12].npz", "a" * 250 + ".npz", "*?.npz"])
def test_the_cleaner_removes_what_a_killed_writer_left(tmp_path, monkeypatch, name):
    target = tmp_path / name
    stale = killed_write(target, monkeypatch)
    assert [p.name for p in remove_stale_temporaries(target)] == [stale]
    assert leftovers(tmp_path) == []


def test_the_cleaner_removes_nothing_of_other_files(tmp_path):
    """``run[12].npz`` was a glob pattern that removed ``run1.npz``'s temporaries, and ``ckpt`` removed
    ``ckpt.npz``'s."""
    others = [".run1.npz.abcdefgh.tmp", ".ckpt.npz.abcdefgh.tmp", ".ckpt.abc.tmp", ".ckpt.abcdefghi.tmp",
              ".ckpt.ABCDEFGH.tmp", ".ckpt..tmp", ".ckpt.abcd.fgh.tmp"]
    ours = [".run[12].npz.a1b2c3d_.tmp", ".ckpt.zzzzzzzz.tmp"]
    for n in others + ours:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / ".ckpt.dirdirdi.tmp").mkdir()  # not a file: never removed
    removed = remove_stale_temporaries(tmp_path / "run[12].npz") + remove_stale_temporaries(tmp_path / "ckpt")
    assert sorted(p.name for p in removed) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others + [".ckpt.dirdirdi.tmp"])


def test_the_cleaner_follows_a_symlink_to_where_the_writer_writes(tmp_path, monkeypatch):
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "real.npz"
    real.write_bytes(b"old")
    link = tmp_path / "ckpt.npz"
    link.symlink_to(real)
    stale = killed_write(link, monkeypatch)
    assert [p.name for p in remove_stale_temporaries(link)] == [stale]
    assert leftovers(tmp_path / "store") == [] and real.read_bytes() == b"old"


# ------------------------------------------------------------ every writer uses it

def test_save_figure_refuses_a_read_only_file(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from npvae.plots import save_figure

    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    os.chmod(target, 0o444)
    with pytest.raises(PermissionError, match="read-only"):
        save_figure(Figure(), target)
    assert target.read_bytes() == b"old"
    os.chmod(target, 0o600)
    save_figure(Figure(), target)
    assert target.read_bytes().startswith(b"\x89PNG") and mode(target) == 0o600
