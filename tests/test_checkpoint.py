"""Saving and loading: round trips, atomic writes, and clear errors for every kind of bad file."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import npvae
from npvae.checkpoint import load_checkpoint, load_model, save_checkpoint
from npvae.errors import CheckpointError


def model(**kw) -> npvae.VAE:
    args = dict(input_dim=12, hidden_dims=(8, 6), latent_dim=3, seed=0)
    args.update(kw)
    return npvae.VAE(**args)


X = np.random.default_rng(0).random((20, 12)).astype(np.float32)


@pytest.mark.parametrize("kw", [{}, dict(likelihood="gaussian", sigma_dec=0.5, activation="tanh", beta=2.0,
                                         n_samples=3, dtype=np.float64)])
def test_round_trip(tmp_path, kw):
    vae = model(**kw)
    npvae.train(vae, X if vae.dtype == np.float32 else X.astype(np.float64), epochs=1, batch_size=5)
    vae.save(tmp_path / "m.npz")
    back = npvae.VAE.load(tmp_path / "m.npz")
    assert back.config() == vae.config()
    for k in vae.params:
        np.testing.assert_array_equal(back.params[k], vae.params[k])
        assert back.params[k].dtype == vae.params[k].dtype
    assert back.evaluate(X) == vae.evaluate(X)


def test_checkpoint_round_trip_restores_the_optimizer(tmp_path):
    vae, opt = model(), npvae.Adam(lr=3e-3)
    npvae.train(vae, X, epochs=1, batch_size=5, optimizer=opt)
    # keys the training loop adds (checkpoint_every, metadata) come back as saved: nothing is filtered
    saved = {"epoch": 2, "batch": 0, "checkpoint_every": 3, "metadata": {"run": "a", "lr": [1e-3, 5e-4]}}
    save_checkpoint(tmp_path / "c.npz", vae, opt, saved)
    vae2, opt2, progress = load_checkpoint(tmp_path / "c.npz")
    assert progress == saved and opt2.t == opt.t == 4 and opt2.lr == 3e-3
    for k in opt.state:
        np.testing.assert_array_equal(opt2.state[k]["v"], opt.state[k]["v"])


def test_save_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "m.npz"
    model(seed=1).save(target)
    before = target.read_bytes()

    def broken_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        model(seed=2).save(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary file left behind


def test_files_hold_no_pickles(tmp_path):
    model().save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def write_npz(path: Path, arrays: dict, allow_pickle: bool = False) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def good_arrays(vae: npvae.VAE | None = None) -> dict:
    vae = vae or model()
    meta = {"format": "npvae", "version": 1, "kind": "model", "config": vae.config()}
    arrays = {f"param/{k}": v for k, v in vae.params.items()}
    arrays["meta"] = np.array(json.dumps(meta))
    return arrays


@pytest.mark.parametrize("what,mutate,fragment", [
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:300]), "truncated, or not an .npz"),
    ("text file", lambda p: p.write_text("hello"), "not a readable .npz file"),
    ("empty file", lambda p: p.write_bytes(b""), "not a readable .npz file"),
    ("missing", lambda p: p.unlink(), "no such file"),
])
def test_damaged_files(tmp_path, what, mutate, fragment):
    p = tmp_path / "m.npz"
    model().save(p)
    mutate(p)
    with pytest.raises(CheckpointError, match=fragment) as info:
        npvae.VAE.load(p)
    assert str(p) in str(info.value)


def test_other_architecture(tmp_path):
    arrays = good_arrays()
    arrays["param/encoder.0.W"] = np.zeros((12, 9), np.float32)
    write_npz(tmp_path / "m.npz", arrays)
    with pytest.raises(CheckpointError, match=r"'encoder.0.W' has shape \(12, 9\).*needs \(12, 8\)"):
        npvae.VAE.load(tmp_path / "m.npz")
    arrays = good_arrays()
    del arrays["param/decoder.out.b"]
    write_npz(tmp_path / "m.npz", arrays)
    with pytest.raises(CheckpointError, match=r"missing \['decoder.out.b'\]"):
        npvae.VAE.load(tmp_path / "m.npz")


def test_incompatible_version_and_foreign_npz(tmp_path):
    arrays = good_arrays()
    arrays["meta"] = np.array(json.dumps({**json.loads(str(arrays["meta"])), "version": 99}))
    write_npz(tmp_path / "v.npz", arrays)
    with pytest.raises(CheckpointError, match="format version 99 is not supported"):
        npvae.VAE.load(tmp_path / "v.npz")
    write_npz(tmp_path / "f.npz", {"a": np.zeros(3)})
    with pytest.raises(CheckpointError, match="not an npvae file"):
        npvae.VAE.load(tmp_path / "f.npz")


def test_pickled_objects_are_refused_not_run(tmp_path):
    arrays = good_arrays()
    arrays["param/encoder.0.b"] = np.array([object()] * 8, dtype=object)
    with open(tmp_path / "p.npz", "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(CheckpointError, match="Python objects"):
        npvae.VAE.load(tmp_path / "p.npz")


def test_model_file_is_not_a_training_checkpoint(tmp_path):
    model().save(tmp_path / "m.npz")
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_checkpoint(tmp_path / "m.npz")


def test_nan_parameters_are_refused(tmp_path):
    arrays = good_arrays()
    arrays["param/encoder.head.W"] = arrays["param/encoder.head.W"].copy()
    arrays["param/encoder.head.W"][0, 0] = np.nan
    write_npz(tmp_path / "n.npz", arrays)
    with pytest.raises(CheckpointError, match="NaN"):
        npvae.VAE.load(tmp_path / "n.npz")


# ---------------------------------------------------------------- fuzzing

def _good_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **good_arrays(model(hidden_dims=(4,), latent_dim=2)))
    return buf.getvalue()


GOOD = _good_bytes()
GOOD_PARAMS = {k[len("param/"):]: v for k, v in np.load(io.BytesIO(GOOD)).items() if k.startswith("param/")}


def _huge_member() -> bytes:
    """A valid zip whose .npy header declares 2**40 float32 values."""
    buf = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, header)
    npy.write(b"\0" * 64)
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("param/encoder.0.W.npy", npy.getvalue())
    return buf.getvalue()


corrupt = st.one_of(
    st.integers(0, len(GOOD) - 1).map(lambda n: GOOD[:n]),
    st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(1, 255)), min_size=1, max_size=8).map(
        lambda flips: bytes(b ^ x if i in dict(flips) and (x := dict(flips)[i]) else b for i, b in enumerate(GOOD))),
    st.binary(max_size=2000),
    st.just(_huge_member()),
    st.integers(0, 30).map(lambda n: _huge_member()[:-n] if n else _huge_member()),
    st.binary(min_size=1, max_size=40).map(lambda junk: GOOD[:100] + junk + GOOD[100:]),
)


def _patched_central_directory(offset: int, value: int) -> bytes:
    """GOOD with a 2-byte field of its first central-directory entry set to ``value``."""
    at = GOOD.index(b"PK\x01\x02") + offset
    return GOOD[:at] + value.to_bytes(2, "little") + GOOD[at + 2:]


@pytest.mark.parametrize("field,value", [(6, 109), (10, 99), (8, 0x40)],
                         ids=["zip-version-10.9", "compression-99", "strong-encryption"])
def test_zip_features_npvae_never_writes_are_checkpoint_errors(tmp_path, field, value):
    """zipfile raises NotImplementedError for these: a corrupt file all the same. The zip version one
    escaped as NotImplementedError until the fuzz test below found it."""
    path = tmp_path / "c.npz"
    path.write_bytes(_patched_central_directory(field, value))
    with pytest.raises(CheckpointError, match="c.npz"):
        load_model(path)


@settings(max_examples=600, deadline=None)
@given(data=corrupt)
def test_fuzzed_files_fail_only_with_checkpoint_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "c.npz"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        vae = load_model(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
        event("refused: CheckpointError")
    else:  # zip CRCs guard the arrays: a file that still loads must hold exactly the original parameters
        event("loaded: the mutation left the arrays intact")
        assert set(vae.params) == set(GOOD_PARAMS)
        for k, p in vae.params.items():
            np.testing.assert_array_equal(p, GOOD_PARAMS[k], err_msg=k)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"loading {len(data)} bytes allocated {peak} bytes"


def killed_save_temporary(target: Path) -> Path:
    """The temporary a save of ``target`` killed mid-write leaves: mkstemp's name, as the writer makes it."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.write(fd, b"half a checkpoint from a killed run")
    os.close(fd)
    return Path(name)


def test_stale_temporaries_are_removed_when_training_starts(tmp_path):
    ckpt = tmp_path / "run.npz"
    stale = killed_save_temporary(ckpt)
    other = tmp_path / ".other.npz.x.tmp"
    other.write_bytes(b"not ours")
    npvae.train(model(), X, epochs=1, batch_size=5, checkpoint_path=ckpt)
    assert not stale.exists() and other.exists() and ckpt.exists()


@pytest.mark.parametrize("ours,theirs", [("run[12].npz", "run1.npz"), ("ckpt", "ckpt.npz"), ("a*", "ab")])
def test_starting_training_leaves_other_files_temporaries(tmp_path, ours, theirs):
    """Issue #21: the stale-temporary pattern was an unescaped glob that also matched longer names:
    ``run[12].npz`` removed ``run1.npz``'s temporaries and ``ckpt`` removed ``ckpt.npz``'s."""
    theirs_tmp = killed_save_temporary(tmp_path / theirs)
    ours_tmp = killed_save_temporary(tmp_path / ours)
    npvae.train(model(), X, epochs=1, batch_size=10, checkpoint_path=tmp_path / ours)
    assert theirs_tmp.exists() and not ours_tmp.exists() and (tmp_path / ours).exists()


def test_saved_files_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        model().save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.npz").stat().st_mode) == 0o644


# ---------------------------------------------------------------- what is at the path (issue #21)

def test_loading_a_directory_says_it_is_a_directory(tmp_path):
    """``VAE.load(directory)`` said "no such file"."""
    with pytest.raises(CheckpointError, match="is a directory") as info:
        npvae.VAE.load(tmp_path)
    assert str(tmp_path) in str(info.value) and "no such file" not in str(info.value)
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_loading_a_name_too_long_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot be read"):
        npvae.VAE.load(tmp_path / ("x" * 300))


@pytest.mark.parametrize("how", ["model", "checkpoint"])
def test_saving_to_a_directory_names_the_directory(tmp_path, how):
    """The error named the writer's internal .tmp file; ``save("dir/")`` wrote a file called ``dir``."""
    vae = model()
    save = vae.save if how == "model" else (lambda p: save_checkpoint(p, vae, npvae.Adam(), {"epoch": 1}))
    (tmp_path / "d").mkdir()
    for path in (tmp_path / "d", f"{tmp_path / 'd'}/", f"{tmp_path / 'new'}/"):
        with pytest.raises(IsADirectoryError, match="is a directory") as info:
            save(path)
        assert ".tmp" not in str(info.value) and str(path) in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["d"] and list((tmp_path / "d").iterdir()) == []


@pytest.mark.parametrize("how", ["model", "checkpoint"])
def test_saving_keeps_permissions_and_refuses_a_read_only_file(tmp_path, how):
    """Issue #21: saving over a 0o444 file succeeded and left 0o644; a 0o600 file became 0o644."""
    vae = model()
    save = vae.save if how == "model" else (lambda p: save_checkpoint(p, vae, npvae.Adam(), {"epoch": 1}))
    private = tmp_path / "private.npz"
    model(seed=1).save(private)
    os.chmod(private, 0o600)
    save(private)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    np.testing.assert_array_equal(load_model(private).params["encoder.0.W"], vae.params["encoder.0.W"])
    protected = tmp_path / "protected.npz"
    model(seed=1).save(protected)
    before = protected.read_bytes()
    os.chmod(protected, 0o444)
    with pytest.raises(PermissionError, match=r"protected\.npz: it is read-only \(mode 0o444\)"):
        save(protected)
    assert protected.read_bytes() == before and stat.S_IMODE(protected.stat().st_mode) == 0o444
    assert sorted(p.name for p in tmp_path.iterdir()) == ["private.npz", "protected.npz"]


def test_saving_through_a_symlink_updates_the_file_it_points_to(tmp_path):
    """The link was replaced by a new file and the file it pointed to left stale."""
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "best.npz"
    model(seed=1).save(real)
    link = tmp_path / "model.npz"
    link.symlink_to(real)
    vae = model(seed=2)
    vae.save(link)
    assert link.is_symlink()
    np.testing.assert_array_equal(load_model(real).params["decoder.out.W"], vae.params["decoder.out.W"])


def test_a_checkpoint_with_a_long_name_saves_and_loads(tmp_path):
    """Issue #21: a legal 254-byte name failed inside mkstemp (its temporary was 267 bytes long)."""
    path = tmp_path / ("c" * 250 + ".npz")
    vae = model()
    save_checkpoint(path, vae, npvae.Adam(), {"epoch": 1})
    assert load_checkpoint(path)[2] == {"epoch": 1}
    with pytest.raises(OSError, match=r"257 bytes long, longer than the 255 bytes") as info:
        save_checkpoint(tmp_path / ("c" * 253 + ".npz"), vae, npvae.Adam(), {"epoch": 1})
    assert info.value.errno == errno.ENAMETOOLONG


def test_progress_that_json_cannot_hold_is_a_clear_type_error(tmp_path):
    vae = model()
    with pytest.raises(TypeError, match=r"progress must hold only JSON values"):
        save_checkpoint(tmp_path / "c.npz", vae, npvae.Adam(), {"epoch": np.zeros(2)})
    with pytest.raises(TypeError, match=r"progress must be a dict"):
        save_checkpoint(tmp_path / "c.npz", vae, npvae.Adam(), [1, 2])  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
