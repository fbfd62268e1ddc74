"""docs/worked_example.md is what docs/make_worked_example.py prints from npvae's own code, and it is right.

* The page is regenerated in memory and compared with the file (the relative-error cells only for being
  below 1e-7, since their last digit depends on the machine's rounding).
* Every gradient on it agrees with central differences, the Adam step is -lr * sign(g), the Monte Carlo
  checks agree with the closed forms.
* A planted bug in a gradient kernel, in a copy of npvae, makes the page test fail (slow).
* examples/worked_example.py, the notebook version, runs as a plain script and opens as a notebook.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "make_worked_example.py"
NOTEBOOK = ROOT / "examples" / "worked_example.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_worked_example", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gen():
    return _load_script()


@pytest.fixture(scope="module")
def result(gen):
    return gen.run()


def test_page_matches_script(gen, result):
    want = gen.normalise(gen.render(result))
    have = gen.normalise(gen.PAGE.read_text())
    if have != want:
        diff = "\n".join(list(difflib.unified_diff(have.splitlines(), want.splitlines(), "docs/worked_example.md",
                                                   "what the code gives now", lineterm="", n=0))[:40])
        pytest.fail(f"docs/worked_example.md is stale or wrong (python docs/make_worked_example.py "
                    f"regenerates it):\n{diff}")


def test_reference_and_fast_path_agree_on_the_page(gen, result):
    assert gen.check(result) == []


@pytest.mark.parametrize("batch", ["one", "two"])
def test_every_gradient_agrees_with_finite_differences(gen, result, batch):
    rows = result[batch]["rows"]
    assert len(rows) == 20
    for label, symbol, analytic, numeric in rows:
        assert np.shape(analytic) == np.shape(numeric), symbol
        assert gen.relerr(analytic, numeric) < 1e-7, (label, symbol, analytic, numeric)


def test_batch_gradient_is_the_mean_of_the_examples_gradients(result):
    alone, both = result["alone"], result["two"]["grads"]
    for k in both:
        np.testing.assert_allclose(both[k], (alone[0][k] + alone[1][k]) / 2, rtol=1e-12, atol=1e-15)


def test_adam_first_step_is_minus_lr_sign_g_and_lowers_the_loss(gen, result):
    ad = result["adam"]
    for k, g in ad["g"].items():
        np.testing.assert_allclose(ad["update"][k], -gen.LR * g / (np.abs(g) + 1e-8), rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(ad["update"][k][g != 0], -gen.LR * np.sign(g[g != 0]), rtol=1e-6)
    assert ad["loss1"] < ad["loss0"]


def test_monte_carlo_checks_agree_with_the_closed_forms(result):
    mc = result["mc"]
    assert abs(mc["var_mc"] - mc["var_closed"]) < 3 * mc["var_se"]
    assert abs(mc["kl_mc"] - mc["kl_closed"]) < 3 * mc["kl_se"]
    assert abs(mc["mean_mc"] - mc["mu"]) < 3 * mc["mean_se"]
    assert abs(mc["var_mc"] - np.exp(2 * mc["logvar"])) > 20 * mc["var_se"]  # exp(logvar) as sigma: refuted


def test_figure_is_drawn_from_the_run(gen, result, tmp_path):
    pytest.importorskip("matplotlib")
    assert gen.FIGURE.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "graph.png"
    gen.draw(result, out)
    assert out.stat().st_size > 10_000


def test_check_flag_reports_an_up_to_date_page(gen, capsys):
    assert gen.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_notebook_script_runs_as_plain_python(capsys, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    runpy.run_path(str(NOTEBOOK), run_name="__main__")
    out = capsys.readouterr().out
    assert "loss 1.653156" in out and "largest relative error" in out


def test_notebook_script_opens_as_a_notebook():
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.read(NOTEBOOK)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds.count("markdown") >= 4 and kinds.count("code") >= 5
    assert "jupytext --to notebook examples/worked_example.py" in NOTEBOOK.read_text()


KL_HALF = ("dr[k + c] = kl_scale * half * (s * s - one)", "dr[k + c] = kl_scale * (s * s - one)")


@pytest.mark.slow
def test_a_planted_kernel_bug_makes_the_page_test_fail(tmp_path):
    """The KL gradient's 1/2 dropped in npvae/kernels.py, in a copy: test_page_matches_script must fail."""
    root = tmp_path / "root"
    shutil.copytree(ROOT / "npvae", root / "npvae", ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    kernels = root / "npvae" / "kernels.py"
    text = kernels.read_text()
    start = text.index("\ndef reparam_kl_backward(")  # the dense ELBO's kernel (the bounded one has the line too)
    end = text.index("\ndef ", start + 1)
    assert text[start:end].count(KL_HALF[0]) == 1
    kernels.write_text(text[:start] + text[start:end].replace(*KL_HALF) + text[end:])
    env = {**os.environ, "PYTHONPATH": str(root), "NUMBA_CACHE_DIR": str(tmp_path / "numba_cache"),
           "NPVAE_MUTANT_PACKAGE": str(root / "npvae"), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("NUMBA_DISABLE_JIT", None)
    # the live script and page, the copied (mutated) npvae: PYTHONPATH and the working directory come first
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(ROOT),
                           f"{ROOT / 'tests' / 'test_worked_example.py'}::test_page_matches_script"],
                          check=False, cwd=root, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "stale or wrong" in proc.stdout and "d encoder.head.b" in proc.stdout
